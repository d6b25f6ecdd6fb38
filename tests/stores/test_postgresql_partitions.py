"""The PostgreSQL plan of a partitioned feed page: it must walk the feed index in order.

PostgreSQL has no statistics for the partition expression; the plain equality was estimated
to keep 0.5% of the rows, and the planner answered each page by fetching every row after the
position, filtering and sorting them (each page cost the rest of the feed). This checks the
plan, not a time: on a feed of 100,000 rows, a page of a partition has no Sort node.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import asyncpg
import pytest

from eventsource.stores.interface import ReadOptions
from eventsource.stores.postgresql import PostgreSQLEventStore

pytestmark = [pytest.mark.asyncio, pytest.mark.postgresql]


def _nodes(plan: dict[str, Any]) -> Iterator[str]:
    yield plan["Node Type"]
    for child in plan.get("Plans", ()):
        yield from _nodes(child)


async def test_a_partition_page_walks_the_feed_index_in_order(
    postgres_url: str, schema: str
) -> None:
    async with PostgreSQLEventStore.from_url(postgres_url, schema=schema) as store:
        await store.create_schema()
        conn = await asyncpg.connect(postgres_url)
        try:
            # 1,000 aggregates of 100 events in one statement, spread over 1,000 (earlier)
            # transaction ids as if 1,000 appends had written them.
            await conn.execute(
                f"INSERT INTO {store.table} (transaction_id, event_id, event_type,"
                " event_version, aggregate_id, aggregate_type, aggregate_version, occurred_at,"
                " payload)"
                " SELECT ((pg_current_xact_id()::text::bigint - 2000 + v * 10 + a % 10)::text)"
                "::xid8, gen_random_uuid(), 'ItemAdded', 1, md5(a::text)::uuid, 'Cart', v, now(),"
                ' \'{"name": "x", "quantity": 1}\'::jsonb'
                " FROM generate_series(1, 100) v, generate_series(1, 1000) a"
            )
            await conn.execute(f"ANALYZE {store.table}")
            statements: list[tuple[str, Sequence[Any]]] = []
            fetch = store._fetch

            async def recording(what: str, sql: str, *args: Any) -> list[Sequence[Any]]:
                statements.append((sql, args))
                return await fetch(what, sql, *args)

            store._fetch = recording  # type: ignore[method-assign]
            pages = store.read_all(ReadOptions(partition=(1, 4), batch_size=1000))
            async with contextlib.aclosing(pages) as feed:
                read = 0
                async for _ in feed:
                    read += 1
                    if read == 2500:  # into the third page: a page after a position
                        break
            sql, args = statements[-1]
            assert "LIMIT" in sql
            explained = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
            nodes = list(_nodes(json.loads(explained)[0]["Plan"]))
            assert "Sort" not in nodes, nodes
            assert any(node.startswith("Index") for node in nodes), nodes
        finally:
            await conn.close()
