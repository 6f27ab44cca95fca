"""The hub agent reads WireGuard two ways — the UAPI socket of a userspace WireGuard, and `wg show dump`
for the kernel's — and both must say the same, on a real hub."""

from __future__ import annotations

import base64
import json
import os

import pytest

from responder.lab import Lab
from responder.lab.lab import AGENT
from responder.pep.transport import ENCRYPTION, HubTransport

pytestmark = pytest.mark.lab

COMPARE = f"""
import json, sys
sys.path.insert(0, {str(AGENT.parent)!r})
import responder_hub_agent as agent
print(json.dumps({{"uapi": agent.uapi_socket("wg0") is not None, "socket": agent.peers("wg0"),
                  "dump": agent.peers_from_dump("wg0")}}))
"""


async def test_the_uapi_socket_and_wg_dump_agree(lab: Lab) -> None:
    result = await lab.exec("hub1", "/usr/bin/python3", "-c", COMPARE)
    assert result.ok, result.stderr
    answer = json.loads(result.stdout)
    assert answer["socket"] == answer["dump"]
    assert {p["allowed_ips"][0] for p in answer["dump"].values()} == {"10.100.0.10/32", "10.100.0.20/32"}
    # With kernel WireGuard there is no socket and both readings are the dump; wireguard-go (this lab
    # where the kernel has no WireGuard) exercises the socket.
    assert isinstance(answer["uapi"], bool)


SELECTED = f"""
import json, sys
sys.path.insert(0, {str(AGENT.parent)!r})
import responder_hub_agent as agent
everyone = agent.peers("wg0")
one = sorted(everyone)[0]
print(json.dumps({{"everyone": everyone, "one": one, "socket": agent.peers("wg0", [one]),
                  "dump": agent.peers_from_dump("wg0", [one]), "none": agent.peers("wg0", [])}}))
"""


async def test_reading_back_only_the_peers_asked_for(lab: Lab) -> None:
    # A removal reads back just its peers, not the thousands a hub may hold: the same answer for them.
    result = await lab.exec("hub1", "/usr/bin/python3", "-c", SELECTED)
    assert result.ok, result.stderr
    answer = json.loads(result.stdout)
    one = answer["one"]
    assert len(answer["everyone"]) == 2
    assert answer["socket"] == answer["dump"] == {one: answer["everyone"][one]}
    assert answer["none"] == {}


ELEMENTS = f"""
import json, sys
sys.path.insert(0, {str(AGENT.parent)!r})
import responder_hub_agent as agent
print(json.dumps({{
    "present": agent.element_present("inet", "zerotrust", "admin_devices", "10.100.0.10"),
    "absent": agent.element_present("inet", "zerotrust", "admin_devices", "10.100.0.99"),
    "listed": sorted(agent.set_elements("inet", "zerotrust", "admin_devices")),
}}))
"""


async def test_an_element_is_read_back_alone(lab: Lab) -> None:
    result = await lab.exec("hub1", "/usr/bin/python3", "-c", ELEMENTS)
    assert result.ok, result.stderr
    answer = json.loads(result.stdout)
    assert "10.100.0.10" in answer["listed"]  # admin1, in the lab's baseline
    assert answer["present"] is True
    assert answer["absent"] is False


async def test_operations_on_different_state_run_at_once_and_the_same_state_in_order(lab: Lab) -> None:
    # The flow kill (conntrack, tens of ms; for 20 addresses, 40 calls and a dump) is asked first; the set
    # changes, on other state, do not wait for it, and they answer in the order asked (the delete after the
    # add: the element ends up absent).
    element = [{"set": "quarantine", "address": "10.100.0.77"}]
    requests = [
        {"id": 1, "op": "kill_flows", "addresses": [f"10.100.0.{n}" for n in range(200, 220)]},
        {"id": 2, "op": "elements", "table": "zerotrust", "add": element},
        {"id": 3, "op": "elements", "table": "zerotrust", "delete": element},
        {"id": 4, "op": "list_set", "table": "zerotrust", "set": "quarantine"},
    ]
    stdin = "".join(json.dumps(r) + "\n" for r in requests)
    result = await lab.exec("hub1", *_agent(lab), stdin=stdin, timeout=30)
    assert result.ok, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    order = [a["id"] for a in answers]
    assert sorted(order) == [1, 2, 3, 4] and all(a["ok"] for a in answers), answers
    assert order.index(2) < order.index(3) < order.index(4) < order.index(1)
    listed = next(a for a in answers if a["id"] == 4)["result"]["elements"]
    assert "10.100.0.77" not in listed


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _agent(lab: Lab) -> list[str]:
    """The agent as the lab's forced command runs it, with the hub's deny sets (the `quarantine` set)."""
    return ["/usr/bin/python3", str(AGENT), "--config", str(lab.node_dir("hub1") / "agent.json")]


async def test_a_removal_reports_the_state_before_it_and_reads_back_after_it(lab: Lab) -> None:
    # Read, remove and read back on one UAPI connection: the restore data is the state before the
    # removal, a key that was not there is said to be absent, and the peer is gone afterwards.
    present, absent = _key(), _key()
    # Enrolled by the hub's owner: the agent itself adds no peer it did not remove.
    enroll = ["wg", "set", "wg0", "peer", present, "allowed-ips", "10.100.0.231/32", "persistent-keepalive", "25"]
    await lab.exec("hub1", *enroll, check=True)
    requests = [
        {"id": 2, "op": "remove_peers", "interface": "wg0", "keys": [present, absent]},
        {"id": 3, "op": "peers", "interface": "wg0"},
    ]
    stdin = "".join(json.dumps(r) + "\n" for r in requests)
    result = await lab.exec("hub1", *_agent(lab), stdin=stdin, timeout=30)
    assert result.ok, result.stderr
    answers = {a["id"]: a for a in map(json.loads, result.stdout.splitlines())}
    assert all(a["ok"] for a in answers.values()), answers
    removal = answers[2]["result"]
    assert removal["restore"] == {present: {"allowed_ips": ["10.100.0.231/32"], "endpoint": None, "keepalive": 25}}
    assert removal["absent_before"] == [absent]
    assert removal["verified"] is True
    assert present not in {p["key"] for p in answers[3]["result"]["peers"]}


async def test_the_hub_connection_uses_aes_gcm(lab: Lab) -> None:
    transport = HubTransport(lab.inventory.hub("hub1"))
    try:
        conn = await transport.connection()
        assert conn.get_extra_info("send_cipher") == conn.get_extra_info("recv_cipher") == ENCRYPTION[0]
    finally:
        await transport.close()
