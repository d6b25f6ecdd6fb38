"""The order -> payment -> shipment saga of docs/sagas.md, with effects recorded in a ledger
the tests inspect (in memory here; `test_postgresql.py` records them in a table)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from eventsource import DomainEvent
from eventsource.sagas import ProcessManager, Saga, SagaStep, StepContext, WorkflowEngine

# Type names of their own: docs examples define events of these names in the default
# registry, and both cannot be registered at once.


class OrderPlaced(DomainEvent):
    event_type: str = "tests.sagas.OrderPlaced"
    order_id: str
    amount: int


class PaymentReceived(DomainEvent):
    event_type: str = "tests.sagas.PaymentReceived"
    order_id: str
    payment_ref: str


class RequestPayment(DomainEvent):
    event_type: str = "tests.sagas.RequestPayment"
    order_id: str
    amount: int


class ShipOrder(DomainEvent):
    event_type: str = "tests.sagas.ShipOrder"
    order_id: str


class Ledger:
    """Effects by idempotency key: `applied` counts every run, `effects` the distinct ones."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.effects: dict[str, str] = {}
        self.fail: set[str] = set()

    def apply(self, ctx: StepContext, what: str) -> None:
        self.runs[ctx.step] += 1
        if ctx.step in self.fail:
            raise RuntimeError(f"{ctx.step} is down")
        self.effects.setdefault(ctx.idempotency_key, what)


def order_saga(ledger: Ledger, *, timeout: timedelta = timedelta(minutes=30)) -> Saga:
    async def reserve_stock(ctx: StepContext) -> dict[str, Any]:
        ledger.apply(ctx, f"reserved {ctx.data['order_id']}")
        return {"reservation": f"r-{ctx.data['order_id']}"}

    async def release_stock(ctx: StepContext) -> None:
        ledger.apply(ctx, f"released {ctx.data['reservation']}")

    async def request_payment(ctx: StepContext) -> None:
        ledger.apply(ctx, "payment requested")
        ctx.send(RequestPayment(order_id=ctx.data["order_id"], amount=ctx.data["amount"]))

    async def refund(ctx: StepContext) -> None:
        ledger.apply(ctx, "refunded")

    async def ship(ctx: StepContext) -> None:
        ledger.apply(ctx, f"shipped {ctx.data['payment_ref']}")
        ctx.send(ShipOrder(order_id=ctx.data["order_id"]))

    return Saga(
        "order",
        [
            SagaStep(reserve_stock, release_stock),
            SagaStep(request_payment, refund, wait_for="PaymentReceived"),
            SagaStep(ship),
        ],
        timeout=timeout,
    )


def order_routes(engine: WorkflowEngine, saga: Saga) -> ProcessManager:
    return (
        ProcessManager(engine, saga)
        .starts_on(
            OrderPlaced,
            key=lambda e: e.order_id,
            data=lambda e: {"order_id": e.order_id, "amount": e.amount},
        )
        .signals_on(
            PaymentReceived,
            signal="PaymentReceived",
            key=lambda e: e.order_id,
            payload=lambda e: {"payment_ref": e.payment_ref},
        )
    )
