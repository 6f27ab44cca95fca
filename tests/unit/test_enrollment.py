"""What enrollment decides without a hub: names from wg-quick comments, owners, the authorized_keys line
and the inventory merge."""

from __future__ import annotations

import base64
import ipaddress
import subprocess
from pathlib import Path

import pytest

from responder.enrollment.core import (
    AgentRelease,
    EnrollError,
    HubPeer,
    HubReading,
    Owners,
    authorized_key_line,
    enforcing_table,
    fingerprint,
    interface_address,
    merge,
    peer_names,
    set_addresses,
    with_authorized_key,
)
from responder.inventory import HubMode, HubSpec, Inventory, PeerSpec, SshEndpoint

KEYS = [base64.b64encode(bytes([i]) * 32).decode() for i in range(1, 6)]
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIf2HvxYR5HkfyuABRRVN930mjiTf3NrrfFkgfj6vtnp"
OTHER_HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOC2159xE/XYufQ1obDH1GiSE8Gq/lyU7tuOnstvvpB/"
RESPONDER_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO1dZBfHv8Z5MYeZaxIm0onZCjsso/Z59YdzoxLkfOev responder@soc"


def test_peer_names_from_the_common_comment_conventions() -> None:
    conf = f"""\
[Interface]
# Name = the hub itself, not a peer
PrivateKey = never-read
Address = 10.0.0.1/24

# laptop-alice
[Peer]
PublicKey = {KEYS[0]}
AllowedIPs = 10.0.0.10/32

[Peer]
# Name = Build Server 2
PublicKey = {KEYS[1]}
AllowedIPs = 10.0.0.11/32

# an old comment, then a blank line

[Peer]
PublicKey = {KEYS[2]}

# above
[Peer]
# friendly_name: inside wins
PublicKey = {KEYS[3]}
"""
    assert peer_names(conf) == {KEYS[0]: "laptop-alice", KEYS[1]: "Build Server 2", KEYS[3]: "inside wins"}


def test_the_fingerprint_is_the_one_ssh_keygen_prints(tmp_path: Path) -> None:
    (tmp_path / "k.pub").write_text(HOST_KEY + " hub\n")
    printed = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True)
    assert printed.stdout.split()[1] == fingerprint(HOST_KEY)


def test_the_authorized_key_line_replaces_its_own_key_and_keeps_every_other_line() -> None:
    line = authorized_key_line(RESPONDER_KEY, source="198.51.100.7", command="/usr/local/sbin/responder-hub-agent")
    assert line == f'from="198.51.100.7",restrict,command="/usr/local/sbin/responder-hub-agent" {RESPONDER_KEY}'
    blob = RESPONDER_KEY.split()[1]
    existing = f'# keep me\nssh-ed25519 OTHERKEY admin\nfrom="10.0.0.9" ssh-ed25519 {blob} old\n'
    once = with_authorized_key(existing, line)
    assert once.splitlines() == ["# keep me", "ssh-ed25519 OTHERKEY admin", line]
    assert with_authorized_key(once, line) == once
    assert with_authorized_key("", line) == line + "\n"
    with pytest.raises(EnrollError):
        authorized_key_line("not a key", source="10.0.0.1", command=None)


def test_owners_from_either_csv_header_and_a_wrong_header_names_the_line() -> None:
    by_key = Owners.parse(f"public_key,owner,name\n{KEYS[0]},alice@example.com,alice-laptop\n")
    assert (by_key.owner(KEYS[0], "x"), by_key.name(KEYS[0])) == ("alice@example.com", "alice-laptop")
    by_name = Owners.parse("peer,owner\nbuild-server-2,ci@example.com\n")
    assert by_name.owner(KEYS[1], "build-server-2") == "ci@example.com"
    with pytest.raises(EnrollError, match=r"owners\.csv:1: the header must be"):
        Owners.parse("key,who\n", "owners.csv")
    with pytest.raises(EnrollError, match=r"owners\.csv:2: "):
        Owners.parse("public_key,owner\nnot-a-key,bob\n", "owners.csv")


def _hub(host_key: str = HOST_KEY) -> HubSpec:
    ssh = SshEndpoint(host="192.0.2.1", user="root", host_key=host_key, client_key=Path("/etc/responder/id"))
    return HubSpec(
        name="hub1",
        ssh=ssh,
        mode=HubMode.AGENT,
        tunnel_network=ipaddress.ip_network("10.0.0.0/24"),
        address=ipaddress.ip_address("10.0.0.1"),
    )


def _reading(*peers: HubPeer, names: dict[str, str] | None = None) -> HubReading:
    return HubReading(
        interface="wg0",
        address=ipaddress.ip_address("10.0.0.1"),
        network=ipaddress.ip_network("10.0.0.0/24"),
        peers=peers,
        sets={
            "admins": frozenset({ipaddress.ip_address("10.0.0.10")}),
            "quarantine": frozenset({ipaddress.ip_address("10.0.0.11")}),
            "ports": None,
        },
        table="zerotrust",
        conf_names=names or {},
    )


def test_merge_names_new_peers_keeps_what_the_operator_set_and_reports_the_rest() -> None:
    existing = Inventory(
        hubs=(_hub(),),
        peers=(
            PeerSpec(
                name="alice", hub="hub1", public_key=KEYS[0], tunnel_ip=ipaddress.ip_address("10.0.0.10"),
                owner="alice@example.com", sets=("admins",),
            ),
            PeerSpec(name="gone", hub="hub1", public_key=KEYS[4], tunnel_ip=ipaddress.ip_address("10.0.0.50")),
        ),
    )  # fmt: skip
    reading = _reading(
        HubPeer(KEYS[0], ("10.0.0.10/32",)),
        HubPeer(KEYS[1], ("10.0.0.11/32",)),
        HubPeer(KEYS[2], ("10.0.0.12/32", "192.168.5.0/24")),
        HubPeer(KEYS[3], ("192.168.9.0/24",)),
        names={KEYS[0]: "renamed on the hub", KEYS[1]: "Build Server!"},
    )
    out = merge(existing, _hub(), reading, owners=Owners(), deny_sets=["quarantine"])
    peers = {p.name: p for p in out.inventory.peers}
    assert set(peers) == {"alice", "build-server", "peer-10-0-0-12", "gone"}
    assert peers["alice"].owner == "alice@example.com"  # the operator's word is kept
    assert peers["build-server"].sets == ()  # a deny set is not a peer's set
    assert (out.added, out.kept, out.unknown_owner, out.gone) == (2, 1, 2, ["gone"])
    assert out.notes == [
        f"peer {KEYS[3]}: no single address in 10.0.0.0/24 among its allowed IPs (192.168.9.0/24): not added"
    ]
    # Enrolled again, the hub listing its peers in another order: the same inventory, to the byte.
    shuffled = _reading(*reversed(reading.peers), names=dict(reading.conf_names))
    again = merge(out.inventory, _hub(), shuffled, owners=Owners(), deny_sets=["quarantine"])
    assert again.inventory.to_yaml() == out.inventory.to_yaml()


def test_a_new_peer_in_a_set_gets_the_set_and_the_csv_owner() -> None:
    owners = Owners.parse(f"public_key,owner,name\n{KEYS[0]},alice@example.com,alice-laptop\n")
    out = merge(None, _hub(), _reading(HubPeer(KEYS[0], ("10.0.0.10/32",))), owners=owners, deny_sets=[])
    (peer,) = out.inventory.peers
    assert (peer.name, peer.owner, peer.sets) == ("alice-laptop", "alice@example.com", ("admins",))


def test_a_hub_known_by_another_host_key_is_refused() -> None:
    existing = Inventory(hubs=(_hub(OTHER_HOST_KEY),))
    with pytest.raises(EnrollError, match="hub hub1 is in the inventory with host key SHA256:"):
        merge(existing, _hub(), _reading(), owners=Owners(), deny_sets=[])


def test_the_shipped_agent_has_a_release_version() -> None:
    release = AgentRelease.shipped()
    assert release.version.count(".") == 2 and len(release.sha256) == 64


def test_the_hub_address_sets_and_table_are_read_from_the_json_of_ip_and_nft() -> None:
    addr = (
        '[{"ifname": "wg0", "addr_info": [{"family": "inet6", "local": "fe80::1", "prefixlen": 64, "scope": "link"},'
        ' {"family": "inet", "local": "10.100.0.1", "prefixlen": 24, "scope": "global"}]}]'
    )
    assert interface_address(addr, "wg0") == (ipaddress.ip_address("10.100.0.1"), ipaddress.ip_network("10.100.0.0/24"))
    with pytest.raises(EnrollError, match="wg0 has no tunnel address"):
        interface_address('[{"ifname": "wg0", "addr_info": []}]', "wg0")

    listing = {
        "nftables": [
            {"metainfo": {}},
            {
                "set": {
                    "family": "inet", "table": "zerotrust", "name": "quarantine", "type": "ipv4_addr",
                    "elem": [
                        "10.0.0.1",
                        {"elem": {"val": "10.0.0.2", "timeout": 30}},
                        {"prefix": {"addr": "10.1.0.0", "len": 16}},
                    ],
                }
            },
        ]
    }  # fmt: skip
    assert set_addresses(listing) == {ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("10.0.0.2")}

    sets = [{"table": "zerotrust"}, {"table": "filter"}]
    assert enforcing_table(sets, None, []) == "zerotrust"
    assert enforcing_table(sets, None, ["filter"]) == "filter"
    assert enforcing_table([{"table": "fw"}], None, []) == "fw"
    with pytest.raises(EnrollError, match="pass --table"):
        enforcing_table([{"table": "a"}, {"table": "b"}], None, [])
    with pytest.raises(EnrollError, match="no nftables table 'c'"):
        enforcing_table(sets, "c", [])
