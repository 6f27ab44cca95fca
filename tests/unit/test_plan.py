"""A hub's plan: as few operations as possible, in steps the hub may run at once."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from responder.core.actions import Action, ActionType
from responder.core.identifiers import WireGuardKey
from responder.inventory import HubSpec, SshEndpoint
from responder.pep.plan import plan, steps
from tests.unit.test_hostile_values import AGENT, GOOD_KEY

HUB = HubSpec(
    name="hub1",
    ssh=SshEndpoint(host="198.18.1.1", user="root", host_key="ssh-ed25519 AAAA", client_key=Path("/k")),
    tunnel_network=ipaddress.ip_network("10.100.0.0/24"),
    address=ipaddress.ip_address("10.100.0.1"),
)
ADDRESS = ipaddress.ip_address("10.100.0.10")


def test_a_cut_off_closes_tier_and_tunnel_together_then_kills_the_flows() -> None:
    actions = [
        Action(ActionType.KILL_FLOWS, "hub1", address=ADDRESS),
        Action(ActionType.REMOVE_PEER, "hub1", peer_key=WireGuardKey(GOOD_KEY)),
        Action(ActionType.DELETE_ELEMENT, "hub1", address=ADDRESS, set_name="admin_devices"),
        Action(ActionType.QUARANTINE, "hub1", address=ADDRESS, set_name="quarantine", ttl_s=60),
    ]
    assert [[o.op for o in step] for step in steps(plan(HUB, actions))] == [
        ["elements", "remove_peers"],
        ["kill_flows"],
    ]
    assert steps(plan(HUB, actions[:1])) == [plan(HUB, actions[:1])]
    assert steps([]) == []


def test_the_agent_runs_every_operation_in_the_lane_of_the_state_it_changes() -> None:
    # An operation missing from the lanes would run beside those on the same state, in no set order.
    assert set(AGENT.LANES) == set(AGENT.OPS) - {"hello"}
    assert AGENT.LANES["elements"] != AGENT.LANES["remove_peers"] != AGENT.LANES["kill_flows"]
    assert AGENT.LANES["remove_peers"] == AGENT.LANES["revoke_keys"] == AGENT.LANES["add_peers"]
