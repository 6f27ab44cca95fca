"""The executor's veto of protected targets follows the protection of rules reloaded live."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

from responder.core.actions import Action, ActionType
from responder.core.identity import IdentityMap
from responder.core.rules import Protection
from responder.service.guard import ProtectedTargets


def test_the_veto_refuses_what_the_reloaded_protection_names_from_then_on() -> None:
    quarantine = Action(ActionType.QUARANTINE, "hub1", ip_address("10.100.0.20"), "quarantine")
    veto = ProtectedTargets(Protection(), IdentityMap(None))
    assert veto(quarantine) is None
    veto.replace(Protection(networks=(ip_network("10.100.0.16/28"),)))
    assert veto(quarantine) == "10.100.0.20 is protected (in protected network 10.100.0.16/28)"
