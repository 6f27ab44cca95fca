#!/usr/bin/python3 -I
"""responder hub agent: the SSH forced command of the responder's key on a WireGuard hub.

It reads one JSON request per line on stdin and answers one JSON line per request on stdout, over a
single long-lived SSH channel (or, in agentless mode through sudo, one request per run). It allows only
the operations below, validates every argument before anything runs, applies nftables changes as one
atomic libnftables JSON transaction, runs `wg` and `conntrack` with fixed argv (never a shell), and reads
the state back to verify. It never prints a private key or a preshared key.

It takes access away and gives back only what it took: a peer is added only as it was when this agent
removed it (same key and allowed IPs), an element is added only to a set the hub's own
configuration (`--config`, default /etc/responder-hub/agent.json) names as a deny set, or back into the
set it was deleted from; an element of a deny set is deleted only if this agent put it there. What it
removed and added is kept in root-owned files of STATE_DIR. A compromised responder account can cut
devices off, not let anyone in.

Standalone: Python 3.9+ standard library and Debian's python3-nftables.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import concurrent.futures
import contextlib
import fcntl
import hashlib
import ipaddress
import itertools
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path
from typing import Any

__version__ = "0.3.1"  # the release, as `hubs status` and `hubs check` report it and the package is named
VERSION = 2  # the protocol: 2 adds the `revoked` operation
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
INTERFACE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")
COMMENT = re.compile(r"^[A-Za-z0-9 _.:@/-]{0,120}$")
FAMILIES = {"inet", "ip", "ip6"}
STATE_DIR = Path(os.environ.get("RESPONDER_HUB_STATE", "/var/lib/responder-hub"))
CONFIG = Path("/etc/responder-hub/agent.json")
COMMAND_TIMEOUT = 10
MAX_LINE = 4_000_000  # bytes of one request; a longer line is answered with an error and skipped


class Invalid(ValueError):
    """A request argument that does not validate; nothing has run."""


def key(value: Any) -> str:
    if not isinstance(value, str) or len(value) != 44 or not value.endswith("="):
        raise Invalid("a WireGuard key is 44 base64 characters ending in '='")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Invalid("a WireGuard key must be base64") from None
    if len(raw) != 32 or base64.b64encode(raw).decode() != value:
        raise Invalid("a WireGuard key must encode 32 bytes canonically")
    return value


def address(value: Any) -> str:
    if not isinstance(value, str) or "%" in value:
        raise Invalid("an address is an IPv4 or IPv6 address without a scope")
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise Invalid(f"not an address: {value!r}") from None


def network(value: Any) -> str:
    if not isinstance(value, str) or "%" in value:
        raise Invalid("allowed IPs are networks in CIDR form")
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError:
        raise Invalid(f"not a network: {value!r}") from None


def name(value: Any, pattern: re.Pattern[str] = NAME, what: str = "name") -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Invalid(f"invalid {what}: {value!r}")
    return value


def endpoint(value: Any) -> str:
    if not isinstance(value, str):
        raise Invalid("an endpoint is host:port")
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise Invalid(f"invalid endpoint: {value!r}")
    address(host.strip("[]"))
    return value


def integer(value: Any, low: int, high: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise Invalid(f"{what} must be an integer from {low} to {high}")
    return value


# -- what the hub's owner allows, and what this agent took away --------------------------------------


class Policy:
    """The hub's own configuration: which sets deny (a quarantine), so adding to them takes access away.

    `{"deny_sets": [{"family": "inet", "table": "zerotrust", "set": "quarantine"}]}`; family defaults to
    inet. A missing file means no deny set: the agent can still remove, and put back what it removed.

    Where the hub keeps what it loads at its next start, so that what the agent takes away stays away:
    `"wireguard_files": {"wg0": "/etc/wireguard/wg0.conf"}` (default: /etc/wireguard/IF.conf where it
    exists; null: none) and `"elements_file": "/var/lib/responder-hub/elements.nft"` (the default; null:
    none), the nft include the hub's ruleset file ends with."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.error: str | None = None
        self.deny_sets: frozenset[tuple[str, str, str]] = frozenset()
        self.wireguard_files: dict[str, Path | None] = {}
        self.elements_file: Path | None = STATE_DIR / "elements.nft"
        try:
            raw = json.loads(path.read_text())
            entries = raw["deny_sets"] if isinstance(raw, dict) else None
            if not isinstance(entries, list):
                raise Invalid('the file must be an object with a "deny_sets" list')
            self.deny_sets = frozenset(self._entry(e) for e in entries)
            files = raw.get("wireguard_files", {})
            if not isinstance(files, dict):
                raise Invalid('"wireguard_files" maps an interface to its wg-quick file (or null)')
            self.wireguard_files = {
                name(i, INTERFACE, "interface"): _absolute(f, "wireguard_files") for i, f in files.items()
            }
            if "elements_file" in raw:
                self.elements_file = _absolute(raw["elements_file"], "elements_file")
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, RecursionError) as exc:
            self.error = f"agent configuration {path}: {exc}"

    @staticmethod
    def _entry(entry: Any) -> tuple[str, str, str]:
        if not isinstance(entry, dict):
            raise Invalid('each deny set is an object {"family", "table", "set"}')
        family = entry.get("family", "inet")
        if family not in FAMILIES:
            raise Invalid(f"family must be one of {sorted(FAMILIES)}")
        return family, name(entry.get("table"), NAME, "table"), name(entry.get("set"), NAME, "set")

    def denies(self, family: str, table: str, set_name: str) -> bool:
        if self.error is not None:
            raise RuntimeError(self.error)
        return (family, table, set_name) in self.deny_sets


def _absolute(value: Any, what: str) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith("/"):
        raise Invalid(f"{what}: an absolute path, or null")
    return Path(value)


POLICY = Policy(CONFIG)


class Record(dict[str, Any]):
    """A record's content, and what is in its file: `save` writes it only if it changed since."""

    def __init__(self, file: str, text: str | None) -> None:
        """`text`: the file's, or None when there is none yet."""
        super().__init__({} if text is None else json.loads(text))
        self.file = file
        self._written = "{}" if text is None else text  # as `save` writes it (else one write more, no harm)

    def save(self) -> None:
        text = json.dumps(self, sort_keys=True)
        if text != self._written:
            store(self.file, text)
            self._written = text


@contextlib.contextmanager
def record(file: str) -> Iterator[Record]:
    """A JSON record in STATE_DIR, read and written back under an exclusive lock: several agents (the
    forced command, agentless runs through sudo) may run at once, and each lane is a thread. Saved at
    the end if it changed; `save` within writes it earlier (what is taken, before it is taken)."""
    STATE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = STATE_DIR / file
    lock = os.open(STATE_DIR / f"{file}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = None
        kept = Record(file, text)
        yield kept
        kept.save()
    finally:
        os.close(lock)


def store(file: str, text: str) -> None:
    """Write a record whole (under its lock, which the caller holds): renamed into place, never fsynced.
    An agent that dies leaves the old or the new record; a hub that loses power may lose the last change,
    and that fails closed (a put-back is refused, a quarantine stays), while an fsync per cut-off would cost
    the containment milliseconds."""
    path = STATE_DIR / file
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)  # encoded by the C encoder: json.dump to a file is pure Python
    tmp.replace(path)


# -- what the hub loads at its next start ----------------------------------------------------------
#
# A peer removed from the running interface comes back with `wg-quick up` or `wg syncconf` from its
# file, and a deleted element with `nft -f` of the ruleset file. So a change is also made in those files.
# The running change stands either way; a file that cannot be written is reported in the answer
# (`persisted: false` and `persist_error`), and the file is then left exactly as it was.

WG_CONF_DIR = Path("/etc/wireguard")
SECTION = re.compile(r"^\s*\[[A-Za-z]+\]\s*$")
PUBLIC_KEY_LINE = re.compile(r"^\s*PublicKey\s*=\s*(\S+)\s*$", re.IGNORECASE)


def wireguard_file(interface: str) -> Path | None:
    """The wg-quick file the interface is configured from, or None when the hub has none. (A broken
    agent.json does not stop a removal: the default file is used then.)"""
    if POLICY.error is None and interface in POLICY.wireguard_files:
        return POLICY.wireguard_files[interface]
    default = WG_CONF_DIR / f"{interface}.conf"
    return default if default.is_file() else None


def peer_blocks(text: str, only: Collection[str] | None = None) -> dict[str, tuple[int, int]]:
    """Each `[Peer]` block of a wg-quick file by its public key: (first line, end line), the comment lines
    right above its header (`# admin1`) included, up to the next section's own comments. With `only`, the
    blocks of those keys alone, the same as in the whole parse: a removal needs one block of hundreds, and
    reading every block cost ~0.6 ms of CPU more per parse at 165-250 peers (on the lab)."""
    lines = text.splitlines(keepends=True)
    headers = [i for i, line in enumerate(lines) if "[" in line and SECTION.match(line)]
    header = set(headers)  # a list here made the parse quadratic: ~3 ms more for 250 peers

    def start_of(h: int) -> int:
        while h > 0 and h - 1 not in header and lines[h - 1].lstrip().startswith("#"):
            h -= 1
        return h

    def block_of(n: int) -> tuple[str, tuple[int, int]] | None:
        h = headers[n]
        if lines[h].strip().lower() != "[peer]":
            return None
        end = start_of(headers[n + 1]) if n + 1 < len(headers) else len(lines)
        for line in lines[h + 1 : end]:
            found = PUBLIC_KEY_LINE.match(line)
            if found:
                return found.group(1), (start_of(h), end)
        return None

    sections: Iterable[int] = range(len(headers))
    if only is not None:
        # The sections whose lines hold one of the keys anywhere: a block's key line is among them.
        ends = list(itertools.accumulate(map(len, lines)))
        found: set[int] = set()
        for k in only:
            at = text.find(k) if k else -1
            while at >= 0:
                found.add(bisect.bisect_right(headers, bisect.bisect_right(ends, at)) - 1)
                at = text.find(k, at + 1)
        sections = sorted(n for n in found if n >= 0)
    blocks: dict[str, tuple[int, int]] = {}
    for n in sections:
        if (block := block_of(n)) is not None and (only is None or block[0] in only):
            blocks.setdefault(*block)
    return blocks


def peer_block(text: str, peer: str) -> str | None:
    """The text of the peer's block, as in the file, or None when the file has no such peer."""
    where = peer_blocks(text, [peer]).get(peer)
    return None if where is None else "".join(text.splitlines(keepends=True)[where[0] : where[1]])


def without_peers(text: str, keys: list[str]) -> str:
    lines = text.splitlines(keepends=True)
    drop = {i for start, end in peer_blocks(text, keys).values() for i in range(start, end)}
    return "".join(line for i, line in enumerate(lines) if i not in drop)


def with_blocks(text: str, blocks: list[str]) -> str:
    """The file with these blocks put back at its end, each as it was."""
    for block in blocks:
        if text and not text.endswith("\n"):
            text += "\n"
        if text.strip() and not text.endswith("\n\n"):
            text += "\n"
        text += block if block.endswith("\n") else block + "\n"
    return text


def replace_file(path: Path, text: str) -> None:
    """Write the file whole and in place of the old one: a temporary file in the same directory with the
    old one's mode and owner, fsynced, renamed over it, the directory fsynced. A reader (wg-quick, a
    reboot) sees the old file or the new one, never a part."""
    old = path.stat()
    tmp = path.with_name(f".{path.name}.responder-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            if (old.st_uid, old.st_gid) != (os.geteuid(), os.getegid()):
                os.fchown(fd, old.st_uid, old.st_gid)
            os.fchmod(fd, old.st_mode & 0o7777)
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def persisted(error: str | None, where: Path | None) -> dict[str, Any]:
    """The answer's word on the hub's files: true (they agree with the change), false with the error (the
    running change stands, the file is as it was), or null (the hub keeps no such file)."""
    if where is None:
        return {"persisted": None}
    if error is not None:
        return {"persisted": False, "persist_error": f"{where}: {error}"}
    return {"persisted": True}


def elements_text(removed: set[str], added: dict[str, float | None], now: float) -> str:
    """The nft include that keeps what this agent changed through a reload of the hub's ruleset file:
    `add` + `delete` for an element it deleted (valid whether or not the file above had it, so the
    firewall never fails to load because of it), `add` for one it added to a deny set, with the time its
    timeout had left when this was written (a reload later re-adds it for that long: longer than it had
    left then, never shorter)."""
    lines = ["# Written by responder-hub-agent: what it changed in sets, kept through `nft -f`. Do not edit.\n"]
    for entry in sorted(removed):
        family, table, set_name, addr = entry.split(" ")
        lines.append(f"add element {family} {table} {set_name} {{ {addr} }}\n")
        lines.append(f"delete element {family} {table} {set_name} {{ {addr} }}\n")
    for entry, ends in sorted(added.items()):
        family, table, set_name, addr = entry.split(" ")
        if ends is None:
            lines.append(f"add element {family} {table} {set_name} {{ {addr} }}\n")
        elif ends > now:
            left = max(1, int(ends - now + 0.999))
            lines.append(f"add element {family} {table} {set_name} {{ {addr} timeout {left}s }}\n")
    return "".join(lines)


def write_elements(path: Path, text: str) -> None:
    """Like `store`, renamed into place and not fsynced: it is rewritten with every set change, and a
    quarantine lost with the power is re-asserted by the responder's reconciler."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return
    tmp = path.with_name(f"{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    tmp.replace(path)


REMOVED_PEERS = "removed-peers.json"  # {interface: {key: {allowed_ips, endpoint, keepalive}}}
ELEMENTS = "elements.json"  # {"removed": ["family table set address", ...], "added": {"...": expiry}}


def run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    # A fixed argv of validated values, never a shell.
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, check=False)


def run_all(argvs: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands at once (each conntrack call costs ~10 ms of kernel time, mostly waiting)."""
    started = [
        (argv, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)) for argv in argvs
    ]
    done = []
    for argv, process in started:
        try:
            out, err = process.communicate(timeout=COMMAND_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        done.append(subprocess.CompletedProcess(argv, process.returncode, out, err))
    return done


# -- WireGuard -------------------------------------------------------------------------------------


UAPI_DIRS = (Path("/run/wireguard"), Path("/var/run/wireguard"))


def uapi_socket(interface: str) -> Path | None:
    """The userspace implementation's control socket (wireguard-go, boringtun), if this is one."""
    for directory in UAPI_DIRS:
        path = directory / f"{interface}.sock"
        if path.is_socket():
            return path
    return None


GET = "get=1\n\n"  # a UAPI read of the device and all its peers


class Uapi:
    """A connection to the cross-platform UAPI socket of a userspace WireGuard (wireguard-go, boringtun):
    no process to start, a fraction of a millisecond per exchange."""

    def __init__(self, path: Path) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.settimeout(COMMAND_TIMEOUT)
        try:
            self._socket.connect(str(path))
        except OSError:
            self._socket.close()
            raise

    def __enter__(self) -> Uapi:
        return self

    def __exit__(self, *_: object) -> None:
        self._socket.close()

    def ask(self, *requests: str) -> list[str]:
        """Send requests at once; their answers, in order. Only the last may be a `set`: wireguard-go
        reads a set through a buffer of its own, which would swallow a request sent behind it."""
        self._socket.sendall("".join(requests).encode())
        data = bytearray()
        ended = 0  # answers complete: each ends with a blank line, and has none inside
        while ended < len(requests):
            chunk = self._socket.recv(65536)
            if not chunk:
                raise RuntimeError("wireguard uapi: connection closed before every answer")
            start = max(0, len(data) - 1)  # a blank line may straddle two chunks
            data += chunk
            ended += data.count(b"\n\n", start)
        answers = [a + "\n" for a in data.decode().split("\n\n")[: len(requests)]]
        for answer in answers:
            status = answer[answer.rfind("errno=") :].strip() if "errno=" in answer else "errno=0"
            if status != "errno=0":
                raise RuntimeError(f"wireguard uapi: {status}")
        return answers


def _key_of_hex(value: str) -> str:
    return base64.b64encode(bytes.fromhex(value)).decode()


def peers(interface: str, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The interface's peers, without private or preshared keys: from the UAPI socket of a userspace
    WireGuard, else from `wg show <if> dump`. With `only`, just those keys: a removal reads back a few
    peers of thousands, and parsing all of them cost more than the removal itself."""
    path = uapi_socket(interface)
    if path is None:
        return peers_from_dump(interface, only)
    with Uapi(path) as device:
        (answer,) = device.ask(GET)
    return peers_of_answer(answer, only)


def peers_of_answer(answer: str, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Peers of a UAPI `get` answer (all, or the keys in `only`)."""
    wanted = None if only is None else {base64.b64decode(k).hex() for k in only}
    out: dict[str, dict[str, Any]] = {}
    # Split at each peer; what precedes the first is the interface (its private key among it): never read.
    for block in ("\n" + answer).split("\npublic_key=")[1:]:
        hex_key, _, rest = block.partition("\n")
        if wanted is not None and hex_key not in wanted:
            continue
        peer: dict[str, Any] = {"key": _key_of_hex(hex_key), "endpoint": None, "allowed_ips": [],
                                "latest_handshake": 0, "rx": 0, "tx": 0, "keepalive": None}  # fmt: skip
        out[peer["key"]] = peer
        for line in rest.splitlines():
            field, _, value = line.partition("=")
            if field == "endpoint":
                peer["endpoint"] = value
            elif field == "allowed_ip":
                peer["allowed_ips"].append(value)
            elif field == "last_handshake_time_sec":
                peer["latest_handshake"] = int(value)
            elif field == "rx_bytes":
                peer["rx"] = int(value)
            elif field == "tx_bytes":
                peer["tx"] = int(value)
            elif field == "persistent_keepalive_interval":
                peer["keepalive"] = int(value) or None
    return out


def peers_from_dump(interface: str, only: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The interface's peers from `wg show <if> dump`, without private or preshared keys."""
    result = run(["wg", "show", interface, "dump"])
    if result.returncode != 0:
        raise RuntimeError(f"wg show {interface}: {result.stderr.strip()}")
    wanted = None if only is None else set(only)
    out: dict[str, dict[str, Any]] = {}
    for line in result.stdout.splitlines()[1:]:  # the first line is the interface (holds the private key)
        f = line.split("\t")
        if len(f) < 8 or (wanted is not None and f[0] not in wanted):
            continue
        out[f[0]] = {
            "key": f[0],
            "endpoint": None if f[2] == "(none)" else f[2],
            "allowed_ips": [] if f[3] == "(none)" else f[3].split(","),
            "latest_handshake": int(f[4]),
            "rx": int(f[5]),
            "tx": int(f[6]),
            "keepalive": None if f[7] == "off" else int(f[7]),
        }
    return out


def op_peers(req: dict[str, Any]) -> dict[str, Any]:
    return {"peers": list(peers(name(req.get("interface"), INTERFACE, "interface")).values())}


def _remove(interface: str, keys: list[str], restorable: bool) -> dict[str, Any]:
    # What may be put back is recorded before the removal, not after it: an agent killed in between (the
    # responder's channel cut, a hub going down) must not leave a removed peer that nothing may restore. A
    # removal that then fails leaves a record of a peer still present, and putting back a present peer
    # changes nothing. A revoked key's record is dropped only after the revocation.
    # The record's lock is held from the read before to the file's edit: one read of the record and of
    # the interface's file, and one edit of the file at a time.
    path = uapi_socket(interface)
    conf = wireguard_file(interface)
    with record(REMOVED_PEERS) as removed, contextlib.ExitStack() as stack:
        device = None if path is None else stack.enter_context(Uapi(path))  # one connection: read, remove, read back
        before = _peers_now(interface, keys, device)
        restore = {k: {x: before[k][x] for x in ("allowed_ips", "endpoint", "keepalive")} for k in keys if k in before}
        text = _text(conf)
        if restorable:
            mine = removed.setdefault(interface, {})
            for k, was in restore.items():  # what `add_peers` may put back, and nothing else
                # A copy: the record gains the file's block, which the answer must never carry.
                mine[k] = {**was, **{x: v for x, v in mine.get(k, {}).items() if x == "conf"}}
            _keep_blocks(text, mine, keys)
            if not mine:
                del removed[interface]
            removed.save()
        _remove_running(interface, keys, device)
        # The file is written (and fsynced) while the interface is read back, not after it: the answer
        # still waits for both.
        edit = FILES.submit(_edit_file, conf, lambda text: without_peers(text, keys), text)
        try:
            after = _peers_now(interface, keys, device)
        finally:
            error = edit.result()
        if not restorable:
            mine = removed.get(interface, {})
            for k in keys:
                mine.pop(k, None)  # a revoked key never comes back
            if interface in removed and not mine:
                del removed[interface]
    return {
        "restore": restore,
        "absent_before": [k for k in keys if k not in before],
        "verified": all(k not in after for k in keys),
        **persisted(error, conf),
    }


def _peers_now(interface: str, keys: list[str], device: Uapi | None) -> dict[str, dict[str, Any]]:
    """The peers of `keys` on the interface now: over the open UAPI connection if there is one."""
    if device is None:
        return peers(interface, keys)
    (answer,) = device.ask(GET)
    return peers_of_answer(answer, keys)


def _remove_running(interface: str, keys: list[str], device: Uapi | None) -> None:
    if device is not None:
        hexes = "".join(f"public_key={base64.b64decode(k).hex()}\nremove=true\n" for k in keys)
        device.ask(f"set=1\n{hexes}\n")  # a set last in its exchange (see Uapi.ask)
        return
    argv = ["wg", "set", interface]
    for k in keys:
        argv += ["peer", k, "remove"]
    result = run(argv)
    if result.returncode != 0:
        raise RuntimeError(f"wg set: {result.stderr.strip()}")


FILES = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="files")
"""Where the hub's files are written while the change is read back."""


def _text(conf: Path | None) -> str | None:
    """The file's text; None when there is no file or it cannot be read (its edit then says why)."""
    if conf is None:
        return None
    try:
        return conf.read_text()
    except (OSError, ValueError):
        return None


def _keep_blocks(text: str | None, mine: dict[str, Any], keys: list[str]) -> None:
    """Record each removed peer's block of the interface's file (its `text`) with what `add_peers` may put
    back, before the file changes. A peer absent from the interface but still in the file (a retried
    removal, or one removed at runtime by hand) is recorded from its block, so the file's peer too can be
    put back."""
    if text is None:
        return  # the removal goes ahead; the file edit after it says what is wrong with the file
    for k in keys:
        block = peer_block(text, k)
        if block is None:
            continue
        if k not in mine:
            values = [v for line in block.splitlines() if _field(line) == "allowedips" for v in _values(line)]
            try:  # as `wg` reads them: a host address with a prefix is its network
                allowed = [str(ipaddress.ip_network(v, strict=False)) for v in values]
            except ValueError:
                continue
            mine[k] = {"allowed_ips": allowed, "endpoint": None, "keepalive": None}
        mine[k]["conf"] = block  # root's only: it may hold a preshared key, and never leaves the hub


def _values(line: str) -> list[str]:
    return [v.strip() for v in line.partition("=")[2].split(",") if v.strip()]


def _field(line: str) -> str:
    return line.partition("=")[0].strip().lower() if "=" in line else ""


def _edit_file(conf: Path | None, change: Any, text: str | None = None) -> str | None:
    """Apply `change` (text -> text) to the file (its `text` if read already); None when done (or nothing
    to do), else why not."""
    if conf is None:
        return None
    try:
        if text is None:
            text = conf.read_text()
        new = change(text)
        if new != text:
            replace_file(conf, new)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return str(exc)
    return None


def op_remove_peers(req: dict[str, Any]) -> dict[str, Any]:
    interface = name(req.get("interface"), INTERFACE, "interface")
    return _remove(interface, [key(k) for k in _list(req.get("keys"))], restorable=True)


def _revoked_file(interface: str) -> Path:
    return STATE_DIR / f"{interface}.revoked"


def revoked(interface: str) -> set[str]:
    try:
        return set(_revoked_file(interface).read_text().split())
    except FileNotFoundError:
        return set()


def op_revoke_keys(req: dict[str, Any]) -> dict[str, Any]:
    """Rotation, hub side: remove the peer and deny its key at enrollment, for good."""
    interface = name(req.get("interface"), INTERFACE, "interface")
    keys = [key(k) for k in _list(req.get("keys"))]
    result = _remove(interface, keys, restorable=False)
    before = revoked(interface)
    denied = before | set(keys)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = _revoked_file(interface).with_suffix(".tmp")
    tmp.write_text("".join(f"{k}\n" for k in sorted(denied)))
    tmp.replace(_revoked_file(interface))
    newly = sorted(set(keys) - before)
    if newly:
        record_change("revoke_keys", {"interface": interface, "keys": newly})
    result["verified"] = result["verified"] and set(keys) <= revoked(interface)
    result["newly_revoked"] = newly
    return result


def op_revoked(req: dict[str, Any]) -> dict[str, Any]:
    """The keys revoked for good on an interface: how the responder tells, before it tries a rotation
    again after an unknown outcome, whether the first try happened."""
    return {"keys": sorted(revoked(name(req.get("interface"), INTERFACE, "interface")))}


def record_change(op: str, detail: dict[str, Any]) -> None:
    """The hub's own record of irreversible changes, one JSON line each: evidence independent of the
    responder's journal that a revocation happened once."""
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"op": op, **detail}, sort_keys=True) + "\n"
    fd = os.open(STATE_DIR / "changes.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _peer_spec(p: Any) -> dict[str, Any]:
    if not isinstance(p, dict):
        raise Invalid("each peer is an object")
    spec: dict[str, Any] = {"key": key(p.get("key")), "allowed_ips": [network(n) for n in _list(p.get("allowed_ips"))]}
    if p.get("endpoint") is not None:
        spec["endpoint"] = endpoint(p["endpoint"])
    if p.get("keepalive") is not None:
        spec["keepalive"] = integer(p["keepalive"], 1, 65535, "keepalive")
    return spec


def _put_back(interface: str, todo: list[dict[str, Any]]) -> None:
    argv = ["wg", "set", interface]
    for s in todo:
        argv += ["peer", s["key"], "allowed-ips", ",".join(s["allowed_ips"])]
        if s["endpoint"] is not None:
            argv += ["endpoint", s["endpoint"]]
        if s["keepalive"] is not None:
            argv += ["persistent-keepalive", str(s["keepalive"])]
    result = run(argv)
    if result.returncode != 0:
        raise RuntimeError(f"wg set: {result.stderr.strip()}")


def op_add_peers(req: dict[str, Any]) -> dict[str, Any]:
    """Put back peers this agent removed, with the allowed IPs they had; refuses any other key, other
    allowed IPs and revoked keys. The endpoint and keepalive are the caller's, else the ones this agent
    recorded: neither grants access (the key does), and the caller's may be the better hint (a peer that
    was re-added by hand and removed again has none recorded). A peer already present with those allowed
    IPs is success (a retry). Enrolling a new device is the hub owner's job, not the responder's."""
    interface = name(req.get("interface"), INTERFACE, "interface")
    specs = [_peer_spec(p) for p in _list(req.get("peers"))]
    denied = revoked(interface) & {s["key"] for s in specs}
    if denied:
        raise Invalid(f"revoked keys cannot be added back: {sorted(denied)}")
    keys = [s["key"] for s in specs]
    with record(REMOVED_PEERS) as removed:
        mine = removed.get(interface, {})
        present = peers(interface, keys)
        todo = []
        for s in specs:
            was = mine.get(s["key"])
            if was is not None and sorted(s["allowed_ips"]) == sorted(was["allowed_ips"]):
                todo.append({"endpoint": was["endpoint"], "keepalive": was["keepalive"], **s})
            elif not (s["key"] in present and sorted(s["allowed_ips"]) == sorted(present[s["key"]]["allowed_ips"])):
                raise Invalid(
                    f"peer {s['key']} was not removed by this agent with these allowed IPs: only what was "
                    "removed can be put back"
                )
        if todo:
            _put_back(interface, todo)
        after = peers(interface, keys)
        back = [s["key"] for s in todo if s["key"] in after]
        # The file after the interface: a peer back in the file but not running would come back at the
        # next start without anyone having seen it work.
        conf = wireguard_file(interface)
        blocks = {k: mine[k]["conf"] for k in back if mine[k].get("conf")}

        def put_back(text: str) -> str:
            there = peer_blocks(text, list(blocks))
            return with_blocks(text, [block for k, block in blocks.items() if k not in there])

        error = _edit_file(conf, put_back)
        for k in back:
            if error is None or k not in blocks:
                mine.pop(k, None)  # put back: a second add needs a second removal
        if interface in removed and not mine:
            del removed[interface]
    ok = all(s["key"] in after and sorted(after[s["key"]]["allowed_ips"]) == sorted(s["allowed_ips"]) for s in specs)
    return {"verified": ok, **persisted(error, conf)}


# -- nftables --------------------------------------------------------------------------------------


def _nft() -> Any:
    import nftables  # noqa: PLC0415 - the hub's Debian package; imported once per process

    nft = nftables.Nftables()
    nft.set_json_output(True)
    nft.set_handle_output(False)
    return nft


NFT = None


def nft() -> Any:
    global NFT  # noqa: PLW0603 - one libnftables context per agent process
    if NFT is None:
        NFT = _nft()
    return NFT


def nft_cmd(payload: dict[str, Any]) -> Any:
    rc, out, err = nft().json_cmd(payload)
    if rc != 0:
        raise RuntimeError(f"nft: {str(err).strip()}")
    return out


def set_elements(family: str, table: str, set_name: str) -> set[str]:
    out = nft_cmd({"nftables": [{"list": {"set": {"family": family, "table": table, "name": set_name}}}]})
    found: set[str] = set()
    for item in out.get("nftables", []):
        for e in item.get("set", {}).get("elem", []):
            value = e.get("elem", {}).get("val") if isinstance(e, dict) else e
            if isinstance(value, str):
                found.add(value)
    return found


FEW_ELEMENTS = 32


def element_present(family: str, table: str, set_name: str, addr: str) -> bool:
    """Whether the set matches the address now. `get element` is text: nftables 1.0.6's JSON has no `get`.
    Every value in it is validated (family from FAMILIES, names by NAME, the address normalised by
    ipaddress), so nothing else can reach the parser. Called after a transaction on the set succeeded,
    so "No such file or directory" means the element is absent, not the set."""
    rc, _, err = nft().cmd(f"get element {family} {table} {set_name} {{ {addr} }}")
    if rc == 0:
        return True
    if "No such file or directory" in str(err):
        return False
    raise RuntimeError(f"nft get element: {str(err).strip()}")


def _present(family: str, table: str, set_name: str, addresses: set[str]) -> set[str]:
    """Which of `addresses` the set holds now: one read each for a few, one listing for many."""
    if len(addresses) <= FEW_ELEMENTS:
        return {a for a in addresses if element_present(family, table, set_name, a)}
    return addresses & set_elements(family, table, set_name)


def _family(req: dict[str, Any]) -> str:
    family = req.get("family", "inet")
    if not isinstance(family, str) or family not in FAMILIES:
        raise Invalid(f"family must be one of {sorted(FAMILIES)}")
    return family


Element = tuple[str, str, dict[str, Any]]  # set, address, the request's item


def _requested(req: dict[str, Any], field: str) -> list[Element]:
    return [(name(_get(i, "set"), NAME, "set"), address(_get(i, "address")), i) for i in _list(req.get(field, []))]


def _transaction(
    family: str, table: str, deletes: list[Element], adds: list[Element]
) -> tuple[list[dict[str, Any]], dict[str, float | None]]:
    """The nft commands, and for each added element the time its kernel timeout ends (None: never)."""
    commands: list[dict[str, Any]] = []
    for s, a, _ in deletes:
        elem = {"family": family, "table": table, "name": s, "elem": [a]}
        # nft 1.0.6 has no `destroy`: add-then-delete in one batch succeeds whether or not it was there.
        commands += [{"add": {"element": elem}}, {"delete": {"element": elem}}]
    ends: dict[str, float | None] = {}
    for s, a, item in adds:
        value: Any = a
        timeout = None
        if item.get("timeout") is not None:
            timeout = integer(item["timeout"], 1, 2**31 - 1, "timeout")
            value = {"elem": {"val": a, "timeout": timeout}}
            comment = item.get("comment")
            if comment is not None:
                value["elem"]["comment"] = name(comment, COMMENT, "comment")
            # Re-adding with a new timeout only updates it on recent kernels: replace it in the same batch.
            plain = {"family": family, "table": table, "name": s, "elem": [a]}
            commands += [{"add": {"element": plain}}, {"delete": {"element": plain}}]
        commands.append({"add": {"element": {"family": family, "table": table, "name": s, "elem": [value]}}})
        ends[f"{family} {table} {s} {a}"] = None if timeout is None else time.time() + timeout
    return commands, ends


def _refuse_grants(
    family: str, table: str, deletes: list[Element], adds: list[Element], *, removed: set[str], added: dict[str, Any]
) -> dict[str, set[str]]:
    """Raise unless every change takes access away or puts back what this agent took; the elements it had
    to read to know (by set), present before the change."""
    # Read the set only where the records do not already answer (a quarantine and its lifting never).
    unsure: dict[str, set[str]] = {}
    for s, a, _ in adds:
        if not (POLICY.denies(family, table, s) or f"{family} {table} {s} {a}" in removed):
            unsure.setdefault(s, set()).add(a)  # allowed only if already there: a retry
    for s, a, _ in deletes:
        if not POLICY.denies(family, table, s) or f"{family} {table} {s} {a}" not in added:
            unsure.setdefault(s, set()).add(a)  # to record it, or to refuse lifting another's quarantine
    present = {s: _present(family, table, s, addresses) for s, addresses in unsure.items()}
    for s, a, _ in adds:
        if a in unsure.get(s, ()) and a not in present[s]:
            raise Invalid(
                f"{a} was not deleted from set {s} by this agent, and {s} is not a deny set of "
                f"{POLICY.path}: only a deny set can be added to, or an element put back"
            )
    for s, a, _ in deletes:
        if POLICY.denies(family, table, s) and a in present.get(s, ()):
            raise Invalid(f"{a} was not added to deny set {s} by this agent: it is not for the responder to lift")
    return present


def _guarded(
    family: str, table: str, deletes: list[Element], adds: list[Element], *, ends: dict[str, float | None], apply: Any
) -> dict[str, Any]:
    """Run `apply` only if no change grants access (see _refuse_grants), and keep the record of what this
    agent took (deleted from an allowing set) and set (added to a deny set), in STATE_DIR and in the nft
    include of the hub's ruleset file (the answer's `persisted`).

    What the change takes is recorded before it runs, and what it gives back is struck off after: an agent
    killed in between leaves a record that allows a put-back or a lifting that changes nothing, never an
    element taken that nothing may put back."""
    with record(ELEMENTS) as kept:
        removed: set[str] = set(kept.get("removed", []))
        added: dict[str, float | None] = {
            k: t for k, t in kept.get("added", {}).items() if t is None or t > time.time()
        }  # an element whose kernel timeout has passed is gone by itself
        present = _refuse_grants(family, table, deletes, adds, removed=removed, added=added)
        taking = False
        for s, a, _ in deletes:
            if not POLICY.denies(family, table, s) and a in present.get(s, ()):
                removed.add(f"{family} {table} {s} {a}")  # it may be put back, once
                taking = True
        for s, a, _ in adds:
            if POLICY.denies(family, table, s):
                added[f"{family} {table} {s} {a}"] = ends[f"{family} {table} {s} {a}"]
                taking = True
        kept["removed"], kept["added"] = sorted(removed), added
        if taking:
            kept.save()
        apply()
        for s, a, _ in deletes:
            if POLICY.denies(family, table, s):
                added.pop(f"{family} {table} {s} {a}", None)
        for s, a, _ in adds:
            if not POLICY.denies(family, table, s):
                removed.discard(f"{family} {table} {s} {a}")
        kept["removed"], kept["added"] = sorted(removed), added
        where = POLICY.elements_file
        if where is None:
            return persisted(None, None)
        try:
            write_elements(where, elements_text(removed, added, time.time()))
        except OSError as exc:
            return persisted(str(exc), where)
        return persisted(None, where)


def _read_back(family: str, table: str, deletes: list[Element], adds: list[Element]) -> bool:
    touched: dict[str, tuple[set[str], set[str]]] = {}
    for s, a, _ in deletes:
        touched.setdefault(s, (set(), set()))[1].add(a)
    for s, a, _ in adds:
        touched.setdefault(s, (set(), set()))[0].add(a)
    verified = True
    for s, (added, deleted) in touched.items():
        if len(added) + len(deleted) <= FEW_ELEMENTS:
            # A few elements of a set of thousands: read back each one, not the whole set.
            gone = deleted - added
            verified = verified and all(element_present(family, table, s, a) for a in added)
            verified = verified and not any(element_present(family, table, s, a) for a in gone)
        else:
            now = set_elements(family, table, s)
            verified = verified and added <= now and not (deleted - added) & now
    return verified


def op_elements(req: dict[str, Any]) -> dict[str, Any]:
    """Add and delete set elements in one atomic transaction; deleting an absent element is success.

    Only what takes access away, or puts back what this agent took: adding to a deny set of the hub's
    configuration, or back into a set this agent deleted the element from; deleting from any other set,
    or from a deny set an element this agent added. Anything else refuses the whole request."""
    family = _family(req)
    table = name(req.get("table"), NAME, "table")
    deletes, adds = _requested(req, "delete"), _requested(req, "add")
    commands, ends = _transaction(family, table, deletes, adds)

    def apply() -> None:
        if commands:
            nft_cmd({"nftables": commands})

    kept = _guarded(family, table, deletes, adds, ends=ends, apply=apply)
    return {"verified": _read_back(family, table, deletes, adds), "commands": len(commands), **kept}


def op_list_set(req: dict[str, Any]) -> dict[str, Any]:
    family = _family(req)
    return {"elements": sorted(set_elements(family, name(req.get("table")), name(req.get("set"))))}


# -- conntrack -------------------------------------------------------------------------------------


def flows(addresses: list[str]) -> dict[str, int]:
    """Flows left per address, from one dump of the table (one conntrack call, not two per address)."""
    result = run(["conntrack", "-L"])
    counts = dict.fromkeys(addresses, 0)
    for line in result.stdout.splitlines():
        fields = set(line.split())
        for a in addresses:
            if f"src={a}" in fields or f"dst={a}" in fields:
                counts[a] += 1
    return counts


def op_kill_flows(req: dict[str, Any]) -> dict[str, Any]:
    addresses = [address(a) for a in _list(req.get("addresses"))]
    argvs = [["conntrack", "-D", d, a] for a in addresses for d in ("-s", "-d")]
    for argv, result in zip(argvs, run_all(argvs)):  # noqa: B905 - runs on Python 3.9 hubs too
        if result.returncode not in (0, 1):  # 1: nothing matched, which is success here
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    remaining = flows(addresses)
    return {"remaining": remaining, "verified": not any(remaining.values())}


def _installed_sha256() -> str:
    """The sha256 of this file as installed: what `responder hubs check` compares with the release it ships."""
    try:
        return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    except OSError:
        return ""


def op_hello(_: dict[str, Any]) -> dict[str, Any]:
    return {"version": VERSION, "release": __version__, "sha256": _installed_sha256(), "ops": sorted(OPS)}


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list) or len(value) > 10000:
        raise Invalid("expected a list (at most 10000 items)")
    return value


def _get(item: Any, field: str) -> Any:
    if not isinstance(item, dict):
        raise Invalid("each element is an object with set and address")
    return item.get(field)


OPS = {
    "hello": op_hello,
    "peers": op_peers,
    "remove_peers": op_remove_peers,
    "revoke_keys": op_revoke_keys,
    "revoked": op_revoked,
    "add_peers": op_add_peers,
    "elements": op_elements,
    "list_set": op_list_set,
    "kill_flows": op_kill_flows,
}


def _parse(line: str) -> dict[str, Any]:
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise Invalid("not JSON, or nested too deeply") from None
    if not isinstance(req, dict):
        raise Invalid("a request is a JSON object")
    rid = req.get("id")
    if not (rid is None or (isinstance(rid, int) and not isinstance(rid, bool))):
        raise Invalid("id must be an integer")
    if not isinstance(req.get("op"), str):
        raise Invalid(f"op must be a string, one of {sorted(OPS)}")
    return req


def handle(line: str) -> dict[str, Any]:
    """The answer to one request line. Never raises: whatever the line holds, the agent answers and
    goes on to the next request."""
    try:
        req = _parse(line)
    except Invalid as exc:
        return {"id": None, "ok": False, "error": f"invalid: {exc}"}
    rid = req.get("id")
    op = OPS.get(req["op"])
    if op is None:
        return {"id": rid, "ok": False, "error": f"unknown op; allowed: {sorted(OPS)}"}
    try:
        return {"id": rid, "ok": True, "result": op(req)}
    except Invalid as exc:
        return {"id": rid, "ok": False, "error": f"invalid: {exc}"}
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return {"id": rid, "ok": False, "error": str(exc)}
    except Exception as exc:  # a request the checks above missed must not end the agent
        return {"id": rid, "ok": False, "error": f"invalid: {type(exc).__name__}: {exc}"}


# What each operation reads and changes. Operations on different state run at once (a set change and a
# peer removal do not wait for each other); operations on the same state run one after another, in the
# order they arrived. A caller that needs an order across kinds (the flow kill after both) waits for the
# answers before sending the next request.
LANES = {
    "elements": "nftables", "list_set": "nftables",
    "peers": "wireguard", "remove_peers": "wireguard", "revoke_keys": "wireguard", "add_peers": "wireguard",
    "revoked": "wireguard",
    "kill_flows": "conntrack",
}  # fmt: skip

TOO_LARGE = None  # in place of a line longer than MAX_LINE


def _lane(line: str | None) -> str:
    if line is None:
        return "other"
    try:
        req = json.loads(line)
    except (ValueError, RecursionError):
        return "other"
    op = req.get("op") if isinstance(req, dict) else None
    return LANES.get(op, "other") if isinstance(op, str) else "other"


def _lines(stream: Any) -> Iterator[str | None]:
    """Request lines of at most MAX_LINE bytes; a longer one is read through and dropped, never held."""
    while chunk := stream.readline(MAX_LINE + 1):
        if len(chunk) <= MAX_LINE or chunk.endswith(b"\n"):
            yield chunk.decode("utf-8", "replace")
            continue
        while (rest := stream.readline(MAX_LINE)) and not rest.endswith(b"\n"):
            pass
        yield TOO_LARGE


def _arguments(argv: list[str]) -> Path:
    if not argv:
        return CONFIG
    if len(argv) == 2 and argv[0] == "--config":
        return Path(argv[1])
    sys.stderr.write("usage: responder-hub-agent [--config FILE]\n")
    raise SystemExit(2)


def main() -> None:
    global POLICY  # noqa: PLW0603 - the hub owner's configuration, read once at start
    POLICY = Policy(_arguments(sys.argv[1:]))
    written = threading.Lock()
    lanes: dict[str, queue.Queue[tuple[str | None] | None]] = {}
    workers: list[threading.Thread] = []

    def answer(line: str | None) -> None:
        if line is TOO_LARGE:
            reply: dict[str, Any] = {"id": None, "ok": False, "error": f"request too large (over {MAX_LINE} bytes)"}
        else:
            reply = handle(line)
        with written:
            sys.stdout.write(json.dumps(reply) + "\n")
            sys.stdout.flush()

    def work(requests: queue.Queue[tuple[str | None] | None]) -> None:
        while (item := requests.get()) is not None:
            answer(item[0])

    for line in _lines(sys.stdin.buffer):
        lane = _lane(line)
        if lane not in lanes:
            lanes[lane] = queue.Queue()
            workers.append(threading.Thread(target=work, args=(lanes[lane],), name=lane, daemon=True))
            workers[-1].start()
        lanes[lane].put((line,))
    for requests in lanes.values():  # end of input: finish what was asked, then exit
        requests.put(None)
    for worker in workers:
        worker.join()


if __name__ == "__main__":
    main()
