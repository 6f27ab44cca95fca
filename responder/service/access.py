"""Who may call the service, built from the settings: OIDC bearer tokens, API tokens, the bootstrap token.

One owner for the authenticators: the service builds it at start, re-reads the API tokens on SIGHUP and
closes the OIDC key fetcher when it stops. Its `operators` guards every route (admin API, console, chat).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from responder.config import Settings
from responder.service.api_tokens import ApiTokens
from responder.service.oidc import OidcBearer
from responder.service.operators import Authenticator, BootstrapToken, Operators


class Access:
    """The service's authenticators, tried in this order: the bootstrap token, API tokens (`rsp_...`), OIDC
    bearer JWTs. Each recognises its own kind of credential and refuses only that kind."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        o = settings.operators
        self.tokens = ApiTokens(o.tokens_file, clock) if o.tokens_file is not None else None
        self.oidc = OidcBearer(o.oidc) if o.oidc is not None else None
        self.bootstrap = settings.admin_token is not None and o.bootstrap_token
        authenticators: list[Authenticator] = []
        if self.bootstrap and settings.admin_token is not None:
            # First: it answers only for an exact match, so a shared token that happens to look like an API
            # token or a JWT still works.
            authenticators.append(BootstrapToken(settings.admin_token))
        if self.tokens is not None:
            authenticators.append(self.tokens)
        if self.oidc is not None:
            authenticators.append(self.oidc)
        self.operators = Operators(authenticators)

    def describe(self) -> str:
        ways = [
            *(["API tokens"] if self.tokens is not None else []),
            *(["the bootstrap admin token"] if self.bootstrap else []),
            *(["OIDC bearer tokens"] if self.oidc is not None else []),
        ]
        return ", ".join(ways) or "nothing (the admin API answers 503)"

    def reload(self) -> None:
        """Re-read the API tokens file (SIGHUP); a file that cannot be read keeps the tokens in force.

        At once, not through `SignalledReloads` like the rules: reading a file of a few hundred lines is
        quicker than a task switch, it runs in the loop (not in the C signal handler), and there is no
        journal write to keep in order; the next request already sees the new tokens."""
        if self.tokens is not None:
            self.tokens.reload()

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()
