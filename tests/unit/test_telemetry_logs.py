import io
import json
import logging

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from responder.telemetry.logs import configure_logging
from responder.telemetry.tracing import build_provider, carrier_of_current, context_from, tracer


def test_json_log_lines_carry_trace_ids_and_never_secrets() -> None:
    stream = io.StringIO()
    configure_logging("debug", stream=stream, json_lines=True)
    provider = build_provider(SimpleSpanProcessor(InMemorySpanExporter()))
    log = logging.getLogger("responder.test")
    with tracer(provider).start_as_current_span("delivery") as span:
        log.info(
            "delivery accepted",
            extra={"source": "okta", "okta_secret": "hunter2", "admin_token": SecretStr("tok"), "n": 3},
        )
        ctx = span.get_span_context()
    line = json.loads(stream.getvalue().strip())
    assert line["message"] == "delivery accepted"
    assert line["trace_id"] == f"{ctx.trace_id:032x}"
    assert line["span_id"] == f"{ctx.span_id:016x}"
    assert (line["source"], line["n"]) == ("okta", 3)
    assert "hunter2" not in stream.getvalue()
    assert "tok" not in stream.getvalue().replace("admin_token", "")


def test_trace_context_round_trips_through_a_carrier() -> None:
    provider = build_provider(SimpleSpanProcessor(InMemorySpanExporter()))
    with tracer(provider).start_as_current_span("outer") as outer:
        carrier = carrier_of_current()
    assert carrier["traceparent"].split("-")[1] == f"{outer.get_span_context().trace_id:032x}"
    with tracer(provider).start_as_current_span("resumed", context=context_from(carrier)) as resumed:
        assert resumed.get_span_context().trace_id == outer.get_span_context().trace_id
