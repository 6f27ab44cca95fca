"""Turning actions for one hub into as few hub operations as possible, in a safe order. Pure.

Order: set changes (a quarantine or tier removal stops new flows) and peer removal or key revocation
(the tunnel stops) together, then the flow kill (old flows die after both, so they cannot come back
through either). Containment is the set change and the peer removal; the flow kill, the slowest
operation (conntrack), comes last so it does not delay them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from responder.core.actions import Action, ActionType
from responder.inventory import HubSpec


@dataclass
class Operation:
    op: str
    args: dict[str, Any]
    actions: list[Action] = field(default_factory=list)


def plan(hub: HubSpec, actions: list[Action]) -> list[Operation]:
    elements = Operation("elements", {"family": "inet", "table": hub.table, "add": [], "delete": []})
    flows = Operation("kill_flows", {"addresses": []})
    remove = Operation("remove_peers", {"interface": hub.interface, "keys": []})
    revoke = Operation("revoke_keys", {"interface": hub.interface, "keys": []})
    for a in actions:
        if a.hub != hub.name:
            raise ValueError(f"action for {a.hub} planned on {hub.name}")
        if a.type is ActionType.DELETE_ELEMENT:
            elements.args["delete"].append({"set": a.set_name, "address": str(a.address)})
            elements.actions.append(a)
        elif a.type in {ActionType.QUARANTINE, ActionType.ADD_ELEMENT}:
            item: dict[str, Any] = {"set": a.set_name, "address": str(a.address)}
            if a.ttl_s:
                item["timeout"] = a.ttl_s
            elements.args["add"].append(item)
            elements.actions.append(a)
        elif a.type is ActionType.KILL_FLOWS:
            flows.args["addresses"].append(str(a.address))
            flows.actions.append(a)
        elif a.type is ActionType.REMOVE_PEER:
            remove.args["keys"].append(str(a.peer_key))
            remove.actions.append(a)
        elif a.type is ActionType.ROTATE_KEY:
            revoke.args["keys"].append(str(a.peer_key))
            revoke.actions.append(a)
    return [o for o in (elements, remove, revoke, flows) if o.actions]


def steps(operations: list[Operation]) -> list[list[Operation]]:
    """The plan as steps: the operations of a step may run at once on the hub (they change different
    state, and neither protects the other); a step is sent once the one before it has been answered."""
    contain = [o for o in operations if o.op != "kill_flows"]
    then = [o for o in operations if o.op == "kill_flows"]
    return [step for step in (contain, then) if step]


def undo_operation(hub: HubSpec, action: Action, restore: dict[str, Any] | None) -> Operation | None:
    """The operation that takes `action` back; None when there is nothing to take back (killed flows
    re-establish by themselves). Raises for what cannot be undone."""
    if action.type is ActionType.ROTATE_KEY:
        raise ValueError("key rotation is irreversible: the device must enroll a new key")
    if action.type is ActionType.KILL_FLOWS:
        return None
    elements = {"family": "inet", "table": hub.table}
    item = {"set": action.set_name, "address": str(action.address)}
    if action.type is ActionType.DELETE_ELEMENT:
        return Operation("elements", {**elements, "add": [item], "delete": []}, [action])
    if action.type in {ActionType.QUARANTINE, ActionType.ADD_ELEMENT}:
        return Operation("elements", {**elements, "add": [], "delete": [item]}, [action])
    if restore is None or "allowed_ips" not in restore:
        raise ValueError("cannot restore the peer: no record of its allowed IPs")
    peer = {"key": str(action.peer_key), "allowed_ips": restore["allowed_ips"]}
    if restore.get("endpoint"):
        peer["endpoint"] = restore["endpoint"]
    if restore.get("keepalive"):
        peer["keepalive"] = restore["keepalive"]
    return Operation("add_peers", {"interface": hub.interface, "peers": [peer]}, [action])
