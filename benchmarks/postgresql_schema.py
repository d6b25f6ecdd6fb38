"""What each part of the PostgreSQL store's schema and append statement costs the database.

    uv run python benchmarks/postgresql_schema.py             # a few minutes
    uv run python benchmarks/postgresql_schema.py --quick     # smaller sizes

Raw asyncpg only, no library code on the hot path: every variant is the library's own
events table and append statement (`AppendSql`, as the store builds it) with ONE thing
changed, next to the minimal hand-written design of DESIGN.md. For each variant:

* bulk: appends of 100 events to new streams on one connection: events/s, the server's CPU
  per event (the backend's user + system time from /proc) and the WAL each append writes
  (bytes and full-page images, from `EXPLAIN (ANALYZE, WAL)` on sample appends);
* c16: commands (read the stream, append one event after its last version) from 16
  concurrent connections on 200 streams: commands/s and the server's CPU per command.

Variants are run in turn, the order rotated every round, median of the rounds. The
machine's load is printed at start and end. Environment: EVENTSOURCE_BENCH_POSTGRES_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import asyncpg
from _common import NOTE, URL, keep_session, load_average
from postgresql_cpu import server_cpu

from eventsource._internal.ids import uuid7
from eventsource.migrations import apply_postgresql_migrations
from eventsource.stores._postgresql_columns import AppendSql
from eventsource.stores._postgresql_feed import WRITER_CLASS, FeedSql, lock_key

STREAMS = 200
WORKERS = 16
BACKENDS: set[int] = set()
"""The server pids of the command pool's connections (recorded as each is opened)."""


async def _record_backend(conn: asyncpg.Connection) -> None:
    BACKENDS.add(conn.get_server_pid())


@dataclass
class Variant:
    """One table and its append statement; `args` builds the statement's arguments."""

    name: str
    table: str
    append_sql: str
    stream_sql: str
    args: Callable[[UUID, int, list[UUID], list[str]], tuple[Any, ...]]
    ids: Callable[[], UUID] = uuid7


def _replace(sql: str, old: str, new: str) -> str:
    if old not in sql:
        raise ValueError(f"{old!r} is no longer in the library's append statement: {sql}")
    return sql.replace(old, new)


async def variants(conn: asyncpg.Connection, schema: str) -> list[Variant]:
    """Create every variant's table in `schema`; return the variants."""
    key = lock_key(f"{schema}\x00events")
    out: list[Variant] = []

    async def library_table(prefix: str) -> str:
        await apply_postgresql_migrations(conn, schema=schema, prefix=prefix)
        return f'"{schema}"."{prefix}events"'

    def ours(name: str, table: str, sql: str, ids: Callable[[], UUID] = uuid7) -> Variant:
        def args(stream: UUID, base: int, event_ids: list[UUID], payloads: list[str]) -> Any:
            stamp = time.time()
            return (
                stream,
                "Counter",
                event_ids,
                [stamp] * len(event_ids),
                f"[{','.join(payloads)}]",  # the store sends its payloads as one JSON array
                base,
                "unused",
                WRITER_CLASS,
                key,
                "Incremented",
                1,
            )

        stream_sql = (
            f"SELECT aggregate_version, event_type, payload::text FROM {table}"
            " WHERE aggregate_id = $1 AND aggregate_version BETWEEN 1 AND 10000"
        )
        return Variant(name, table, sql, stream_sql, args, ids)

    def library_sql(table: str, *, notify: bool = False) -> str:
        return AppendSql(table, lean=True, notify_in_statement=notify, outbox_cte="").uniform

    table = await library_table("lib_")
    out.append(ours("library schema and statement", table, library_sql(table)))
    table = await library_table("v4_")
    out.append(ours("  event ids uuid4 (random)", table, library_sql(table), uuid4))
    table = await library_table("noid_")
    await conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "noid_events_event_id_key"')
    out.append(ours("  no event_id unique index", table, library_sql(table)))
    table = await library_table("nolock_")
    sql = _replace(
        library_sql(table),
        "pg_advisory_xact_lock_shared($8::int, $9::int) IS NULL",
        "($8::int, $9::int) IS NULL",
    )
    out.append(ours("  no writer lock CTE", table, sql))
    table = await library_table("noguard_")
    sql = library_sql(table)
    guard = sql[sql.index(" WHERE $6::bigint = 0 OR EXISTS") : sql.index(" ORDER BY e.ord")]
    out.append(ours("  no version guard (EXISTS)", table, sql.replace(guard, " WHERE $6 >= 0")))
    table = await library_table("notify_")
    out.append(ours("  NOTIFY in the statement", table, library_sql(table, notify=True)))

    # Our statement shape on a narrow table: the envelope columns gone (event id kept).
    narrow = f'"{schema}".narrow_events'
    await conn.execute(
        f"CREATE TABLE {narrow} (position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " transaction_id xid8 NOT NULL DEFAULT pg_current_xact_id(), event_id uuid NOT NULL"
        " UNIQUE, event_type text NOT NULL, aggregate_id uuid NOT NULL, aggregate_version"
        " bigint NOT NULL, payload jsonb NOT NULL, UNIQUE (aggregate_id, aggregate_version))"
    )
    await conn.execute(f"CREATE INDEX ON {narrow} (transaction_id, position)")
    narrow_sql = (
        "WITH writer AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared($5::int, $6::int)"
        f" IS NULL) INSERT INTO {narrow} (event_id, event_type, aggregate_id,"
        " aggregate_version, payload) SELECT e.event_id, 'Incremented', $1, $4 + e.ord,"
        " e.payload::jsonb FROM writer, unnest($2::uuid[], $3::text[]) WITH ORDINALITY"
        " AS e(event_id, payload, ord) WHERE $4::bigint = 0 OR EXISTS (SELECT 1 FROM"
        f" {narrow} WHERE aggregate_id = $1 AND aggregate_version = $4::bigint AND"
        " (transaction_id <= pg_current_xact_id_if_assigned()) IS NOT FALSE) ORDER BY e.ord"
        " RETURNING transaction_id, position"
    )
    out.append(
        Variant(
            "  narrow table (no envelope columns)",
            narrow,
            narrow_sql,
            f"SELECT aggregate_version, event_type, payload::text FROM {narrow}"
            " WHERE aggregate_id = $1 ORDER BY aggregate_version",
            lambda s, b, i, p: (s, i, p, b, WRITER_CLASS, key),
        )
    )

    minimal = f'"{schema}".minimal_events'
    await conn.execute(
        f"CREATE TABLE {minimal} (gp bigserial PRIMARY KEY, stream_id uuid NOT NULL,"
        " version int NOT NULL, event_type text NOT NULL, payload jsonb NOT NULL,"
        " txid xid8 NOT NULL DEFAULT pg_current_xact_id(), UNIQUE (stream_id, version))"
    )
    await conn.execute(f"CREATE INDEX ON {minimal} (txid, gp)")
    out.append(
        Variant(
            "minimal design",
            minimal,
            f"INSERT INTO {minimal} (stream_id, version, event_type, payload)"
            " SELECT $1, $2 + e.ord, 'Incremented', e.payload::jsonb"
            " FROM unnest($3::text[]) WITH ORDINALITY AS e(payload, ord) RETURNING txid, gp",
            f"SELECT version, event_type, payload::text FROM {minimal}"
            " WHERE stream_id = $1 ORDER BY version",
            lambda s, b, i, p: (s, b, p),
        )
    )
    return out


def payloads(n: int) -> list[str]:
    return [json.dumps({"amount": 1, "note": NOTE}) for _ in range(n)]


async def bulk(
    conn: asyncpg.Connection, v: Variant, appends: int, size: int = 100
) -> tuple[float, float]:
    """(events/s, server CPU us per event) of `appends` appends of `size` events."""
    pid = conn.get_server_pid()
    cpu = server_cpu({pid})[pid]
    start = time.perf_counter()
    for _ in range(appends):
        await conn.fetch(
            v.append_sql, *v.args(uuid4(), 0, [v.ids() for _ in range(size)], payloads(size))
        )
    elapsed = time.perf_counter() - start
    used = server_cpu({pid})[pid] - cpu
    return appends * size / elapsed, used * 1e6 / (appends * size)


async def wal(conn: asyncpg.Connection, v: Variant, size: int, samples: int) -> tuple[float, float]:
    """(WAL bytes, full-page images) per event of appends of `size` events to new streams."""
    total_bytes = total_fpi = 0
    for _ in range(samples):
        args = v.args(uuid4(), 0, [v.ids() for _ in range(size)], payloads(size))
        plan = await conn.fetchval(f"EXPLAIN (ANALYZE, WAL, FORMAT JSON) {v.append_sql}", *args)
        top = json.loads(plan)[0]["Plan"]
        total_bytes += top.get("WAL Bytes", 0)
        total_fpi += top.get("WAL FPI", 0)
    return total_bytes / (samples * size), total_fpi / (samples * size)


async def commands(
    pool: asyncpg.Pool, v: Variant, streams: list[UUID], per: int
) -> tuple[float, float]:
    """(commands/s, server CPU us per command) of WORKERS concurrent commands."""
    pids: set[int] = set()  # backends used (all of the pool's, normally)

    async def command(stream: UUID) -> None:
        async with pool.acquire() as conn:
            pids.add(conn.get_server_pid())
            rows = await conn.fetch(v.stream_sql, stream)
            version = rows[-1][0] if rows else 0
            for row in rows:
                json.loads(row[2])
            # A lost race (two workers on one stream) counts like a command on every variant.
            with contextlib.suppress(asyncpg.UniqueViolationError):
                await conn.fetch(v.append_sql, *v.args(stream, version, [v.ids()], payloads(1)))

    async def worker(n: int) -> None:
        for i in range(per):
            await command(streams[(n + i * WORKERS) % len(streams)])

    all_pids = set(BACKENDS)
    before = server_cpu(all_pids)
    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(WORKERS)))
    elapsed = time.perf_counter() - start
    after = server_cpu(all_pids | pids)
    used = sum(after[p] - before.get(p, after[p]) for p in after)
    return WORKERS * per / elapsed, used * 1e6 / (WORKERS * per)


async def per_call(conn: asyncpg.Connection, sql: str, args: tuple[Any, ...], calls: int) -> float:
    """Server CPU us per call of `sql`."""
    pid = conn.get_server_pid()
    before = server_cpu({pid})[pid]
    for _ in range(calls):
        await conn.fetch(sql, *args)
    return (server_cpu({pid})[pid] - before) * 1e6 / calls


async def horizons(conn: asyncpg.Connection, schema: str, calls: int) -> tuple[float, float]:
    """Server CPU us of the store's horizon statement (writer-lock holders from pg_locks and
    pg_stat_activity) and of the minimal design's `pg_snapshot_xmin`, per call."""
    feed = FeedSql(f'"{schema}".lib_events', lock_key(f"{schema}\x00events"))
    ours = await per_call(conn, feed.horizon, (WRITER_CLASS, feed.key), calls)
    xmin = await per_call(conn, "SELECT pg_snapshot_xmin(pg_current_snapshot())", (), calls)
    return ours, xmin


async def run(quick: bool, repeats: int) -> None:
    schema = f"eventsource_bench_schema_{os.getpid()}"
    started = load_average()
    conn = await asyncpg.connect(URL)
    pool = await asyncpg.create_pool(
        URL, min_size=WORKERS, max_size=WORKERS, reset=keep_session, init=_record_backend
    )
    await conn.execute(f'CREATE SCHEMA "{schema}"')
    appends = 30 if quick else 100
    per = 30 if quick else 100
    try:
        vs = await variants(conn, schema)
        streams = {v.name: [uuid4() for _ in range(STREAMS)] for v in vs}
        for v in vs:  # streams of 10 events for the commands, and a warm table
            for s in streams[v.name]:
                await conn.fetch(
                    v.append_sql, *v.args(s, 0, [v.ids() for _ in range(10)], payloads(10))
                )
        results: dict[str, dict[str, list[float]]] = {v.name: {} for v in vs}

        def put(name: str, key: str, value: float) -> None:
            results[name].setdefault(key, []).append(value)

        for r in range(repeats):
            order = vs[r % len(vs) :] + vs[: r % len(vs)]
            for v in order:
                rate, cpu = await bulk(conn, v, appends)
                put(v.name, "bulk/s", rate)
                put(v.name, "bulk cpu", cpu)
                wb, fpi = await wal(conn, v, 100, 5)
                put(v.name, "wal100", wb)
                put(v.name, "fpi100", fpi)
                _, cpu = await bulk(conn, v, appends * 10, 1)
                put(v.name, "one cpu", cpu)
                wb, fpi = await wal(conn, v, 1, 20)
                put(v.name, "wal1", wb)
                rate, cpu = await commands(pool, v, streams[v.name], per)
                put(v.name, "c16/s", rate)
                put(v.name, "c16 cpu", cpu)
        med = {n: {k: statistics.median(x) for k, x in d.items()} for n, d in results.items()}
        base = med[vs[0].name]
        print(f"median of {repeats} rounds; load average at start {started}\n")
        print(
            "| variant | bulk events/s | server CPU us/event | WAL bytes/event (100) |"
            " FPI/event (100) | server CPU us (1-event append) | WAL bytes (1-event append) |"
            " c16 commands/s |"
            " server CPU us/command |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for v in vs:
            m = med[v.name]
            print(
                f"| {v.name} | {m['bulk/s']:,.0f} ({m['bulk/s'] / base['bulk/s']:.2f}x) |"
                f" {m['bulk cpu']:.1f} | {m['wal100']:.0f} | {m['fpi100']:.3f} |"
                f" {m['one cpu']:.0f} | {m['wal1']:.0f} |"
                f" {m['c16/s']:,.0f} ({m['c16/s'] / base['c16/s']:.2f}x) |"
                f" {m['c16 cpu']:.0f} |"
            )
        ours, xmin = await horizons(conn, schema, 500 if quick else 3000)
        print(
            f"\nfeed horizon, server CPU per call: the store's {ours:.0f} us,"
            f" pg_snapshot_xmin {xmin:.0f} us (once per read_all call, not per page)"
        )
        print(f"\nload average at end {load_average()}")
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await conn.close()
        await pool.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--repeats", type=int, default=3, help="rounds")
    args = parser.parse_args()
    asyncio.run(run(args.quick, args.repeats))
