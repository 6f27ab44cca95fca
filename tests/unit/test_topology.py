import ipaddress
from pathlib import Path

import pytest

from responder.core.identifiers import WireGuardKey
from responder.inventory import HubMode
from responder.lab import Expect, Role, Topology
from responder.lab.inventory import topology_inventory
from responder.lab.ruleset import hub_ruleset
from responder.lab.topology import MANAGEMENT_ADDRESS, UNDERLAY


def test_seed_topology_has_the_seed_addresses() -> None:
    topo = Topology("rsp", 1)
    assert topo.names == ("soc", "hub1", "admin1", "app1")
    assert str(topo.node("hub1").tunnel) == "10.100.0.1"
    assert str(topo.node("admin1").tunnel) == "10.100.0.10"
    assert topo.node("admin1").owner == "alice@example.com"
    assert str(topo.node("app1").tunnel) == "10.100.0.20"
    assert topo.node("app1").sets == ("app_servers",)
    assert topo.node("soc").underlay == MANAGEMENT_ADDRESS


def test_many_hubs_get_distinct_addresses_inside_the_lab_ranges() -> None:
    topo = Topology("big", 50)
    underlay = [n.underlay for n in topo.nodes]
    assert len(set(underlay)) == len(underlay)
    assert all(a in UNDERLAY for a in underlay)
    tunnels = [n.tunnel for n in topo.nodes if n.tunnel]
    assert len(set(tunnels)) == len(tunnels)
    assert all(t in ipaddress.IPv4Network("10.100.0.0/16") for t in tunnels)
    assert sum(n.role is Role.HUB for n in topo.nodes) == 50


def test_matrix_expects_the_seed_policy() -> None:
    expected = {(c.src, c.dst, c.proto, c.port): c.expect for c in Topology("rsp", 1).matrix()}
    assert expected[("admin1", "app1", "tcp", 9090)] is Expect.ALLOW
    assert expected[("app1", "admin1", "icmp", None)] is Expect.DROP
    assert expected[("app1", "hub1", "tcp", 9100)] is Expect.ALLOW
    assert expected[("app1", "hub1", "tcp", 22)] is Expect.DROP
    assert expected[("soc", "hub1", "tcp", 22)] is Expect.ALLOW


@pytest.mark.parametrize("prefix", ["", "Rsp", "r-s", "toolongprefix", "1ab"])
def test_prefix_must_be_short_and_plain(prefix: str) -> None:
    with pytest.raises(ValueError, match="prefix"):
        Topology(prefix, 1)


def test_ruleset_puts_quarantine_before_established_flows() -> None:
    text = hub_ruleset(
        interface="wg0",
        admin_devices=[ipaddress.IPv4Address("10.100.0.10")],
        app_servers=[ipaddress.IPv4Address("10.100.0.20")],
        management=MANAGEMENT_ADDRESS,
    )
    forward = text[text.index("chain forward") :]
    assert forward.index("@quarantine drop") < forward.index("ct state established,related accept")
    assert "policy drop" in forward
    assert "elements = { 10.100.0.10 }" in text


def test_inventory_of_a_topology_lists_every_hub_and_peer_as_the_lab_builds_them() -> None:
    topo = Topology("inv", 2)
    keys = {n.name: WireGuardKey(f"{n.name:A<43}=") for n in topo.nodes if n.role is not Role.SOC}
    inventory = topology_inventory(
        topo,
        public_keys=keys,
        host_key=lambda hub: f"ssh-ed25519 AAAA{hub} comment",
        client_key=Path("/keys/id_agent"),
        netns=Path("/run/netns/inv-soc"),
    )
    hub2 = inventory.hub("hub2")
    assert (hub2.ssh.host, hub2.ssh.user, hub2.ssh.host_key) == ("198.18.1.2", "root", "ssh-ed25519 AAAAhub2")
    assert (hub2.ssh.client_key, hub2.ssh.netns) == (Path("/keys/id_agent"), Path("/run/netns/inv-soc"))
    assert (hub2.mode, str(hub2.tunnel_network), str(hub2.address)) == (HubMode.AGENT, "10.100.1.0/24", "10.100.1.1")
    assert sorted(p.name for p in inventory.peers) == ["admin1", "admin2", "app1", "app2"]
    app2 = next(p for p in inventory.peers if p.name == "app2")
    assert (app2.hub, app2.public_key, str(app2.tunnel_ip)) == ("hub2", keys["app2"], "10.100.1.20")
    assert (app2.sets, app2.owner, app2.device) == (("app_servers",), "svc-app2@example.com", "app2")
    assert inventory.management_addresses == (MANAGEMENT_ADDRESS,)
