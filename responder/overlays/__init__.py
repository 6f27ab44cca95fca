"""Managed overlays (Tailscale, Headscale, NetBird, DefGuard) as enforcement points behind the `Hub` protocol.

The adapters are in `responder.overlays.adapters` (`open_overlay`); the inventory model in
`responder.overlays.inventory`, which the main inventory uses without loading the adapters.
"""
