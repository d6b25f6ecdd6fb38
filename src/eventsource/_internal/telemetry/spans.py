"""Spans: the no-op fast path, operations, the store's append, trace context in headers."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Literal, Protocol, Self

from eventsource._internal.telemetry._api import otel_api, state, tracer
from eventsource._internal.telemetry.metrics import Instruments, instruments
from eventsource._internal.telemetry.names import (
    AGGREGATE_TYPE,
    CONSUMER_GROUP,
    ERROR_TYPE,
    EVENT_COUNT,
    EVENT_TYPE,
    EXPECTED_VERSION,
    POSITION,
    STORE,
    STREAM_ID,
    TENANT_ID,
    TRACEPARENT,
    VERSION,
)

# -- spans ---------------------------------------------------------------------------------------


class Operation:
    """A span (when tracing) and a duration measurement (when given a histogram) around one
    operation. Use it as a context manager; `set` adds span attributes."""

    __slots__ = ("_histogram", "_metric_attributes", "_scope", "_span", "_started")

    def __init__(
        self,
        span: Any,
        histogram: Any = None,
        metric_attributes: dict[str, str] | None = None,
    ) -> None:
        self._span = span
        self._scope: AbstractContextManager[Any] | None = None
        self._histogram = histogram
        self._metric_attributes = metric_attributes
        self._started = 0.0

    def __enter__(self) -> Self:
        if self._span is not None:
            otel = otel_api()
            assert otel is not None
            self._scope = otel.trace.use_span(self._span, end_on_exit=True)
            self._scope.__enter__()
        if self._histogram is not None:
            self._started = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._histogram is not None:
            attributes = self._metric_attributes or {}
            if exc_type is not None:
                attributes = {**attributes, ERROR_TYPE: exc_type.__qualname__}
            self._histogram.record(time.perf_counter() - self._started, attributes)
        if self._scope is not None:
            self._scope.__exit__(exc_type, exc, tb)

    def set(self, key: str, value: str | int | float | bool) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def fail(self, error: BaseException) -> None:
        """Mark the span failed by `error`, which the operation handled itself."""
        if self._span is not None:
            otel = otel_api()
            assert otel is not None
            self._span.record_exception(error)
            self._span.set_status(
                otel.trace.Status(otel.trace.StatusCode.ERROR, f"{type(error).__name__}: {error}")
            )


class _NoOperation(Operation):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        return None


_NOTHING = _NoOperation()

SpanKind = Literal["internal", "producer", "consumer"]


def start_span(found: Any, name: str, kind: SpanKind, attributes: Mapping[str, Any]) -> Any:
    otel = otel_api()
    assert otel is not None
    return found.start_span(
        name, kind=getattr(otel.trace.SpanKind, kind.upper()), attributes=dict(attributes)
    )


def operation(
    name: str, attributes: Callable[[], Mapping[str, Any]], kind: SpanKind = "internal"
) -> Operation:
    """A span named `name` in the current trace; `attributes` is only called when tracing."""
    found = tracer()
    if found is None:
        return _NOTHING
    return Operation(start_span(found, name, kind, attributes()))


def annotate(key: str, value: str | int | float | bool) -> None:
    """Add an attribute to the current span (when tracing)."""
    if tracer() is None:
        return
    otel = otel_api()
    assert otel is not None
    otel.trace.get_current_span().set_attribute(key, value)


class _Event(Protocol):
    @property
    def event_id(self) -> Any: ...
    @property
    def event_type(self) -> str: ...
    @property
    def aggregate_id(self) -> Any: ...
    @property
    def aggregate_version(self) -> int: ...
    @property
    def tenant_id(self) -> Any: ...


def event_attributes(event: _Event) -> dict[str, Any]:
    """The standard attributes of one event: stream, type, version and tenant."""
    attributes: dict[str, Any] = {
        STREAM_ID: str(event.aggregate_id),
        EVENT_TYPE: event.event_type,
        VERSION: event.aggregate_version,
    }
    if event.tenant_id is not None:
        attributes[TENANT_ID] = str(event.tenant_id)
    return attributes


# -- the store's append --------------------------------------------------------------------------


class _Appended(Protocol):
    @property
    def new_version(self) -> int: ...
    @property
    def events(self) -> Sequence[_Event]: ...
    @property
    def positions(self) -> Sequence[object]: ...
    @property
    def already_stored(self) -> bool: ...


class Append(Operation):
    """An append: span, duration histogram, and (on `done`) the events-appended counter."""

    __slots__ = ("_counter",)

    def __init__(self, span: Any, found: Instruments | None, metric_attributes: dict[str, str]):
        super().__init__(span, found.append_duration if found else None, metric_attributes)
        self._counter = found.events_appended if found else None

    def done(self, result: _Appended) -> None:
        if self._span is not None:
            self._span.set_attribute(VERSION, result.new_version)
            if result.positions:
                self._span.set_attribute(POSITION, str(result.positions[-1]))
            if result.already_stored:
                self._span.set_attribute("eventsource.already_stored", True)
        if self._counter is not None and not result.already_stored:
            by_type: dict[str, int] = {}
            for event in result.events:
                by_type[event.event_type] = by_type.get(event.event_type, 0) + 1
            assert self._metric_attributes is not None
            for event_type, count in by_type.items():
                self._counter.add(count, {**self._metric_attributes, EVENT_TYPE: event_type})


class _NoAppend(Append):
    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(None, None, {})

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        return None

    def done(self, result: _Appended) -> None:
        return None


_NO_APPEND = _NoAppend()


def appending(
    store: str,
    aggregate_id: object,
    aggregate_type: str,
    events: Sequence[_Event],
    expected_version: int,
) -> Append:
    """Instrument one `append_events` of backend `store`; call `done(result)` on success."""
    found_tracer = tracer()
    found = instruments()
    if found_tracer is None and found is None:
        return _NO_APPEND
    span = None
    if found_tracer is not None:
        attributes: dict[str, Any] = {
            STORE: store,
            STREAM_ID: str(aggregate_id),
            AGGREGATE_TYPE: aggregate_type,
            EXPECTED_VERSION: expected_version,
            EVENT_COUNT: len(events),
        }
        if events:
            types = sorted({e.event_type for e in events})
            attributes[EVENT_TYPE] = types[0] if len(types) == 1 else types
            if events[0].tenant_id is not None:
                attributes[TENANT_ID] = str(events[0].tenant_id)
        span = start_span(found_tracer, f"append {aggregate_type}", "internal", attributes)
    return Append(span, found, {STORE: store, AGGREGATE_TYPE: aggregate_type})


# -- trace context across brokers ----------------------------------------------------------------


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context to `headers` (nothing when no span is active)."""
    otel = otel_api()
    if otel is not None and state.enabled:
        otel.propagate.inject(headers)


def publishing(destination: str, events: Sequence[_Event]) -> Operation:
    """A producer span around a publish of `events`."""
    found = tracer()
    if found is None:
        return _NOTHING
    attributes: dict[str, Any] = {
        "messaging.destination.name": destination,
        "messaging.batch.message_count": len(events),
    }
    if len(events) == 1:
        attributes.update(event_attributes(events[0]))
    return Operation(start_span(found, f"{destination} publish", "producer", attributes))


@contextmanager
def consuming(destination: str, headers: Mapping[str, str], event: _Event) -> Iterator[Operation]:
    """Run the body in the trace carried by `headers`, under a consumer span when an SDK is
    configured."""
    otel = otel_api()
    if otel is None or not state.enabled:
        yield _NOTHING
        return
    found = tracer()
    if found is None and TRACEPARENT not in headers:
        yield _NOTHING
        return
    token = otel.context.attach(otel.propagate.extract(headers))
    try:
        if found is None:
            yield _NOTHING
            return
        attributes = event_attributes(event)
        attributes["messaging.message.id"] = str(event.event_id)
        attributes[CONSUMER_GROUP] = destination
        with Operation(start_span(found, f"{destination} process", "consumer", attributes)) as span:
            yield span
    finally:
        otel.context.detach(token)
