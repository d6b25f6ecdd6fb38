"""given/when/then for aggregates and projections, and the messages of their failures."""

from __future__ import annotations

from decimal import Decimal
from uuid import uuid4

import pytest

from eventsource import InvalidEventError
from eventsource.testing import EventBuilder, given
from tests.testing_toolkit._domain import (
    Account,
    AccountClosed,
    AccountOpened,
    AccountState,
    Balance,
    Balances,
    InsufficientFunds,
    MoneyDeposited,
    MoneyWithdrawn,
    registry,
)


def test_then_compares_business_fields_and_ignores_the_generated_envelope() -> None:
    account = (
        given(Account, AccountOpened(owner="ann"))
        .when(lambda a: a.deposit(Decimal(5)))
        .then(MoneyDeposited(amount=Decimal(5)))
    )
    assert account.state.balance == Decimal(5)
    assert account.version == 2


def test_then_compares_the_envelope_fields_an_expected_event_sets() -> None:
    outcome = given(Account, AccountOpened(owner="ann")).when(lambda a: a.deposit(Decimal(5)))
    outcome.then(MoneyDeposited(amount=Decimal(5), aggregate_version=2))
    with pytest.raises(AssertionError, match=r"aggregate_version: expected 3, actual 2"):
        outcome.then(MoneyDeposited(amount=Decimal(5), aggregate_version=3))


def test_a_failing_then_shows_expected_against_actual_field_by_field() -> None:
    outcome = given(Account, AccountOpened(owner="ann"), MoneyDeposited(amount=Decimal(10))).when(
        lambda a: (a.deposit(Decimal(3)), a.withdraw(Decimal(1)))
    )
    with pytest.raises(AssertionError) as failure:
        outcome.then(
            MoneyDeposited(amount=Decimal(2)),
            MoneyWithdrawn(amount=Decimal(1)),
            AccountClosed(reason="moved away"),
        )
    assert str(failure.value).splitlines()[:5] == [
        "the events the command recorded differ from what was expected (3 expected, 2 actual):",
        "  [1] MoneyDeposited:",
        "        amount: expected Decimal('2'), actual Decimal('3')",
        "  [2] MoneyWithdrawn: as expected",
        "  [3] missing: expected AccountClosed(reason='moved away')",
    ]


def test_a_wrong_event_class_and_an_unexpected_event_are_named() -> None:
    outcome = given(Account, AccountOpened(owner="ann")).when(
        lambda a: (a.deposit(Decimal(1)), a.close("done"))
    )
    with pytest.raises(AssertionError) as failure:
        outcome.then(MoneyWithdrawn(amount=Decimal(1)))
    lines = str(failure.value).splitlines()
    assert lines[1] == (
        "  [1] expected MoneyWithdrawn(amount=Decimal('1')), "
        "actual MoneyDeposited(amount=Decimal('1'))"
    )
    assert lines[2] == "  [2] unexpected: AccountClosed(reason='done')"


def test_an_event_class_matches_any_event_of_that_class() -> None:
    given(Account).when(lambda a: a.open("ann")).then(AccountOpened)
    with pytest.raises(AssertionError, match="expected any MoneyDeposited"):
        given(Account).when(lambda a: a.open("ann")).then(MoneyDeposited)


def test_then_raises_checks_the_class_and_the_message() -> None:
    outcome = given(Account, AccountOpened(owner="ann")).when(lambda a: a.withdraw(Decimal(5)))
    error = outcome.then_raises(InsufficientFunds, match=r"balance 0 < 5")
    assert isinstance(error, InsufficientFunds)
    with pytest.raises(AssertionError, match=r"does not match 'overdraft'"):
        outcome.then_raises(InsufficientFunds, match="overdraft")
    with pytest.raises(AssertionError, match=r"expected the command to raise KeyError, but it "):
        outcome.then_raises(KeyError)


def test_then_raises_fails_when_the_command_succeeded() -> None:
    outcome = given(Account).when(lambda a: a.open("ann"))
    with pytest.raises(AssertionError) as failure:
        outcome.then_raises(ValueError)
    assert str(failure.value) == (
        "expected the command to raise ValueError, but it succeeded and recorded "
        "AccountOpened(owner='ann')"
    )


def test_then_and_then_nothing_fail_when_the_command_raised() -> None:
    outcome = given(Account, AccountOpened(owner="ann")).when(lambda a: a.open("bob"))
    with pytest.raises(AssertionError, match="but the command raised ValueError: the account"):
        outcome.then_nothing()
    with pytest.raises(AssertionError, match="but the command raised ValueError"):
        outcome.then(AccountOpened(owner="bob"))


def test_then_nothing() -> None:
    given(Account, AccountOpened(owner="ann"), AccountClosed()).when(
        lambda a: a.close("again")
    ).then_nothing()
    with pytest.raises(AssertionError, match=r"\[1\] unexpected: AccountClosed\(reason='x'\)"):
        given(Account, AccountOpened(owner="ann")).when(lambda a: a.close("x")).then_nothing()


def test_then_state_diffs_the_state_model() -> None:
    given(Account, AccountOpened(owner="ann")).when(lambda a: a.deposit(Decimal(2))).then_state(
        AccountState(owner="ann", balance=Decimal(2), open=True)
    )
    with pytest.raises(AssertionError) as failure:
        given(Account, AccountOpened(owner="ann")).then_state(AccountState(owner="bob"))
    message = str(failure.value)
    assert "  owner: expected 'bob', actual 'ann'" in message
    assert "  open: expected False, actual True" in message
    assert "balance" not in message


def test_history_is_stamped_as_one_stream_unless_it_carries_its_own() -> None:
    scenario = given(Account, AccountOpened(owner="ann"), MoneyDeposited(amount=Decimal(1)))
    assert [e.aggregate_version for e in scenario.history] == [1, 2]
    assert {e.aggregate_id for e in scenario.history} == {scenario.aggregate_id}
    built = EventBuilder(aggregate_type="Account")
    history = built(AccountOpened(owner="ann"), MoneyDeposited(amount=Decimal(1)))
    assert given(Account, *history).aggregate().aggregate_id == built.aggregate_id
    with pytest.raises(InvalidEventError):  # a gap in the given versions is refused
        given(Account, AccountOpened(owner="ann", aggregate_version=2)).aggregate()


def test_when_refuses_an_async_command() -> None:
    async def command(account: Account) -> None:
        account.open("ann")

    with pytest.raises(TypeError, match="synchronous command"):
        given(Account).when(command)


def test_given_refuses_other_targets() -> None:
    with pytest.raises(TypeError, match="an aggregate class"):
        given(AccountState)  # type: ignore[call-overload]


async def test_a_projection_scenario_compares_the_read_models() -> None:
    account_id = uuid4()
    await given(
        Balances(),
        AccountOpened(owner="ann"),
        MoneyDeposited(amount=Decimal(5)),
        MoneyWithdrawn(amount=Decimal(2)),
        aggregate_id=account_id,
        registry=registry,
    ).then(Balance(id=account_id, owner="ann", amount=Decimal(3), version=3))


async def test_a_failing_projection_scenario_shows_the_differing_fields() -> None:
    account_id = uuid4()
    other = uuid4()
    scenario = given(
        Balances(),
        AccountOpened(owner="ann"),
        MoneyDeposited(amount=Decimal(5)),
        aggregate_id=account_id,
        registry=registry,
    )
    with pytest.raises(AssertionError) as failure:
        await scenario.then(
            Balance(id=account_id, owner="ann", amount=Decimal(4), version=2),
            Balance(id=other, owner="bob"),
        )
    lines = str(failure.value).splitlines()
    assert lines[:3] == [
        "read models differ:",
        f"Balance {account_id} differs from what was expected:",
        "  amount: expected Decimal('4'), actual Decimal('5')",
    ]
    assert lines[3].startswith(f"Balance {other}: missing, expected Balance(")


async def test_a_projection_scenario_runs_the_events_once() -> None:
    account_id = uuid4()
    scenario = given(
        Balances(), AccountOpened(owner="ann"), aggregate_id=account_id, registry=registry
    )
    await scenario.then(Balance(id=account_id, owner="ann", version=1))
    expected = [Balance(id=account_id, owner="ann", version=1)]
    await scenario.then_state(lambda p: p.models.query(), expected)
    closed = given(
        Balances(),
        AccountOpened(owner="ann"),
        AccountClosed(),
        aggregate_id=account_id,
        registry=registry,
    )
    await closed.then_missing(account_id)
    with pytest.raises(AssertionError, match="expected no read model under"):
        await scenario.then_missing(account_id)


async def test_events_of_several_streams_reach_the_projection_in_order() -> None:
    ann, bob = EventBuilder(), EventBuilder()
    events = [
        ann(AccountOpened(owner="ann")),
        bob(AccountOpened(owner="bob")),
        ann(MoneyDeposited(amount=Decimal(1))),
        bob(MoneyDeposited(amount=Decimal(7))),
    ]
    await given(Balances(), *events, registry=registry).then(
        Balance(id=ann.aggregate_id, owner="ann", amount=Decimal(1), version=2),
        Balance(id=bob.aggregate_id, owner="bob", amount=Decimal(7), version=2),
    )


async def test_projection_then_raises() -> None:
    class Strict(Balances):
        async def _closed(self, event: AccountClosed) -> None:  # type: ignore[override]
            raise RuntimeError(f"cannot close {event.aggregate_id}")

    scenario = given(Strict(), AccountOpened(owner="a"), AccountClosed(), registry=registry)
    await scenario.then_raises(RuntimeError, match="cannot close")
    with pytest.raises(AssertionError, match="to raise RuntimeError, but it handled all 1"):
        await given(Strict(), AccountOpened(owner="a"), registry=registry).then_raises(RuntimeError)
