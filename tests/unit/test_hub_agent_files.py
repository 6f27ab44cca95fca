"""The hub agent's edits of the hub's own files: the wg-quick file's `[Peer]` blocks and the nft include."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

AGENT_PATH = Path(__file__).resolve().parents[2] / "deploy" / "hub" / "responder_hub_agent.py"
A = "JfQ7FIatlaE5jj7rPYO8QBABX8yb7bNbQy4AKY1QIfc="
B = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="

CONF = f"""\
[Interface]
# the hub
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
ListenPort = 51820
Address = 10.100.0.1/24

# admin1
# laptop, enrolled 2026-11
[Peer]
PublicKey = {A}
AllowedIPs = 10.100.0.10/32, 10.100.1.0/24
PersistentKeepalive = 25

# app1
[Peer]
publickey={B}
AllowedIPs = 10.100.0.20/32
"""


def _load_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("responder_hub_agent_files", AGENT_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["responder_hub_agent_files"] = module
    spec.loader.exec_module(module)
    return module


AGENT = _load_agent()


def test_a_peer_block_runs_from_its_comments_to_the_next_sections_comments() -> None:
    assert AGENT.peer_block(CONF, A) == (
        f"# admin1\n# laptop, enrolled 2026-11\n[Peer]\nPublicKey = {A}\n"
        "AllowedIPs = 10.100.0.10/32, 10.100.1.0/24\nPersistentKeepalive = 25\n\n"
    )
    assert AGENT.peer_block(CONF, B) == f"# app1\n[Peer]\npublickey={B}\nAllowedIPs = 10.100.0.20/32\n"
    assert AGENT.peer_block(CONF, "x" * 43 + "=") is None


# Keys named where they are not a peer's key: in a comment, in another section, twice (the first block
# wins), and a section that is not a peer.
TRICKY = f"""{CONF}
# {A} was re-keyed: see the ticket
[Peer]
PublicKey = {B}
AllowedIPs = 10.100.0.21/32
# old key {A}

[Interface]
# PublicKey = {A}
"""


@pytest.mark.parametrize("text", [CONF, TRICKY, CONF.replace("\n", "\r\n"), ""])
def test_the_blocks_of_a_few_keys_are_the_same_as_in_the_whole_parse(text: str) -> None:
    whole = AGENT.peer_blocks(text)
    for keys in ([A], [B], [A, B], ["x" * 43 + "="], []):
        assert AGENT.peer_blocks(text, keys) == {k: whole[k] for k in keys if k in whole}


def test_removing_a_peer_and_putting_its_block_back_keeps_every_other_line() -> None:
    block = AGENT.peer_block(CONF, A)
    without = AGENT.without_peers(CONF, [A])
    assert A not in without and "# admin1" not in without and "laptop" not in without
    assert "# the hub" in without and f"publickey={B}" in without and "# app1" in without
    back = AGENT.with_blocks(without, [block])
    assert AGENT.peer_block(back, A) == block
    assert sorted(back.splitlines()) == sorted([*CONF.splitlines(), ""])  # one blank line to set it apart
    assert AGENT.without_peers(back, [A]).strip() == without.strip()


def test_the_file_is_replaced_whole_with_its_mode(tmp_path: Path) -> None:
    conf = tmp_path / "wg0.conf"
    conf.write_text(CONF)
    conf.chmod(0o600)
    AGENT.replace_file(conf, AGENT.without_peers(CONF, [B]))
    assert B not in conf.read_text()
    assert conf.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["wg0.conf"]  # no temporary file left


def test_a_file_that_cannot_be_replaced_stays_as_it_was(tmp_path: Path) -> None:
    conf = tmp_path / "gone" / "wg0.conf"  # its directory is missing: the temporary file cannot be made
    error = AGENT._edit_file(conf, lambda text: text)
    assert error is not None and "No such file" in error
    assert AGENT.persisted(error, conf) == {"persisted": False, "persist_error": f"{conf}: {error}"}
    assert AGENT.persisted(None, None) == {"persisted": None}


def test_the_nft_include_deletes_what_was_taken_and_keeps_a_quarantine_for_the_time_it_has_left() -> None:
    text = AGENT.elements_text(
        {"inet zerotrust admin_devices 10.100.0.10"},
        {"inet zerotrust quarantine 10.100.0.20": 1000.0 + 3599.2, "inet zerotrust quarantine 10.100.0.21": 999.0,
         "inet zerotrust quarantine 10.100.0.22": None},
        1000.0,
    )  # fmt: skip
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == [
        "add element inet zerotrust admin_devices { 10.100.0.10 }",
        "delete element inet zerotrust admin_devices { 10.100.0.10 }",
        "add element inet zerotrust quarantine { 10.100.0.20 timeout 3600s }",
        "add element inet zerotrust quarantine { 10.100.0.22 }",
    ]  # 10.100.0.21 expired: not re-added


@pytest.mark.parametrize("value", [{"wg0": "relative/wg0.conf"}, {"wg0;x": "/etc/wireguard/wg0.conf"}, ["wg0"]])
def test_a_bad_wireguard_files_entry_is_a_configuration_error(tmp_path: Path, value: object) -> None:
    import json

    config = tmp_path / "agent.json"
    config.write_text(json.dumps({"deny_sets": [], "wireguard_files": value}))
    policy = AGENT.Policy(config)
    assert policy.error is not None and str(config) in policy.error


def test_a_peer_still_in_the_file_is_recorded_from_its_block_so_it_can_be_put_back(tmp_path: Path) -> None:
    conf = tmp_path / "wg0.conf"
    conf.write_text(CONF)
    running = {"allowed_ips": ["10.100.0.20/32"], "endpoint": "198.18.3.1:51820", "keepalive": None}
    mine = {B: dict(running)}  # B was running; A only in the file (a retried removal, or one made by hand)
    AGENT._keep_blocks(conf.read_text(), mine, [A, B])
    assert mine[A] == {"allowed_ips": ["10.100.0.10/32", "10.100.1.0/24"], "endpoint": None, "keepalive": None,
                       "conf": AGENT.peer_block(CONF, A)}  # fmt: skip
    assert mine[B] == {**running, "conf": AGENT.peer_block(CONF, B)}


def test_a_record_is_written_once_per_change_and_not_at_all_without_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[str] = []
    store = AGENT.store

    def counted(file: str, text: str) -> None:
        writes.append(text)
        store(file, text)

    monkeypatch.setattr(AGENT, "STATE_DIR", tmp_path)
    monkeypatch.setattr(AGENT, "store", counted)
    with AGENT.record("r.json") as kept:
        kept["removed"] = ["inet t s 10.0.0.1"]
        kept.save()  # what is taken, before it is taken
    with AGENT.record("r.json") as kept:
        assert kept == {"removed": ["inet t s 10.0.0.1"]}
    with AGENT.record("r.json") as kept:
        kept["removed"] = []
    assert len(writes) == 2  # not again when the block ends as saved, nor for a record only read
    assert AGENT.json.loads((tmp_path / "r.json").read_text()) == {"removed": []}
