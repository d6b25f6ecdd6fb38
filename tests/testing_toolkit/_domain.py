"""A small banking domain the toolkit's tests exercise: an aggregate, a read-model
projection, and events in a registry of their own (so they never meet other tests' events)."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel

from eventsource import (
    DeclarativeAggregate,
    DomainEvent,
    EventRegistry,
    InMemoryReadModelRepository,
    ReadModelProjection,
    handles,
)

registry = EventRegistry()


class AccountOpened(DomainEvent, registry=registry):
    owner: str


class MoneyDeposited(DomainEvent, registry=registry):
    amount: Decimal


class MoneyWithdrawn(DomainEvent, registry=registry):
    amount: Decimal


class AccountClosed(DomainEvent, registry=registry):
    reason: str = ""


class InsufficientFunds(Exception):
    pass


class AccountState(BaseModel):
    owner: str = ""
    balance: Decimal = Decimal(0)
    open: bool = False


class Account(DeclarativeAggregate[AccountState]):
    def open(self, owner: str) -> None:
        if self.state.open:
            raise ValueError("the account is open already")
        self.apply_event(AccountOpened(owner=owner))

    def deposit(self, amount: Decimal) -> None:
        self.apply_event(MoneyDeposited(amount=amount))

    def withdraw(self, amount: Decimal) -> None:
        if amount > self.state.balance:
            raise InsufficientFunds(f"balance {self.state.balance} < {amount}")
        self.apply_event(MoneyWithdrawn(amount=amount))

    def close(self, reason: str) -> None:
        if self.state.open:
            self.apply_event(AccountClosed(reason=reason))

    @handles(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        self.state.owner = event.owner
        self.state.open = True

    @handles(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        self.state.balance += event.amount

    @handles(MoneyWithdrawn)
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.state.balance -= event.amount

    @handles(AccountClosed)
    def _closed(self, event: AccountClosed) -> None:
        self.state.open = False


class Balance(BaseModel):
    id: UUID
    owner: str = ""
    amount: Decimal = Decimal(0)
    version: int = 0


class Balances(ReadModelProjection[Balance]):
    """Idempotent: each model keeps the aggregate version it was built from."""

    def __init__(self) -> None:
        super().__init__(InMemoryReadModelRepository(Balance))

    @handles(AccountOpened)
    async def _opened(self, event: AccountOpened) -> None:
        await self.models.save(
            Balance(id=event.aggregate_id, owner=event.owner, version=event.aggregate_version)
        )

    @handles(MoneyDeposited, MoneyWithdrawn)
    async def _moved(self, event: MoneyDeposited | MoneyWithdrawn) -> None:
        sign = 1 if isinstance(event, MoneyDeposited) else -1

        def change(model: Balance | None) -> Balance:
            model = model or Balance(id=event.aggregate_id)
            if event.aggregate_version <= model.version:
                return model
            return model.model_copy(
                update={
                    "amount": model.amount + sign * event.amount,
                    "version": event.aggregate_version,
                }
            )

        await self.update(event.aggregate_id, change)

    @handles(AccountClosed)
    async def _closed(self, event: AccountClosed) -> None:
        await self.models.delete(event.aggregate_id)
