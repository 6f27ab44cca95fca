"""The enforcement point adapters: WireGuard hubs over SSH, in agent or agentless mode."""

from responder.pep.errors import CircuitOpen, HostKeyMismatch, HubError, HubRefused, HubUnreachable, NotDelivered
from responder.pep.hub import ActionResult, Hub, SshHub

__all__ = [
    "ActionResult",
    "CircuitOpen",
    "HostKeyMismatch",
    "Hub",
    "HubError",
    "HubRefused",
    "HubUnreachable",
    "NotDelivered",
    "SshHub",
]
