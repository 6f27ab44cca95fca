"""The `responder` command line. Each sub-command group lives in its own module."""

from __future__ import annotations

import typer

from responder import __version__
from responder.cli import act, config, decisions, hubs, lab, operators, replay, rules, run

app = typer.Typer(
    name="responder",
    help="Security responder for WireGuard/nftables Zero Trust networks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(act.app, name="act")
app.add_typer(config.app, name="config")
app.add_typer(hubs.app, name="hubs")
app.add_typer(lab.app, name="lab")
app.add_typer(operators.app, name="operators")
app.add_typer(rules.app, name="rules")
app.command("run")(run.run)
app.command("decisions")(decisions.decisions)
app.command("approve")(decisions.approve)
app.command("undo")(decisions.undo)
app.command("replay")(replay.replay)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Security responder for WireGuard/nftables Zero Trust networks."""


def main() -> None:
    app()
