"""OpenTelemetry tracing, configured by the standard OTEL_* environment variables.

Off unless an exporter is configured (`OTEL_TRACES_EXPORTER=otlp` or an `OTEL_EXPORTER_OTLP_*ENDPOINT`):
then the API's no-op tracer is used and spans cost next to nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer

from responder import __version__

TRACER_NAME = "responder"


def exporter_configured(env: Mapping[str, str] = os.environ) -> bool:
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return exporter == "otlp" or any(
        env.get(k) for k in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def build_provider(*processors: SpanProcessor, service_name: str = "responder") -> TracerProvider:
    resource = Resource.create({"service.name": service_name, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def provider_from_environment() -> TracerProvider | None:
    """A provider exporting OTLP over HTTP (or gRPC when OTEL_EXPORTER_OTLP_PROTOCOL=grpc), or None."""
    if not exporter_configured():
        return None
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    if protocol == "grpc":  # pragma: no cover - needs the optional grpc exporter package
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]  # noqa: PLC0415
            OTLPSpanExporter as GrpcExporter,
        )

        return build_provider(BatchSpanProcessor(GrpcExporter()))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415

    return build_provider(BatchSpanProcessor(OTLPSpanExporter()))


def tracer(provider: TracerProvider | None = None) -> Tracer:
    return (provider or trace.get_tracer_provider()).get_tracer(TRACER_NAME, __version__)


def context_from(carrier: Mapping[str, str]) -> Context:
    """The W3C trace context (`traceparent`, `tracestate`) carried by headers or a journal record."""
    return extract(carrier)


def carrier_of_current() -> dict[str, str]:
    """The current span's W3C trace context, to store with a journal record or a Kafka message."""
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier
