"""`eventsource.testing`'s public names are pinned, resolve, and load lazily: the
application toolkit imports neither pytest nor the contract suites."""

from __future__ import annotations

import eventsource.testing
from tests.test_packaging import run_python

TESTING_API = {
    # the application toolkit
    "AggregateOutcome",
    "AggregateScenario",
    "EventBuilder",
    "Harness",
    "ManualClock",
    "ProjectionScenario",
    "RecordingEventBus",
    "RecordingPublisher",
    "SagaScenario",
    "assert_event_published",
    "assert_events_equal",
    "assert_nothing_published",
    "assert_state_equal",
    "assert_stream",
    "events_match",
    "given",
    # for backend authors
    "CheckpointRepositoryContract",
    "DLQRepositoryContract",
    "DistributedLockContract",
    "EventBusContract",
    "EventStoreContract",
    "InboxRepositoryContract",
    "KeyStoreContract",
    "OutboxRepositoryContract",
    "ReadModelRepositoryContract",
    "SnapshotStoreContract",
    "TelemetryCapture",
    "TenancyContract",
    "StreamListingContract",
    "TimerStoreContract",
    "UndecodableEventContract",
    "capture_telemetry",
    "contract_registry",
}


def test_the_testing_names_are_pinned() -> None:
    """Adding or removing a name is a decision: update this set, docs/testing.md and the
    CHANGELOG."""
    assert set(eventsource.testing.__all__) == TESTING_API
    assert len(eventsource.testing.__all__) == len(TESTING_API)


def test_every_name_resolves_and_unknown_names_raise() -> None:
    missing = [name for name in TESTING_API if not hasattr(eventsource.testing, name)]
    assert missing == []
    assert not hasattr(eventsource.testing, "NoSuchThing")
    assert set(TESTING_API) <= set(dir(eventsource.testing))


def test_the_toolkit_loads_without_pytest_or_the_contract_suites() -> None:
    result = run_python(
        """
        import sys
        import eventsource
        assert "pytest" not in sys.modules, "import eventsource imported pytest"
        from eventsource.testing import (
            EventBuilder, Harness, RecordingEventBus, assert_event_published, given,
        )
        heavy = sorted(
            name for name in sys.modules
            if name.split(".")[0] in {"pytest", "_pytest", "hypothesis", "pytest_asyncio"}
            or name in {"eventsource.testing.event_store", "eventsource.testing.bus"}
        )
        print(",".join(heavy))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_the_plugin_module_does_not_load_the_contract_suites() -> None:
    result = run_python(
        """
        import sys
        import eventsource.testing.plugin
        print(",".join(sorted(
            name for name in sys.modules
            if name.split(".")[0] == "hypothesis" or name == "eventsource.testing.event_store"
        )))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
