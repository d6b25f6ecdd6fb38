"""The demo's business rules, as given (past events) / when (a command) / then (new events),
and its read model fed events as a subscription would deliver them."""

import asyncio
from collections.abc import Callable
from decimal import Decimal
from uuid import UUID, uuid4

import pytest

from eventsource import DomainEvent, default_registry
from eventsource.cli.bank import (
    DEMO_REGISTRY,
    Account,
    AccountBalances,
    AccountClosed,
    AccountClosedError,
    AccountError,
    AccountOpened,
    InsufficientFunds,
    InvalidCommand,
    MoneyDeposited,
    MoneyWithdrawn,
)


def given(*history: DomainEvent) -> Account:
    """An account rebuilt from `history`, as the repository would load it."""
    account = Account(uuid4())
    account.load_from_history(
        event.model_copy(update={"aggregate_id": account.aggregate_id, "aggregate_version": n})
        for n, event in enumerate(history, start=1)
    )
    return account


def new_events(account: Account) -> list[tuple[type[DomainEvent], dict[str, object]]]:
    """The events a command recorded, as (class, business fields) pairs."""
    envelope = set(DomainEvent.model_fields)
    return [(type(e), e.model_dump(exclude=envelope)) for e in account.uncommitted_events]


def opened(overdraft_limit: str = "0") -> AccountOpened:
    return AccountOpened(owner="Ann", overdraft_limit=Decimal(overdraft_limit))


def deposited(amount: str) -> MoneyDeposited:
    return MoneyDeposited(amount=Decimal(amount))


def test_open_records_owner_and_overdraft_limit() -> None:
    account = given()
    account.open("Ann", overdraft_limit=Decimal("25"))
    assert new_events(account) == [
        (AccountOpened, {"owner": "Ann", "overdraft_limit": Decimal("25")})
    ]
    assert account.state.opened
    assert account.version == 1


@pytest.mark.parametrize(
    ("history", "owner", "limit"),
    [
        pytest.param([opened()], "Ann", "0", id="already-open"),
        pytest.param([], "  ", "0", id="no-owner"),
        pytest.param([], "Ann", "-1", id="negative-overdraft"),
    ],
)
def test_invalid_open_is_refused(history: list[DomainEvent], owner: str, limit: str) -> None:
    account = given(*history)
    with pytest.raises(InvalidCommand):
        account.open(owner, overdraft_limit=Decimal(limit))
    assert new_events(account) == []


def test_deposit_and_withdraw_change_the_balance() -> None:
    account = given(opened(), deposited("100"))
    account.deposit(Decimal("5.50"))
    account.withdraw(Decimal("30"))
    assert new_events(account) == [
        (MoneyDeposited, {"amount": Decimal("5.50")}),
        (MoneyWithdrawn, {"amount": Decimal("30")}),
    ]
    assert account.state.balance == Decimal("75.50")


@pytest.mark.parametrize("amount", ["0", "-5", "NaN", "Infinity"])
@pytest.mark.parametrize("command", ["deposit", "withdraw"])
def test_amounts_must_be_positive(command: str, amount: str) -> None:
    account = given(opened(), deposited("100"))
    with pytest.raises(InvalidCommand, match="must be positive"):
        getattr(account, command)(Decimal(amount))
    assert new_events(account) == []


def test_an_account_that_was_never_opened_refuses_deposits() -> None:
    with pytest.raises(InvalidCommand, match="has not been opened"):
        given().deposit(Decimal("1"))


def test_withdrawal_may_use_the_overdraft_down_to_its_limit() -> None:
    account = given(opened(overdraft_limit="50"), deposited("20"))
    account.withdraw(Decimal("70"))
    assert account.state.balance == Decimal("-50")


def test_withdrawal_beyond_the_overdraft_limit_is_refused() -> None:
    account = given(opened(overdraft_limit="50"), deposited("20"))
    with pytest.raises(InsufficientFunds) as caught:
        account.withdraw(Decimal("70.01"))
    assert (caught.value.amount, caught.value.available) == (Decimal("70.01"), Decimal("70"))
    assert caught.value.account_id == account.aggregate_id
    assert str(account.aggregate_id) in str(caught.value)
    assert "only 70.00 available" in caught.value.reason
    assert new_events(account) == []
    assert account.state.balance == Decimal("20")


def test_only_an_empty_account_can_be_closed() -> None:
    account = given(opened(), deposited("10"))
    with pytest.raises(InvalidCommand, match="only an empty account"):
        account.close()
    account.withdraw(Decimal("10"))
    account.close()
    assert new_events(account)[-1] == (AccountClosed, {})
    assert account.state.closed


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(lambda a: a.deposit(Decimal("1")), id="deposit"),
        pytest.param(lambda a: a.withdraw(Decimal("1")), id="withdraw"),
        pytest.param(lambda a: a.close(), id="close"),
        pytest.param(lambda a: a.open("Ann"), id="open"),
    ],
)
def test_a_closed_account_refuses_every_command(command: Callable[[Account], None]) -> None:
    account = given(opened(overdraft_limit="50"), AccountClosed())
    with pytest.raises(AccountClosedError, match="is closed"):
        command(account)
    assert new_events(account) == []


def test_domain_errors_are_not_library_errors() -> None:
    from eventsource import EventSourceError

    assert not issubclass(AccountError, EventSourceError)


def test_demo_events_stay_out_of_the_default_registry() -> None:
    assert DEMO_REGISTRY.list_types() == [
        "AccountClosed",
        "AccountOpened",
        "MoneyDeposited",
        "MoneyWithdrawn",
    ]
    for name in DEMO_REGISTRY.list_types():
        assert default_registry.get_or_none(name) is not DEMO_REGISTRY.get(name)


def test_an_application_may_define_its_own_account_opened() -> None:
    if default_registry.is_registered("AccountOpened"):
        pytest.skip("another test module registered AccountOpened in the default registry")
    try:

        class AccountOpened(DomainEvent):  # the user's own event, same name as the demo's
            iban: str

        assert default_registry.get("AccountOpened") is AccountOpened
    finally:
        default_registry.unregister("AccountOpened")


def stream(account_id: UUID, *events: DomainEvent) -> list[DomainEvent]:
    """`events` as stored in one stream: the account's id and versions from 1."""
    return [
        event.model_copy(update={"aggregate_id": account_id, "aggregate_version": n})
        for n, event in enumerate(events, start=1)
    ]


def feed(balances: AccountBalances, events: list[DomainEvent]) -> None:
    async def deliver() -> None:
        for event in events:
            await balances.handle(event)

    asyncio.run(deliver())


def test_read_model_follows_the_events() -> None:
    ann, bob = uuid4(), uuid4()
    balances = AccountBalances()
    feed(balances, stream(ann, opened(), deposited("100"), MoneyWithdrawn(amount=Decimal("30"))))
    feed(balances, stream(bob, opened(), AccountClosed()))

    assert (balances.accounts[ann].balance, balances.accounts[ann].closed) == (Decimal(70), False)
    assert (balances.accounts[bob].balance, balances.accounts[bob].closed) == (Decimal(0), True)
    assert balances.applied == 5


def test_read_model_ignores_a_redelivered_event() -> None:
    # Subscriptions deliver at least once: after a crash the events since the last saved
    # checkpoint come again, and must not be counted twice.
    account_id = uuid4()
    events = stream(account_id, opened(), deposited("100"), deposited("5"))
    balances = AccountBalances()
    feed(balances, events)
    feed(balances, events[1:])
    feed(balances, events)

    row = balances.accounts[account_id]
    assert (row.owner, row.balance, row.version) == ("Ann", Decimal(105), 3)
    assert balances.applied == 3
