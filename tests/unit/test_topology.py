import ipaddress

import pytest

from responder.lab import Expect, Role, Topology
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
