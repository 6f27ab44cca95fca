"""What can go wrong on the way to a hub, said so that an operator knows what to change."""

from __future__ import annotations


class HubError(Exception):
    def __init__(self, hub: str, message: str) -> None:
        super().__init__(f"hub {hub}: {message}")
        self.hub = hub


class HubUnreachable(HubError):
    """No SSH connection: down, filtered, or timed out. Retried with backoff."""


class NotDelivered(HubUnreachable):
    """The request never left: no connection could be made, or no channel opened. Safe to try again."""


class HostKeyMismatch(HubError):
    """The hub's host key is not the pinned one. Never retried: it may be an impostor."""


class CircuitOpen(HubError):
    """Too many consecutive failures: calls fail fast until the cool-down ends."""


class HubRefused(HubError):
    """The hub (agent or command) refused or failed the operation."""
