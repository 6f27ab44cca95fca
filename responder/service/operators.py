"""Who is asking: the operator behind a request to the admin API or the console, and what they may do.

Every route names the least role it needs; the caller's identity is established from its credential alone
and goes into the audit trail as the actor (a request body never says who acted). Roles are ordered:
a viewer reads, an approver also approves and rejects, an admin also undoes, acts and reloads the rules.

Identities come from `Authenticator`s tried in turn. The shared admin token is one of them: the bootstrap
credential, an admin named `bootstrap-admin` in the audit trail, meant for the first setup and for break-glass.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from aiohttp import web
from pydantic import SecretStr

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPERATOR_KEY = web.RequestKey("operator", object)  # set by Operators.require, read by operator_of


class Role(IntEnum):
    VIEWER = 1  # reads decisions, subjects, hubs, readiness, metrics
    APPROVER = 2  # also approves and rejects decisions that wait for a human
    ADMIN = 3  # also undoes decisions, acts by hand, reloads the rules

    @classmethod
    def parse(cls, name: str) -> Role:
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"role must be one of {[r.name.lower() for r in cls]}, not {name!r}") from None


@dataclass(frozen=True, slots=True)
class Operator:
    """A verified identity: `id` is what the audit trail records (an e-mail, `token:NAME`, `bootstrap-admin`)."""

    id: str
    role: Role
    via: str  # how it was verified: bootstrap, token, oidc, slack, link

    def may(self, role: Role) -> bool:
        return self.role >= role


class Refused(Exception):
    """A credential was presented and is not valid (expired, wrong signature, unknown): the reason, for a 401."""


class NoRole(Refused):
    """A valid credential that grants no role here (an IdP user in none of the mapped groups): for a 403."""


class Authenticator(Protocol):
    async def authenticate(self, request: web.Request) -> Operator | None:
        """The operator this request's credential proves, None when it carries no credential of this kind;
        `Refused` when it carries one that is not valid."""
        ...


class BootstrapToken:
    """The shared admin token (`admin_token`), compared in constant time: an admin, `bootstrap-admin`."""

    OPERATOR = Operator("bootstrap-admin", Role.ADMIN, "bootstrap")

    def __init__(self, token: SecretStr) -> None:
        self._expected = token.get_secret_value().encode()

    async def authenticate(self, request: web.Request) -> Operator | None:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return None
        if hmac.compare_digest(given.strip().encode(), self._expected):
            return self.OPERATOR
        return None  # perhaps another authenticator's token


class Operators:
    """The authenticators of this service, tried in order; the first that knows the credential decides."""

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self._authenticators = tuple(authenticators)

    @property
    def enabled(self) -> bool:
        return bool(self._authenticators)

    async def identify(self, request: web.Request) -> Operator:
        for authenticator in self._authenticators:
            operator = await authenticator.authenticate(request)
            if operator is not None:
                return operator
        raise Refused("missing or wrong bearer token")

    def require(self, role: Role) -> Callable[[Handler], Handler]:
        """Wrap a handler: 503 when no way to authenticate is configured, 401 without a valid identity, 403
        when the identity's role is below `role`. The handler finds the operator with `operator_of`."""

        def wrap(handler: Handler) -> Handler:
            async def guarded(request: web.Request) -> web.StreamResponse:
                if not self.enabled:
                    return _error(503, "the admin API is disabled: set RESPONDER_ADMIN_TOKEN or operators")
                try:
                    operator = await self.identify(request)
                except NoRole as exc:
                    return _error(403, str(exc))
                except Refused as exc:
                    return _error(401, str(exc), headers={"WWW-Authenticate": "Bearer"})
                if not operator.may(role):
                    return _error(
                        403, f"{operator.id} is a {operator.role.name.lower()}: this needs {role.name.lower()}"
                    )
                request[OPERATOR_KEY] = operator
                return await handler(request)

            return guarded

        return wrap


def operator_of(request: web.Request) -> Operator:
    """The operator `Operators.require` verified for this request."""
    operator = request.get(OPERATOR_KEY)
    if not isinstance(operator, Operator):
        raise TypeError("operator_of: the route is not guarded by Operators.require")
    return operator


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)
