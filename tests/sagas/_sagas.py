"""Sagas of the PostgreSQL tests, shared by the test process and the engine workers.

Their steps record effects in tables of the test's schema through an asyncpg pool:
`effects (saga_id, step, pid)` has no unique key, so a step run twice shows as two rows;
`runs (saga_id, step, attempt, pid)` logs every start of an action (a re-run after a crash
included); a compensation records under "<step> undo". The `slow` step sleeps on its first
attempt, so a test can kill the process in the middle of it, and then writes its effect
idempotently, by its key.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from typing import Any

from eventsource.sagas import Saga, SagaStep, StepContext


class Effects:
    def __init__(self, pool: Any, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def create_tables(self) -> None:
        s = self.schema
        await self.pool.execute(
            f'CREATE TABLE IF NOT EXISTS "{s}".effects (saga_id uuid, step text, pid int, key text)'
        )
        await self.pool.execute(
            f'CREATE TABLE IF NOT EXISTS "{s}".runs (saga_id uuid, step text, attempt int, pid int)'
        )

    async def run(self, ctx: StepContext) -> None:
        await self.pool.execute(
            f'INSERT INTO "{self.schema}".runs VALUES ($1, $2, $3, $4)',
            ctx.saga_id,
            _step(ctx),
            ctx.attempt,
            os.getpid(),
        )

    async def effect(self, ctx: StepContext, *, idempotent: bool = False) -> None:
        sql = f'INSERT INTO "{self.schema}".effects VALUES ($1, $2, $3, $4)'
        if idempotent:  # what an action does with its key: at most one effect per key
            sql = (
                f'INSERT INTO "{self.schema}".effects SELECT $1, $2, $3, $4 WHERE NOT EXISTS'
                f' (SELECT 1 FROM "{self.schema}".effects WHERE key = $4)'
            )
        await self.pool.execute(sql, ctx.saga_id, _step(ctx), os.getpid(), ctx.idempotency_key)


def _step(ctx: StepContext) -> str:
    """The step's name, `"<name> undo"` for its compensation."""
    return f"{ctx.step} undo" if ctx.compensating else ctx.step


def sagas(effects: Effects) -> list[Saga]:
    async def plain(ctx: StepContext) -> None:
        await effects.run(ctx)
        await effects.effect(ctx)

    async def slow(ctx: StepContext) -> None:
        await effects.run(ctx)
        if ctx.attempt == 1:
            await asyncio.sleep(600)  # killed in here
        await effects.effect(ctx, idempotent=True)

    async def broken(ctx: StepContext) -> None:
        await effects.run(ctx)
        raise RuntimeError("the warehouse refuses")

    async def undo(ctx: StepContext) -> None:
        await effects.run(ctx)
        await effects.effect(ctx, idempotent=True)

    async def ask(ctx: StepContext) -> None:
        await effects.run(ctx)

    def step(name: str, action: Any = plain, **options: Any) -> SagaStep:
        return SagaStep(action, undo, name=name, **options)

    return [
        Saga("bulk", [step("reserve"), (step("charge"), step("notify")), step("ship")]),
        Saga("crash", [step("one"), step("two", slow), step("three")]),
        Saga("crash-undo", [step("one"), step("two", slow), step("three", broken)]),
        Saga(
            "deadline",
            [step("one"), step("ask", ask, wait_for="answer")],
            timeout=timedelta(seconds=8),
        ),
    ]
