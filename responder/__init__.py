"""responder: the policy decision point that keeps WireGuard/nftables hubs honest in real time."""

__version__ = "0.1.0"
