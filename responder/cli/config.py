"""`responder config check`: is this host ready to run the service, before it is started."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from responder.cli.common import fail

DEFAULT_CONFIG = Path("/etc/responder/responder.yaml")

app = typer.Typer(help="Check the service's configuration.", no_args_is_help=True)


@app.command()
def check(
    config: Annotated[
        Path,
        typer.Option("--config", envvar="RESPONDER_CONFIG", help="Service configuration (YAML)."),
    ] = DEFAULT_CONFIG,
    offline: Annotated[
        bool, typer.Option("--offline", help="Check files and secrets only: do not connect to the hubs or Kafka.")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.1, max=120, help="Seconds each hub, Kafka and PostgreSQL get to answer."),
    ] = 5.0,
) -> None:
    """Validate the configuration, inventory, rules, secrets (present, private, strong enough; never printed)
    and the journal, then connect to every hub (pinned host key) and Kafka at once. One line per problem
    (FILE:LINE:COL: where it has a place in a file) and a summary line. Exit 0 when all is fine, 1 when a
    problem was found, 2 on a usage error."""
    from responder.preflight import check as run_checks  # noqa: PLC0415 - the checks' imports are heavy

    try:
        report = asyncio.run(run_checks(config, offline=offline, timeout_s=timeout))
    except FileNotFoundError as exc:
        raise fail(exc) from None
    for problem in report.problems:
        typer.echo(problem)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)
