"""What can go wrong on the way to an overlay's admin API, said so that an operator knows what to change."""

from __future__ import annotations


class OverlayError(Exception):
    def __init__(self, overlay: str, message: str) -> None:
        super().__init__(f"overlay {overlay}: {message}")
        self.overlay = overlay


class OverlayConfigError(OverlayError):
    """The overlay's spec or its credentials cannot be used (missing env var, unreadable file, bad mapping)."""


class OverlayAuthError(OverlayError):
    """401/403: the token is wrong, expired or lacks a scope. Never retried beyond one token refresh."""


class OverlayNotFound(OverlayError):
    """404 where the reference does not say that a 404 means done."""


class OverlayRefused(OverlayError):
    """Any other 4xx: the API understood the request and said no (e.g. unknown tag, cannot block the owner)."""

    def __init__(self, overlay: str, status: int, message: str) -> None:
        super().__init__(overlay, message)
        self.status = status


class OverlayUnavailable(OverlayError):
    """Connection failures, timeouts, 5xx and 429 that persisted through every retry."""


class ConcurrentModification(OverlayError):
    """The object changed between our read and our write on every attempt: we wrote nothing."""


class UnsupportedAction(OverlayError):
    """The overlay has no API for this action, or the spec does not map it (e.g. no quarantine group)."""
