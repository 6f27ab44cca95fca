"""Real faults on lab hubs, for the outage tests and for operators trying them by hand.

Each fault is made the way it happens on a real hub, never mocked: a partition drops the management
path's packets with nftables inside the hub's namespace, a restart kills real processes, a reboot
rebuilds the WireGuard interface with `wg-quick` from the hub's wg0.conf and reloads its ruleset file. The
read-backs look at the hub from its own namespace, not over SSH, so they hold even when the responder's
view of the hub is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from responder.lab.lab import Lab, LabError
from responder.lab.topology import MANAGEMENT_ADDRESS, Role

FAULT_TABLE = "responder_fault"
# Before the lab's own chains (priority filter = 0), so nothing there sees the dropped packets.
_FAULT_PRIORITY = -10
_AGENT_NAMES = ("responder_hub_agent.py", "responder-hub-agent")
_SSHD_ANSWERS_S = 10.0


def _partition_ruleset(*, answers_only: bool) -> str:
    requests = f"""
    chain input {{
        type filter hook input priority {_FAULT_PRIORITY}; policy accept;
        ip saddr {MANAGEMENT_ADDRESS} tcp dport 22 drop comment "partition: management path"
    }}"""
    # `table` then `delete table` first: one atomic transaction that replaces the table if it exists, so
    # partitioning twice is the same as once.
    return f"""\
table inet {FAULT_TABLE}
delete table inet {FAULT_TABLE}
table inet {FAULT_TABLE} {{{"" if answers_only else requests}
    chain output {{
        type filter hook output priority {_FAULT_PRIORITY}; policy accept;
        ip daddr {MANAGEMENT_ADDRESS} tcp sport 22 drop comment "partition: management path"
    }}
}}
"""


def _hub(lab: Lab, hub: str) -> str:
    if lab.topology.node(hub).role is not Role.HUB:
        raise LabError(f"{hub} is not a hub")
    return hub


async def partition(lab: Lab, hub: str, *, answers_only: bool = False) -> None:
    """Cut the hub's SSH management path in both directions: packets from the management address to
    port 22 and from port 22 back to it vanish (dropped, not rejected), established connections included.
    The hub's tunnels keep working. Idempotent.

    `answers_only`: drop only what the hub sends back. Requests on an established connection still arrive
    and run; their answers never come: the outcome the responder cannot know without reading back."""
    ruleset = _partition_ruleset(answers_only=answers_only)
    await lab.exec(_hub(lab, hub), "nft", "-f", "-", stdin=ruleset, check=True)


async def heal(lab: Lab, hub: str) -> None:
    """Undo `partition`: the management path carries packets again. Idempotent."""
    gone = f"table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n"  # no error when it is not there
    await lab.exec(_hub(lab, hub), "nft", "-f", "-", stdin=gone, check=True)


@contextlib.asynccontextmanager
async def partitioned(lab: Lab, hub: str, *, answers_only: bool = False) -> AsyncIterator[None]:
    """The hub partitioned for the block, healed after it whatever happens."""
    await partition(lab, hub, answers_only=answers_only)
    try:
        yield
    finally:
        await heal(lab, hub)


def _processes(lab: Lab, hub: str) -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process in the hub's network namespace."""
    netns = lab.netns_path(hub).stat()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ns = (proc / "ns" / "net").stat()
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue  # exited meanwhile
        if (ns.st_dev, ns.st_ino) == (netns.st_dev, netns.st_ino) and argv[0]:
            yield int(proc.name), argv[:-1] if argv[-1] == "" else argv


def _is_agent(argv: list[str]) -> bool:
    # The interpreter running the agent, not the shell sshd starts the forced command with.
    return Path(argv[0]).name.startswith("python") and any(Path(a).name in _AGENT_NAMES for a in argv[1:])


def _is_sshd(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/exe").resolve().name in {"sshd", "sshd-session"}
    except OSError:
        return False


async def _wait_gone(pids: set[int], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while any(_running(p) for p in pids):
        if time.monotonic() > deadline:
            raise LabError(f"processes {sorted(p for p in pids if _running(p))} did not exit")
        await asyncio.sleep(0.02)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _signal(pids: set[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


async def restart_sshd(lab: Lab, hub: str) -> None:
    """Restart the hub's sshd: the listener and every connection's sshd get SIGTERM, so established SSH
    connections end (the hub agents on them see their input close); then sshd starts again with the same
    configuration and host key. Returns once it answers from the management node."""
    sessions = {pid for pid, _ in _processes(lab, _hub(lab, hub)) if _is_sshd(pid)}
    await lab.stop(hub, "sshd")
    _signal(sessions, signal.SIGTERM)
    await _wait_gone(sessions)
    await lab.start_sshd(hub)
    await _wait_answers(lab, hub)


async def _wait_answers(lab: Lab, hub: str) -> None:
    address = str(lab.topology.node(hub).underlay)
    deadline = time.monotonic() + _SSHD_ANSWERS_S
    with lab.namespace("soc") as soc:
        while True:
            try:
                async with asyncio.timeout(1):
                    sock = await soc.connect(address, 22)
            except OSError:
                if time.monotonic() > deadline:
                    raise LabError(f"sshd on {hub} does not answer after its restart") from None
                await asyncio.sleep(0.05)
            else:
                sock.close()
                return


def agents(lab: Lab, hub: str) -> set[int]:
    """The pids of the hub agents running on the hub (the forced command of the responder's SSH key, or
    the agent run through sudo)."""
    return {pid for pid, argv in _processes(lab, _hub(lab, hub)) if _is_agent(argv)}


async def kill_agents(lab: Lab, hub: str) -> int:
    """SIGKILL every hub agent running on the hub; returns how many there were. Their SSH channels close
    without an answer."""
    agents_now = agents(lab, hub)
    _signal(agents_now, signal.SIGKILL)
    await _wait_gone(agents_now)
    return len(agents_now)


async def reboot(lab: Lab, hub: str) -> None:
    """The hub as after a reboot: `wg0` rebuilt by `wg-quick` from the hub's wg0.conf, the `zerotrust`
    table reloaded from its ruleset file, connection tracking empty. What was changed at runtime only is
    undone (a peer removed by hand is back, a quarantine added by hand gone); what the hub agent changed
    stays, for it changed the files too. sshd and a partition are left as they are: this is about the
    enforcement state the responder must re-assert."""
    name = _hub(lab, hub)
    await lab.restart_wireguard(name)
    await lab.exec(name, "nft", "-f", str(lab.ruleset_file(name)), check=True)
    await lab.exec(name, "conntrack", "-F", check=False)  # empty already when nothing was tracked


async def hub_peers(lab: Lab, hub: str) -> set[str]:
    """The public keys of the peers on the hub's wg0, read in the hub itself."""
    result = await lab.exec(_hub(lab, hub), "wg", "show", "wg0", "peers", check=True)
    return set(result.stdout.split())


async def hub_set(lab: Lab, hub: str, set_name: str) -> set[str]:
    """The elements of `inet zerotrust <set_name>` on the hub, read in the hub itself (addresses as text;
    a timeout, if any, is not part of the element)."""
    result = await lab.exec(_hub(lab, hub), "nft", "-j", "list", "set", "inet", "zerotrust", set_name, check=True)
    elements: set[str] = set()
    for item in json.loads(result.stdout)["nftables"]:
        for element in item.get("set", {}).get("elem", []):
            value = element["elem"]["val"] if isinstance(element, dict) else element
            elements.add(str(value))
    return elements


@dataclass(frozen=True, slots=True)
class HubState:
    """The hubs as they are, read inside each hub (not over SSH): their peers, and the sets asked for."""

    peers: dict[str, set[str]]
    sets: dict[tuple[str, str], set[str]]

    @classmethod
    async def read(cls, lab: Lab, hubs: Sequence[str], set_names: Iterable[tuple[str, str]]) -> HubState:
        """`set_names`: (hub, set) pairs."""
        peers = {h: await hub_peers(lab, h) for h in hubs}
        sets = {(h, s): await hub_set(lab, h, s) for h, s in sorted(set(set_names))}
        return cls(peers, sets)

    def in_effect(self, action: Mapping[str, Any]) -> bool | None:
        """Whether the hub shows a journaled action's effect (its JSON form); None for one that leaves no
        state (kill_flows)."""
        kind, hub = action["type"], action["hub"]
        if kind in {"remove_peer", "rotate_key"}:
            return action["peer_key"] not in self.peers[hub]
        if kind == "delete_element":
            return action["address"] not in self.sets[(hub, action["set"])]
        if kind in {"quarantine", "add_element"}:
            return action["address"] in self.sets[(hub, action["set"])]
        return None


async def agent_changes(lab: Lab, hub: str) -> list[dict[str, Any]]:
    """The hub agent's own log of irreversible changes (`changes.log`, one JSON object a line), oldest
    first; empty when it never made one."""
    log = lab.node_dir(_hub(lab, hub)) / "agent-state" / "changes.log"
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


__all__ = [
    "FAULT_TABLE",
    "agent_changes",
    "agents",
    "heal",
    "hub_peers",
    "hub_set",
    "kill_agents",
    "partition",
    "partitioned",
    "reboot",
    "restart_sshd",
]
