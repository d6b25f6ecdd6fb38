"""The saga engine on in-memory storage with a manual clock: ordering, parallel groups,
compensation (reverse order, retries, parking, operator retry), cancellation, deadlines,
delays, signals, the step boundary after a crash, and the testing helper."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from eventsource.sagas import (
    InMemoryTimerStore,
    Saga,
    SagaDefinitionError,
    SagaNotFoundError,
    SagaStatus,
    SagaStep,
    SagaTransitionError,
    StateMachine,
    StepContext,
    WorkflowEngine,
    current_saga,
)
from eventsource.sagas.events import SagaStepsStarted
from eventsource.stores import InMemoryEventStore
from eventsource.testing import ManualClock, SagaScenario
from tests.sagas._order import (
    Ledger,
    OrderPlaced,
    PaymentReceived,
    RequestPayment,
    ShipOrder,
    order_routes,
    order_saga,
)


def recorder(log: list[str], name: str, *, fail: bool = False) -> SagaStep:
    async def action(ctx: StepContext) -> dict[str, Any]:
        log.append(f"do {name}")
        if fail:
            raise RuntimeError(f"{name} broke")
        return {name: True}

    async def undo(ctx: StepContext) -> None:
        log.append(f"undo {name}")

    return SagaStep(action, undo, name=name)


def test_the_state_machine_refuses_moves_not_in_valid_transitions() -> None:
    machine = StateMachine()
    machine.transition(SagaStatus.RUNNING)
    machine.transition(SagaStatus.COMPLETED)
    with pytest.raises(SagaTransitionError) as raised:
        machine.transition(SagaStatus.FAILED)
    assert (raised.value.current, raised.value.target) == ("COMPLETED", "FAILED")
    assert machine.state is SagaStatus.COMPLETED
    assert StateMachine.valid_transitions[SagaStatus.COMPENSATION_FAILED] == {
        SagaStatus.COMPENSATING
    }


def test_definitions_are_checked() -> None:
    log: list[str] = []
    with pytest.raises(SagaDefinitionError, match="unique"):
        Saga("twice", [recorder(log, "a"), recorder(log, "a")])
    with pytest.raises(SagaDefinitionError, match="no steps"):
        Saga("empty", [])
    with pytest.raises(SagaDefinitionError, match="needs a name"):
        SagaStep(lambda ctx: asyncio.sleep(0))  # type: ignore[arg-type,return-value]


async def test_steps_run_in_order_and_the_saga_completes() -> None:
    log: list[str] = []
    saga = Saga("ordered", [recorder(log, "a"), recorder(log, "b"), recorder(log, "c")])
    async with SagaScenario(saga) as scenario:
        saga_id = await scenario.start({"n": 1})
        state = await scenario.expect_status(saga_id, SagaStatus.COMPLETED)
    assert log == ["do a", "do b", "do c"]
    assert state.completed == ["a", "b", "c"]
    assert state.data == {"n": 1, "a": True, "b": True, "c": True}


async def test_a_parallel_group_runs_concurrently() -> None:
    inside = 0
    most = 0

    def concurrent(name: str) -> SagaStep:
        async def action(ctx: StepContext) -> None:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

        return SagaStep(action, name=name)

    log: list[str] = []
    saga = Saga("fan-out", [recorder(log, "first"), (concurrent("x"), concurrent("y"))])
    async with SagaScenario(saga) as scenario:
        saga_id = await scenario.start()
        state = await scenario.expect_status(saga_id, SagaStatus.COMPLETED)
    assert most == 2
    assert set(state.completed) == {"first", "x", "y"}


async def test_a_failing_step_compensates_the_completed_ones_in_reverse() -> None:
    log: list[str] = []
    saga = Saga(
        "undo",
        [
            recorder(log, "a"),
            (recorder(log, "b"), recorder(log, "c")),
            recorder(log, "d", fail=True),
        ],
    )
    async with SagaScenario(saga) as scenario:
        saga_id = await scenario.start()
        state = await scenario.expect_status(saga_id, SagaStatus.COMPENSATED)
    undone = [entry for entry in log if entry.startswith("undo")]
    assert undone[-1] == "undo a"
    assert set(undone[:2]) == {"undo b", "undo c"}
    assert "undo d" not in log  # its action raised: nothing to undo
    assert state.failed.keys() == {"d"}
    assert "d broke" in (state.reason or "")


async def test_a_failing_compensation_is_retried_with_backoff_then_parked() -> None:
    attempts = 0
    healthy = False

    async def charge(ctx: StepContext) -> None:
        return None

    async def refund(ctx: StepContext) -> None:
        nonlocal attempts
        attempts += 1
        if not healthy:
            raise ConnectionError("payment provider unreachable")

    async def explode(ctx: StepContext) -> None:
        raise RuntimeError("boom")

    saga = Saga("refunds", [SagaStep(charge, refund), SagaStep(explode)])
    async with SagaScenario(
        saga, compensation_attempts=3, compensation_backoff=timedelta(seconds=10)
    ) as scenario:
        saga_id = await scenario.start()
        state = await scenario.expect_status(saga_id, SagaStatus.COMPENSATING)
        assert attempts == 1
        assert state.retry_at == scenario.clock.now + timedelta(seconds=10)
        await scenario.advance(seconds=9)
        assert attempts == 1  # not before its backoff
        await scenario.advance(seconds=1)
        assert attempts == 2
        await scenario.advance(seconds=20)  # second backoff: 20 s
        state = await scenario.expect_status(saga_id, SagaStatus.COMPENSATION_FAILED)
        assert attempts == 3
        assert (state.parked_step, state.compensation_attempts["charge"]) == ("charge", 3)
        assert "unreachable" in (state.parked_error or "")
        await scenario.advance(hours=1)
        assert attempts == 3  # parked: never retried by itself, never dropped
        # An operator fixes the provider and retries.
        healthy = True
        await scenario.engine.retry_compensation(saga_id, requested_by="ops")
        await scenario.engine.run_until_idle()
        state = await scenario.expect_compensated(saga_id, ["charge"])
        assert state.status is SagaStatus.COMPENSATED
        with pytest.raises(SagaTransitionError):
            await scenario.engine.retry_compensation(saga_id)


async def test_cancellation_compensates_what_completed() -> None:
    log: list[str] = []

    async def wait_for_approval(ctx: StepContext) -> None:
        log.append("asked")

    saga = Saga(
        "approval",
        [
            recorder(log, "book"),
            SagaStep(wait_for_approval, wait_for="approved"),
            recorder(log, "x"),
        ],
    )
    async with SagaScenario(saga) as scenario:
        saga_id = await scenario.start()
        await scenario.expect_status(saga_id, SagaStatus.RUNNING)
        await scenario.cancel(saga_id, "customer changed their mind")
        state = await scenario.expect_status(saga_id, SagaStatus.COMPENSATED)
        assert state.reason == "cancelled: customer changed their mind"
        assert log == ["do book", "asked", "undo book"]
        with pytest.raises(SagaTransitionError):
            await scenario.engine.cancel(saga_id)


async def test_the_order_saga_completes_when_paid() -> None:
    ledger = Ledger()
    async with SagaScenario(order_saga(ledger), process_manager=order_routes) as scenario:
        await scenario.given(OrderPlaced(order_id="o-1", amount=30))
        saga_id = scenario.saga_id("o-1")
        await scenario.expect_status(saga_id, SagaStatus.RUNNING)
        await scenario.expect_commands(RequestPayment)
        await scenario.advance(minutes=10)
        await scenario.given(PaymentReceived(order_id="o-1", payment_ref="p-9"))
        state = await scenario.expect_status(saga_id, SagaStatus.COMPLETED)
        commands = await scenario.expect_commands(RequestPayment, ShipOrder)
        assert commands[0].metadata["saga_step"] == "request_payment"
        assert state.data["payment_ref"] == "p-9"
        assert await scenario.timers.pending(saga_id) == []  # the deadline is gone too


async def test_the_order_saga_times_out_and_compensates() -> None:
    ledger = Ledger()
    async with SagaScenario(order_saga(ledger), process_manager=order_routes) as scenario:
        await scenario.given(OrderPlaced(order_id="o-2", amount=30))
        saga_id = scenario.saga_id("o-2")
        await scenario.advance(minutes=29)
        await scenario.expect_status(saga_id, SagaStatus.RUNNING)
        await scenario.advance(minutes=1)
        state = await scenario.expect_compensated(saga_id, ["request_payment", "reserve_stock"])
        assert state.status is SagaStatus.COMPENSATED
        assert (state.reason or "").startswith("timed out")
        # A payment arriving after the end changes nothing.
        await scenario.given(PaymentReceived(order_id="o-2", payment_ref="late"))
        await scenario.expect_commands(RequestPayment)


async def test_duplicate_events_run_no_step_twice() -> None:
    ledger = Ledger()
    async with SagaScenario(order_saga(ledger), process_manager=order_routes) as scenario:
        placed = OrderPlaced(order_id="o-3", amount=5)
        paid = PaymentReceived(order_id="o-3", payment_ref="p")
        await scenario.given(placed, placed, paid, paid, placed)
        await scenario.expect_status(scenario.saga_id("o-3"), SagaStatus.COMPLETED)
    assert ledger.runs == {"reserve_stock": 1, "request_payment": 1, "ship": 1}


async def test_a_step_in_doubt_is_rerun_with_the_same_key() -> None:
    """A crash between "step started" and "step completed": the resuming engine runs the
    action again with the same idempotency key, and records it once."""
    keys: list[tuple[str, int]] = []

    async def pay(ctx: StepContext) -> None:
        keys.append((ctx.idempotency_key, ctx.attempt))

    saga = Saga("crash", [SagaStep(pay)])
    clock = ManualClock()
    store, timers = InMemoryEventStore(), InMemoryTimerStore()
    engine = WorkflowEngine(store, timers, sagas=[saga], clock=clock)
    saga_id = await engine.start(saga)
    # What a process that died inside the action left behind: the start record only.
    instance = await engine.repository.load(saga_id)
    instance.start_steps(["pay"])
    await engine.repository.save(instance)
    await engine.run_until_idle()
    state = await engine.get(saga_id)
    assert state.status is SagaStatus.COMPLETED
    assert keys == [(f"{saga_id}:pay", 2)]
    assert state.started == {"pay": 2}
    events = [s.event async for s in store.read_stream(saga_id)]
    assert sum(isinstance(e, SagaStepsStarted) for e in events) == 2
    await engine.close()


async def test_a_delayed_step_waits_for_its_timer() -> None:
    log: list[str] = []
    later = recorder(log, "remind")
    later.delay = timedelta(hours=2)
    saga = Saga("reminder", [recorder(log, "order"), later])
    async with SagaScenario(saga) as scenario:
        saga_id = await scenario.start()
        await scenario.advance(hours=1, minutes=59)
        assert log == ["do order"]
        await scenario.advance(minutes=1)
        await scenario.expect_status(saga_id, SagaStatus.COMPLETED)
        assert log == ["do order", "do remind"]


async def test_steps_see_their_saga_in_the_context_variable() -> None:
    seen: list[tuple[str, str]] = []

    async def look(ctx: StepContext) -> None:
        current = current_saga()
        assert current is not None
        seen.append((current.step, current.idempotency_key))

    async with SagaScenario(Saga("ctx", [SagaStep(look)])) as scenario:
        saga_id = await scenario.start()
    assert seen == [("look", f"{saga_id}:look")]
    assert current_saga() is None


async def test_bad_requests_raise_typed_errors() -> None:
    async with SagaScenario(Saga("known", [recorder([], "a")])) as scenario:
        with pytest.raises(SagaNotFoundError):
            await scenario.engine.signal(scenario.saga_id("nobody"), "hello")
        with pytest.raises(SagaDefinitionError, match="no saga named 'unknown'"):
            await scenario.engine.start("unknown")
        with pytest.raises(SagaNotFoundError):
            await scenario.engine.get(scenario.saga_id("nobody"))


async def test_a_repeated_start_changes_nothing() -> None:
    log: list[str] = []
    async with SagaScenario(Saga("once", [recorder(log, "a")])) as scenario:
        saga_id = await scenario.start({"v": 1})
        assert await scenario.start({"v": 2}, saga_id=saga_id) == saga_id
        state = await scenario.state(saga_id)
    assert log == ["do a"]
    assert state.data["v"] == 1


async def test_a_cancel_during_a_step_compensates_that_step_too() -> None:
    """The cancellation lands while the action runs: the driver's next record conflicts,
    it reloads, records the step's completion anyway, then fails and compensates it."""
    entered, release = asyncio.Event(), asyncio.Event()
    log: list[str] = []

    async def slow(ctx: StepContext) -> None:
        entered.set()
        await release.wait()
        log.append("slow done")

    async def undo_slow(ctx: StepContext) -> None:
        log.append("undo slow")

    saga = Saga("interrupted", [SagaStep(slow, undo_slow), recorder(log, "after")])
    async with SagaScenario(saga) as scenario:
        saga_id = await scenario.engine.start(saga)
        driving = asyncio.create_task(scenario.engine.run_until_idle())
        await entered.wait()
        assert await scenario.engine.cancel(saga_id, "stop") is True
        release.set()
        await driving
        await scenario.engine.run_until_idle()
        state = await scenario.expect_compensated(saga_id, ["slow"])
    assert log == ["slow done", "undo slow"]
    assert state.completed == ["slow"]


async def test_the_status_read_model_follows_the_sagas() -> None:
    from eventsource.readmodels import InMemoryReadModelRepository
    from eventsource.sagas import SagaStatusProjection, SagaSummary

    log: list[str] = []
    good = Saga("good", [recorder(log, "a")])
    bad = Saga("bad", [recorder(log, "b"), recorder(log, "c", fail=True)])
    async with SagaScenario(good) as scenario:
        scenario.engine.register(bad)
        ok_id = await scenario.start()
        bad_id = await scenario.engine.start(bad)
        await scenario.engine.run_until_idle()
        summaries = InMemoryReadModelRepository(SagaSummary)
        projection = SagaStatusProjection(summaries)
        stored = [s async for s in scenario.store.read_all()]
        for event in stored + stored:  # every event delivered twice
            await projection.handle(event)
    [ok] = await summaries.query(status=SagaStatus.COMPLETED)
    [undone] = await summaries.query(status=SagaStatus.COMPENSATED)
    assert (ok.id, ok.saga_name) == (ok_id, "good")
    assert (undone.id, undone.saga_name) == (bad_id, "bad")
    assert "c broke" in (undone.reason or "")


async def test_a_store_with_its_own_registry_reads_sagas_once_it_knows_their_events() -> None:
    from eventsource import EventRegistry
    from eventsource.sagas.events import SAGA_EVENTS

    registry = EventRegistry()
    for event_class in SAGA_EVENTS:
        registry.register(event_class)
    store = InMemoryEventStore(registry=registry)
    engine = WorkflowEngine(store, InMemoryTimerStore(), sagas=[Saga("r", [recorder([], "a")])])
    saga_id = await engine.start("r")
    await engine.run_until_idle()
    assert (await engine.get(saga_id)).status is SagaStatus.COMPLETED
    await engine.close()


async def test_drive_runs_one_saga_now_and_refuses_while_another_driver_has_it() -> None:
    from eventsource.exceptions import LockTimeoutError

    log: list[str] = []
    async with SagaScenario(Saga("manual", [recorder(log, "a")])) as scenario:
        engine = scenario.engine
        saga_id = await engine.start("manual")
        async with engine.locks.acquire(f"saga:{saga_id}"):
            with pytest.raises(LockTimeoutError):
                await engine.drive(saga_id)
        state = await engine.drive(saga_id)
        assert state.status is SagaStatus.COMPLETED
        assert log == ["do a"]
        with pytest.raises(SagaNotFoundError):
            await engine.drive(scenario.saga_id("nobody"))


async def test_commands_reach_the_outbox_once_with_their_step() -> None:
    """A store with an outbox receives every command a step sent, once, in the append of
    the step's completion; duplicate events add nothing."""
    from eventsource.outbox import InMemoryOutboxRepository

    outbox = InMemoryOutboxRepository()
    store = InMemoryEventStore(outbox=outbox)
    saga = order_saga(Ledger())
    engine = WorkflowEngine(store, InMemoryTimerStore(), sagas=[saga], clock=ManualClock())
    routes = order_routes(engine, saga)
    placed = OrderPlaced(order_id="o-9", amount=3)
    for event in (placed, placed, PaymentReceived(order_id="o-9", payment_ref="p"), placed):
        await routes.handle(event)
        await engine.run_until_idle()
    async with outbox.claim(1000) as batch:
        entries = list(batch.entries)
    commands = (RequestPayment.type_name(), ShipOrder.type_name())
    sent = [e.event_type for e in entries if e.event_type in commands]
    assert sent == list(commands)
    completed = [e for e in entries if e.event_type == "eventsource.saga.StepCompleted"]
    payment = next(e for e in entries if e.event_type == RequestPayment.type_name())
    # The command directly follows its step's completion in the saga's stream.
    assert payment.aggregate_version - 1 in {e.aggregate_version for e in completed}
    await engine.close()


async def test_an_engine_without_the_definition_leaves_the_saga_to_one_that_has_it() -> None:
    log: list[str] = []
    saga = Saga("known-elsewhere", [recorder(log, "a")])
    clock = ManualClock()
    store, timers = InMemoryEventStore(), InMemoryTimerStore()
    starter = WorkflowEngine(store, timers, sagas=[saga], clock=clock)
    saga_id = await starter.start(saga)
    stranger = WorkflowEngine(store, timers, clock=clock)  # no definitions registered
    assert await stranger.run_until_idle() == 1
    assert (await stranger.get(saga_id)).status is SagaStatus.PENDING
    [timer] = await timers.pending(saga_id)
    assert timer.due_at == clock.now + stranger.busy_retry  # given back, not dropped
    clock.advance(stranger.busy_retry)
    await starter.run_until_idle()
    assert (await starter.get(saga_id)).status is SagaStatus.COMPLETED
    assert log == ["do a"]
