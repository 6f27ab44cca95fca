"""`responder run`: the service."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer

from responder.cli.common import ConfigOption, fail, settings


def _listen(value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise typer.BadParameter("expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]") or "127.0.0.1", int(port)


def run(
    config: ConfigOption = None,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="HOST:PORT for webhooks and the admin API (default 127.0.0.1:8080); HTTPS when the "
            "configuration sets listen.tls_cert and listen.tls_key.",
        ),
    ] = None,
    journal: Annotated[str | None, typer.Option("--journal", help="Journal URL; overrides the configuration.")] = None,
    inventory: Annotated[Path | None, typer.Option("--inventory", help="Hub inventory (YAML).")] = None,
    record: Annotated[
        Path | None,
        typer.Option(
            "--record",
            help="Write every accepted delivery into an incident case draft in DIR (secrets "
            "redacted), for `responder replay`.",
        ),
    ] = None,
) -> None:
    """Run the responder: webhooks and Kafka in, decisions, enforcement on the hubs, journal.

    SIGHUP (systemctl reload) reloads the rule files, the TLS certificate and the API tokens file; what
    does not load is kept.
    """
    from responder.inventory import InventoryError  # noqa: PLC0415
    from responder.journal import JournalUnavailable  # noqa: PLC0415
    from responder.policy import PolicyError  # noqa: PLC0415
    from responder.service.api_tokens import TokenFileError  # noqa: PLC0415
    from responder.service.certificate import ListenerTLSError  # noqa: PLC0415
    from responder.service.service import Service, hubs_from, load_inventory  # noqa: PLC0415 - only `run` needs it
    from responder.service.sources import KafkaTLSError  # noqa: PLC0415
    from responder.telemetry.logs import configure_logging  # noqa: PLC0415
    from responder.telemetry.tracing import provider_from_environment, tracer  # noqa: PLC0415

    s = settings(config)
    updates: dict[str, object] = {}
    if (address := _listen(listen)) is not None:
        updates["listen"] = s.listen.model_copy(update={"host": address[0], "port": address[1]})
    if journal is not None:
        updates["journal"] = journal
    if inventory is not None:
        updates["inventory"] = inventory
    s = s.model_copy(update=updates)
    configure_logging()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        recorder = None
        if record is not None:
            from responder.replay.recorder import Recorder  # noqa: PLC0415

            recorder = Recorder(record)
        # The wiring: the hubs are built from the inventory here and handed to the service, which closes
        # them; they trace into the service's provider.
        provider = provider_from_environment()
        hubs = hubs_from(load_inventory(s), tracer(provider) if provider is not None else None, s.enforcement)
        service = Service(s, hubs=hubs, tracer_provider=provider, recorder=recorder, own_process=True)
        # The rule files, the TLS certificate and the API tokens file.
        loop.add_signal_handler(signal.SIGHUP, service.request_reload)
        try:
            await service.run(stop)
        finally:
            if provider is not None:
                provider.shutdown()  # flush the spans still queued

    try:
        asyncio.run(main())
    except (
        OSError, PolicyError, InventoryError, JournalUnavailable, KafkaTLSError, ListenerTLSError, TokenFileError
    ) as exc:  # fmt: skip
        # What an operator must fix before the service can start: said in a line each, exit 2.
        raise fail(str(exc).replace("\n", "\nerror: ")) from None
    logging.getLogger(__name__).info("stopped")
