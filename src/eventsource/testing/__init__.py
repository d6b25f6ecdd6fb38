"""Test support shipped with the library.

For an application's own tests: `given(...)` scenarios for aggregates and projections, an
`EventBuilder`, assertions that compare events as a test means them (`assert_events_equal`,
`assert_event_published`, `assert_stream`), a `RecordingEventBus` / `RecordingPublisher`,
and the `Harness` that runs a store, a bus and subscriptions to quiescence. The pytest plugin
(`eventsource.testing.plugin`, registered as a `pytest11` entry point) gives the fixtures
`event_store`, `event_bus`, `repository_factory` and `harness`.

For backend authors: the contract suites every backend subclasses, the events they use, and
`capture_telemetry` for tests of spans and metrics (with `opentelemetry-sdk`).

Names load lazily: `from eventsource.testing import given` imports neither pytest nor the
contract suites; the suites need pytest, pytest-asyncio and hypothesis (test dependencies).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventsource.testing.builder import EventBuilder
    from eventsource.testing.bus import EventBusContract
    from eventsource.testing.checkpoints import CheckpointRepositoryContract
    from eventsource.testing.compare import (
        assert_events_equal,
        assert_state_equal,
        events_match,
    )
    from eventsource.testing.dead_letters import DLQRepositoryContract
    from eventsource.testing.event_store import EventStoreContract
    from eventsource.testing.events import contract_registry
    from eventsource.testing.harness import Harness
    from eventsource.testing.key_store import KeyStoreContract
    from eventsource.testing.locks import DistributedLockContract
    from eventsource.testing.outbox import InboxRepositoryContract, OutboxRepositoryContract
    from eventsource.testing.read_models import ReadModelRepositoryContract
    from eventsource.testing.recording import (
        RecordingEventBus,
        RecordingPublisher,
        assert_event_published,
        assert_nothing_published,
        assert_stream,
    )
    from eventsource.testing.sagas import ManualClock, SagaScenario
    from eventsource.testing.scenarios import (
        AggregateOutcome,
        AggregateScenario,
        ProjectionScenario,
        given,
    )
    from eventsource.testing.snapshot_store import SnapshotStoreContract
    from eventsource.testing.stream_listing import StreamListingContract
    from eventsource.testing.telemetry import TelemetryCapture, capture_telemetry
    from eventsource.testing.tenancy import TenancyContract
    from eventsource.testing.timers import TimerStoreContract
    from eventsource.testing.undecodable import UndecodableEventContract

_LAZY = {
    # the application toolkit (no pytest)
    "AggregateOutcome": "scenarios",
    "AggregateScenario": "scenarios",
    "EventBuilder": "builder",
    "Harness": "harness",
    "ManualClock": "sagas",
    "ProjectionScenario": "scenarios",
    "RecordingEventBus": "recording",
    "RecordingPublisher": "recording",
    "SagaScenario": "sagas",
    "assert_event_published": "recording",
    "assert_events_equal": "compare",
    "assert_nothing_published": "recording",
    "assert_state_equal": "compare",
    "assert_stream": "recording",
    "events_match": "compare",
    "given": "scenarios",
    # contract suites for backends (pytest, pytest-asyncio, hypothesis)
    "CheckpointRepositoryContract": "checkpoints",
    "DLQRepositoryContract": "dead_letters",
    "DistributedLockContract": "locks",
    "EventBusContract": "bus",
    "EventStoreContract": "event_store",
    "InboxRepositoryContract": "outbox",
    "KeyStoreContract": "key_store",
    "OutboxRepositoryContract": "outbox",
    "ReadModelRepositoryContract": "read_models",
    "SnapshotStoreContract": "snapshot_store",
    "StreamListingContract": "stream_listing",
    "TelemetryCapture": "telemetry",
    "TenancyContract": "tenancy",
    "TimerStoreContract": "timers",
    "UndecodableEventContract": "undecodable",
    "capture_telemetry": "telemetry",
    "contract_registry": "events",
}

__all__ = [
    "AggregateOutcome",
    "AggregateScenario",
    "CheckpointRepositoryContract",
    "DLQRepositoryContract",
    "DistributedLockContract",
    "EventBuilder",
    "EventBusContract",
    "EventStoreContract",
    "Harness",
    "InboxRepositoryContract",
    "KeyStoreContract",
    "ManualClock",
    "OutboxRepositoryContract",
    "ProjectionScenario",
    "ReadModelRepositoryContract",
    "RecordingEventBus",
    "RecordingPublisher",
    "SagaScenario",
    "SnapshotStoreContract",
    "StreamListingContract",
    "TelemetryCapture",
    "TenancyContract",
    "TimerStoreContract",
    "UndecodableEventContract",
    "assert_event_published",
    "assert_events_equal",
    "assert_nothing_published",
    "assert_state_equal",
    "assert_stream",
    "capture_telemetry",
    "contract_registry",
    "events_match",
    "given",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventsource.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"eventsource.testing.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
