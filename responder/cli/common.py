"""What several command groups share: settings, the inventory, the journal, and how errors are said."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from responder.config import DEFAULT_LAB_INVENTORY, ConfigError, Settings, load_settings
from responder.inventory import Inventory, InventoryError

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", envvar="RESPONDER_CONFIG", help="Service configuration (YAML).", show_default=False),
]
InventoryOption = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        help=f"Hub inventory (YAML). Default: the configuration's, else the local lab's ({DEFAULT_LAB_INVENTORY}).",
        show_default=False,
    ),
]
JournalOption = Annotated[
    str | None,
    typer.Option(
        "--journal",
        help="Journal URL (sqlite:///PATH or postgresql://...). Default: the configuration's.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def fail(message: object) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def settings(config: Path | None) -> Settings:
    try:
        return load_settings(config)
    except FileNotFoundError as exc:
        raise fail(exc) from None
    except ConfigError as exc:
        raise fail("\nerror: ".join(f"invalid configuration: {p}" for p in exc.problems)) from None


def inventory(config: Path | None, path: Path | None) -> Inventory:
    chosen = path or settings(config).inventory or DEFAULT_LAB_INVENTORY
    if not chosen.exists():
        hint = " (is the lab up? `responder lab up`)" if chosen == DEFAULT_LAB_INVENTORY else ""
        raise fail(f"inventory {chosen} does not exist{hint}")
    try:
        return Inventory.load(chosen)
    except InventoryError as exc:
        raise fail(exc) from None
