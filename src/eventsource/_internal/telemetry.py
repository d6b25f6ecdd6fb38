"""Trace-context propagation through message headers, when OpenTelemetry is installed.

Without `opentelemetry-api` (the `telemetry` extra) every function here does nothing, at the
cost of one attribute check. With it, `inject` writes the W3C `traceparent`/`tracestate` of the
current span into outgoing headers, and `consuming` runs a handler under a consumer span whose
parent is the context extracted from incoming headers, so a trace crosses the broker.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from types import ModuleType
from typing import Any

__all__ = ["consuming", "inject", "publishing"]

_TRACER_NAME = "eventsource"


def _load() -> tuple[ModuleType, ModuleType, ModuleType] | None:
    try:
        return (
            importlib.import_module("opentelemetry.trace"),
            importlib.import_module("opentelemetry.propagate"),
            importlib.import_module("opentelemetry.context"),
        )
    except ImportError:
        return None


_otel = _load()


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to `headers` (nothing when no span is active)."""
    if _otel is not None:
        _otel[1].inject(headers)


@contextmanager
def publishing(destination: str, attributes: Mapping[str, Any]) -> Iterator[None]:
    """A producer span around a publish (a no-op tracer unless an SDK is configured)."""
    if _otel is None:
        yield
        return
    trace = _otel[0]
    tracer = trace.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(
        f"{destination} publish", kind=trace.SpanKind.PRODUCER, attributes=dict(attributes)
    ):
        yield


@contextmanager
def consuming(
    destination: str, headers: Mapping[str, str], attributes: Mapping[str, Any]
) -> Iterator[None]:
    """Run the body under a consumer span continuing the trace carried by `headers`."""
    if _otel is None:
        yield
        return
    trace, propagate, context = _otel
    parent = propagate.extract(headers)
    token = context.attach(parent)
    try:
        tracer = trace.get_tracer(_TRACER_NAME)
        with tracer.start_as_current_span(
            f"{destination} process", kind=trace.SpanKind.CONSUMER, attributes=dict(attributes)
        ):
            yield
    finally:
        context.detach(token)
