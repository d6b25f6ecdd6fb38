"""OpenTelemetry spans, metrics and trace-context propagation, when OpenTelemetry is installed.

Without `opentelemetry-api` (the `telemetry` extra), or with it but no SDK configured, every
function here returns at once: `tracer()` and `instruments()` are None and the operations
are a shared no-op object, so the hot paths pay one provider check per call. With an SDK
(the application sets global providers, or passes its own to `configure`), the stores,
repositories, subscriptions, buses and the outbox relay record the spans and metrics named in
`eventsource.observability`.

Observable instruments read the objects registered with `watch` (running subscriptions,
buses, relays, subscription managers), so a metric costs nothing until it is collected.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from types import ModuleType, TracebackType
from typing import Any, Final, Literal, Protocol, Self

__all__ = [
    "TRACEPARENT",
    "Operation",
    "annotate",
    "appending",
    "configure",
    "consuming",
    "inject",
    "instruments",
    "operation",
    "start_span",
    "publishing",
    "tracer",
    "unwatch",
    "watch",
]

_SCOPE = "eventsource"
TRACEPARENT = "traceparent"

# -- attribute and metric names (documented in eventsource.observability) ----------------------

STREAM_ID: Final = "eventsource.stream.id"
AGGREGATE_TYPE: Final = "eventsource.aggregate.type"
EVENT_TYPE: Final = "eventsource.event.type"
EVENT_COUNT: Final = "eventsource.event.count"
VERSION: Final = "eventsource.stream.version"
EXPECTED_VERSION: Final = "eventsource.stream.expected_version"
POSITION: Final = "eventsource.position"
TENANT_ID: Final = "eventsource.tenant.id"
STORE: Final = "eventsource.store"
SUBSCRIPTION: Final = "eventsource.subscription"
STATE: Final = "eventsource.subscription.state"
CONSUMER_GROUP: Final = "messaging.consumer.group.name"
CONSUMER: Final = "eventsource.consumer"
BUS: Final = "eventsource.bus"
OUTCOME: Final = "eventsource.outcome"
ERROR_TYPE: Final = "error.type"

APPEND_DURATION: Final = "eventsource.append.duration"
EVENTS_APPENDED: Final = "eventsource.events.appended"
SUBSCRIPTION_LAG: Final = "eventsource.subscription.lag"
SUBSCRIPTION_STATE: Final = "eventsource.subscription.state"
SUBSCRIPTION_EVENTS: Final = "eventsource.subscription.events"
DLQ_SIZE: Final = "eventsource.dlq.size"
BUS_MESSAGES: Final = "eventsource.bus.messages"
OUTBOX_EVENTS: Final = "eventsource.outbox.events"

_APPEND_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

# -- OpenTelemetry, imported on first use -------------------------------------------------------


@dataclass
class _Otel:
    trace: ModuleType
    propagate: ModuleType
    context: ModuleType
    metrics: ModuleType
    metrics_state: ModuleType
    """The module holding the global meter provider."""
    providers_from_env: bool
    """OTEL_PYTHON_*_PROVIDER is set: the API makes the global providers on first request."""

    def global_provider(self, kind: Literal["tracer", "meter"]) -> Any:
        """The global provider, or None while none is set.

        `get_tracer_provider()` checks the environment on every call (about a microsecond);
        the module attribute it returns is read directly instead, when it exists.
        """
        if kind == "tracer":
            provider = getattr(self.trace, "_TRACER_PROVIDER", _UNKNOWN)
        else:
            provider = getattr(self.metrics_state, "_METER_PROVIDER", _UNKNOWN)
        if provider is None and not self.providers_from_env:
            return None
        if provider is None or provider is _UNKNOWN:
            if kind == "tracer":
                return self.trace.get_tracer_provider()
            return self.metrics.get_meter_provider()
        return provider


_UNKNOWN = object()
_loaded: list[_Otel | None] = []


def _otel() -> _Otel | None:
    """OpenTelemetry's API modules, imported on first use (so that `import eventsource`
    imports no optional package), or None without the extra."""
    if not _loaded:
        try:
            _loaded.append(
                _Otel(
                    importlib.import_module("opentelemetry.trace"),
                    importlib.import_module("opentelemetry.propagate"),
                    importlib.import_module("opentelemetry.context"),
                    importlib.import_module("opentelemetry.metrics"),
                    _metrics_state(),
                    any(
                        f"OTEL_PYTHON_{kind}_PROVIDER" in os.environ for kind in ("TRACER", "METER")
                    ),
                )
            )
        except ImportError:
            _loaded.append(None)
    return _loaded[0]


def _metrics_state() -> ModuleType:
    try:
        return importlib.import_module("opentelemetry.metrics._internal")
    except ImportError:  # pragma: no cover - a future API without the module: ask the getter
        return importlib.import_module("opentelemetry.metrics")


@dataclass
class _State:
    enabled: bool = True
    tracer_provider: Any = None
    meter_provider: Any = None
    tracer: tuple[Any, Any] | None = None
    """(provider, tracer) of the last lookup."""
    global_instruments: Instruments | None = None
    """Made once on the global provider, a proxy until the application sets an SDK's (the
    proxy's instruments then forward to it)."""
    instruments: weakref.WeakKeyDictionary[Any, Instruments] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    """Made on providers passed to `configure`."""


_state = _State()


def configure(
    *, tracer_provider: Any = None, meter_provider: Any = None, enabled: bool = True
) -> None:
    """Use these providers instead of OpenTelemetry's global ones (None: the global one);
    `enabled=False` records nothing even when an SDK is configured."""
    _state.enabled = enabled
    _state.tracer_provider = tracer_provider
    _state.meter_provider = meter_provider
    _state.tracer = None


def tracer() -> Any:
    """The library's tracer, or None when spans would record nothing (no SDK)."""
    if not _state.enabled:
        return None
    otel = _otel()
    if otel is None:
        return None
    provider = _state.tracer_provider or otel.global_provider("tracer")
    if provider is None:
        return None
    cached = _state.tracer
    if cached is not None and cached[0] is provider:
        return cached[1]
    if isinstance(provider, (otel.trace.ProxyTracerProvider, otel.trace.NoOpTracerProvider)):
        return None
    found = provider.get_tracer(_SCOPE, _version())
    _state.tracer = (provider, found)
    return found


def instruments() -> Instruments | None:
    """The library's metric instruments, or None when no meter provider records them."""
    if not _state.enabled:
        return None
    otel = _otel()
    if otel is None:
        return None
    provider = _state.meter_provider or otel.global_provider("meter")
    if (
        provider is None
        or isinstance(provider, otel.metrics.NoOpMeterProvider)
        or type(provider).__name__.startswith("_Proxy")
    ):
        return None
    return _instruments(otel)


def _instruments(otel: _Otel) -> Instruments:
    """The instruments for the configured provider, made on first use: observable
    instruments must exist before the first collection, whether or not anything was
    appended (see `watch`)."""
    override = _state.meter_provider
    if override is None:
        if _state.global_instruments is None:
            _state.global_instruments = Instruments(
                otel.metrics.get_meter_provider().get_meter(_SCOPE, _version())
            )
        return _state.global_instruments
    made = _state.instruments.get(override)
    if made is None:
        made = _state.instruments[override] = Instruments(override.get_meter(_SCOPE, _version()))
    return made


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eventsource-async")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"


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
            otel = _otel()
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

    @property
    def recording(self) -> bool:
        return self._span is not None

    def set(self, key: str, value: str | int | float | bool) -> None:
        if self._span is not None:
            self._span.set_attribute(key, value)

    def fail(self, error: BaseException) -> None:
        """Mark the span failed by `error`, which the operation handled itself."""
        if self._span is not None:
            otel = _otel()
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
    otel = _otel()
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
    otel = _otel()
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
    otel = _otel()
    if otel is not None and _state.enabled:
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
    otel = _otel()
    if otel is None or not _state.enabled:
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


# -- metrics -------------------------------------------------------------------------------------


class Instruments:
    """The synchronous instruments, and the observable ones that read watched objects."""

    def __init__(self, meter: Any) -> None:
        self.append_duration = meter.create_histogram(
            APPEND_DURATION,
            unit="s",
            description="Duration of event store appends",
            explicit_bucket_boundaries_advisory=_APPEND_BUCKETS,
        )
        self.events_appended = meter.create_counter(
            EVENTS_APPENDED, unit="{event}", description="Events appended to the event store"
        )
        for name, unit, description, callback, kind in _OBSERVED:
            create = (
                meter.create_observable_gauge
                if kind == "gauge"
                else meter.create_observable_counter
            )
            create(name, callbacks=[callback], unit=unit, description=description)


@dataclass
class _Watched:
    """Objects observable instruments read, by kind; weakly held, guarded against the
    collection thread."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    kinds: dict[str, weakref.WeakSet[Any]] = field(default_factory=dict)

    def add(self, kind: str, obj: object) -> None:
        with self.lock:
            self.kinds.setdefault(kind, weakref.WeakSet()).add(obj)

    def discard(self, kind: str, obj: object) -> None:
        with self.lock:
            if kind in self.kinds:
                self.kinds[kind].discard(obj)

    def of(self, kind: str) -> list[Any]:
        with self.lock:
            return list(self.kinds.get(kind, ()))


_watched = _Watched()


def watch(kind: Literal["subscription", "bus", "relay", "manager"], obj: object) -> None:
    """Report `obj` in the observable metrics of its kind while it lives (or until
    `unwatch`)."""
    _watched.add(kind, obj)
    otel = _otel()
    if otel is not None and _state.enabled:
        _instruments(otel)


def unwatch(kind: Literal["subscription", "bus", "relay", "manager"], obj: object) -> None:
    _watched.discard(kind, obj)


def _observations(
    pairs: Callable[[], Iterable[tuple[float, dict[str, Any]]]],
) -> Callable[[Any], Iterable[Any]]:
    def callback(_options: Any) -> Iterable[Any]:
        otel = _otel()
        assert otel is not None
        return [otel.metrics.Observation(value, attributes) for value, attributes in pairs()]

    return callback


def _subscription_lag() -> Iterator[tuple[float, dict[str, Any]]]:
    for subscription in _watched.of("subscription"):
        lag = subscription.lag_seconds()
        if lag is not None:
            yield lag, {SUBSCRIPTION: subscription.name}


def _subscription_state() -> Iterator[tuple[float, dict[str, Any]]]:
    for subscription in _watched.of("subscription"):
        current = subscription.state
        for state in type(current):
            yield (
                (1 if state is current else 0),
                {
                    SUBSCRIPTION: subscription.name,
                    STATE: str(state),
                },
            )


def _subscription_events() -> Iterator[tuple[float, dict[str, Any]]]:
    for subscription in _watched.of("subscription"):
        yield subscription.processed, {SUBSCRIPTION: subscription.name, OUTCOME: "processed"}
        yield (
            subscription.dead_lettered,
            {SUBSCRIPTION: subscription.name, OUTCOME: "dead_lettered"},
        )


def _dlq_size() -> Iterator[tuple[float, dict[str, Any]]]:
    for manager in _watched.of("manager"):
        for name, size in manager.dead_letter_sizes.items():
            yield size, {SUBSCRIPTION: name}


def _bus_messages() -> Iterator[tuple[float, dict[str, Any]]]:
    for bus in _watched.of("bus"):
        base = {
            BUS: type(bus).__name__,
            CONSUMER_GROUP: bus.config.consumer_group,
            CONSUMER: bus.config.consumer_name,
        }
        for outcome, count in vars(bus.stats).items():
            yield count, {**base, OUTCOME: outcome}


def _outbox_events() -> Iterator[tuple[float, dict[str, Any]]]:
    for relay in _watched.of("relay"):
        yield relay.published, {OUTCOME: "published"}
        yield relay.failed_events, {OUTCOME: "failed"}


_OBSERVED: tuple[tuple[str, str, str, Callable[[Any], Iterable[Any]], str], ...] = (
    (
        SUBSCRIPTION_LAG,
        "s",
        "Age of the last event a subscription processed (0 when caught up)",
        _observations(_subscription_lag),
        "gauge",
    ),
    (
        SUBSCRIPTION_STATE,
        "1",
        "1 for the state each subscription is in, 0 for the others",
        _observations(_subscription_state),
        "gauge",
    ),
    (
        SUBSCRIPTION_EVENTS,
        "{event}",
        "Events a subscription processed or dead-lettered",
        _observations(_subscription_events),
        "counter",
    ),
    (
        DLQ_SIZE,
        "{event}",
        "Dead letters waiting for a retry or a fix, per subscription",
        _observations(_dlq_size),
        "gauge",
    ),
    (
        BUS_MESSAGES,
        "{message}",
        "Messages of an event bus instance, by outcome",
        _observations(_bus_messages),
        "counter",
    ),
    (
        OUTBOX_EVENTS,
        "{event}",
        "Events the outbox relay published, or failed to publish (attempts)",
        _observations(_outbox_events),
        "counter",
    ),
)
