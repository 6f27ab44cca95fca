"""The hub operations, three ways: the hub agent over one persistent channel; agentless through sudo,
one run of the root-owned hub agent per batch with its requests on stdin; or, agentless as root, plain
commands with one exec channel each. All take the same operation names and arguments and answer the
same shape, including `verified` from reading the state back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Protocol

from responder.pep.errors import HubError, HubRefused
from responder.pep.transport import HubTransport
from responder.pep.wgdump import parse_peer_fields, parse_set

REVOKED_DIR = "/var/lib/responder-hub"
HUB_AGENT = "/usr/local/sbin/responder-hub-agent"
"""Where deploy/hub/README.md installs the agent; the sudoers rule allows it with no arguments."""

# `wg show IF <field>` forms carry no private or preshared key, unlike `dump` (whose first line is the
# interface's private key): the responder never receives the hub's key.
PEER_FIELDS = ("allowed-ips", "endpoints", "persistent-keepalive", "latest-handshakes", "transfer")
RESTORE_FIELDS = ("allowed-ips", "endpoints", "persistent-keepalive")


class Backend(Protocol):
    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]: ...

    async def call_many(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any] | HubError]:
        """Each request's answer, or the error of that request alone."""
        ...


class AgentBackend:
    def __init__(self, transport: HubTransport) -> None:
        self._transport = transport

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        return await self._transport.call_agent(op, args)

    async def call_many(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any] | HubError]:
        return list(await self._transport.call_agent_many(requests))


class SudoAgentBackend:
    """Agentless with a non-root account: every batch is one `sudo -n` run of the root-owned hub agent, its
    requests one JSON line each on stdin. The sudoers rule (deploy/hub/sudoers.responder) allows exactly
    that command with no arguments, so the account reaches root only through the agent's validation and
    its rule of putting back only what it took away."""

    def __init__(self, transport: HubTransport) -> None:
        self._t = transport

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        (answer,) = await self.call_many([(op, args)])
        if isinstance(answer, HubError):
            raise answer
        return answer

    async def call_many(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any] | HubError]:
        lines = "".join(json.dumps({"id": n, "op": op, **args}) + "\n" for n, (op, args) in enumerate(requests))
        status, out, err = await self._t.run(["sudo", "-n", HUB_AGENT], lines)
        answers: dict[int, dict[str, Any]] = {}
        for line in out.splitlines():
            try:
                answer = json.loads(line)
            except ValueError:
                continue
            if isinstance(answer, dict) and isinstance(answer.get("id"), int):
                answers[answer["id"]] = answer
        results: list[dict[str, Any] | HubError] = []
        for n, (op, _) in enumerate(requests):
            answer = answers.get(n)
            if answer is None:
                cause = err.strip() or f"exit status {status}"
                results.append(HubRefused(self._t.name, f"{op}: sudo -n {HUB_AGENT}: {cause}"))
            elif answer.get("ok"):
                results.append(answer.get("result", {}))
            else:
                results.append(HubRefused(self._t.name, f"{op}: {answer.get('error', 'refused')}"))
        return results


class CommandBackend:
    """Agentless as root: `wg`, `nft` and `conntrack` run directly, for hubs where nothing can be installed.
    Every value in an argv comes from a validated Action. (A non-root account goes through
    SudoAgentBackend: a sudoers rule for these commands themselves cannot be made narrow.)"""

    def __init__(self, transport: HubTransport) -> None:
        self._t = transport

    async def _run(self, *argv: str, stdin: str | None = None, ok: tuple[int, ...] = (0,)) -> str:
        status, out, err = await self._t.run(list(argv), stdin)
        if status not in ok:
            raise HubRefused(self._t.name, f"{argv[0]} {argv[1] if len(argv) > 1 else ''}: {err.strip()}")
        return out

    async def _peers(self, interface: str, fields: Sequence[str] = PEER_FIELDS) -> dict[str, dict[str, Any]]:
        # Each field is its own exec channel; they run at once within the transport's channel bound.
        outputs = await asyncio.gather(*(self._run("wg", "show", interface, f) for f in fields))
        return parse_peer_fields(dict(zip(fields, outputs, strict=True)))

    async def _elements(self, family: str, table: str, name: str) -> set[str]:
        return parse_set(json.loads(await self._run("nft", "-j", "list", "set", family, table, name)))

    async def call_many(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any] | HubError]:
        out: list[dict[str, Any] | HubError] = []
        for op, args in requests:  # one command after another, in the order asked
            try:
                out.append(await self.call(op, args))
            except HubError as exc:
                out.append(exc)
        return out

    async def call(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"_op_{op}", None)
        if handler is None:
            raise HubRefused(self._t.name, f"unknown operation {op}")
        result: dict[str, Any] = await handler(args)
        return result

    async def _op_peers(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"peers": list((await self._peers(a["interface"])).values())}

    async def _op_remove_peers(self, a: dict[str, Any]) -> dict[str, Any]:
        interface, keys = a["interface"], a["keys"]
        before = await self._peers(interface, RESTORE_FIELDS)
        argv = ["wg", "set", interface]
        for k in keys:
            argv += ["peer", k, "remove"]
        await self._run(*argv)
        after = await self._peers(interface, ("allowed-ips",))
        restore = {k: {f: before[k][f] for f in ("allowed_ips", "endpoint", "keepalive")} for k in keys if k in before}
        return {
            "restore": restore,
            "absent_before": [k for k in keys if k not in before],
            "verified": all(k not in after for k in keys),
        }

    async def _op_revoke_keys(self, a: dict[str, Any]) -> dict[str, Any]:
        result = await self._op_remove_peers(a)
        lines = "".join(f"{k}\n" for k in a["keys"])
        await self._run("mkdir", "-p", REVOKED_DIR)
        await self._run("tee", "-a", f"{REVOKED_DIR}/{a['interface']}.revoked", stdin=lines)
        return result

    async def _op_revoked(self, a: dict[str, Any]) -> dict[str, Any]:
        listing = await self._run("cat", f"{REVOKED_DIR}/{a['interface']}.revoked", ok=(0, 1))
        return {"keys": sorted(set(listing.split()))}

    async def _op_add_peers(self, a: dict[str, Any]) -> dict[str, Any]:
        interface = a["interface"]
        denied = set((await self._run("cat", f"{REVOKED_DIR}/{interface}.revoked", ok=(0, 1))).split())
        wanted = {p["key"] for p in a["peers"]}
        if denied & wanted:
            raise HubRefused(self._t.name, f"revoked keys cannot be added back: {sorted(denied & wanted)}")
        argv = ["wg", "set", interface]
        for p in a["peers"]:
            argv += ["peer", p["key"], "allowed-ips", ",".join(p["allowed_ips"])]
            if p.get("endpoint"):
                argv += ["endpoint", p["endpoint"]]
            if p.get("keepalive"):
                argv += ["persistent-keepalive", str(p["keepalive"])]
        await self._run(*argv)
        after = await self._peers(interface, ("allowed-ips",))
        return {"verified": all(k in after for k in wanted)}

    async def _op_elements(self, a: dict[str, Any]) -> dict[str, Any]:
        family, table = a.get("family", "inet"), a["table"]
        commands: list[dict[str, Any]] = []
        touched: dict[str, tuple[set[str], set[str]]] = {}
        for item in a.get("delete", []):
            elem = {"family": family, "table": table, "name": item["set"], "elem": [item["address"]]}
            commands += [{"add": {"element": elem}}, {"delete": {"element": elem}}]  # idempotent on nft 1.0.6
            touched.setdefault(item["set"], (set(), set()))[1].add(item["address"])
        for item in a.get("add", []):
            plain = {"family": family, "table": table, "name": item["set"], "elem": [item["address"]]}
            value: Any = item["address"]
            if item.get("timeout"):
                value = {"elem": {"val": item["address"], "timeout": item["timeout"]}}
                commands += [{"add": {"element": plain}}, {"delete": {"element": plain}}]
            commands.append({"add": {"element": {**plain, "elem": [value]}}})
            touched.setdefault(item["set"], (set(), set()))[0].add(item["address"])
        if commands:
            await self._run("nft", "-j", "-f", "-", stdin=json.dumps({"nftables": commands}))
        verified = True
        for name, (added, deleted) in touched.items():
            now = await self._elements(family, table, name)
            verified = verified and added <= now and not (deleted - added) & now
        return {"verified": verified, "commands": len(commands)}

    async def _op_list_set(self, a: dict[str, Any]) -> dict[str, Any]:
        return {"elements": sorted(await self._elements(a.get("family", "inet"), a["table"], a["set"]))}

    async def _op_kill_flows(self, a: dict[str, Any]) -> dict[str, Any]:
        remaining: dict[str, int] = {}
        for address in a["addresses"]:
            for direction in ("-s", "-d"):
                await self._run("conntrack", "-D", direction, address, ok=(0, 1))  # 1: nothing matched
            count = 0
            for direction in ("-s", "-d"):
                listing = await self._run("conntrack", "-L", direction, address, ok=(0, 1))
                count += sum(1 for line in listing.splitlines() if line.strip())
            remaining[address] = count
        return {"remaining": remaining, "verified": not any(remaining.values())}
