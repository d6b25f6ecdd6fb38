"""The demo's domain: a bank account as an event-sourced aggregate.

Commands (`open`, `deposit`, `withdraw`, `close`) check the business rules against the
current state and either raise an `AccountError` (nothing is recorded) or record one event.
Handlers only apply events: they never validate, because a stored event already happened.

`AccountBalances` is the read side: a projection that a subscription feeds from the global
feed, so it learns of an event only once the event is stored and delivered.

The events live in their own `DEMO_REGISTRY`, so their type names cannot collide with an
application's events in the default registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel

from eventsource.aggregates import DeclarativeAggregate
from eventsource.events import DomainEvent, EventRegistry
from eventsource.events.handlers import handles
from eventsource.projections import DeclarativeProjection

__all__ = [
    "DEMO_REGISTRY",
    "Account",
    "AccountBalances",
    "AccountClosed",
    "AccountClosedError",
    "AccountError",
    "AccountOpened",
    "AccountState",
    "BalanceRow",
    "InsufficientFunds",
    "InvalidCommand",
    "MoneyDeposited",
    "MoneyWithdrawn",
]

DEMO_REGISTRY = EventRegistry()
"""Registry of the demo's events (stores that read them are built with `registry=`)."""

ZERO = Decimal("0.00")


class AccountOpened(DomainEvent, registry=DEMO_REGISTRY):
    owner: str
    overdraft_limit: Decimal = ZERO


class MoneyDeposited(DomainEvent, registry=DEMO_REGISTRY):
    amount: Decimal


class MoneyWithdrawn(DomainEvent, registry=DEMO_REGISTRY):
    amount: Decimal


class AccountClosed(DomainEvent, registry=DEMO_REGISTRY):
    pass


class AccountError(Exception):
    """A command refused by a business rule; the account is left unchanged.

    Domain errors belong to the application, not to the library, so they do not derive from
    `EventSourceError`: `except EventSourceError` should catch infrastructure problems only.
    `reason` is the message without the account id, for display next to the account.
    """

    def __init__(self, account_id: UUID, reason: str) -> None:
        self.account_id = account_id
        self.reason = reason
        super().__init__(f"account {account_id}: {reason}")


class InvalidCommand(AccountError):
    """The command makes no sense for this account (non-positive amount, opened twice, ...)."""


class AccountClosedError(AccountError):
    """The account is closed: it accepts no command any more."""


class InsufficientFunds(AccountError):
    """A withdrawal would take the balance below the overdraft limit."""

    def __init__(self, account_id: UUID, amount: Decimal, available: Decimal) -> None:
        self.amount = amount
        self.available = available
        super().__init__(
            account_id,
            f"cannot withdraw {amount:.2f}: only {available:.2f} available, overdraft included",
        )


class AccountState(BaseModel):
    owner: str = ""
    balance: Decimal = ZERO
    overdraft_limit: Decimal = ZERO
    opened: bool = False
    closed: bool = False

    @property
    def available(self) -> Decimal:
        """What can still be withdrawn: the balance plus the overdraft limit."""
        return self.balance + self.overdraft_limit


class Account(DeclarativeAggregate[AccountState]):
    """A bank account: opened once, then deposits and withdrawals until it is closed."""

    # -- commands: check the rules, then record what happened -----------------------------

    def open(self, owner: str, *, overdraft_limit: Decimal = ZERO) -> None:
        if self.state.closed:
            raise AccountClosedError(self.aggregate_id, "the account is closed")
        if self.state.opened:
            raise InvalidCommand(self.aggregate_id, "the account is already open")
        if not owner.strip():
            raise InvalidCommand(self.aggregate_id, "an account needs an owner name")
        if not overdraft_limit.is_finite() or overdraft_limit < 0:
            raise InvalidCommand(
                self.aggregate_id, f"the overdraft limit must be >= 0, got {overdraft_limit}"
            )
        self.apply_event(AccountOpened(owner=owner, overdraft_limit=overdraft_limit))

    def deposit(self, amount: Decimal) -> None:
        self._require_open()
        self._require_positive(amount)
        self.apply_event(MoneyDeposited(amount=amount))

    def withdraw(self, amount: Decimal) -> None:
        self._require_open()
        self._require_positive(amount)
        if amount > self.state.available:
            raise InsufficientFunds(self.aggregate_id, amount, self.state.available)
        self.apply_event(MoneyWithdrawn(amount=amount))

    def close(self) -> None:
        self._require_open()
        if self.state.balance != 0:
            raise InvalidCommand(
                self.aggregate_id,
                f"the balance is {self.state.balance:.2f}; only an empty account can be closed",
            )
        self.apply_event(AccountClosed())

    def _require_open(self) -> None:
        if not self.state.opened:
            raise InvalidCommand(self.aggregate_id, "the account has not been opened")
        if self.state.closed:
            raise AccountClosedError(self.aggregate_id, "the account is closed")

    def _require_positive(self, amount: Decimal) -> None:
        if not amount.is_finite() or amount <= 0:
            raise InvalidCommand(self.aggregate_id, f"the amount must be positive, got {amount}")

    # -- event handlers: apply what happened, never refuse ---------------------------------

    @handles(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        self.state.owner = event.owner
        self.state.overdraft_limit = event.overdraft_limit
        self.state.opened = True

    @handles(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        self.state.balance += event.amount

    @handles(MoneyWithdrawn)
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.state.balance -= event.amount

    @handles(AccountClosed)
    def _closed(self, event: AccountClosed) -> None:
        self.state.closed = True


@dataclass
class BalanceRow:
    """One account in the read model; `version` is the last event applied to it."""

    owner: str
    balance: Decimal = ZERO
    closed: bool = False
    version: int = 0


class AccountBalances(DeclarativeProjection):
    """The demo's read model: every account's owner, balance and whether it is closed.

    It is not written by the commands: a subscription delivers the stored events to it in
    feed order, so it trails the commands until it catches up, and a reader that needs a
    command's effect waits for that command's position first (`Subscription.wait_for`).
    Delivery is at least once, so each handler applies an event only when its version is
    past the last one the row applied: a redelivered event changes nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.accounts: dict[UUID, BalanceRow] = {}
        self.applied = 0
        """How many events changed the model (redeliveries not counted)."""

    def _fresh(self, event: DomainEvent) -> BalanceRow | None:
        """The event's row, or None when that row has applied this event already."""
        row = self.accounts.get(event.aggregate_id)
        if row is None or event.aggregate_version <= row.version:
            return None
        row.version = event.aggregate_version
        self.applied += 1
        return row

    @handles(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        if event.aggregate_id not in self.accounts:
            self.accounts[event.aggregate_id] = BalanceRow(
                event.owner, version=event.aggregate_version
            )
            self.applied += 1

    @handles(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        if row := self._fresh(event):
            row.balance += event.amount

    @handles(MoneyWithdrawn)
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        if row := self._fresh(event):
            row.balance -= event.amount

    @handles(AccountClosed)
    def _closed(self, event: AccountClosed) -> None:
        if row := self._fresh(event):
            row.closed = True
