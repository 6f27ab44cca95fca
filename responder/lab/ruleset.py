"""The seed's nftables ruleset for a hub (table `inet zerotrust`), as `nft -f` input."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from responder.lab.topology import MONITORING_PORTS, WG_PORT

# The hub agent's nft include (deploy/hub/README.md): what it changed in the sets, re-applied by every
# `nft -f` of the ruleset file. Last, after the sets' own elements; a glob, so a hub where the agent has
# not written it yet still loads.
AGENT_ELEMENTS_INCLUDE = 'include "/var/lib/responder-hub/elements*.nft"\n'


def hub_ruleset(
    *,
    interface: str,
    admin_devices: Iterable[ipaddress.IPv4Address],
    app_servers: Iterable[ipaddress.IPv4Address],
    management: ipaddress.IPv4Address,
) -> str:
    """Default deny in both chains; the `quarantine` deny set sits before the established-flow rule so a
    quarantined address loses its live sessions at once, and its element timeouts expire in the kernel.
    It ends with the hub agent's include (AGENT_ELEMENTS_INCLUDE)."""

    def elements(addresses: Iterable[object]) -> str:
        items = ", ".join(str(a) for a in addresses)
        return f"elements = {{ {items} }}" if items else ""

    return f"""\
table inet zerotrust
delete table inet zerotrust
table inet zerotrust {{
    set admin_devices {{
        type ipv4_addr
        {elements(admin_devices)}
    }}
    set app_servers {{
        type ipv4_addr
        {elements(app_servers)}
    }}
    set monitoring_ports {{
        type inet_service
        {elements(MONITORING_PORTS)}
    }}
    set quarantine {{
        type ipv4_addr
        flags timeout
    }}

    chain input {{
        type filter hook input priority filter; policy drop;
        iif "lo" accept
        ip saddr @quarantine drop
        ct state established,related accept
        ct state invalid drop
        udp dport {WG_PORT} accept
        ip saddr {management} tcp dport 22 accept comment "responder management"
        iifname "{interface}" ip saddr @admin_devices tcp dport 22 accept
        iifname "{interface}" ip saddr @app_servers tcp dport @monitoring_ports accept
    }}

    chain forward {{
        type filter hook forward priority filter; policy drop;
        ip saddr @quarantine drop
        ip daddr @quarantine drop
        ct state established,related accept
        ct state invalid drop
        iifname "{interface}" oifname "{interface}" ip saddr @admin_devices ip daddr @app_servers accept
    }}

    chain output {{
        type filter hook output priority filter; policy accept;
        ip daddr @quarantine drop
    }}
}}
{AGENT_ELEMENTS_INCLUDE}"""
