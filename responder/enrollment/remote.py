"""The bootstrap connection of an enrollment: fetch the host key, then work only over a connection that
accepts exactly the pinned key; read the hub; install files atomically with their checksum verified on
the hub."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh

from responder.core.identifiers import IPAddress
from responder.enrollment.core import (
    EnrollError,
    HubPeer,
    HubReading,
    enforcing_table,
    interface_address,
    peer_names,
    set_addresses,
)
from responder.netns import Namespace
from responder.pep.transport import ENCRYPTION

# The host key asked for first: a hub with several host keys presents the same one each time, and the
# operator compares the fingerprint `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints on the hub.
HOST_KEY_ALGS = [
    "ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "rsa-sha2-512", "rsa-sha2-256",
]  # fmt: skip
TIMEOUT_S = 15.0

# Writes stdin to a temporary file next to the target, checks its sha256 there, (optionally) checks the
# target still has the content it was read with, then renames it over the target: a reader sees the old
# file or the new one, never half of one. Prints the sha256 of the file as installed.
_INSTALL = r"""set -eu
target=$1 mode=$2 want=$3 before=$4
tmp=$(mktemp "$(dirname "$target")/.enroll.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
got=$(sha256sum "$tmp" | cut -d' ' -f1)
[ "$got" = "$want" ] || { echo "checksum mismatch after upload: got $got, sent $want" >&2; exit 3; }
if [ -n "$before" ]; then
  now=none; [ ! -e "$target" ] || now=$(sha256sum "$target" | cut -d' ' -f1)
  [ "$now" = "$before" ] || { echo "$target changed while enrolling; run enroll again" >&2; exit 4; }
fi
chown 0:0 "$tmp"; chmod "$mode" "$tmp"
mv -f "$tmp" "$target"
trap - EXIT
sha256sum "$target" | cut -d' ' -f1
"""

# The wg-quick file without its private and preshared keys: they never leave the hub.
_CONF = r"""f=$1; [ -r "$f" ] || exit 0
grep -Eiv '^[[:space:]]*(privatekey|presharedkey)[[:space:]]*=' "$f" || true
"""


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    user: str
    identity: Path
    netns: Path | None = None


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _socket(target: Target) -> Any:
    if target.netns is None:
        return None
    namespace = Namespace(target.netns)
    try:
        return await namespace.connect(target.host, target.port)
    finally:
        namespace.close()


async def fetch_host_key(target: Target) -> str:
    """The OpenSSH public key line the host presents (key exchange only; nothing is authenticated)."""
    try:
        async with asyncio.timeout(TIMEOUT_S):
            key = await asyncssh.get_server_host_key(
                target.host, target.port, sock=await _socket(target), server_host_key_algs=HOST_KEY_ALGS
            )
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        raise EnrollError(f"cannot reach {target.host}:{target.port}: {exc or type(exc).__name__}") from None
    if key is None:
        raise EnrollError(f"{target.host}:{target.port} presented no host key")
    line = bytes(key.export_public_key("openssh")).decode().split("\n")[0]
    return " ".join(line.split()[:2])


class Bootstrap:
    """A connection with the bootstrap credential that accepts only the pinned host key."""

    def __init__(self, target: Target, conn: asyncssh.SSHClientConnection) -> None:
        self.target = target
        self._conn = conn

    @classmethod
    async def open(cls, target: Target, pinned: str) -> Bootstrap:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                conn = await asyncssh.connect(
                    target.host,
                    target.port,
                    sock=await _socket(target),
                    username=target.user,
                    known_hosts=([asyncssh.import_public_key(pinned)], [], []),
                    client_keys=[str(target.identity)],
                    agent_path=None,  # the bootstrap credential is the key given, nothing else
                    encryption_algs=ENCRYPTION,
                )
        except asyncssh.HostKeyNotVerifiable:
            raise EnrollError(f"{target.host} changed its host key since it was fetched; refusing") from None
        except asyncssh.PermissionDenied:
            raise EnrollError(f"{target.user}@{target.host} refused the bootstrap key {target.identity}") from None
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise EnrollError(f"cannot connect to {target.host}:{target.port}: {exc or type(exc).__name__}") from None
        return cls(target, conn)

    async def close(self) -> None:
        self._conn.close()
        await self._conn.wait_closed()

    async def sh(self, script: str, *args: str, stdin: bytes | None = None, check: bool = True) -> str:
        """Run a POSIX shell script as root (through `sudo -n` when the bootstrap user is not root)."""
        argv = ["sh", "-c", script, "sh", *args]
        if self.target.user != "root":
            argv = ["sudo", "-n", *argv]
        try:
            async with asyncio.timeout(TIMEOUT_S):
                result = await self._conn.run(shlex.join(argv), input=stdin, encoding=None)
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise EnrollError(f"{self.target.host}: {exc or type(exc).__name__}") from None
        out = result.stdout if isinstance(result.stdout, bytes) else b""
        err = result.stderr if isinstance(result.stderr, bytes) else b""
        if check and result.exit_status != 0:
            why = err.decode(errors="replace").strip().splitlines()
            raise EnrollError(f"{self.target.host}: {why[-1] if why else f'exit status {result.exit_status}'}")
        return out.decode(errors="replace")

    async def read_file(self, path: str) -> str | None:
        """The file's text, or None when it does not exist."""
        out = await self.sh('[ -e "$1" ] || { echo absent; exit 0; }; echo present; cat "$1"', path)
        state, _, text = out.partition("\n")
        return text if state == "present" else None

    async def install(self, path: str, data: bytes, mode: str, *, before: str | None = None) -> str:
        """Put `data` at `path` (root-owned, `mode`) atomically, its sha256 checked on the hub; with
        `before` (a sha256, or "none" for an absent file), only if the file still has that content.
        Returns the sha256 of the file as installed."""
        want = sha256(data)
        got = (await self.sh(_INSTALL, path, mode, want, before or "", stdin=data)).strip()
        if got != want:
            raise EnrollError(f"{self.target.host}:{path}: installed sha256 {got}, expected {want}")
        return got

    # -- reading the hub -------------------------------------------------------------------------------

    async def read(self, interface: str | None, table: str | None, deny_tables: Sequence[str]) -> HubReading:
        names = (await self.sh("wg show interfaces")).split()
        if interface is None:
            if len(names) != 1:
                found = ", ".join(names) or "none"
                raise EnrollError(f"{self.target.host} has WireGuard interfaces: {found}; pass --interface")
            interface = names[0]
        elif interface not in names:
            raise EnrollError(f"{self.target.host} has no WireGuard interface {interface!r} (has: {', '.join(names)})")
        address, network = interface_address(await self.sh('ip -j addr show dev "$1"', interface), interface)
        peers = []
        for line in (await self.sh('wg show "$1" allowed-ips', interface)).splitlines():
            key, _, ips = line.partition("\t")
            if key:
                peers.append(HubPeer(key, tuple(ip for ip in ips.split() if ip != "(none)")))
        listing = json.loads(await self.sh("nft -j list sets") or "{}")
        sets = [s["set"] for s in listing.get("nftables", []) if "set" in s]
        table = enforcing_table(sets, table, deny_tables)
        contents: dict[str, frozenset[IPAddress] | None] = {}
        for s in sets:
            if s["table"] != table:
                continue
            if s.get("type") in ("ipv4_addr", "ipv6_addr"):
                out = await self.sh('nft -j list set "$1" "$2" "$3"', s["family"], table, s["name"])
                contents[s["name"]] = set_addresses(json.loads(out))
            else:
                contents[s["name"]] = None
        conf = await self.sh(_CONF, f"/etc/wireguard/{interface}.conf")
        return HubReading(
            interface=interface,
            address=address,
            network=network,
            peers=tuple(peers),
            sets=contents,
            table=table,
            conf_names=peer_names(conf),
        )

    async def ssh_client_address(self) -> str | None:
        """The address the hub sees this connection come from (sshd's SSH_CONNECTION; not through sudo,
        which clears the environment)."""
        try:
            async with asyncio.timeout(TIMEOUT_S):
                result = await self._conn.run('echo "${SSH_CONNECTION:-}"', encoding="utf-8")
        except (TimeoutError, OSError, asyncssh.Error) as exc:
            raise EnrollError(f"{self.target.host}: {exc or type(exc).__name__}") from None
        fields = str(result.stdout or "").split()
        return fields[0] if fields else None
