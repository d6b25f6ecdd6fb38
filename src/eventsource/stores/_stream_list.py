"""`list_streams` of the SQL stores: one statement, written once for PostgreSQL and SQLite.

Neither backend keeps a table of streams (an append would pay for maintaining it), and
`SELECT DISTINCT aggregate_id` reads every row. The statement instead skips from one stream
to the next through the unique `(aggregate_id, aggregate_version)` index (a "loose index
scan": a recursive query whose each step is one index probe for the next greater id), then
reads each stream's last row by that same index. The recursion counts the streams it found
and stops at `limit`, so whatever plan the engine picks for the rest (a hash join on a small
table), it sorts and joins at most that many ids. A page of `limit` streams costs about
2 x `limit` index probes and `limit` row fetches, whatever the number of events; a type
filter adds a probe per stream, and skips the streams of other types at that cost each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from eventsource.exceptions import InvalidEventError

__all__ = ["StreamListSql", "check_limit", "stream_list_sql"]


class StreamListSql:
    """The four forms of the statement for one table (with or without `after` and a type),
    built once when the store is constructed."""

    def __init__(self, table: str, param: Callable[[int, str], str]) -> None:
        self._sql = {
            (after, typed): stream_list_sql(table, after=after, typed=typed, param=param)
            for after in (False, True)
            for typed in (False, True)
        }

    def statement(
        self, aggregate_type: str | None, after: Any, limit: int
    ) -> tuple[str, list[Any]]:
        """The statement and its parameters (`after` already in the dialect's form)."""
        check_limit(limit)
        args: list[Any] = [] if after is None else [after]
        if aggregate_type is not None:
            args.append(aggregate_type)
        args.append(limit)
        return self._sql[after is not None, aggregate_type is not None], args


def check_limit(limit: int) -> None:
    """`InvalidEventError` unless `limit` is an int of at least 1."""
    if type(limit) is not int or limit < 1:
        raise InvalidEventError(f"list_streams needs a limit >= 1, got {limit!r}")


def stream_list_sql(
    table: str, *, after: bool, typed: bool, param: Callable[[int, str], str]
) -> str:
    """The statement for `table` (quoted). Its parameters, in order: the id to start after
    (when `after`), the aggregate type (when `typed`), the limit. `param(n, kind)` is the
    dialect's placeholder for the n-th parameter (of kind `uuid`, `text` or `bigint`); the
    statement uses some twice, so placeholders are numbered."""
    n = 0

    def next_param(kind: str) -> str:
        nonlocal n
        n += 1
        return param(n, kind)

    first = f" WHERE aggregate_id > {next_param('uuid')}" if after else ""
    kind = next_param("text") if typed else ""
    limit = next_param("bigint")
    # `found`: the matching streams before this one. The recursion stops at the limit-th
    # match, so the outer ORDER BY sorts at most that many rows (plus skipped ones).
    hit = (
        f"CASE WHEN (SELECT aggregate_type FROM {table} WHERE aggregate_id = streams.id"
        f" LIMIT 1) = {kind} THEN 1 ELSE 0 END"
        if typed
        else "1"
    )
    return (
        "WITH RECURSIVE streams(id, found) AS ("
        f" SELECT (SELECT aggregate_id FROM {table}{first} ORDER BY aggregate_id LIMIT 1), 0"
        " UNION ALL"
        f" SELECT (SELECT aggregate_id FROM {table} WHERE aggregate_id > streams.id"
        f" ORDER BY aggregate_id LIMIT 1), streams.found + {hit}"
        f" FROM streams WHERE streams.id IS NOT NULL AND streams.found + {hit} < {limit})"
        " SELECT e.aggregate_id, e.aggregate_type, e.aggregate_version, e.recorded_at"
        f" FROM streams JOIN {table} e ON e.aggregate_id = streams.id"
        " AND e.aggregate_version ="
        f" (SELECT max(m.aggregate_version) FROM {table} m WHERE m.aggregate_id = streams.id)"
        f"{' AND e.aggregate_type = ' + kind if typed else ''}"
        f" ORDER BY streams.id LIMIT {limit}"
    )
