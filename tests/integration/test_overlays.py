"""Overlay enforcement points (Tailscale, Headscale, NetBird, DefGuard) against CONTRACT SERVERS.

The servers in tests/support/overlay_contracts.py are not the products: they implement the documented
contract from /work/shared/reference/overlays.md (auth check, status codes, idempotency, full-replace PUTs)
on 127.0.0.1. These tests show that the adapters honour that contract: cut-off, undo, repeated calls, 401,
404 meaning done, 429 with Retry-After, 5xx retries, and concurrent modification detection.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any

import pytest

from responder.core.actions import Action, ActionType
from responder.core.identifiers import WireGuardKey
from responder.overlays.adapters import (
    CutOff,
    HttpSettings,
    OverlayHub,
    OverlaySpec,
    devices_by_owner,
    open_overlay,
)
from responder.pep.hub import Hub
from tests.support.overlay_contracts import (
    ContractServer,
    DefGuardContract,
    HeadscaleContract,
    NetBirdContract,
    TailscaleContract,
)

FAST = HttpSettings(
    connect_timeout=2.0, request_timeout=5.0, retries=3, backoff_base=0.001, backoff_max=0.01, retry_after_max=2.0
)
ALICE_KEY = WireGuardKey(base64.b64encode(bytes(range(1, 33))).decode())
BOB_KEY = WireGuardKey(base64.b64encode(bytes(range(33, 65))).decode())
ALICE_IP = "100.64.0.10"
BOB_IP = "100.64.0.11"
RETRY_AFTER_S = 0.2


@dataclass
class Harness:
    """One overlay under test: its contract server, an adapter, and how to read the server's state."""

    kind: str
    server: ContractServer
    open: Callable[..., OverlayHub]
    adapter: OverlayHub
    cut_off_done: Callable[[], bool]
    quarantined: Callable[[], bool]
    listing_suffix: str
    """Path suffix of the device listing GET (a hook there acts before our next request)."""
    drop_device: Callable[[], None]
    rmw_suffix: str
    """Path suffix of the object that a read-modify-write reads (tags, group, user)."""
    toggle_other: Callable[[], None]
    other_present: Callable[[], bool]
    write: tuple[str, str]
    """Method and path fragment of the quarantine write, to count writes."""
    cut_off_undoable: bool

    def action(self, type_: ActionType, **kw: Any) -> Action:
        return Action(type=type_, hub=self.adapter.name, peer_key=kw.pop("peer_key", ALICE_KEY),
                      address=kw.pop("address", ip_address(ALICE_IP)), **kw)  # fmt: skip

    @property
    def cut_off(self) -> Action:
        return self.action(ActionType.REMOVE_PEER)

    @property
    def quarantine(self) -> Action:
        return self.action(ActionType.QUARANTINE, set_name="quarantine")


def _spec(name: str, kind: str, url: str, **extra: Any) -> OverlaySpec:
    return OverlaySpec.model_validate({"name": name, "kind": kind, "base_url": url, **extra})


async def _tailscale(monkeypatch: pytest.MonkeyPatch) -> Harness:
    server = TailscaleContract("tskey-api-good", "client-1", "secret-1", {"tag:quarantine", "tag:web", "tag:other"})
    server.add_device("n1", "alice@example.com", ALICE_KEY, ALICE_IP, tags=["tag:web"])
    server.add_device("n2", "bob@example.com", BOB_KEY, BOB_IP)
    url = await server.start() + "/api/v2"
    monkeypatch.setenv("TS_API_KEY", "tskey-api-good")

    def open_(var: str = "TS_API_KEY", **extra: Any) -> OverlayHub:
        return open_overlay(_spec("tailnet", "tailscale", url, credentials={"token": {"env": var}}, **extra), FAST)

    def dev() -> dict[str, Any]:
        return server.devices["n1"]

    def toggle() -> None:
        tags = dev()["tags"]
        dev()["tags"] = [t for t in tags if t != "tag:other"] if "tag:other" in tags else [*tags, "tag:other"]

    def drop() -> None:
        server.devices.pop("n1", None)

    return Harness(
        "tailscale", server, open_, open_(), cut_off_done=lambda: dev()["expires"] < time_now(),
        quarantined=lambda: "tag:quarantine" in dev()["tags"], listing_suffix="/devices", drop_device=drop,
        rmw_suffix="/device/n1", toggle_other=toggle, other_present=lambda: "tag:other" in dev()["tags"],
        write=("POST", "/tags"), cut_off_undoable=False,
    )  # fmt: skip


async def _headscale(monkeypatch: pytest.MonkeyPatch) -> Harness:
    server = HeadscaleContract("hskey-good")
    server.add_node("1", "alice@example.com", ALICE_KEY, ALICE_IP)
    server.add_node("2", "bob@example.com", BOB_KEY, BOB_IP)
    url = await server.start()
    monkeypatch.setenv("HS_API_KEY", "hskey-good")

    def open_(var: str = "HS_API_KEY", **extra: Any) -> OverlayHub:
        return open_overlay(_spec("headscale", "headscale", url, credentials={"token": {"env": var}}, **extra),
                            FAST)  # fmt: skip

    def node() -> dict[str, Any]:
        return server.nodes["1"]

    def toggle() -> None:
        tags = node()["tags"]
        node()["tags"] = [t for t in tags if t != "tag:other"] if "tag:other" in tags else [*tags, "tag:other"]

    def drop() -> None:
        server.nodes.pop("1", None)

    return Harness(
        "headscale", server, open_, open_(),
        cut_off_done=lambda: node()["expiry"] != "0001-01-01T00:00:00Z" and node()["expiry"] < time_now(),
        quarantined=lambda: "tag:quarantine" in node()["tags"], listing_suffix="/api/v1/node", drop_device=drop,
        rmw_suffix="/api/v1/node/1", toggle_other=toggle, other_present=lambda: "tag:other" in node()["tags"],
        write=("POST", "/tags"), cut_off_undoable=False,
    )  # fmt: skip


async def _netbird(monkeypatch: pytest.MonkeyPatch) -> Harness:
    server = NetBirdContract("nbp_good")
    server.add_user("u-alice", "alice@example.com")
    server.add_user("u-bob", "bob@example.com")
    server.add_user("u-owner", "owner@example.com", role="owner")
    server.add_peer("p-alice", "u-alice", ALICE_IP)
    server.add_peer("p-bob", "u-bob", BOB_IP)
    server.add_peer("p-owner", "u-owner", "100.64.0.12")
    server.add_group("g-quarantine", "quarantine", ["p-bob"], resources=[{"id": "r1", "type": "host"}])
    url = await server.start()
    monkeypatch.setenv("NB_PAT", "nbp_good")

    def open_(var: str = "NB_PAT", **extra: Any) -> OverlayHub:
        extra.setdefault("actions", {"quarantine_label": "g-quarantine"})
        return open_overlay(_spec("netbird", "netbird", url, credentials={"token": {"env": var}}, **extra), FAST)

    def group() -> dict[str, Any]:
        return server.groups["g-quarantine"]

    def toggle() -> None:
        peers = group()["peers"]
        group()["peers"] = [p for p in peers if p != "p-owner"] if "p-owner" in peers else [*peers, "p-owner"]

    def drop() -> None:
        server.peers.pop("p-alice", None)

    return Harness(
        "netbird", server, open_, open_(),
        cut_off_done=lambda: server.users["u-alice"]["is_blocked"] and server.peers["p-alice"]["login_expired"],
        quarantined=lambda: "p-alice" in group()["peers"], listing_suffix="/api/peers", drop_device=drop,
        rmw_suffix="/api/groups/g-quarantine", toggle_other=toggle, other_present=lambda: "p-owner" in group()["peers"],
        write=("PUT", "/api/groups/"), cut_off_undoable=True,
    )  # fmt: skip


async def _defguard(monkeypatch: pytest.MonkeyPatch) -> Harness:
    server = DefGuardContract("admin", "dg-token-good", "admin-password")
    server.add_user("alice", "alice@example.com", groups=["staff"])
    server.add_user("bob", "bob@example.com")
    server.add_device(7, "alice", ALICE_KEY, ALICE_IP)
    server.add_device(8, "bob", BOB_KEY, BOB_IP)
    url = await server.start()
    monkeypatch.setenv("DG_TOKEN", "dg-token-good")

    def open_(var: str = "DG_TOKEN", **extra: Any) -> OverlayHub:
        extra.setdefault("actions", {"quarantine_label": "quarantine"})
        credentials = extra.pop("credentials", {"token": {"env": var}})
        return open_overlay(_spec("defguard", "defguard", url, credentials=credentials, **extra), FAST)

    def user() -> dict[str, Any]:
        return server.users["alice"]

    def toggle() -> None:
        groups = user()["groups"]
        user()["groups"] = [g for g in groups if g != "ops"] if "ops" in groups else [*groups, "ops"]

    def drop() -> None:
        server.devices.pop("7", None)

    return Harness(
        "defguard", server, open_, open_(), cut_off_done=lambda: user()["is_active"] is False,
        quarantined=lambda: "quarantine" in user()["groups"], listing_suffix="/api/v1/device", drop_device=drop,
        rmw_suffix="/api/v1/user/alice", toggle_other=toggle, other_present=lambda: "ops" in user()["groups"],
        write=("PUT", "/api/v1/user/"), cut_off_undoable=True,
    )  # fmt: skip


def time_now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


BUILDERS = {"tailscale": _tailscale, "headscale": _headscale, "netbird": _netbird, "defguard": _defguard}


@pytest.fixture(params=sorted(BUILDERS))
async def overlay(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    harness = await BUILDERS[request.param](monkeypatch)
    try:
        yield harness
    finally:
        await harness.adapter.close()
        await harness.server.stop()


# -- the acceptance list, for each of the four -------------------------------------------------------------


async def test_adapter_is_a_hub(overlay: Harness) -> None:
    hub: Hub = overlay.adapter  # the service holds SSH hubs and overlays in one mapping
    status = await hub.status()
    assert status["reachable"] is True
    assert status["devices"] == len(await overlay.adapter.discover()) >= 2
    assert status["kind"] == overlay.kind


async def test_cut_off_is_applied_and_verified(overlay: Harness) -> None:
    assert not overlay.cut_off_done()
    [result] = await overlay.adapter.apply([overlay.cut_off])
    assert result.ok, result.detail
    assert result.verified, result.detail
    assert overlay.cut_off_done()
    assert result.restore is not None
    assert result.restore["cut_off"] == overlay.adapter.spec.cut_off.value


async def test_cut_off_touches_only_the_target(overlay: Harness) -> None:
    await overlay.adapter.apply([overlay.cut_off])
    others = [r for r in overlay.server.requests if r.method in {"POST", "PUT", "DELETE"}]
    assert others, "the cut-off wrote nothing"
    assert all(("bob" not in r.path and "n2" not in r.path and "/2/" not in r.path) for r in others)


async def test_undo_restores_what_the_action_changed(overlay: Harness) -> None:
    [result] = await overlay.adapter.apply([overlay.quarantine])
    assert result.ok and result.verified, result.detail
    assert overlay.quarantined()
    undone = await overlay.adapter.undo(overlay.quarantine, result.restore)
    assert undone.ok and undone.verified, undone.detail
    assert not overlay.quarantined()
    assert overlay.kind != "netbird" or "p-bob" in overlay.server.groups["g-quarantine"]["peers"]  # type: ignore[attr-defined]


async def test_undo_of_cut_off_reinstates_or_says_it_cannot(overlay: Harness) -> None:
    [result] = await overlay.adapter.apply([overlay.cut_off])
    assert result.ok
    undone = await overlay.adapter.undo(overlay.cut_off, result.restore)
    if overlay.cut_off_undoable:
        assert undone.ok and undone.verified, undone.detail
        assert not overlay.cut_off_done()
    else:
        assert not undone.ok
        assert "cannot be undone" in undone.detail


async def test_repeated_calls_are_idempotent(overlay: Harness) -> None:
    first = await overlay.adapter.apply([overlay.quarantine, overlay.cut_off])
    second = await overlay.adapter.apply([overlay.quarantine, overlay.cut_off])
    assert all(r.ok and r.verified for r in first + second), [r.detail for r in first + second]
    assert "already" in second[0].detail
    method, fragment = overlay.write
    assert len(overlay.server.calls(method, fragment)) == 1 + (overlay.kind == "defguard")  # defguard: group + disable
    assert overlay.quarantined() and overlay.cut_off_done()


async def test_wrong_token_gives_401_without_retries(overlay: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BAD_TOKEN", "not-the-token")
    adapter = overlay.open(var="BAD_TOKEN")
    try:
        [result] = await adapter.apply([overlay.cut_off])
    finally:
        await adapter.close()
    assert not result.ok
    assert "401" in result.detail
    assert "not-the-token" not in result.detail
    assert len(overlay.server.requests) == 1
    assert not overlay.cut_off_done()


async def test_404_on_delete_means_done(overlay: Harness) -> None:
    adapter = overlay.open(actions={"cut_off": CutOff.DELETE_DEVICE.value, "quarantine_label": "x"})
    # Another admin deletes the device right after our listing: our DELETE meets a 404.
    overlay.server.after_read(overlay.listing_suffix, overlay.drop_device)
    try:
        [result] = await adapter.apply([overlay.cut_off])
    finally:
        await adapter.close()
    assert result.ok and result.verified, result.detail
    assert "404" in result.detail
    assert [c.status for c in overlay.server.calls("DELETE")] == [404]


async def test_429_waits_for_retry_after(overlay: Harness) -> None:
    overlay.server.fail(
        429, count=1, retry_after=str(RETRY_AFTER_S), method="GET", path_contains=overlay.listing_suffix
    )
    [result] = await overlay.adapter.apply([overlay.quarantine])
    assert result.ok and result.verified, result.detail
    seen = overlay.server.requests
    [at] = [i for i, r in enumerate(seen) if r.status == 429]
    limited, retried = seen[at], seen[at + 1]
    assert retried.path == limited.path and retried.status == 200
    # Backoff in FAST is ~1 ms: only honouring Retry-After explains this gap.
    assert retried.at - limited.at >= RETRY_AFTER_S * 0.9


async def test_5xx_is_retried(overlay: Harness) -> None:
    method, fragment = overlay.write
    overlay.server.fail(503, count=2, method=method, path_contains=fragment)
    [result] = await overlay.adapter.apply([overlay.quarantine])
    assert result.ok and result.verified, result.detail
    assert [c.status for c in overlay.server.calls(method, fragment)] == [503, 503, 200]


async def test_5xx_that_persists_fails_after_the_retry_budget(overlay: Harness) -> None:
    overlay.server.fail(500, count=100)
    [result] = await overlay.adapter.apply([overlay.cut_off])
    assert not result.ok
    assert "500" in result.detail and f"{FAST.retries + 1} tries" in result.detail
    assert len(overlay.server.requests) == FAST.retries + 1


async def test_4xx_is_not_retried(overlay: Harness) -> None:
    overlay.server.fail(400, count=1, method="GET", path_contains=overlay.listing_suffix)
    [result] = await overlay.adapter.apply([overlay.cut_off])
    assert not result.ok and "400" in result.detail
    assert [c.status for c in overlay.server.calls("GET", overlay.listing_suffix)] == [400]
    assert not [r for r in overlay.server.requests if r.method != "GET"]


async def test_concurrent_modification_is_detected_and_nothing_written(overlay: Harness) -> None:
    # Another writer changes the object after every read of ours.
    overlay.server.after_read(overlay.rmw_suffix, overlay.toggle_other, times=1000)
    [result] = await overlay.adapter.apply([overlay.quarantine])
    assert not result.ok
    assert "changed between our read and write" in result.detail
    method, fragment = overlay.write
    assert overlay.server.calls(method, fragment) == []
    assert not overlay.quarantined()


async def test_read_modify_write_keeps_a_concurrent_change(overlay: Harness) -> None:
    # One concurrent change: the first attempt notices it and starts over; the full-replace write keeps it.
    overlay.server.after_read(overlay.rmw_suffix, overlay.toggle_other, times=1)
    [result] = await overlay.adapter.apply([overlay.quarantine])
    assert result.ok and result.verified, result.detail
    assert overlay.quarantined()
    assert overlay.other_present()


async def test_unknown_device_is_reported_for_quarantine_and_absent_for_cut_off(overlay: Harness) -> None:
    stranger = WireGuardKey(base64.b64encode(bytes(32)).decode())
    quarantine = overlay.action(ActionType.QUARANTINE, set_name="quarantine", peer_key=stranger,
                                address=ip_address("100.64.9.9"))  # fmt: skip
    cut = overlay.action(ActionType.REMOVE_PEER, peer_key=stranger, address=ip_address("100.64.9.9"))
    q, c = await overlay.adapter.apply([quarantine, cut])
    assert not q.ok and "no device" in q.detail
    assert c.ok and "already absent" in c.detail
    assert not [r for r in overlay.server.requests if r.method in {"POST", "PUT", "DELETE"}]


async def test_discovery_maps_devices_to_identities(overlay: Harness) -> None:
    devices = await overlay.adapter.discover()
    owners = devices_by_owner(devices)
    [alice] = owners["alice@example.com"]
    assert ip_address(ALICE_IP) in alice.addresses
    if overlay.adapter.lists_keys:
        assert alice.node_key == ALICE_KEY
    assert alice.owner_id is not None


async def test_kill_flows_is_refused_not_faked(overlay: Harness) -> None:
    [result] = await overlay.adapter.apply([overlay.action(ActionType.KILL_FLOWS, peer_key=None)])
    assert not result.ok and "flow" in result.detail


# -- overlay-specific behaviour ----------------------------------------------------------------------------


@pytest.fixture
async def tailscale(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    harness = await _tailscale(monkeypatch)
    try:
        yield harness
    finally:
        await harness.adapter.close()
        await harness.server.stop()


async def test_tailscale_oauth_token_is_fetched_and_refreshed_before_expiry(
    tailscale: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    secret_file = tmp_path / "ts-oauth-secret"
    secret_file.write_text("secret-1\n")
    now = [1000.0]
    server: TailscaleContract = tailscale.server  # type: ignore[assignment]
    oauth = {"oauth_client_id": "client-1", "oauth_client_secret": {"file": str(secret_file)}}
    spec = _spec("tailnet", "tailscale", tailscale.adapter.spec.base_url, credentials=oauth)
    adapter = open_overlay(spec, FAST, clock=lambda: now[0])
    try:
        assert (await adapter.status())["reachable"]
        assert (await adapter.status())["reachable"]
        assert len(server.calls("POST", "/oauth/token")) == 1  # cached while valid
        now[0] += 3600 - FAST.token_refresh_margin_s + 1  # inside the refresh margin
        [result] = await adapter.apply([tailscale.cut_off])
        assert result.ok and result.verified, result.detail
        tokens = server.calls("POST", "/oauth/token")
        assert len(tokens) == 2
        used = {c.authorization for c in server.requests if "/oauth/" not in c.path}
        assert used == {"Bearer tskey-access-1", "Bearer tskey-access-2"}
    finally:
        await adapter.close()


async def test_tailscale_oauth_401_renews_the_token_once(tailscale: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS_OAUTH_SECRET", "secret-1")
    server: TailscaleContract = tailscale.server  # type: ignore[assignment]
    oauth = {"oauth_client_id": "client-1", "oauth_client_secret": {"env": "TS_OAUTH_SECRET"}}
    spec = _spec("tailnet", "tailscale", tailscale.adapter.spec.base_url, credentials=oauth)
    adapter = open_overlay(spec, FAST)
    try:
        assert (await adapter.status())["reachable"]
        server.tokens.clear()  # the server revoked it early
        assert (await adapter.status())["reachable"]
        assert len(server.calls("POST", "/oauth/token")) == 2
    finally:
        await adapter.close()


async def test_tailscale_bad_oauth_secret_is_a_401(tailscale: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS_OAUTH_SECRET", "wrong-secret")
    oauth = {"oauth_client_id": "client-1", "oauth_client_secret": {"env": "TS_OAUTH_SECRET"}}
    spec = _spec("tailnet", "tailscale", tailscale.adapter.spec.base_url, credentials=oauth)
    adapter = open_overlay(spec, FAST)
    try:
        [result] = await adapter.apply([tailscale.cut_off])
    finally:
        await adapter.close()
    assert not result.ok and "401" in result.detail and "wrong-secret" not in result.detail


async def test_tailscale_deauthorize_is_undone_by_authorizing(tailscale: Harness) -> None:
    server: TailscaleContract = tailscale.server  # type: ignore[assignment]
    adapter = tailscale.open(actions={"cut_off": "deauthorize"})
    try:
        [result] = await adapter.apply([tailscale.cut_off])
        assert result.ok and result.verified and server.devices["n1"]["authorized"] is False
        undone = await adapter.undo(tailscale.cut_off, result.restore)
        assert undone.ok and undone.verified and server.devices["n1"]["authorized"] is True
    finally:
        await adapter.close()


async def test_tailscale_unknown_tag_is_refused_without_retry(tailscale: Harness) -> None:
    adapter = tailscale.open(actions={"quarantine_label": "tag:not-in-policy"})
    try:
        [result] = await adapter.apply([tailscale.quarantine])
    finally:
        await adapter.close()
    assert not result.ok and "400" in result.detail
    assert len(tailscale.server.calls("POST", "/tags")) == 1


async def test_tailscale_rotate_key_expires_the_node_key(tailscale: Harness) -> None:
    [result] = await tailscale.adapter.apply([tailscale.action(ActionType.ROTATE_KEY)])
    assert result.ok and result.verified and tailscale.cut_off_done()
    undone = await tailscale.adapter.undo(tailscale.action(ActionType.ROTATE_KEY), result.restore)
    assert not undone.ok


@pytest.fixture
async def netbird(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    harness = await _netbird(monkeypatch)
    try:
        yield harness
    finally:
        await harness.adapter.close()
        await harness.server.stop()


async def test_netbird_group_write_keeps_resources(netbird: Harness) -> None:
    server: NetBirdContract = netbird.server  # type: ignore[assignment]
    [result] = await netbird.adapter.apply([netbird.quarantine])
    assert result.ok and result.verified
    assert server.groups["g-quarantine"]["resources"] == [{"id": "r1", "type": "host"}]
    assert sorted(server.groups["g-quarantine"]["peers"]) == ["p-alice", "p-bob"]


async def test_netbird_owner_cannot_be_blocked(netbird: Harness) -> None:
    server: NetBirdContract = netbird.server  # type: ignore[assignment]
    action = netbird.action(ActionType.REMOVE_PEER, address=ip_address("100.64.0.12"))
    [result] = await netbird.adapter.apply([action])
    assert not result.ok and "403" in result.detail
    assert len(server.calls("PUT", "/api/users/")) == 1
    assert server.users["u-owner"]["is_blocked"] is False


async def test_netbird_needs_the_address_because_keys_are_not_listed(netbird: Harness) -> None:
    action = Action(type=ActionType.REMOVE_PEER, hub="netbird", peer_key=ALICE_KEY)
    [result] = await netbird.adapter.apply([action])
    assert not result.ok and "tunnel address" in result.detail


async def test_netbird_unblock_leaves_a_previously_blocked_user_blocked(netbird: Harness) -> None:
    server: NetBirdContract = netbird.server  # type: ignore[assignment]
    server.users["u-alice"]["is_blocked"] = True
    [result] = await netbird.adapter.apply([netbird.cut_off])
    assert result.ok and "already" in result.detail
    undone = await netbird.adapter.undo(netbird.cut_off, result.restore)
    assert undone.ok and server.users["u-alice"]["is_blocked"] is True


@pytest.fixture
async def defguard(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Harness]:
    harness = await _defguard(monkeypatch)
    try:
        yield harness
    finally:
        await harness.adapter.close()
        await harness.server.stop()


async def test_defguard_disable_keeps_the_rest_of_userinfo(defguard: Harness) -> None:
    server: DefGuardContract = defguard.server  # type: ignore[assignment]
    before = dict(server.users["alice"])
    [result] = await defguard.adapter.apply([defguard.cut_off])
    assert result.ok and result.verified
    assert server.users["alice"] == {**before, "is_active": False}


async def test_defguard_session_login_without_business_licence(
    defguard: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: DefGuardContract = defguard.server  # type: ignore[assignment]
    monkeypatch.setenv("DG_PASSWORD", "admin-password")
    adapter = defguard.open(credentials={"username": "admin", "password": {"env": "DG_PASSWORD"}})
    try:
        [result] = await adapter.apply([defguard.cut_off])
        assert result.ok and result.verified, result.detail
        server.sessions.clear()  # the session expired: one re-login, then on
        assert (await adapter.status())["reachable"]
        assert len(server.calls("POST", "/api/v1/auth")) == 2
    finally:
        await adapter.close()


async def test_defguard_rotate_key_deletes_the_device_so_it_enrolls_anew(defguard: Harness) -> None:
    server: DefGuardContract = defguard.server  # type: ignore[assignment]
    [result] = await defguard.adapter.apply([defguard.action(ActionType.ROTATE_KEY)])
    assert result.ok and result.verified and "7" not in server.devices
    [again] = await defguard.adapter.apply([defguard.action(ActionType.ROTATE_KEY)])
    assert again.ok and "already absent" in again.detail


async def test_headscale_delete_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    harness = await _headscale(monkeypatch)
    adapter = harness.open(actions={"cut_off": "delete_device"})
    try:
        [result] = await adapter.apply([harness.cut_off])
        assert result.ok and result.verified and "1" not in harness.server.nodes  # type: ignore[attr-defined]
        [again] = await adapter.apply([harness.cut_off])
        assert again.ok and "already absent" in again.detail
    finally:
        await adapter.close()
        await harness.adapter.close()
        await harness.server.stop()


# -- configuration -----------------------------------------------------------------------------------------


def test_spec_refuses_cut_off_the_overlay_does_not_offer() -> None:
    with pytest.raises(ValueError, match="not offered by headscale"):
        _spec("hs", "headscale", "https://hs.example", credentials={"token": {"env": "X"}},
              actions={"cut_off": "block_user"})  # fmt: skip


def test_spec_refuses_plain_http_to_a_remote_host() -> None:
    with pytest.raises(ValueError, match="https"):
        _spec("hs", "headscale", "http://hs.example", credentials={"token": {"env": "X"}})


def test_missing_secret_names_the_variable_not_a_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_TOKEN", raising=False)
    spec = _spec("hs", "headscale", "https://hs.example", credentials={"token": {"env": "NOPE_TOKEN"}})
    with pytest.raises(Exception, match="NOPE_TOKEN is not set"):
        open_overlay(spec)


def test_secrets_do_not_print(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOWN_TOKEN", "very-secret-value")
    adapter = open_overlay(
        _spec("hs", "headscale", "https://hs.example", credentials={"token": {"env": "SHOWN_TOKEN"}})
    )
    assert "very-secret-value" not in repr(adapter.http.credential)
    assert "very-secret-value" not in repr(adapter.spec)
