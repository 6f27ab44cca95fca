"""A hub's WireGuard configuration as `wg-quick` reads it (`/etc/wireguard/wg0.conf`), written as an
operator writes one: an `[Interface]` section, then one `[Peer]` block per device with a comment line
naming the device above it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

_PUBLIC_KEY = re.compile(r"^\s*PublicKey\s*=\s*(\S+)\s*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class PeerEntry:
    """One `[Peer]` block: the device's name (the comment above it), key, allowed IPs and how to reach it."""

    name: str
    public_key: str
    allowed_ips: tuple[str, ...]
    endpoint: str | None = None
    keepalive: int | None = None

    def block(self) -> str:
        lines = [f"# {self.name}", "[Peer]", f"PublicKey = {self.public_key}"]
        lines.append(f"AllowedIPs = {', '.join(self.allowed_ips)}")
        if self.endpoint is not None:
            lines.append(f"Endpoint = {self.endpoint}")
        if self.keepalive is not None:
            lines.append(f"PersistentKeepalive = {self.keepalive}")
        return "\n".join(lines) + "\n"


def hub_config(*, private_key: str, listen_port: int, address: str, peers: Iterable[PeerEntry]) -> str:
    """The whole file. It holds the private key: write it with mode 0600."""
    interface = f"[Interface]\nPrivateKey = {private_key}\nListenPort = {listen_port}\nAddress = {address}\n"
    return "\n".join([interface, *(p.block() for p in peers)])


def peer_blocks(text: str) -> dict[str, str]:
    """The file's `[Peer]` blocks by public key, each with the comment lines above its header. Blocks are
    split at blank lines, as this module writes them."""
    blocks: dict[str, str] = {}
    for chunk in text.split("\n\n"):
        found = _PUBLIC_KEY.search(chunk)
        if "[Peer]" in chunk and found:
            blocks[found.group(1)] = chunk.strip("\n") + "\n"
    return blocks


def with_running_peers(text: str, running: Iterable[PeerEntry], names: Mapping[str, str]) -> str:
    """The file kept in step with the running interface, as an operator does after enrolling devices:
    its `[Interface]` section and the blocks of running peers as they are, blocks for running peers the
    file lacks added (named from `names`, else by key), blocks of peers no longer running dropped."""
    interface = text.split("\n\n", 1)[0].strip("\n") + "\n"
    kept = peer_blocks(text)
    blocks = []
    for peer in running:
        if peer.public_key in kept:
            blocks.append(kept[peer.public_key])
        else:
            name = names.get(peer.public_key, peer.public_key)
            blocks.append(PeerEntry(name, peer.public_key, peer.allowed_ips, peer.endpoint, peer.keepalive).block())
    return "\n".join([interface, *blocks])


__all__ = ["PeerEntry", "hub_config", "peer_blocks", "with_running_peers"]
