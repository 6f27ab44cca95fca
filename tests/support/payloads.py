"""Example payloads written to the documented shapes (tests/payloads/), and a Shared Signals transmitter
key for signing SETs in tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from responder.replay.transmitter import Transmitter as ReplayTransmitter

PAYLOADS = Path(__file__).resolve().parents[1] / "payloads"


def payload(name: str) -> Any:
    return json.loads((PAYLOADS / name).read_text(encoding="utf-8"))


def raw(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


class Transmitter(ReplayTransmitter):
    """A Shared Signals transmitter's signing key, its JWKS, and SETs signed with it (the replay's own)."""

    def __init__(self, kid: str = "tx-1") -> None:
        super().__init__(kid)
