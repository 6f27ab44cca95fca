"""Hostile values never reach a hub: neither through an Action (both modes build commands only from
Actions) nor through the hub agent's own request parsing."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responder.core.actions import Action, ActionType
from responder.core.identifiers import WireGuardKey
from responder.inventory import HubSpec, SshEndpoint
from responder.pep.plan import plan

AGENT_PATH = Path(__file__).resolve().parents[2] / "deploy" / "hub" / "responder_hub_agent.py"
GOOD_KEY = "JfQ7FIatlaE5jj7rPYO8QBABX8yb7bNbQy4AKY1QIfc="
NASTY = ["'", '"', ";", "\n", "$(id)", "`id`", "{", "}", "|", "&", " ", "\\", "*", "é", "\u202e", "\x00", "%", "#"]

hostile = st.one_of(
    st.sampled_from(["x; flush ruleset", "$(reboot)", "a\nb", "{ 1.2.3.4 }", "10.0.0.1; id", "fe80::1%$(id)"]),
    st.builds(lambda a, b, c: a + b + c, st.text(max_size=10), st.sampled_from(NASTY), st.text(max_size=10)),
)


def _load_agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location("responder_hub_agent", AGENT_PATH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["responder_hub_agent"] = module
    spec.loader.exec_module(module)
    return module


AGENT = _load_agent()


@pytest.fixture(autouse=True)
def nothing_may_run(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a command would have run: {args}")

    monkeypatch.setattr(AGENT, "run", refuse)
    monkeypatch.setattr(AGENT, "nft_cmd", refuse)


@settings(max_examples=500, deadline=None)
@given(hostile)
def test_hostile_keys_cannot_make_an_action(value: str) -> None:
    with pytest.raises(ValueError):
        Action(ActionType.REMOVE_PEER, "hub1", peer_key=WireGuardKey(value))


@settings(max_examples=500, deadline=None)
@given(hostile)
def test_hostile_set_hub_and_address_values_cannot_make_an_action(value: str) -> None:
    with pytest.raises(ValueError):
        Action(ActionType.DELETE_ELEMENT, "hub1", address=ipaddress.ip_address(value), set_name="admin_devices")
    with pytest.raises(ValueError):
        Action(ActionType.DELETE_ELEMENT, "hub1", address=ipaddress.ip_address("10.0.0.1"), set_name=value)
    with pytest.raises(ValueError):
        Action(ActionType.KILL_FLOWS, value, address=ipaddress.ip_address("10.0.0.1"))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(ActionType)))
def test_every_planned_argument_is_a_validated_token(kind: ActionType) -> None:
    hub = HubSpec(
        name="hub1",
        ssh=SshEndpoint(host="198.18.1.1", user="root", host_key="ssh-ed25519 AAAA", client_key=Path("/k")),
        tunnel_network=ipaddress.ip_network("10.100.0.0/24"),
        address=ipaddress.ip_address("10.100.0.1"),
    )
    action = Action(
        kind,
        "hub1",
        address=ipaddress.ip_address("10.100.0.10"),
        set_name="admin_devices",
        peer_key=WireGuardKey(GOOD_KEY),
        ttl_s=60,
    )
    for operation in plan(hub, [action]):
        for token in json.dumps(operation.args).replace('"', " ").replace(",", " ").split():
            assert shlex.quote(token.strip("[]{}:")) in {token.strip("[]{}:"), "''"}


OPS = {
    "remove_peers": lambda v: {"interface": "wg0", "keys": [v]},
    "revoke_keys": lambda v: {"interface": v, "keys": [GOOD_KEY]},
    "add_peers": lambda v: {"interface": "wg0", "peers": [{"key": GOOD_KEY, "allowed_ips": [v]}]},
    "elements": lambda v: {"table": "zerotrust", "delete": [{"set": v, "address": "10.100.0.10"}]},
    "elements_address": lambda v: {"table": "zerotrust", "add": [{"set": "quarantine", "address": v}]},
    "elements_table": lambda v: {"table": v, "add": []},
    "elements_comment": lambda v: {
        "table": "zerotrust",
        "add": [{"set": "quarantine", "address": "10.0.0.1", "timeout": 5, "comment": v + "$(x)"}],
    },
    "list_set": lambda v: {"table": "zerotrust", "set": v},
    "kill_flows": lambda v: {"addresses": [v]},
    "peers": lambda v: {"interface": v},
}


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(OPS)), hostile)
def test_the_agent_refuses_hostile_arguments_before_anything_runs(op: str, value: str) -> None:
    request = {"id": 7, "op": "elements" if op.startswith("elements") else op, **OPS[op](value)}
    answer = AGENT.handle(json.dumps(request))
    assert answer["ok"] is False
    assert answer["error"].startswith("invalid:")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_the_agent_answers_garbage_with_an_error_line(line: str) -> None:
    answer = AGENT.handle(line)
    assert set(answer) >= {"id", "ok"}
    assert answer["ok"] is False or json.loads(line).get("op") == "hello"
