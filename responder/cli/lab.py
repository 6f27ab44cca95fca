"""`responder lab`: real hubs and peers in network namespaces, for tests and demos."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Build and inspect the local lab: real WireGuard hubs in network namespaces.",
    no_args_is_help=True,
)
