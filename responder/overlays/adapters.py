"""The overlay adapters by kind, and `open_overlay` to make one from its inventory entry."""

from __future__ import annotations

import time
from collections.abc import Callable

from responder.overlays.base import OverlayHub
from responder.overlays.defguard import DefGuardOverlay
from responder.overlays.errors import (
    ConcurrentModification,
    OverlayAuthError,
    OverlayConfigError,
    OverlayError,
    OverlayNotFound,
    OverlayRefused,
    OverlayUnavailable,
    UnsupportedAction,
)
from responder.overlays.headscale import HeadscaleOverlay
from responder.overlays.http import HttpSettings
from responder.overlays.inventory import (
    CUT_OFFS,
    CutOff,
    OverlayActions,
    OverlayCredentials,
    OverlayDevice,
    OverlayKind,
    OverlaySpec,
    SecretSource,
    devices_by_owner,
    find_device,
)
from responder.overlays.netbird import NetBirdOverlay
from responder.overlays.tailscale import TailscaleOverlay

_ADAPTERS: dict[OverlayKind, type[OverlayHub]] = {
    OverlayKind.TAILSCALE: TailscaleOverlay,
    OverlayKind.HEADSCALE: HeadscaleOverlay,
    OverlayKind.NETBIRD: NetBirdOverlay,
    OverlayKind.DEFGUARD: DefGuardOverlay,
}


def open_overlay(
    spec: OverlaySpec, settings: HttpSettings | None = None, clock: Callable[[], float] = time.monotonic
) -> OverlayHub:
    """The adapter for `spec.kind`; reads its credentials now (errors name the env var or file)."""
    return _ADAPTERS[spec.kind](spec, settings, clock)


__all__ = [
    "CUT_OFFS",
    "ConcurrentModification",
    "CutOff",
    "DefGuardOverlay",
    "HeadscaleOverlay",
    "HttpSettings",
    "NetBirdOverlay",
    "OverlayActions",
    "OverlayAuthError",
    "OverlayConfigError",
    "OverlayCredentials",
    "OverlayDevice",
    "OverlayError",
    "OverlayHub",
    "OverlayKind",
    "OverlayNotFound",
    "OverlayRefused",
    "OverlaySpec",
    "OverlayUnavailable",
    "SecretSource",
    "TailscaleOverlay",
    "UnsupportedAction",
    "devices_by_owner",
    "find_device",
    "open_overlay",
]
