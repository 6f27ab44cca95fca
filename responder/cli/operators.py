"""`responder operators`: the API tokens automation signs in with (created, listed, revoked)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from responder.cli.common import ConfigOption, JsonOption, fail, settings
from responder.service import api_tokens
from responder.service.operators import Role

app = typer.Typer(help="Operators of the admin API and the console: API tokens for automation.", no_args_is_help=True)
token_app = typer.Typer(
    help="API tokens: `rsp_...` bearer tokens with a name, a role and an expiry; the file keeps their SHA-256 only. "
    "A running service re-reads the file on SIGHUP (systemctl reload).",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")

TokensFileOption = Annotated[
    Path | None,
    typer.Option(
        "--tokens-file", help="The API tokens file. Default: the configuration's operators.tokens_file.",
        show_default=False,
    ),
]  # fmt: skip


def _path(config: Path | None, tokens_file: Path | None) -> Path:
    if tokens_file is not None:
        return tokens_file
    path = settings(config).operators.tokens_file
    if path is None:
        raise fail("no tokens file: set operators.tokens_file in the configuration or pass --tokens-file")
    return path


@token_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="What it is for, e.g. ci-deploy; the audit trail says token:NAME.")],
    role: Annotated[str, typer.Option("--role", help="viewer, approver or admin.")],
    expires: Annotated[str, typer.Option("--expires", help="Lifetime: 12h, 30d, 8w (at most 400d).")] = "30d",
    config: ConfigOption = None,
    tokens_file: TokensFileOption = None,
) -> None:
    """Create a token and print it once: it is kept nowhere, only its SHA-256 is written to the file."""
    path = _path(config, tokens_file)
    try:
        granted = Role.parse(role)
        lifetime = api_tokens.parse_lifetime(expires)
        token, entry = api_tokens.create(path, name, granted, lifetime, datetime.now(UTC).replace(microsecond=0))
    except ValueError as exc:
        raise fail(exc) from None
    typer.echo(token)
    typer.secho(
        f"token:{entry.name} ({entry.role.name.lower()}) until {entry.expires_at.isoformat(timespec='seconds')}; "
        f"shown once. A running service takes it after SIGHUP (systemctl reload responder).",
        err=True,
    )


@token_app.command("list")
def list_(config: ConfigOption = None, tokens_file: TokensFileOption = None, as_json: JsonOption = False) -> None:
    """List the tokens: name, role, state (valid, expired, revoked), created and expiry."""
    path = _path(config, tokens_file)
    try:
        tokens = api_tokens.load(path)
    except api_tokens.TokenFileError as exc:
        raise fail(exc) from None
    now = datetime.now(UTC)
    rows = [
        {
            "name": t.name,
            "role": t.role.name.lower(),
            "state": t.state(now),
            "created_at": t.created_at.isoformat(timespec="seconds"),
            "expires_at": t.expires_at.isoformat(timespec="seconds"),
        }
        for t in tokens
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo(f"no API tokens in {path}")
    for r in rows:
        line = f"{r['name']:<24} {r['role']:<9} {r['state']:<8} created {r['created_at']}  expires {r['expires_at']}"
        typer.echo(line)


@token_app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="The token's name.")],
    config: ConfigOption = None,
    tokens_file: TokensFileOption = None,
) -> None:
    """Revoke a token: it is refused from the next SIGHUP on (the entry stays, marked, for review)."""
    path = _path(config, tokens_file)
    try:
        entry = api_tokens.revoke(path, name, datetime.now(UTC).replace(microsecond=0))
    except ValueError as exc:
        raise fail(exc) from None
    assert entry.revoked_at is not None  # noqa: S101 - revoke() marks it
    typer.echo(f"revoked token:{entry.name} at {entry.revoked_at.isoformat(timespec='seconds')}; reload the service")
