"""`responder replay`: recorded incidents through the real path, optionally into a real lab."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from responder.cli.common import JsonOption, fail

if TYPE_CHECKING:
    from responder.lab import Lab
    from responder.replay.case import Case
    from responder.replay.report import CaseReport
    from responder.replay.runner import Options


@contextlib.contextmanager
def _broker(cases: list[Case], given: str | None) -> Iterator[str | None]:
    from responder.lab.kafka import kafka_broker  # noqa: PLC0415 - the replay stack loads only for this command

    needed = any(d.kafka_format for c in cases for d in c.spec.deliveries)
    if given is not None or not needed:
        yield given
        return
    with kafka_broker() as bootstrap:
        yield bootstrap


async def _run(cases: list[Case], options: Options, lab: Lab | None, fresh: bool) -> list[CaseReport]:
    from responder.replay.runner import replay_cases  # noqa: PLC0415 - the service stack loads only here

    if lab is not None and fresh:
        await lab.up()
    try:
        options.lab = lab
        return await replay_cases(cases, options)
    finally:
        if lab is not None and fresh:
            await lab.down()


def replay(
    paths: Annotated[list[Path], typer.Argument(help="Case files or directories of them (e.g. replay/).")],
    lab: Annotated[
        bool, typer.Option("--lab", help="Bring up a fresh lab, enforce in it and probe it; tear it down after.")
    ] = False,
    use_lab: Annotated[
        str | None,
        typer.Option("--use-lab", help="Enforce in the lab that is up under this prefix (e.g. rsp); leave it up."),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide only; check decisions, not enforcement.")] = False,
    speed: Annotated[
        float | None,
        typer.Option("--speed", min=0.001, help="Real time: sleep offset/X between deliveries (default: virtual)."),
    ] = None,
    virtual_clock: Annotated[
        bool, typer.Option("--virtual-clock", help="The default: offsets move the clock, nothing sleeps.")
    ] = False,
    kafka: Annotated[
        str | None, typer.Option("--kafka", help="Kafka bootstrap HOST:PORT (default: start a Tansu broker).")
    ] = None,
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory",
            help="Dry-run: decide against this inventory (default: lab-shaped). With a lab: the lab's hubs "
            "plus more, e.g. an overlay.",
        ),
    ] = None,
    rules: Annotated[
        list[Path] | None, typer.Option("--rules", help="Rules for cases that name none (default: rules/).")
    ] = None,
    connectors: Annotated[Path, typer.Option("--connectors", help="SIEM connector directory.")] = Path("connectors"),
    lab_prefix: Annotated[str, typer.Option("--lab-prefix", help="The prefix of the lab --lab builds.")] = "rpl",
    write_expectations: Annotated[
        bool,
        typer.Option(
            "--write-expectations", help="Write what this run did into each case's expect: (for recorded drafts)."
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Replay incident cases through the real service and check what it decided and did."""
    # The lab, service and Kafka stacks load only when this command runs.
    from responder.lab import Lab, LabError  # noqa: PLC0415
    from responder.lab.kafka import BrokerError  # noqa: PLC0415
    from responder.replay.case import CaseError, load_cases  # noqa: PLC0415
    from responder.replay.recorder import fill_expectations  # noqa: PLC0415
    from responder.replay.report import render_all  # noqa: PLC0415
    from responder.replay.runner import Options  # noqa: PLC0415

    if sum([lab, use_lab is not None, dry_run]) > 1:
        raise fail("give one of --lab, --use-lab and --dry-run")
    if speed is not None and virtual_clock:
        raise fail("give --speed or --virtual-clock, not both")
    try:
        cases = load_cases(paths)
    except CaseError as exc:
        raise fail(exc) from None
    if not cases:
        raise fail("no case files found")
    options = Options(
        dry_run=not (lab or use_lab),
        inventory=inventory,
        speed=speed,
        rules=tuple(rules) if rules else (Path("rules"),),
        connectors=connectors,
    )
    logging.basicConfig(level=logging.ERROR)
    the_lab: Lab | None = None
    try:
        if use_lab is not None:
            the_lab = Lab.existing(use_lab)
        elif lab:
            the_lab = Lab(lab_prefix, hubs=max(c.spec.lab.hubs for c in cases))
        with _broker(cases, kafka) as bootstrap:
            options.kafka = bootstrap
            reports = asyncio.run(_run(cases, options, the_lab, fresh=lab))
    except (LabError, BrokerError, ValueError, OSError) as exc:
        raise fail(exc) from None
    if write_expectations:
        for case, report in zip(cases, reports, strict=True):
            fill_expectations(case.path, report)
    if as_json:
        typer.echo(
            json.dumps({"passed": all(r.passed for r in reports), "cases": [r.as_dict() for r in reports]}, indent=2)
        )
    else:
        typer.echo(render_all(reports))
    if not all(r.passed for r in reports):
        raise typer.Exit(1)
