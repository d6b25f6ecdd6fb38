"""`RebuildProgress`: what a progress bar shows (total, percent, rate, ETA), computed from the
counts a rebuild reports, and reported by `SubscriptionManager.rebuild` itself."""

from __future__ import annotations

from uuid import uuid4

import pytest

from eventsource import InMemoryEventStore, Position, SubscriptionManager
from eventsource.repositories import InMemoryCheckpointRepository
from eventsource.subscriptions import RebuildProgress
from eventsource.testing.events import ItemAdded, ItemRemoved, contract_registry

TARGET = Position(0, 400)


def test_percent_rate_and_eta_come_from_the_counts() -> None:
    progress = RebuildProgress("totals", 100, Position(0, 100), TARGET, False, 400, 2.0)
    assert progress.percent == 25.0
    assert progress.rate == 50.0
    assert progress.eta == 6.0  # 300 events left at 50 a second


def test_before_the_first_event_no_rate_and_no_eta() -> None:
    progress = RebuildProgress("totals", 0, None, TARGET, False, 400, 0.0)
    assert (progress.percent, progress.rate, progress.eta) == (0.0, 0.0, None)


def test_done_is_100_percent_with_nothing_left() -> None:
    progress = RebuildProgress("totals", 398, TARGET, TARGET, True, 400, 4.0)
    assert (progress.percent, progress.eta) == (100.0, 0.0)
    empty = RebuildProgress("totals", 0, None, Position.START, True, 0, 0.0)
    assert (empty.percent, empty.rate, empty.eta) == (100.0, 0.0, 0.0)


def test_events_appended_during_the_rebuild_never_go_past_100_percent() -> None:
    progress = RebuildProgress("totals", 450, Position(0, 450), TARGET, False, 400, 1.0)
    assert progress.percent == 100.0
    assert progress.eta == 0.0


def test_the_old_positional_form_still_builds() -> None:
    progress = RebuildProgress("totals", 3, None, TARGET, False)
    assert (progress.total, progress.elapsed, progress.percent) == (0, 0.0, 0.0)


async def test_rebuild_reports_the_filtered_total() -> None:
    store = InMemoryEventStore(registry=contract_registry)
    cart = uuid4()
    events = [ItemAdded(name=str(n)) for n in range(7)] + [ItemRemoved(name="0")]
    await store.append_events(cart, "Cart", events, 0)
    seen: list[str] = []

    async def handler(stored: object) -> None:
        seen.append("x")

    from eventsource import SubscriptionConfig

    manager = SubscriptionManager(
        store,
        InMemoryCheckpointRepository(),
        config=SubscriptionConfig(event_types={"ItemAdded"}, poll_interval=0.05),
    )
    manager.subscribe(handler, name="adds")
    reports: list[RebuildProgress] = []
    try:
        await manager.rebuild("adds", progress=reports.append, timeout=30)
    finally:
        await manager.stop()
    assert {report.total for report in reports} == {7}  # the ItemRemoved is not read
    last = reports[-1]
    assert (last.done, last.processed, last.percent, last.eta) == (True, 7, 100.0, 0.0)
    assert all(report.elapsed >= 0 for report in reports)
    assert len(seen) == 7
    with pytest.raises(AttributeError):
        last.total = 3  # type: ignore[misc]
