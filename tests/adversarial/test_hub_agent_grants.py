"""A compromised responder account speaks to the real hub agent over the real SSH forced command: it can
take access away and put back what the agent took, never grant anything else; and no request line,
however malformed, stops the agent."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator

import pytest

from responder.lab import Lab
from responder.lab.lab import AGENT
from responder.pep.errors import HubRefused
from responder.pep.transport import HubTransport

pytestmark = pytest.mark.lab


@pytest.fixture
async def agent(lab: Lab) -> AsyncIterator[HubTransport]:
    transport = HubTransport(lab.inventory.hub("hub1"))  # the lab's hub1: agent mode, forced command
    try:
        yield transport
    finally:
        await transport.close()


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def _peers(lab: Lab) -> dict[str, str]:
    result = await lab.exec("hub1", "wg", "show", "wg0", "allowed-ips", check=True)
    return dict(line.split("\t", 1) for line in result.stdout.splitlines())


async def _elements(lab: Lab, set_name: str) -> str:
    return (await lab.exec("hub1", "nft", "list", "set", "inet", "zerotrust", set_name, check=True)).stdout


def _admin1_key(lab: Lab) -> str:
    return str(next(p for p in lab.inventory.peers if p.name == "admin1").public_key)


async def test_a_peer_the_agent_did_not_remove_cannot_be_added(lab: Lab, agent: HubTransport) -> None:
    intruder = _key()
    peer = {"key": intruder, "allowed_ips": ["0.0.0.0/0"]}
    with pytest.raises(HubRefused, match="only what was removed can be put back"):
        await agent.call_agent("add_peers", {"interface": "wg0", "peers": [peer]})
    assert intruder not in await _peers(lab)


async def test_a_removed_peer_comes_back_only_as_it_was(lab: Lab, agent: HubTransport) -> None:
    admin1 = _admin1_key(lab)
    removal = await agent.call_agent("remove_peers", {"interface": "wg0", "keys": [admin1]})
    was = removal["restore"][admin1]
    try:
        assert admin1 not in await _peers(lab)
        wider = {**was, "key": admin1, "allowed_ips": ["0.0.0.0/0"]}
        with pytest.raises(HubRefused, match="only what was removed can be put back"):
            await agent.call_agent("add_peers", {"interface": "wg0", "peers": [wider]})
        assert admin1 not in await _peers(lab)
    finally:
        back = await agent.call_agent("add_peers", {"interface": "wg0", "peers": [{**was, "key": admin1}]})
    assert back["verified"] is True
    assert (await _peers(lab))[admin1] == "10.100.0.10/32"
    # Asking again is a retry, answered as done; but the record is spent: widening it is still refused.
    again = await agent.call_agent("add_peers", {"interface": "wg0", "peers": [{**was, "key": admin1}]})
    assert again["verified"] is True
    with pytest.raises(HubRefused, match="only what was removed can be put back"):
        await agent.call_agent(
            "add_peers", {"interface": "wg0", "peers": [{**was, "key": admin1, "allowed_ips": ["10.100.0.0/24"]}]}
        )
    assert (await _peers(lab))[admin1] == "10.100.0.10/32"


async def test_only_a_deny_set_of_the_hub_configuration_takes_new_elements(lab: Lab, agent: HubTransport) -> None:
    elements = {"family": "inet", "table": "zerotrust"}
    for set_name in ("admin_devices", "app_servers"):
        with pytest.raises(HubRefused, match="not a deny set"):
            await agent.call_agent(
                "elements", {**elements, "add": [{"set": set_name, "address": "10.100.0.66"}], "delete": []}
            )
        assert "10.100.0.66" not in await _elements(lab, set_name)
    quarantined = await agent.call_agent(
        "elements", {**elements, "add": [{"set": "quarantine", "address": "10.100.0.66", "timeout": 60}]}
    )
    assert quarantined["verified"] is True
    lifted = await agent.call_agent(
        "elements", {**elements, "delete": [{"set": "quarantine", "address": "10.100.0.66"}]}
    )
    assert lifted["verified"] is True


async def test_a_deleted_element_goes_back_into_its_own_set_only(lab: Lab, agent: HubTransport) -> None:
    elements = {"family": "inet", "table": "zerotrust"}
    admin1 = {"set": "admin_devices", "address": "10.100.0.10"}
    await agent.call_agent("elements", {**elements, "delete": [admin1]})
    try:
        with pytest.raises(HubRefused, match="not a deny set"):
            await agent.call_agent("elements", {**elements, "add": [{"set": "app_servers", "address": "10.100.0.10"}]})
        assert "10.100.0.10" not in await _elements(lab, "app_servers")
    finally:
        back = await agent.call_agent("elements", {**elements, "add": [admin1]})
    assert back["verified"] is True
    assert "10.100.0.10" in await _elements(lab, "admin_devices")


async def test_a_quarantine_the_agent_did_not_set_is_not_lifted_by_it(lab: Lab, agent: HubTransport) -> None:
    # The hub's owner quarantined this address by hand: the responder's account must not release it.
    await lab.exec("hub1", "nft", "add", "element", "inet", "zerotrust", "quarantine", "{ 10.100.0.67 }", check=True)
    try:
        with pytest.raises(HubRefused, match="not added to deny set quarantine by this agent"):
            await agent.call_agent(
                "elements",
                {"table": "zerotrust", "delete": [{"set": "quarantine", "address": "10.100.0.67"}]},
            )
        assert "10.100.0.67" in await _elements(lab, "quarantine")
    finally:
        await lab.exec("hub1", "nft", "delete", "element", "inet", "zerotrust", "quarantine", "{ 10.100.0.67 }")


async def test_malformed_requests_get_an_error_answer_and_the_agent_goes_on(lab: Lab) -> None:
    lines = [
        json.dumps({"id": 1, "op": ["x"]}),
        json.dumps({"id": 2, "op": {"a": 1}}),
        "[" * 200_000 + "]" * 200_000,
        '{"id": 3, "op": "elements", "table": "zerotrust", "add": ' + "[" * 100_000 + "]" * 100_000 + "}",
        json.dumps({"id": 4, "op": "elements", "family": ["inet"], "table": "zerotrust"}),
        json.dumps({"id": 5, "op": "list_set", "family": {"x": 1}, "table": "zerotrust", "set": "quarantine"}),
        json.dumps({"id": 6, "op": "elements", "table": "zerotrust", "add": [{"set": "quarantine", "address": ["x"]}]}),
        json.dumps({"id": 7, "op": "add_peers", "interface": "wg0", "peers": [{"key": {"k": 1}}]}),
        json.dumps({"id": True, "op": "hello"}),
        '{"id": 8, "op": "hello", "pad": "' + "x" * 5_000_000 + '"}',
        json.dumps({"id": 9, "op": "hello"}),
    ]
    stdin = "".join(line + "\n" for line in lines)
    result = await lab.exec("hub1", "/usr/bin/python3", str(AGENT), stdin=stdin, timeout=60)
    assert result.ok, result.stderr[-2000:]
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == len(lines), answers
    *refused, hello = answers
    assert all(a["ok"] is False and a["error"] for a in refused), refused
    assert any("too large" in a["error"] for a in refused)
    assert hello["id"] == 9 and hello["ok"] is True and "elements" in hello["result"]["ops"]
