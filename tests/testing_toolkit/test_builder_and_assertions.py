"""`EventBuilder`, `assert_events_equal`, `assert_event_published` and `assert_stream`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import uuid4

import pytest

from eventsource import AggregateRepository, InMemoryEventStore
from eventsource.testing import (
    EventBuilder,
    RecordingPublisher,
    assert_event_published,
    assert_events_equal,
    assert_nothing_published,
    assert_state_equal,
    assert_stream,
    events_match,
)
from tests.testing_toolkit._domain import (
    Account,
    AccountOpened,
    Balance,
    MoneyDeposited,
    MoneyWithdrawn,
    registry,
)


def test_the_builder_stamps_one_stream_with_a_clock_and_a_causation_chain() -> None:
    start = datetime(2030, 5, 1, 12, tzinfo=UTC)
    build = EventBuilder(aggregate_type="Account", start=start, step=timedelta(minutes=1))
    opened, deposited, withdrawn = build(
        AccountOpened(owner="ann"), MoneyDeposited(amount=Decimal(5)), MoneyWithdrawn(amount=1)
    )
    assert [e.aggregate_version for e in (opened, deposited, withdrawn)] == [1, 2, 3]
    assert {e.aggregate_id for e in (opened, deposited, withdrawn)} == {build.aggregate_id}
    assert {e.aggregate_type for e in (opened, deposited, withdrawn)} == {"Account"}
    assert [e.occurred_at for e in (opened, deposited, withdrawn)] == [
        start,
        start + timedelta(minutes=1),
        start + timedelta(minutes=2),
    ]
    assert opened.correlation_id == opened.event_id
    assert opened.causation_id is None
    assert deposited.correlation_id == opened.event_id
    assert deposited.causation_id == opened.event_id
    assert withdrawn.causation_id == deposited.event_id
    assert build.version == 3
    assert build.last == withdrawn


def test_the_builder_keeps_what_the_event_set_and_continues_from_it() -> None:
    build = EventBuilder(version=4, chain=False)
    tenant = uuid4()
    at = datetime(2031, 1, 1, tzinfo=UTC)
    first = build(AccountOpened(owner="ann", tenant_id=tenant, occurred_at=at))
    second = build(MoneyDeposited(amount=1, aggregate_version=9))
    third = build(MoneyDeposited(amount=2))
    assert (first.aggregate_version, first.tenant_id, first.occurred_at) == (5, tenant, at)
    assert second.occurred_at == at + timedelta(seconds=1)
    assert (second.aggregate_version, third.aggregate_version) == (9, 10)
    assert second.causation_id is None
    assert second.correlation_id == second.event_id


def test_a_second_stream_continues_the_flow() -> None:
    accounts = EventBuilder(aggregate_type="Account")
    opened = accounts(AccountOpened(owner="ann"))
    ledger = accounts.stream(aggregate_type="Ledger")
    entry = ledger(MoneyDeposited(amount=1))
    assert entry.aggregate_id != opened.aggregate_id
    assert entry.aggregate_version == 1
    assert (entry.causation_id, entry.correlation_id) == (opened.event_id, opened.event_id)
    assert entry.occurred_at > opened.occurred_at


def test_the_builder_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        EventBuilder(start=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="version must be >= 0"):
        EventBuilder(version=-1)
    with pytest.raises(TypeError, match="at least one event"):
        EventBuilder()()  # type: ignore[call-overload]


def test_assert_events_equal_accepts_stored_events_and_reports_counts() -> None:
    build = EventBuilder()
    events = build(AccountOpened(owner="ann"), MoneyDeposited(amount=1))
    assert_events_equal(events, [AccountOpened(owner="ann"), MoneyDeposited(amount=1)])
    assert events_match(MoneyDeposited(amount=Decimal("1.0")), events[1])
    assert not events_match(MoneyDeposited(amount=2), events[1])
    with pytest.raises(AssertionError) as failure:
        assert_events_equal(events, [AccountOpened(owner="ann")], what="stream x")
    assert str(failure.value).splitlines()[:3] == [
        "stream x differ from what was expected (1 expected, 2 actual):",
        "  [1] AccountOpened: as expected",
        "  [2] unexpected: MoneyDeposited(amount=Decimal('1'))",
    ]


def test_assert_state_equal_walks_models_mappings_and_lists() -> None:
    account_id = uuid4()
    with pytest.raises(AssertionError) as failure:
        assert_state_equal(
            {"ann": [Balance(id=account_id, amount=Decimal(2))], "bob": 1},
            {"ann": [Balance(id=account_id, amount=Decimal(3))], "eve": 1},
        )
    assert str(failure.value).splitlines() == [
        "state differs from what was expected:",
        "  ann[0].amount: expected Decimal('3'), actual Decimal('2')",
        "  eve: expected 1, actual missing",
        "  bob: not expected, actual 1",
    ]
    with pytest.raises(AssertionError, match="flag: expected True, actual 1"):
        assert_state_equal({"flag": 1}, {"flag": True})


async def test_assert_event_published_through_a_recording_publisher() -> None:
    publisher = RecordingPublisher()
    async with InMemoryEventStore(registry=registry) as store:
        accounts = AggregateRepository(store, Account, event_publisher=publisher)
        account_id = uuid4()
        assert_nothing_published(publisher)
        await accounts.execute(account_id, lambda a: a.open("ann"), create=True)
        await accounts.execute(account_id, lambda a: a.deposit(Decimal(5)))
    found = assert_event_published(publisher, MoneyDeposited(amount=Decimal(5)))
    assert found.aggregate_id == account_id
    assert_event_published(publisher, AccountOpened, times=1)
    with pytest.raises(AssertionError) as failure:
        assert_event_published(publisher, MoneyDeposited(amount=Decimal(6)))
    assert str(failure.value).splitlines() == [
        "expected MoneyDeposited(amount=Decimal('6')) to be published; 2 event(s) were:",
        "  AccountOpened(owner='ann')",
        "  MoneyDeposited(amount=Decimal('5'))",
        "closest MoneyDeposited differs in:",
        "  amount: expected Decimal('6'), actual Decimal('5')",
    ]
    with pytest.raises(AssertionError, match="published 2 time"):
        assert_event_published(publisher, AccountOpened, times=2)
    with pytest.raises(AssertionError, match=r"\[1\] unexpected: AccountOpened"):
        assert_nothing_published(publisher)


async def test_a_recording_publisher_forwards() -> None:
    inner = RecordingPublisher()
    outer = RecordingPublisher(forward_to=inner)
    event = AccountOpened(owner="ann")
    await outer.publish([event])
    assert outer.published == inner.published == (event,)
    outer.clear()
    assert outer.published == ()


def test_assert_event_published_needs_a_recorder() -> None:
    with pytest.raises(TypeError, match="use a RecordingEventBus or a RecordingPublisher"):
        assert_event_published(object(), AccountOpened)  # type: ignore[arg-type]


async def test_assert_stream_reads_the_store() -> None:
    async with InMemoryEventStore(registry=registry) as store:
        accounts = AggregateRepository(store, Account)
        account_id = uuid4()
        await accounts.execute(account_id, lambda a: a.open("ann"), create=True)
        await accounts.execute(account_id, lambda a: a.deposit(Decimal(5)))
        await assert_stream(
            store,
            account_id,
            [AccountOpened(owner="ann", aggregate_version=1), MoneyDeposited(amount=5)],
        )
        with pytest.raises(AssertionError) as failure:
            await assert_stream(store, account_id, [AccountOpened(owner="bob")])
    assert str(failure.value).splitlines()[:3] == [
        f"the events of stream {account_id} differ from what was expected (1 expected, 2 actual):",
        "  [1] AccountOpened:",
        "        owner: expected 'bob', actual 'ann'",
    ]
