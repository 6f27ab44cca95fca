"""Build, inspect and tear down the lab: real hubs and peers in network namespaces.

Every node is a network namespace (`<prefix>-<node>`) plus a private mount namespace in which
/run/wireguard is the node's own directory, so several wireguard-go instances named `wg0` do not
collide on their control sockets and `wg` inside a node talks to that node's interface. A hub is
configured as a real one is: its own /etc/wireguard holds a `wg0.conf` that `wg-quick up wg0` loads, and
its ruleset file ends with the hub agent's include, so `nft -f` of it is the hub's firewall reload. The nodes
hang off a bridge in a switch namespace (`<prefix>-sw`). Nothing is ever created in the machine's root
network namespace: links are created directly inside the lab's namespaces (`ip -n`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from responder.core.identifiers import WireGuardKey
from responder.inventory import Inventory
from responder.lab.inventory import topology_inventory
from responder.lab.process import CommandError, Result, run
from responder.lab.ruleset import hub_ruleset
from responder.lab.sshd import authorized_keys, sshd_config
from responder.lab.topology import (
    KEEPALIVE_S,
    MANAGEMENT_ADDRESS,
    UNDERLAY,
    WG_PORT,
    Check,
    Expect,
    Node,
    Role,
    Topology,
    tunnel_network,
)
from responder.lab.wgconf import PeerEntry, hub_config, with_running_peers
from responder.netns import Namespace

STATE_ROOT = Path("/run/responder-lab")
NETNS_DIR = Path("/run/netns")
WG_RUN_DIR = Path("/run/wireguard")
WG_CONF_DIR = Path("/etc/wireguard")  # a hub's own, bound over this path inside the hub only
AGENT_STATE_DIR = Path("/var/lib/responder-hub")
AGENT = Path(__file__).resolve().parents[2] / "deploy" / "hub" / "responder_hub_agent.py"
SUDOERS_RULE = AGENT.parent / "sudoers.responder"
SUDO_ACCOUNT = "responder"  # the account the shipped sudoers rule names
SUDO_UID = 64999
AGENT_CONFIG_DIR = Path("/etc/responder-hub")
SSHD_PRIVSEP_DIR = Path("/run/sshd")
REQUIRED_TOOLS = ("ip", "nsenter", "unshare", "mount", "umount", "nft", "wg", "ping", "ssh-keygen")
PROBE_TIMEOUT_S = 1.5


class LabError(RuntimeError):
    """The lab cannot be built or used; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Probe:
    check: Check
    outcome: str  # open | refused | dropped | reply | no reply | error: ...

    @property
    def passed(self) -> bool:
        if self.check.expect is Expect.ALLOW:
            return self.outcome in {"open", "reply"}
        return self.outcome in {"dropped", "no reply"}


@dataclass(frozen=True, slots=True)
class Handshake:
    hub: str
    peer: str
    age_s: float | None  # None: never


@dataclass(frozen=True, slots=True)
class LabStatus:
    prefix: str
    nodes: tuple[str, ...]
    missing: tuple[str, ...]
    handshakes: tuple[Handshake, ...]
    matrix: tuple[Probe, ...]

    @property
    def healthy(self) -> bool:
        return not self.missing and all(p.passed for p in self.matrix)

    def as_dict(self) -> dict[str, object]:
        return {
            "prefix": self.prefix,
            "healthy": self.healthy,
            "nodes": list(self.nodes),
            "missing": list(self.missing),
            "handshakes": [{"hub": h.hub, "peer": h.peer, "age_s": h.age_s} for h in self.handshakes],
            "matrix": [
                {
                    "check": p.check.label,
                    "expect": str(p.check.expect),
                    "outcome": p.outcome,
                    "passed": p.passed,
                    "why": p.check.why,
                }
                for p in self.matrix
            ],
        }


def _wg_keypair() -> tuple[str, str]:
    key = X25519PrivateKey.generate()
    private = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class Lab:
    """One lab, named by its prefix. Several labs (e.g. two test runs) coexist under distinct prefixes."""

    def __init__(
        self, prefix: str = "rsp", hubs: int = 1, state_root: Path = STATE_ROOT, *, bare: bool = False
    ) -> None:
        """`bare`: hubs as before enrollment: no inventory is written, no agent is installed, and root's
        authorized_keys on each hub holds only the bootstrap key (`bootstrap_key`), as `responder hubs
        enroll` finds a real hub."""
        self.topology = Topology(prefix, hubs)
        self.state_dir = state_root / prefix
        self.bare = bare
        self._daemons: list[subprocess.Popen[bytes]] = []

    @classmethod
    def existing(cls, prefix: str = "rsp", state_root: Path = STATE_ROOT) -> Lab:
        """The lab `prefix` as `lab up` left it."""
        meta = state_root / prefix / "lab.json"
        try:
            saved = json.loads(meta.read_text())
            hubs, bare = int(saved["hubs"]), bool(saved.get("bare", False))
        except (OSError, ValueError, KeyError) as exc:
            raise LabError(f"lab {prefix!r} is not up (no {meta}); run `responder lab up`") from exc
        return cls(prefix, hubs, state_root, bare=bare)

    # -- where things are ---------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.topology.prefix

    def netns_path(self, node: str) -> Path:
        self.topology.node(node)
        return NETNS_DIR / self.topology.netns(node)

    def node_dir(self, node: str) -> Path:
        return self.state_dir / node

    def _mount_ns(self, node: str) -> Path:
        return self.state_dir / "ns" / node

    @property
    def inventory_path(self) -> Path:
        return self.state_dir / "inventory.yaml"

    @property
    def inventory(self) -> Inventory:
        return Inventory.load(self.inventory_path)

    def nsenter(self, node: str, *argv: str) -> list[str]:
        """The argv that runs `argv` inside the node's network and mount namespaces."""
        return [
            "nsenter",
            f"--net={self.netns_path(node)}",
            f"--mount={self._mount_ns(node)}",
            "--",
            *argv,
        ]

    async def exec(
        self, node: str, *argv: str, stdin: str | None = None, timeout: float = 10.0, check: bool = False
    ) -> Result:
        """Run a command inside a node (fixed argv, no shell)."""
        return await run(*self.nsenter(node, *argv), stdin=stdin, timeout=timeout, check=check)

    def namespace(self, node: str) -> Namespace:
        """Open sockets from inside a node's network namespace. The caller closes it."""
        return Namespace(self.netns_path(node))

    # -- up -----------------------------------------------------------------------------------------

    def _preflight(self) -> None:
        if os.geteuid() != 0:
            raise LabError("the lab needs root: it creates network namespaces (run with sudo)")
        missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
        if missing:
            raise LabError(f"missing tools: {', '.join(missing)}; run `make install` as root")
        if shutil.which("wireguard-go") is None and not Path("/sys/module/wireguard").exists():
            raise LabError("no WireGuard: neither the kernel module nor wireguard-go; run `make install`")
        if not WG_CONF_DIR.is_dir() or shutil.which("wg-quick") is None:
            # The hubs' own directories are bound over it; the machine's is never written.
            raise LabError(f"no {WG_CONF_DIR} or no wg-quick: install wireguard-tools (`make install`)")

    def leftovers(self) -> list[str]:
        """Namespaces of this prefix that exist now (after a crash, or a lab that is up)."""
        if not NETNS_DIR.exists():
            return []
        return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(f"{self.prefix}-"))

    async def up(self) -> None:
        """Build the lab from scratch (removing leftovers of the same prefix first). On any failure the
        partial lab is torn down before the error is raised."""
        self._preflight()
        if self.leftovers() or self.state_dir.exists():
            await self.down()
        try:
            await self._build()
        except BaseException:
            with contextlib.suppress(Exception):
                await self.down()
            raise

    async def _build(self) -> None:
        topo = self.topology
        self.state_dir.mkdir(parents=True, mode=0o700)
        (self.state_dir / "lab.json").write_text(
            json.dumps({"prefix": topo.prefix, "hubs": topo.hubs, "bare": self.bare})
        )
        ns_dir = self.state_dir / "ns"
        ns_dir.mkdir()
        # Persistent mount namespaces are bound to files, which must sit on a private mount.
        await run("mount", "--bind", str(ns_dir), str(ns_dir))
        await run("mount", "--make-private", str(ns_dir))
        for shared in (WG_RUN_DIR, SSHD_PRIVSEP_DIR, AGENT_STATE_DIR, AGENT_CONFIG_DIR):
            shared.mkdir(mode=0o755, parents=True, exist_ok=True)

        sw = topo.switch
        await run("ip", "netns", "add", sw)
        await run("ip", "-n", sw, "link", "set", "lo", "up")
        await run("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        await run("ip", "-n", sw, "link", "set", "br0", "up")

        keys = {n.name: _wg_keypair() for n in topo.nodes if n.role is not Role.SOC}
        await self._gather(self._node(n) for n in topo.nodes)
        await self._soc()
        await self._gather(self._wireguard(n, keys) for n in topo.nodes if n.role is not Role.SOC)
        await self._gather(self._hub_services(n) for n in topo.nodes if n.role is Role.HUB)
        await self._gather(
            self._spawn(n.name, "echo", *_python_module("responder.lab.echo"), *map(str, n.listens))
            for n in topo.nodes
            if n.listens and n.role is not Role.HUB
        )
        if not self.bare:
            self._write_inventory(keys)
        await self._wait_ready()

    async def _gather(self, jobs: Iterable[Awaitable[None]]) -> None:
        # Bounded: each job runs a handful of short commands; more at once only contends on the lock
        # of the kernel's network namespace list.
        limit = asyncio.Semaphore(6)

        async def bounded(job: Awaitable[None]) -> None:
            async with limit:
                await job

        try:
            async with asyncio.TaskGroup() as tg:
                for job in jobs:
                    tg.create_task(bounded(job))
        except ExceptionGroup as group:
            # The first failure is the one to report; the others are usually its consequences.
            raise group.exceptions[0] from None

    async def _node(self, node: Node) -> None:
        ns, sw, name = self.topology.netns(node.name), self.topology.switch, node.name
        node_dir = self.node_dir(name)
        (node_dir / "wireguard").mkdir(parents=True, mode=0o700)
        (node_dir / "agent-state").mkdir(mode=0o700)
        if node.role is Role.HUB:
            (node_dir / "etc-wireguard").mkdir(mode=0o700)
        await run("ip", "netns", "add", ns)
        await run("ip", "-n", ns, "link", "set", "lo", "up")
        # Both ends are created inside lab namespaces: the root namespace never sees the link.
        await run("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", name, "netns", sw)
        await run("ip", "-n", sw, "link", "set", name, "master", "br0", "up")
        await run("ip", "-n", ns, "addr", "add", f"{node.underlay}/{UNDERLAY.prefixlen}", "dev", "eth0")
        await run("ip", "-n", ns, "link", "set", "eth0", "up")
        mnt = self._mount_ns(name)
        mnt.touch()
        await run("unshare", f"--mount={mnt}", "--propagation", "private", "true")
        netns = f"--net={self.netns_path(name)}"
        await run("nsenter", f"--mount={mnt}", "mount", "--bind", str(node_dir / "wireguard"), str(WG_RUN_DIR))
        await run("nsenter", f"--mount={mnt}", "mount", "--bind", str(node_dir / "agent-state"), str(AGENT_STATE_DIR))
        if node.role is Role.HUB:
            await run("nsenter", f"--mount={mnt}", "mount", "--bind", str(node_dir / "etc-wireguard"), str(WG_CONF_DIR))
        # sysfs shows the namespace of whoever mounts it: make /sys/class/net the node's own.
        await run("nsenter", netns, f"--mount={mnt}", "mount", "-t", "sysfs", "sysfs", "/sys")

    async def _soc(self) -> None:
        for key in (self.plain_key, self.agent_key):
            await run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"responder@{self.prefix}", "-f", str(key))

    @property
    def plain_key(self) -> Path:
        """The responder's key for agentless mode (plain commands)."""
        return self.node_dir("soc") / "id_ed25519"

    @property
    def bootstrap_key(self) -> Path:
        """The key a bare lab's hubs accept for root, from the management node: what enrollment starts from."""
        return self.plain_key

    def host_key(self, hub: str) -> Path:
        """The hub's SSH host public key (what an operator reads on the hub to check the fingerprint)."""
        return self.node_dir(hub) / "ssh_host_ed25519_key.pub"

    @property
    def agent_key(self) -> Path:
        """The responder's key for agent mode (forced command: the hub agent only)."""
        return self.node_dir("soc") / "id_agent"

    async def _wireguard(self, node: Node, keys: dict[str, tuple[str, str]]) -> None:
        name, topo = node.name, self.topology
        if node.role is Role.HUB:
            await self._hub_wireguard(node, keys)
            return
        key_file = self.node_dir(name) / "wg.key"
        _write_secret(key_file, keys[name][0] + "\n")
        await self.create_interface(name)
        hub = topo.hub_of(node)
        # A fixed port, so the hub's file can name each peer's endpoint: a hub brought up again reaches
        # its peers at once instead of waiting for them to time out their sessions and handshake again.
        argv = ["wg", "set", "wg0", "private-key", str(key_file), "listen-port", str(WG_PORT)]
        argv += ["peer", keys[hub.name][1], "endpoint", f"{hub.underlay}:{WG_PORT}"]
        argv += ["allowed-ips", str(tunnel_network(node.index)), "persistent-keepalive", str(KEEPALIVE_S)]
        await self.exec(name, *argv, check=True)

    async def _hub_wireguard(self, hub: Node, keys: dict[str, tuple[str, str]]) -> None:
        """The hub's wg0.conf, as its owner writes it, and `wg-quick up wg0` from it."""
        assert hub.tunnel is not None  # noqa: S101 - every hub has a tunnel address
        peers = [
            PeerEntry(
                p.name, keys[p.name][1], (f"{p.tunnel}/32",), endpoint=f"{p.underlay}:{WG_PORT}", keepalive=KEEPALIVE_S
            )
            for p in self.topology.peers_of(hub)
        ]
        config = hub_config(
            private_key=keys[hub.name][0],
            listen_port=WG_PORT,
            address=f"{hub.tunnel}/{tunnel_network(hub.index).prefixlen}",
            peers=peers,
        )
        _write_secret(self.boot_config(hub.name), config)
        await self.exec(hub.name, "wg-quick", "up", "wg0", check=True)

    async def restart_wireguard(self, hub: str) -> None:
        """`wg-quick down wg0 && wg-quick up wg0` on the hub: wg0 rebuilt from its file, as a reboot or an
        operator does. Whatever was changed at runtime only is gone."""
        await self.exec(hub, "wg-quick", "down", "wg0", check=False)  # also when wg0 is gone already
        ns, sock = self.topology.netns(hub), self.node_dir(hub) / "wireguard" / "wg0.sock"

        async def gone() -> bool:
            # wireguard-go exits once its interface is deleted and then removes its control socket; a new
            # one cannot listen before that.
            return not sock.exists() and not (await run("ip", "-n", ns, "link", "show", "wg0", check=False)).ok

        deadline = time.monotonic() + 5
        while not await gone():
            if time.monotonic() > deadline:
                raise LabError(f"wg0 on {hub} did not go away")
            await asyncio.sleep(0.02)
        await self.exec(hub, "wg-quick", "up", "wg0", check=True)

    async def create_interface(self, name: str) -> None:
        """Create the node's `wg0` (kernel WireGuard, else a wireguard-go process) with its tunnel address,
        up and still without keys or peers: as at boot, before its configuration is loaded."""
        node, ns = self.topology.node(name), self.topology.netns(name)
        kernel = await run("ip", "-n", ns, "link", "add", "wg0", "type", "wireguard", check=False)
        if not kernel.ok:
            await self._spawn(name, "wireguard-go", "wireguard-go", "-f", "wg0")
            sock = self.node_dir(name) / "wireguard" / "wg0.sock"
            await _wait_for(sock.exists, 5.0, f"wireguard-go on {name} did not start")
        assert node.tunnel is not None  # noqa: S101 - every non-soc node has a tunnel address
        prefixlen = tunnel_network(node.index).prefixlen
        await run("ip", "-n", ns, "addr", "add", f"{node.tunnel}/{prefixlen}", "dev", "wg0")
        await run("ip", "-n", ns, "link", "set", "wg0", "up")

    def boot_config(self, hub: str) -> Path:
        """The hub's wg0.conf as `wg-quick up wg0` on the hub loads it (its /etc/wireguard/wg0.conf); it
        holds the private key."""
        return self.node_dir(hub) / "etc-wireguard" / "wg0.conf"

    def ruleset_file(self, hub: str) -> Path:
        """The hub's nftables ruleset file: `nft -f` of it is the hub's firewall reload (at boot too)."""
        return self.node_dir(hub) / "ruleset.nft"

    async def save_boot_config(self, hub: str, names: dict[str, str] | None = None) -> None:
        """Keep the hub's wg0.conf in step with its running peers, as an operator does after enrolling
        devices: new peers get a block (named from `names`, public key to name), gone ones lose theirs,
        the others and their comments stay as they are."""
        dump = await self.exec(hub, "wg", "show", "wg0", "dump", check=True)
        running = []
        for line in dump.stdout.splitlines()[1:]:  # the first line is the interface
            key, _, endpoint, allowed, _, _, _, keepalive = line.split("\t")[:8]
            running.append(
                PeerEntry(
                    key,
                    key,
                    tuple(allowed.split(",")) if allowed != "(none)" else (),
                    endpoint=None if endpoint == "(none)" else endpoint,
                    keepalive=None if keepalive == "off" else int(keepalive),
                )
            )
        path = self.boot_config(hub)
        _write_secret(path, with_running_peers(path.read_text(), running, names or {}))

    async def _hub_services(self, hub: Node) -> None:
        name, topo = hub.name, self.topology
        node_dir = self.node_dir(name)
        peers = topo.peers_of(hub)
        ruleset = hub_ruleset(
            interface="wg0",
            admin_devices=[p.tunnel for p in peers if p.role is Role.ADMIN and p.tunnel],
            app_servers=[p.tunnel for p in peers if p.role is Role.APP and p.tunnel],
            management=MANAGEMENT_ADDRESS,
        )
        self.ruleset_file(name).write_text(ruleset)
        await self.exec(name, "sysctl", "-qw", "net.ipv4.ip_forward=1", check=True)
        await self.exec(name, "nft", "-f", str(self.ruleset_file(name)), check=True)

        host_key = node_dir / "ssh_host_ed25519_key"
        await run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{self.prefix}-{name}", "-f", str(host_key))
        plain = self.plain_key.with_suffix(".pub").read_text().strip()
        agent = self.agent_key.with_suffix(".pub").read_text().strip()
        if self.bare:
            await self._bare_sshd(name, host_key)
            return
        # The hub owner's word on which set denies: the agent adds to no other set (deploy/hub/README.md).
        (node_dir / "agent.json").write_text(json.dumps({"deny_sets": [{"table": "zerotrust", "set": "quarantine"}]}))
        agent_command = f"/usr/bin/python3 {AGENT} --config {node_dir / 'agent.json'}"
        (node_dir / "authorized_keys").write_text(
            authorized_keys(plain, agent, management=str(MANAGEMENT_ADDRESS), agent=agent_command)
        )
        sudo_keys = await self._sudo_account(name, plain)
        config = node_dir / "sshd_config"
        config.write_text(
            sshd_config(
                node_dir=node_dir,
                host_key=host_key,
                authorized_keys=node_dir / "authorized_keys",
                account_keys={SUDO_ACCOUNT: sudo_keys},
            )
        )
        await self.exec(name, _sshd(), "-t", "-f", str(config), check=True)
        await self.start_sshd(name)
        await self._spawn(name, "echo", *_python_module("responder.lab.echo"), *map(str, hub.listens))

    async def _bare_sshd(self, name: str, host_key: Path) -> None:
        """A hub before enrollment: root's ~/.ssh/authorized_keys holds the bootstrap key alone, and
        /usr/local/sbin and /etc/responder-hub are the hub's own, empty, for enrollment to fill. Root's home
        is a directory of the lab (its own /etc/passwd, bound in the hub's mount namespace only): the
        machine's /root is not touched, and what runs from it (the interpreter) still runs."""
        node_dir = self.node_dir(name)
        home, sbin, config, etc = (node_dir / d for d in ("root", "sbin", "responder-hub", "etc"))
        (home / ".ssh").mkdir(parents=True, mode=0o700)
        home.chmod(0o700)
        for directory in (sbin, config, etc):
            directory.mkdir(mode=0o755)
        bootstrap = self.bootstrap_key.with_suffix(".pub").read_text().strip()
        keys = home / ".ssh" / "authorized_keys"
        options = "no-port-forwarding,no-agent-forwarding,no-X11-forwarding"
        keys.write_text(f'from="{MANAGEMENT_ADDRESS}",{options} {bootstrap}\n')
        keys.chmod(0o600)
        passwd = []
        for line in Path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == "root" and len(fields) == 7:
                fields[5] = str(home)
            passwd.append(":".join(fields) + "\n")
        (etc / "passwd").write_text("".join(passwd))
        shutil.copymode("/etc/passwd", etc / "passwd")
        mnt = f"--mount={self._mount_ns(name)}"
        binds = ((etc / "passwd", Path("/etc/passwd")), (sbin, Path("/usr/local/sbin")), (config, AGENT_CONFIG_DIR))
        for source, target in binds:
            await run("nsenter", mnt, "mount", "--bind", str(source), str(target))
        config_file = node_dir / "sshd_config"
        config_file.write_text(
            sshd_config(node_dir=node_dir, host_key=host_key, authorized_keys=Path(".ssh/authorized_keys"))
        )
        await self.exec(name, _sshd(), "-t", "-f", str(config_file), check=True)
        await self.start_sshd(name)
        hub = self.topology.node(name)
        await self._spawn(name, "echo", *_python_module("responder.lab.echo"), *map(str, hub.listens))

    async def start_sshd(self, hub: str) -> None:
        """Start the hub's sshd with the configuration the build wrote (at build, and after a restart)."""
        await self._spawn(hub, "sshd", _sshd(), "-D", "-e", "-f", str(self.node_dir(hub) / "sshd_config"))

    async def _sudo_account(self, name: str, plain_key: str) -> Path:
        """Agentless mode with a non-root account, set up as deploy/hub/README.md says: a `responder`
        account without a password, the shipped sudoers rule alone in /etc/sudoers.d, the agent root-owned
        in /usr/local/sbin and its deny sets in /etc/responder-hub. All of it is bound into the hub's own
        mount namespace only; the machine's files are not touched. Returns the account's authorized_keys
        (the path inside the hub)."""
        node_dir = self.node_dir(name)
        root = node_dir / "sudo"
        etc, sudoers, config, sbin = root / "etc", root / "sudoers.d", root / "responder-hub", root / "sbin"
        home = root / "home" / SUDO_ACCOUNT
        for directory in (etc, sudoers, config, sbin, home / ".ssh"):
            directory.mkdir(mode=0o755, parents=True)
        root.chmod(0o755)
        entries = {
            "passwd": f"{SUDO_ACCOUNT}:x:{SUDO_UID}:{SUDO_UID}::/home/{SUDO_ACCOUNT}:/bin/sh\n",
            "group": f"{SUDO_ACCOUNT}:x:{SUDO_UID}:\n",
            "shadow": f"{SUDO_ACCOUNT}:*:20000:0:99999:7:::\n",  # `*`: no password, not locked
        }
        for file, entry in entries.items():
            lines = Path("/etc", file).read_text()
            lines = "".join(line + "\n" for line in lines.splitlines() if not line.startswith(f"{SUDO_ACCOUNT}:"))
            (etc / file).write_text(lines + entry)
            shutil.copymode(Path("/etc", file), etc / file)
        shutil.copyfile(SUDOERS_RULE, sudoers / "responder")
        (sudoers / "responder").chmod(0o440)
        shutil.copyfile(node_dir / "agent.json", config / "agent.json")
        shutil.copyfile(AGENT, sbin / "responder-hub-agent")
        (sbin / "responder-hub-agent").chmod(0o755)
        keys = home / ".ssh" / "authorized_keys"
        options = f'from="{MANAGEMENT_ADDRESS}",no-port-forwarding,no-agent-forwarding,no-X11-forwarding'
        keys.write_text(f"{options} {plain_key}\n")
        for path in (home, home / ".ssh", keys):
            os.chown(path, SUDO_UID, SUDO_UID)
        mnt = f"--mount={self._mount_ns(name)}"
        binds = [
            *((etc / file, Path("/etc", file)) for file in entries),
            (sudoers, Path("/etc/sudoers.d")),
            (config, AGENT_CONFIG_DIR),
            (sbin, Path("/usr/local/sbin")),
            (root / "home", Path("/home")),
        ]
        for source, target in binds:
            await run("nsenter", mnt, "mount", "--bind", str(source), str(target))
        return Path("/home") / SUDO_ACCOUNT / ".ssh" / "authorized_keys"

    async def _spawn(self, node: str, name: str, *argv: str) -> None:
        """Start a long-running process inside a node; it outlives this command (own session)."""
        log = (self.node_dir(node) / f"{name}.log").open("ab")
        env = {**os.environ, "WG_PROCESS_FOREGROUND": "1"}
        with log:
            proc = subprocess.Popen(  # noqa: ASYNC220 - fork/exec returns at once; the child runs on
                self.nsenter(node, *argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=env,
            )
        self._daemons.append(proc)
        (self.node_dir(node) / f"{name}.pid").write_text(f"{proc.pid}\n")
        await asyncio.sleep(0)
        if proc.poll() is not None:
            raise LabError(f"{name} on {node} exited at once; see {self.node_dir(node) / f'{name}.log'}")

    async def stop(self, node: str, name: str) -> bool:
        """Stop the long-running process `name` started in the node (SIGTERM, SIGKILL if it lingers) and
        wait for it to exit. False when none was running."""
        try:
            pid = int((self.node_dir(node) / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return False
        if not _belongs_to_lab(pid, self.state_dir) or not _alive(pid):
            return False
        await _terminate({pid})
        for proc in [p for p in self._daemons if p.pid == pid]:
            proc.poll()  # reap it: ours, started by this Lab
            self._daemons.remove(proc)
        return True

    def _write_inventory(self, keys: dict[str, tuple[str, str]]) -> None:
        inventory = topology_inventory(
            self.topology,
            public_keys={name: WireGuardKey(public) for name, (_, public) in keys.items()},
            host_key=lambda hub: (self.node_dir(hub) / "ssh_host_ed25519_key.pub").read_text(),
            client_key=self.agent_key,
            netns=self.netns_path("soc"),
        )
        self.inventory_path.write_text(inventory.to_yaml())

    async def _wait_ready(self) -> None:
        """Every listener answers (sshd seen from the management node, echo services locally)."""
        waits = [("soc", str(n.underlay), 22) for n in self.topology.nodes if n.role is Role.HUB]
        waits += [(n.name, "127.0.0.1", port) for n in self.topology.nodes for port in n.listens]
        namespaces = {node: self.namespace(node) for node, _, _ in waits}

        async def answers(node: str, host: str, port: int) -> None:
            deadline = time.monotonic() + 10
            while True:
                try:
                    async with asyncio.timeout(PROBE_TIMEOUT_S):
                        sock = await namespaces[node].connect(host, port)
                except OSError:
                    if time.monotonic() > deadline:
                        raise LabError(f"nothing answers on {host}:{port} from {node}") from None
                    await asyncio.sleep(0.05)
                else:
                    sock.close()
                    return

        try:
            async with asyncio.TaskGroup() as tg:
                for node, host, port in waits:
                    tg.create_task(answers(node, host, port))
        finally:
            for ns in namespaces.values():
                ns.close()

        async def handshakes_done() -> bool:
            return all(h.age_s is not None for h in await self.handshakes())

        deadline = time.monotonic() + 15
        while not await handshakes_done():
            if time.monotonic() > deadline:
                raise LabError("WireGuard handshakes did not complete within 15 s")
            await asyncio.sleep(0.1)

    # -- status ---------------------------------------------------------------------------------------

    async def handshakes(self) -> list[Handshake]:
        names = {}
        if self.inventory_path.exists():  # a bare lab has none until its hubs are enrolled
            for p in self.inventory.peers:
                names[str(p.public_key)] = p.name
        out: list[Handshake] = []
        now = time.time()
        for hub in (n for n in self.topology.nodes if n.role is Role.HUB):
            result = await self.exec(hub.name, "wg", "show", "wg0", "latest-handshakes", check=True)
            for line in result.stdout.splitlines():
                key, _, stamp = line.partition("\t")
                ts = int(stamp or 0)
                out.append(Handshake(hub.name, names.get(key, key), None if ts == 0 else max(0.0, now - ts)))
        return out

    async def probe(self, check: Check, namespaces: dict[str, Namespace] | None = None) -> Probe:
        """Send real packets for one check."""
        if check.proto == "icmp":
            result = await run(
                "nsenter", f"--net={self.netns_path(check.src)}", "ping", "-c", "1", "-W", "1", "-q",
                str(check.address), check=False, timeout=5,
            )  # fmt: skip
            return Probe(check, "reply" if result.ok else "no reply")
        assert check.port is not None  # noqa: S101 - tcp checks carry a port
        own = namespaces is None
        ns = self.namespace(check.src) if namespaces is None else namespaces[check.src]
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                sock = await ns.connect(str(check.address), check.port)
            sock.close()
            outcome = "open"
        except ConnectionRefusedError:
            outcome = "refused"
        except TimeoutError:
            outcome = "dropped"
        except OSError as exc:
            outcome = f"error: {exc.strerror or exc}"
        finally:
            if own:
                ns.close()
        return Probe(check, outcome)

    async def matrix(self, checks: Iterable[Check] | None = None) -> tuple[Probe, ...]:
        checks = tuple(self.topology.matrix() if checks is None else checks)
        namespaces = {c.src: self.namespace(c.src) for c in checks if c.proto == "tcp"}
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(self.probe(c, namespaces)) for c in checks]
        finally:
            for ns in namespaces.values():
                ns.close()
        return tuple(t.result() for t in tasks)

    async def status(self) -> LabStatus:
        present = set(self.leftovers())
        missing = tuple(n for n in self.topology.names if self.topology.netns(n) not in present)
        if missing:
            return LabStatus(self.prefix, self.topology.names, missing, (), ())
        return LabStatus(self.prefix, self.topology.names, (), tuple(await self.handshakes()), await self.matrix())

    # -- down -----------------------------------------------------------------------------------------

    async def down(self) -> list[str]:
        """Remove every namespace, process, mount and file of this prefix. Safe to run at any point,
        including after a crash halfway through `up`. Returns what it removed."""
        removed: list[str] = []
        namespaces = self.leftovers()
        pids: set[int] = set()
        for ns in namespaces:
            result = await run("ip", "netns", "pids", ns, check=False)
            pids.update(int(p) for p in result.stdout.split())
        pids.update(self._recorded_pids())
        await _terminate(pids)
        for proc in self._daemons:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0)
        self._daemons.clear()
        removed += [f"process {p}" for p in sorted(pids)]
        ns_dir = self.state_dir / "ns"
        if ns_dir.exists():
            for mnt in ns_dir.iterdir():
                await run("umount", "--lazy", str(mnt), check=False)
            await run("umount", "--lazy", str(ns_dir), check=False)
        for ns in namespaces:
            await run("ip", "netns", "delete", ns, check=False)
            removed.append(f"netns {ns}")
        if self.state_dir.exists():
            shutil.rmtree(self.state_dir)
            removed.append(f"dir {self.state_dir}")
        return removed

    def _recorded_pids(self) -> set[int]:
        pids: set[int] = set()
        if not self.state_dir.exists():
            return pids
        for pid_file in self.state_dir.glob("*/*.pid"):
            with contextlib.suppress(ValueError, OSError):
                pid = int(pid_file.read_text().strip())
                if _belongs_to_lab(pid, self.state_dir):
                    pids.add(pid)
        return pids


def _sshd() -> str:
    return shutil.which("sshd", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/sshd"


def _python_module(module: str) -> tuple[str, ...]:
    import sys  # noqa: PLC0415 - only the lab needs the interpreter path

    return (sys.executable, "-m", module)


def _belongs_to_lab(pid: int, state_dir: Path) -> bool:
    """A recorded pid may have been reused by an unrelated process: only kill one whose command line
    still points into this lab."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return str(state_dir) in cmdline or "wireguard-go" in cmdline


async def _terminate(pids: set[int]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = {p for p in pids if _alive(p)}
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while any(_alive(p) for p in alive) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def _wait_for(predicate: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError(message)
        await asyncio.sleep(0.02)


__all__ = ["CommandError", "Handshake", "Lab", "LabError", "LabStatus", "Probe"]
