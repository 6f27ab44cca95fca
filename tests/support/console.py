"""Operators of each role for the console's tests, each known by a fixed bearer token."""

from __future__ import annotations

from aiohttp import web

from responder.service.operators import Operator, Operators, Role

TOKENS = {
    "viewer-token-value": Operator("vera@example.com", Role.VIEWER, "token"),
    "approver-token-value": Operator("april@example.com", Role.APPROVER, "token"),
    "admin-token-value": Operator("adam@example.com", Role.ADMIN, "token"),
}
TOKEN_OF = {o.role: t for t, o in TOKENS.items()}


class RoleTokens:
    """An `Authenticator` of the tokens above (what the operators' token file gives a real service)."""

    async def authenticate(self, request: web.Request) -> Operator | None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        return TOKENS.get(given.strip())


def operators() -> Operators:
    return Operators([RoleTokens()])
