"""A bank-account service: commands, read-your-writes queries, a read model kept by a
subscription, an outbox to a bus, health and metrics endpoints, graceful shutdown.

    EVENTSOURCE_EVENT_STORE_URL='postgresql://postgres@127.0.0.1/test?schema=bank&outbox=true' \\
    EVENTSOURCE_BUS_URL='redis://127.0.0.1:6379/0' \\
    uv run uvicorn examples.bank_service.app:app

A command answers with `X-Consistency-Token`; a query given that token (`?after=`) waits until
the read model has caught up with it, so a client always reads its own writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Annotated, Any
from uuid import UUID, uuid4

from fastapi import FastAPI, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from eventsource import (
    AggregateNotFoundError,
    AggregateRepository,
    CommandResult,
    DeclarativeAggregate,
    DomainEvent,
    EventRegistry,
    InvalidPositionError,
    OutboxRelay,
    Position,
    SubscriptionConfig,
    SubscriptionManager,
    handles,
)
from eventsource.config import EventSourceSettings
from eventsource.readmodels import PostgreSQLReadModelRepository, ReadModelProjection

registry = EventRegistry()


class AccountOpened(DomainEvent, registry=registry):
    owner: str


class MoneyDeposited(DomainEvent, registry=registry):
    amount: Decimal


class MoneyWithdrawn(DomainEvent, registry=registry):
    amount: Decimal


class Refused(Exception):
    """A command the account's rules refuse (answered with 409)."""


class AccountState(BaseModel):
    owner: str = ""
    balance: Decimal = Decimal(0)


class Account(DeclarativeAggregate[AccountState]):
    def open(self, owner: str) -> None:
        if self.version:
            raise Refused("the account is already open")
        self.apply_event(AccountOpened(owner=owner))

    def deposit(self, amount: Decimal) -> None:
        self.apply_event(MoneyDeposited(amount=amount))

    def withdraw(self, amount: Decimal) -> None:
        if amount > self.state.balance:
            raise Refused(f"insufficient funds: the balance is {self.state.balance}")
        self.apply_event(MoneyWithdrawn(amount=amount))

    @handles(AccountOpened)
    def _opened(self, event: AccountOpened) -> None:
        self.state.owner = event.owner

    @handles(MoneyDeposited)
    def _deposited(self, event: MoneyDeposited) -> None:
        self.state.balance += event.amount

    @handles(MoneyWithdrawn)
    def _withdrawn(self, event: MoneyWithdrawn) -> None:
        self.state.balance -= event.amount


class AccountView(BaseModel):
    """The read model: what `GET /accounts/{id}` returns."""

    id: UUID
    owner: str = ""
    balance: Decimal = Decimal(0)
    version: int = 0  # the stream version this view includes: redeliveries change nothing


class AccountViews(ReadModelProjection[AccountView]):
    async def _apply(self, event: DomainEvent, owner: str | None, change: Decimal) -> None:
        def apply(view: AccountView | None) -> AccountView:
            view = view or AccountView(id=event.aggregate_id)
            if view.version >= event.aggregate_version:
                return view
            return view.model_copy(
                update={
                    "owner": owner if owner is not None else view.owner,
                    "balance": view.balance + change,
                    "version": event.aggregate_version,
                }
            )

        await self.update(event.aggregate_id, apply)

    @handles(AccountOpened)
    async def _opened(self, event: AccountOpened) -> None:
        await self._apply(event, event.owner, Decimal(0))

    @handles(MoneyDeposited)
    async def _deposited(self, event: MoneyDeposited) -> None:
        await self._apply(event, None, event.amount)

    @handles(MoneyWithdrawn)
    async def _withdrawn(self, event: MoneyWithdrawn) -> None:
        await self._apply(event, None, -event.amount)


class OpenAccount(BaseModel):
    owner: str = Field(min_length=1)


class Amount(BaseModel):
    amount: Decimal = Field(gt=0, max_digits=12, decimal_places=2)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Everything starts before the first request and stops, in reverse, on SIGTERM/SIGINT
    # (uvicorn runs this exit after in-flight requests finish): the subscription saves its
    # checkpoint, the relay finishes its batch, connections close.
    async with contextlib.AsyncExitStack() as stack:
        parts = await stack.enter_async_context(
            EventSourceSettings.from_env().build(registry=registry)
        )
        await parts.create_schema()
        schema = getattr(parts.event_store, "schema", "public")
        views = PostgreSQLReadModelRepository(AccountView, parts.engine, schema=schema)
        stack.push_async_callback(views.close)  # returns its connections before the engine goes
        await views.create_table()
        config = SubscriptionConfig(poll_interval=0.5)
        manager = SubscriptionManager(
            parts.event_store, parts.checkpoints, parts.dead_letters, config=config
        )
        await stack.enter_async_context(manager)
        app.state.subscription = manager.subscribe(AccountViews(views))
        app.state.manager, app.state.views, app.state.outbox = manager, views, parts.outbox
        app.state.accounts = AggregateRepository(parts.event_store, Account)
        if parts.bus is not None:
            relay = await stack.enter_async_context(
                OutboxRelay(
                    parts.outbox,
                    parts.bus,
                    registry=registry,
                    store=parts.event_store,
                    poll_interval=0.2,
                )
            )
            await relay.start()
        yield


app = FastAPI(title="bank", lifespan=lifespan)


async def _command(
    request: Request,
    response: Response,
    account: UUID,
    command: Callable[[Account], None],
    *,
    create: bool = False,
) -> None:
    """Run `command` on the account; its consistency token goes in a response header."""
    try:
        done: CommandResult[None] = await request.app.state.accounts.execute_command(
            account, command, create=create
        )
    except AggregateNotFoundError:
        raise HTTPException(404, f"no account {account}") from None
    except Refused as refused:
        raise HTTPException(409, str(refused)) from None
    if done.position is not None:
        response.headers["X-Consistency-Token"] = str(done.position)


@app.post("/accounts", status_code=201)
async def open_account(body: OpenAccount, request: Request, response: Response) -> dict[str, str]:
    account = uuid4()

    def open_it(a: Account) -> None:
        a.open(body.owner)

    await _command(request, response, account, open_it, create=True)
    return {"id": str(account)}


@app.post("/accounts/{account}/deposits", status_code=204)
async def deposit(account: UUID, body: Amount, request: Request, response: Response) -> None:
    def deposit_it(a: Account) -> None:
        a.deposit(body.amount)

    await _command(request, response, account, deposit_it)


@app.post("/accounts/{account}/withdrawals", status_code=204)
async def withdraw(account: UUID, body: Amount, request: Request, response: Response) -> None:
    def withdraw_it(a: Account) -> None:
        a.withdraw(body.amount)

    await _command(request, response, account, withdraw_it)


@app.get("/accounts/{account}")
async def get_account(
    account: UUID, request: Request, after: Annotated[str | None, Query()] = None
) -> AccountView:
    if after is not None:
        try:
            token = Position.parse(after)
        except InvalidPositionError:
            raise HTTPException(400, f"not a consistency token: {after!r}") from None
        try:
            await request.app.state.subscription.wait_for(token, timeout=5)
        except TimeoutError:
            raise HTTPException(503, "the read model is behind; retry") from None
    view: AccountView | None = await request.app.state.views.get(account)
    if view is None:
        raise HTTPException(404, f"no account {account}")
    return view


@app.get("/health")
async def health(request: Request, response: Response) -> dict[str, Any]:
    report = await request.app.state.manager.health()
    response.status_code = 200 if report.ready else 503
    return {"ready": report.ready}


@app.get("/metrics")
async def metrics(request: Request) -> dict[str, Any]:
    report = await request.app.state.manager.health()
    outbox = await request.app.state.outbox.stats()
    return {
        "subscriptions": {
            s.name: {"state": str(s.state), "events_behind": s.events_behind}
            for s in report.subscriptions
        },
        "outbox": {"pending": outbox.pending},
        "repository": dataclasses.asdict(request.app.state.accounts.stats),
    }
