"""The lab's shape as data: nodes, addresses and the reachability the seed's policy promises.

Pure and deterministic: the same (prefix, hubs) always gives the same topology, so `lab status` and
`lab down` can rebuild it from the prefix alone.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9]{0,7}$")
UNDERLAY = ipaddress.IPv4Network("198.18.0.0/16")  # RFC 2544 benchmarking range; lives only in lab netns
MANAGEMENT_ADDRESS = ipaddress.IPv4Address("198.18.0.2")
WG_PORT = 51820
KEEPALIVE_S = 25
MONITORING_PORTS = (9100, 9586)
APP_PORTS = (9090, 22)
ADMIN_PORTS = (9090,)
MAX_HUBS = 200


class Role(StrEnum):
    HUB = "hub"
    ADMIN = "admin"
    APP = "app"
    SOC = "soc"


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    role: Role
    index: int  # the hub this node belongs to (1-based); 0 for soc
    underlay: ipaddress.IPv4Address
    tunnel: ipaddress.IPv4Address | None = None
    owner: str | None = None
    sets: tuple[str, ...] = ()
    listens: tuple[int, ...] = ()


class Expect(StrEnum):
    ALLOW = "allow"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Check:
    """One cell of the reachability matrix: from `src`, reach `address` with `proto`(/`port`)."""

    src: str
    dst: str
    address: ipaddress.IPv4Address
    proto: str  # "tcp" or "icmp"
    port: int | None
    expect: Expect
    why: str

    @property
    def label(self) -> str:
        what = f"tcp/{self.port}" if self.proto == "tcp" else "icmp"
        return f"{self.src} -> {self.dst} {self.address} {what}"


def tunnel_network(index: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network(f"10.100.{index - 1}.0/24")


@dataclass(frozen=True, slots=True)
class Topology:
    prefix: str
    hubs: int

    def __post_init__(self) -> None:
        if not PREFIX_PATTERN.fullmatch(self.prefix):
            raise ValueError(f"lab prefix {self.prefix!r}: 1-8 of [a-z0-9], starting with a letter")
        if not 1 <= self.hubs <= MAX_HUBS:
            raise ValueError(f"hubs must be between 1 and {MAX_HUBS}")

    @property
    def nodes(self) -> tuple[Node, ...]:
        nodes = [Node("soc", Role.SOC, 0, MANAGEMENT_ADDRESS)]
        for i in range(1, self.hubs + 1):
            net = tunnel_network(i)
            nodes += [
                Node(
                    f"hub{i}",
                    Role.HUB,
                    i,
                    UNDERLAY.network_address + 256 + i,
                    net.network_address + 1,
                    listens=MONITORING_PORTS,
                ),
                Node(
                    f"admin{i}",
                    Role.ADMIN,
                    i,
                    UNDERLAY.network_address + 512 + i,
                    net.network_address + 10,
                    owner="alice@example.com" if i == 1 else f"admin{i}@example.com",
                    sets=("admin_devices",),
                    listens=ADMIN_PORTS,
                ),
                Node(
                    f"app{i}",
                    Role.APP,
                    i,
                    UNDERLAY.network_address + 768 + i,
                    net.network_address + 20,
                    owner="svc-app@example.com" if i == 1 else f"svc-app{i}@example.com",
                    sets=("app_servers",),
                    listens=APP_PORTS,
                ),
            ]
        return tuple(nodes)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in lab {self.prefix!r} (nodes: {', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def netns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    @property
    def switch(self) -> str:
        return f"{self.prefix}-sw"

    def hub_of(self, node: Node) -> Node:
        return self.node(f"hub{node.index}")

    def peers_of(self, hub: Node) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.index == hub.index and n.role in {Role.ADMIN, Role.APP})

    def matrix(self) -> tuple[Check, ...]:
        """The seed's policy as packets: what must pass and what must be dropped, for every hub."""
        checks: list[Check] = []
        for i in range(1, self.hubs + 1):
            hub, admin, app = self.node(f"hub{i}"), self.node(f"admin{i}"), self.node(f"app{i}")
            assert hub.tunnel and admin.tunnel and app.tunnel  # noqa: S101 - set above for these roles
            a, d = Expect.ALLOW, Expect.DROP
            checks += [
                Check(admin.name, app.name, app.tunnel, "tcp", 9090, a, "admin_devices -> app_servers"),
                Check(admin.name, app.name, app.tunnel, "tcp", 22, a, "admin_devices -> app_servers"),
                Check(admin.name, app.name, app.tunnel, "icmp", None, a, "admin_devices -> app_servers"),
                Check(app.name, admin.name, admin.tunnel, "tcp", 9090, d, "nothing allows app -> admin"),
                Check(app.name, admin.name, admin.tunnel, "icmp", None, d, "nothing allows app -> admin"),
                Check(app.name, hub.name, hub.tunnel, "tcp", 9100, a, "app_servers -> monitoring_ports"),
                Check(app.name, hub.name, hub.tunnel, "tcp", 9586, a, "app_servers -> monitoring_ports"),
                Check(app.name, hub.name, hub.tunnel, "tcp", 22, d, "ssh only from admin_devices"),
                Check(admin.name, hub.name, hub.tunnel, "tcp", 22, a, "ssh from admin_devices"),
                Check(admin.name, hub.name, hub.tunnel, "tcp", 9100, d, "monitoring only from app_servers"),
                Check("soc", hub.name, hub.underlay, "tcp", 22, a, "ssh from the management address"),
                Check(app.name, hub.name, hub.underlay, "tcp", 22, d, "ssh on the underlay: management only"),
            ]
        return tuple(checks)
