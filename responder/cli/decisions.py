"""`responder decisions | approve | undo`: the operator's side of the admin API of a running service."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated, Any

import aiohttp
import typer

from responder.cli.common import ConfigOption, JsonOption, fail, settings

UrlOption = Annotated[
    str | None,
    typer.Option("--url", help="The service's admin API (default: from the configuration's listen address).",
                 show_default=False),
]  # fmt: skip
ActorOption = Annotated[str, typer.Option("--actor", help="Ignored: the audit trail names whom the token proves.")]
OPERATOR_TOKEN = "RESPONDER_OPERATOR_TOKEN"  # noqa: S105 - the variable's name, not a token


def _client(config: Any, url: str | None) -> tuple[str, dict[str, str]]:
    s = settings(config)
    # Your own credential (an API token, an IdP access token) names you in the audit trail; the shared
    # admin token is the bootstrap one, `bootstrap-admin`.
    token = os.environ.get(OPERATOR_TOKEN, "").strip()
    if not token and s.admin_token is not None:
        token = s.admin_token.get_secret_value()
    if not token:
        raise fail(f"set {OPERATOR_TOKEN} to your API token or IdP access token (or RESPONDER_ADMIN_TOKEN)")
    host = "127.0.0.1" if s.listen.host in {"0.0.0.0", "::"} else s.listen.host  # noqa: S104 - a client address
    base = url or f"http://{host}:{s.listen.port}"
    return base.rstrip("/"), {"Authorization": f"Bearer {token}"}


async def _call(method: str, url: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http,
        http.request(method, url, headers=headers, json=body) as r,
    ):
        return r.status, await r.json(content_type=None)


def _request(method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
    try:
        status, answer = asyncio.run(_call(method, url, headers, body))
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise fail(f"cannot reach the service at {url}: {exc or type(exc).__name__}") from None
    if status >= 400:
        raise fail(f"{status}: {answer.get('error', answer) if isinstance(answer, dict) else answer}")
    return answer


def decisions(
    state: Annotated[str | None, typer.Option("--state", help="Only decisions in this state.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    as_json: JsonOption = False,
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """List the service's recent decisions: who, which response, its state, and whether its effect is verified
    on the hubs (a decision in force whose actions a hub has not verified yet says how many)."""
    base, headers = _client(config, url)
    query = f"?limit={limit}" + (f"&state={state}" if state else "")
    answer = _request("GET", f"{base}/api/decisions{query}", headers)
    if as_json:
        typer.echo(json.dumps(answer, indent=2))
        return
    for d in answer["decisions"]:
        waiting = d.get("unverified_actions", 0)
        note = f"  NOT VERIFIED: {waiting} action(s) pending on a hub" if waiting else ""
        typer.echo(f"{d['id']}  {d['created_at'][:19]}  {d['state']:<17} {d['response']:<12} {d['subject']}{note}")


def approve(
    decision: Annotated[str, typer.Argument(help="The decision id (see `responder decisions`).")],
    actor: ActorOption = "operator",
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Approve a decision that waits for a human; its actions run at once."""
    base, headers = _client(config, url)
    _request("POST", f"{base}/api/decisions/{decision}/approve", headers, {"actor": actor})
    typer.echo(f"{decision}: approved")


def undo(
    decision: Annotated[str, typer.Argument(help="The decision id (see `responder decisions`).")],
    actor: ActorOption = "operator",
    config: ConfigOption = None,
    url: UrlOption = None,
) -> None:
    """Take a decision back (every reversible action is undone and verified), or reject one that waits."""
    base, headers = _client(config, url)
    _request("POST", f"{base}/api/decisions/{decision}/undo", headers, {"actor": actor})
    typer.echo(f"{decision}: undone")
