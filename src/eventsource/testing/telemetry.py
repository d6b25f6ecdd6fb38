"""Capture eventsource's spans and metrics in a test, with the OpenTelemetry SDK.

    with capture_telemetry() as captured:
        await repository.execute(order_id, place)
    (span,) = captured.spans("save Order")
    assert span.attributes[STREAM_ID] == str(order_id)

Needs `opentelemetry-sdk` (tests that use it skip with `pytest.importorskip` otherwise).
Providers are handed to eventsource only (`configure_telemetry`), never set globally, so
captures in one process do not interfere.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from eventsource.observability import configure_telemetry

__all__ = ["TelemetryCapture", "capture_telemetry"]


@dataclass
class TelemetryCapture:
    """What eventsource recorded inside a `capture_telemetry()` block."""

    tracer_provider: Any
    exporter: Any
    meter_provider: Any
    reader: Any

    def spans(self, name: str | None = None) -> list[Any]:
        """Finished spans (`ReadableSpan`) in the order they ended, optionally by name."""
        finished = list(self.exporter.get_finished_spans())
        return [s for s in finished if name is None or s.name == name]

    def points(self, metric: str) -> list[Any]:
        """The data points of `metric` as collected now (empty when not recorded)."""
        data = self.reader.get_metrics_data()
        found: list[Any] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for recorded in scope.metrics:
                    if recorded.name == metric:
                        found.extend(recorded.data.data_points)
        return found

    def value(self, metric: str, attributes: Mapping[str, object] | None = None) -> float | None:
        """The sum of the values of `metric`'s points whose attributes include `attributes`
        (histograms: their count); None when no point matches."""
        total: float | None = None
        for point in self.points(metric):
            have = point.attributes or {}
            if all(have.get(key) == value for key, value in (attributes or {}).items()):
                value = point.count if hasattr(point, "bucket_counts") else point.value
                total = (total or 0) + value
        return total


@contextmanager
def capture_telemetry() -> Iterator[TelemetryCapture]:
    """Record eventsource's spans and metrics with in-memory SDK providers for the block;
    afterwards eventsource goes back to OpenTelemetry's global providers."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    configure_telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    try:
        yield TelemetryCapture(tracer_provider, exporter, meter_provider, reader)
    finally:
        configure_telemetry()
        tracer_provider.shutdown()
        meter_provider.shutdown()
