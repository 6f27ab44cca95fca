"""The lab: real WireGuard hubs, peers and a management node in network namespaces."""

from responder.lab.lab import Handshake, Lab, LabError, LabStatus, Probe
from responder.lab.topology import Check, Expect, Node, Role, Topology

__all__ = [
    "Check",
    "Expect",
    "Handshake",
    "Lab",
    "LabError",
    "LabStatus",
    "Node",
    "Probe",
    "Role",
    "Topology",
]
