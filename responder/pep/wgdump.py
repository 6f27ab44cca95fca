"""Parse `wg show <if> dump` without ever keeping a private or preshared key."""

from __future__ import annotations

from typing import Any


def parse_dump(text: str) -> dict[str, dict[str, Any]]:
    """Peers by public key. The first line (the interface, with its private key) is skipped, and each peer's
    preshared key field is dropped."""
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines()[1:]:
        f = line.split("\t")
        if len(f) < 8:
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


def parse_set(payload: dict[str, Any]) -> set[str]:
    """Element values of `nft -j list set` output (plain values and {elem: {val: ...}} entries)."""
    found: set[str] = set()
    for item in payload.get("nftables", []):
        for e in item.get("set", {}).get("elem", []):
            value = e.get("elem", {}).get("val") if isinstance(e, dict) else e
            if isinstance(value, str):
                found.add(value)
    return found
