"""Enrolling hubs: pin the host key, install the agent and the responder's key, write the inventory."""

from responder.enrollment.check import check, check_hub
from responder.enrollment.core import AgentRelease, EnrollError, Owners, fingerprint, peer_names
from responder.enrollment.enroll import DenySet, Enrollment, enroll
from responder.enrollment.remote import Target

__all__ = [
    "AgentRelease",
    "DenySet",
    "EnrollError",
    "Enrollment",
    "Owners",
    "Target",
    "check",
    "check_hub",
    "enroll",
    "fingerprint",
    "peer_names",
]
