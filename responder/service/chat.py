"""Who in a chat is which operator: `chat.people` gives each operator id its role, `chat.slack.users` maps
a Slack user to an operator id. A chat user nobody mapped is nobody, whatever the chat says about them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from responder.core.approvals import TIMEOUT_ACTOR
from responder.service.operators import Operator, Role

# What each verb needs: approving and rejecting a waiting decision is an approver's; undoing one in force
# is an admin's (as on the admin API).
NEEDS = {"approve": Role.APPROVER, "reject": Role.APPROVER, "undo": Role.ADMIN}


@dataclass(frozen=True, slots=True)
class ChatPeople:
    """Operator id -> role, as `chat.people` says."""

    roles: Mapping[str, Role]

    @classmethod
    def parse(cls, people: Mapping[str, str]) -> ChatPeople:
        return cls({operator: Role.parse(role) for operator, role in people.items()})

    def operator(self, operator_id: str, via: str) -> Operator | None:
        """The operator with this id, verified by `via` (slack, link); None when `chat.people` lacks them.
        The policy's own actor names are never an operator's, whatever a configuration says."""
        role = self.roles.get(operator_id)
        if role is None or operator_id in (TIMEOUT_ACTOR, "responder", "bootstrap-admin"):
            return None
        return Operator(operator_id, role, via)
