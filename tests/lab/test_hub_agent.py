"""The hub agent reads WireGuard two ways — the UAPI socket of a userspace WireGuard, and `wg show dump`
for the kernel's — and both must say the same, on a real hub."""

from __future__ import annotations

import json

import pytest

from responder.lab import Lab
from responder.lab.lab import AGENT

pytestmark = pytest.mark.lab

COMPARE = f"""
import json, sys
sys.path.insert(0, {str(AGENT.parent)!r})
import responder_hub_agent as agent
print(json.dumps({{"uapi": agent.uapi_socket("wg0") is not None, "socket": agent.peers("wg0"),
                  "dump": agent.peers_from_dump("wg0")}}))
"""


async def test_the_uapi_socket_and_wg_dump_agree(lab: Lab) -> None:
    result = await lab.exec("hub1", "/usr/bin/python3", "-c", COMPARE)
    assert result.ok, result.stderr
    answer = json.loads(result.stdout)
    assert answer["socket"] == answer["dump"]
    assert {p["allowed_ips"][0] for p in answer["dump"].values()} == {"10.100.0.10/32", "10.100.0.20/32"}
    # With kernel WireGuard there is no socket and both readings are the dump; wireguard-go (this lab
    # where the kernel has no WireGuard) exercises the socket.
    assert isinstance(answer["uapi"], bool)
