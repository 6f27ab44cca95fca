"""Telemetry adapters: structured logs, OpenTelemetry traces, Prometheus metrics."""
