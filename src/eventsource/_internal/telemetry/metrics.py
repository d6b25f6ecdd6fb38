"""Metric instruments, and the live objects observable instruments read."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from eventsource._internal.telemetry._api import OtelApi, library_version, otel_api, state
from eventsource._internal.telemetry.names import (
    APPEND_BUCKETS,
    APPEND_DURATION,
    BUS,
    BUS_MESSAGES,
    CONSUMER,
    CONSUMER_GROUP,
    DLQ_SIZE,
    EVENTS_APPENDED,
    OUTBOX_EVENTS,
    OUTCOME,
    SCOPE,
    STATE,
    SUBSCRIPTION,
    SUBSCRIPTION_EVENTS,
    SUBSCRIPTION_LAG,
    SUBSCRIPTION_STATE,
)


def instruments() -> Instruments | None:
    """The library's metric instruments, or None when no meter provider records them."""
    if not state.enabled:
        return None
    otel = otel_api()
    if otel is None:
        return None
    provider = state.meter_provider or otel.global_provider("meter")
    if (
        provider is None
        or isinstance(provider, otel.metrics.NoOpMeterProvider)
        or type(provider).__name__.startswith("_Proxy")
    ):
        return None
    return _instruments(otel)


def _instruments(otel: OtelApi) -> Instruments:
    """The instruments for the configured provider, made on first use: observable
    instruments must exist before the first collection, whether or not anything was
    appended (see `watch`)."""
    override = state.meter_provider
    if override is None:
        made: Instruments | None = state.global_instruments
        if made is None:
            made = state.global_instruments = Instruments(
                otel.metrics.get_meter_provider().get_meter(SCOPE, library_version())
            )
        return made
    made = state.instruments.get(override)
    if made is None:
        made = state.instruments[override] = Instruments(
            override.get_meter(SCOPE, library_version())
        )
    return made


# -- metrics -------------------------------------------------------------------------------------


class Instruments:
    """The synchronous instruments, and the observable ones that read watched objects."""

    def __init__(self, meter: Any) -> None:
        self.append_duration = meter.create_histogram(
            APPEND_DURATION,
            unit="s",
            description="Duration of event store appends",
            explicit_bucket_boundaries_advisory=APPEND_BUCKETS,
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
    otel = otel_api()
    if otel is not None and state.enabled:
        _instruments(otel)


def unwatch(kind: Literal["subscription", "bus", "relay", "manager"], obj: object) -> None:
    _watched.discard(kind, obj)


def _observations(
    pairs: Callable[[], Iterable[tuple[float, dict[str, Any]]]],
) -> Callable[[Any], Iterable[Any]]:
    def callback(_options: Any) -> Iterable[Any]:
        otel = otel_api()
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
        for each in type(current):
            yield (
                (1 if each is current else 0),
                {
                    SUBSCRIPTION: subscription.name,
                    STATE: str(each),
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
