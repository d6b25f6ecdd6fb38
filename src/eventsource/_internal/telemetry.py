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

__all__ = ["TRACEPARENT", "consuming", "inject", "publishing"]

_TRACER_NAME = "eventsource"
TRACEPARENT = "traceparent"


_Modules = tuple[ModuleType, ModuleType, ModuleType]
_loaded: list[_Modules | None] = []


def _otel() -> _Modules | None:
    """OpenTelemetry's trace, propagate and context modules, imported on first use (so that
    `import eventsource` imports no optional package), or None without the extra."""
    if not _loaded:
        try:
            _loaded.append(
                (
                    importlib.import_module("opentelemetry.trace"),
                    importlib.import_module("opentelemetry.propagate"),
                    importlib.import_module("opentelemetry.context"),
                )
            )
        except ImportError:
            _loaded.append(None)
    return _loaded[0]


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to `headers` (nothing when no span is active)."""
    otel = _otel()
    if otel is not None:
        otel[1].inject(headers)


def _recording(trace: ModuleType) -> bool:
    """True when an OpenTelemetry SDK is configured: without one, spans record nothing and
    are skipped (propagating the caller's context still works without them)."""
    provider = trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


@contextmanager
def publishing(destination: str, count: int) -> Iterator[None]:
    """A producer span around a publish of `count` messages."""
    otel = _otel()
    if otel is None or not _recording(otel[0]):
        yield
        return
    trace = otel[0]
    tracer = trace.get_tracer(_TRACER_NAME)
    with tracer.start_as_current_span(
        f"{destination} publish",
        kind=trace.SpanKind.PRODUCER,
        attributes={"messaging.batch.message_count": count},
    ):
        yield


@contextmanager
def consuming(
    destination: str, headers: Mapping[str, str], message_id: object, event_type: str
) -> Iterator[None]:
    """Run the body in the trace carried by `headers`, under a consumer span when an SDK is
    configured."""
    otel = _otel()
    if otel is None:
        yield
        return
    trace, propagate, context = otel
    recording = _recording(trace)
    if not recording and TRACEPARENT not in headers:
        yield
        return
    token = context.attach(propagate.extract(headers))
    try:
        if not recording:
            yield
            return
        tracer = trace.get_tracer(_TRACER_NAME)
        with tracer.start_as_current_span(
            f"{destination} process",
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.message.id": str(message_id),
                "eventsource.event_type": event_type,
            },
        ):
            yield
    finally:
        context.detach(token)
