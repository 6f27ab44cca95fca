"""Traces leave by OTLP over HTTP when the standard OTEL_* variables say so: a receiver on loopback gets
them and decodes them with the OpenTelemetry protobufs."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from responder.config import Settings
from responder.telemetry.tracing import provider_from_environment
from tests.support.payloads import raw
from tests.support.service import no_hubs, running

SECRET = "okta-otlp-export-secret"


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        message.ParseFromString(body)
        received.append(message)
        return web.Response(body=b"", content_type="application/x-protobuf")

    app = web.Application()
    app.add_routes([web.post("/v1/traces", traces)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/v1/traces", received
    finally:
        await runner.cleanup()


async def test_spans_reach_an_otlp_receiver_on_loopback(
    receiver: tuple[str, list[ExportTraceServiceRequest]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint, received = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    assert provider_from_environment() is not None
    trace_id = uuid.uuid4().hex
    settings = Settings(journal=f"sqlite:///{tmp_path}/j.db", okta_secret=SECRET, inventory=no_hubs(tmp_path))
    async with running(settings) as (_, base), aiohttp.ClientSession() as http:
        headers = {
            "Authorization": SECRET,
            "Content-Type": "application/json",
            "traceparent": f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
        }
        async with http.post(f"{base}/hooks/okta", data=raw("okta/batch.json"), headers=headers) as r:
            assert r.status == 200
        await asyncio.sleep(0.5)
    # Stopping the service flushed its exporter.
    spans = [
        span
        for request in received
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    mine = {s.name for s in spans if s.trace_id.hex() == trace_id}
    assert {"delivery okta", "journal.accept", "decide"} <= mine
    services = {
        a.value.string_value
        for request in received
        for resource in request.resource_spans
        for a in resource.resource.attributes
        if a.key == "service.name"
    }
    assert services == {"responder"}
