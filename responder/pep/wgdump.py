"""Parse what `wg show` prints about peers, never keeping a private or preshared key: the per-field forms
the responder asks for (`wg show <if> allowed-ips`, ...), and `dump` (which tests read on the hub)."""

from __future__ import annotations

from collections.abc import Mapping
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


def parse_peer_fields(fields: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Peers by public key from the outputs of `wg show <if> FIELD` (one `key<TAB>value` line per peer)
    for FIELD in allowed-ips (required: it lists every peer), endpoints, persistent-keepalive,
    latest-handshakes, transfer; a field not asked for keeps its empty value."""
    out: dict[str, dict[str, Any]] = {}

    def lines(field: str) -> list[list[str]]:
        return [line.split("\t") for line in fields.get(field, "").splitlines() if "\t" in line]

    for f in lines("allowed-ips"):
        out[f[0]] = {"key": f[0], "endpoint": None, "allowed_ips": [] if f[1] == "(none)" else f[1].split(),
                     "latest_handshake": 0, "rx": 0, "tx": 0, "keepalive": None}  # fmt: skip
    for f in lines("endpoints"):
        if f[0] in out:
            out[f[0]]["endpoint"] = None if f[1] == "(none)" else f[1]
    for f in lines("persistent-keepalive"):
        if f[0] in out:
            out[f[0]]["keepalive"] = None if f[1] == "off" else int(f[1])
    for f in lines("latest-handshakes"):
        if f[0] in out:
            out[f[0]]["latest_handshake"] = int(f[1])
    for f in lines("transfer"):
        if f[0] in out and len(f) >= 3:
            out[f[0]]["rx"], out[f[0]]["tx"] = int(f[1]), int(f[2])
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
