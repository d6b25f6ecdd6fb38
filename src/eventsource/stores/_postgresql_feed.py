"""The readable end of the PostgreSQL global feed: writer locks, the horizon, late writers.

The feed is ordered by ``(transaction_id, position)``; a reader may only return rows of
transactions below a horizon H such that no transaction below H can still add rows. Rather than
the cluster-wide ``pg_snapshot_xmin`` (which any transaction of any database holds back), the
horizon only counts transactions that write this store's events table:

* every append takes a shared transaction-level advisory lock on the *writer key* of the store
  (schema + prefix) before its transaction gets an id;
* a reader computes H in one statement: the smallest id among the holders of the writer key
  that have one, capped by ``pg_snapshot_xmax`` of that statement's snapshot; it then reads rows
  below H in *later* statements (fresh snapshots), so a writer that committed and released its
  lock between the snapshot and the lock table read is visible to the row read;
* a transaction that got its id before it took the lock (a caller's transaction that wrote
  something else first) is *late*: a reader may already have passed its id. It takes the
  *late key* too and refuses to append (`FeedOrderConflictError`) if a committed event of a
  younger transaction exists or another late writer is active; see docs/postgresql.md.

SQL is built once per store; the lock keys are parameters, never formatted into SQL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from eventsource.stores.interface import Position

__all__ = [
    "LATE_CLASS",
    "WRITER_CLASS",
    "FeedSql",
    "HorizonLag",
    "lock_key",
    "partition_clause",
    "xid8_near",
]


def lock_key(text: str) -> int:
    """A stable non-negative 31-bit advisory-lock key for `text` (pg_locks shows it as is)."""
    digest = hashlib.blake2b(text.encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


WRITER_CLASS = lock_key("eventsource.feed.writer")
LATE_CLASS = lock_key("eventsource.feed.late")

_OUR_DATABASE = "(SELECT oid FROM pg_database WHERE datname = current_database())"


def xid8_near(xid: str, near: str) -> str:
    """SQL for the xid8 whose low 32 bits are the 32-bit `xid` and which lies nearest to the
    xid8 `near` (within 2**31 either side). Running transactions are never 2**31 ids old
    (wraparound protection), so this restores the epoch of `pg_stat_activity.backend_xid`."""
    n = f"({near})::text::bigint"
    return (
        f"GREATEST(0, {n} + ((({xid})::text::bigint - {n} % 4294967296 + 6442450944)"
        " % 4294967296 - 2147483648))::text::xid8"
    )


def _holders(lock_class: str, key: str, xmax: str) -> str:
    """Rows (pid, xact_start, xid) of the transactions of our database holding the advisory
    lock (`lock_class`, `key`) and having an id; pg_locks is read fresh on every call."""
    return (
        f"SELECT a.pid, a.xact_start, {xid8_near('a.backend_xid', xmax)} AS xid"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        f" WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
        f" AND l.classid = ({lock_class})::oid AND l.objid = ({key})::oid"
        f" AND l.database = {_OUR_DATABASE} AND a.backend_xid IS NOT NULL"
    )


class FeedSql:
    """The statements of the feed protocol for one events table (built once per store).

    Lock keys are parameters: `horizon` takes (writer class, key), `enter` (writer class,
    late class, key), `late_check` (late class, key, own xid8, own pid).
    """

    def __init__(self, table: str, key: int) -> None:
        self.key = key
        holders = _holders("$1::int", "$2::int", "s.xmax")
        # H, and the transaction holding it back (pid, age) when one does. A snapshot's xmax
        # is one past the last *completed* id, so a running writer's id may be at or above
        # it: H is capped by xmax, and that writer is still the one to report.
        self.horizon = (
            "WITH s AS MATERIALIZED (SELECT pg_snapshot_xmax(pg_current_snapshot()) AS xmax),"
            f" blocker AS (SELECT h.* FROM s, LATERAL ({holders}) h ORDER BY h.xid LIMIT 1)"
            " SELECT LEAST((SELECT xid FROM blocker), (SELECT xmax FROM s)),"
            " (SELECT pid FROM blocker), (SELECT now() - xact_start FROM blocker)"
        )
        # In the caller's transaction: is it late (has an id but did not hold the writer key
        # since before it got it)? Then take the writer key (and the late key if late). The
        # CTE runs before the locks are taken: the row it yields is what the locks depend on.
        own = (
            "SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'"
            " AND granted AND objsubid = 2 AND objid = ($3::int)::oid"
            f" AND database = {_OUR_DATABASE}"
        )
        self.enter = (
            "WITH s AS MATERIALIZED (SELECT pg_current_xact_id_if_assigned() AS xid,"
            f" CASE WHEN pg_current_xact_id_if_assigned() IS NULL THEN false"
            f" ELSE NOT EXISTS ({own} AND classid = ($1::int)::oid)"
            f" OR EXISTS ({own} AND classid = ($2::int)::oid) END AS late)"
            " SELECT s.xid, pg_backend_pid(), s.late,"
            " pg_advisory_xact_lock_shared($1::int, $3::int) IS NULL,"
            " (CASE WHEN s.late THEN pg_advisory_xact_lock_shared($2::int, $3::int) END) IS NULL"
            " FROM s"
        )
        # On a connection of the store's own (fresh snapshot, taken after the late writer's
        # locks): a committed event of a younger transaction, or another late writer.
        self.late_check = (
            f"SELECT EXISTS (SELECT 1 FROM {table} WHERE transaction_id > $3::xid8),"
            " EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
            " AND objsubid = 2 AND classid = ($1::int)::oid AND objid = ($2::int)::oid"
            f" AND database = {_OUR_DATABASE} AND pid <> $4::int)"
        )
        # A caller's transaction that is REPEATABLE READ or SERIALIZABLE reads rows with the
        # snapshot of its first statement: cap the horizon below what that snapshot missed.
        self.snapshot_cap = (
            "SELECT CASE WHEN current_setting('transaction_isolation') <> 'read committed'"
            " THEN pg_snapshot_xmin(pg_current_snapshot()) END"
        )


@dataclass(frozen=True, slots=True)
class HorizonLag:
    """How far the readable end of the global feed trails what is committed, and why.

    `read_all` only returns events of transactions older than every transaction still writing
    to this store's events table (that is what makes it gap-free), so a long write transaction
    holds the feed back; transactions that do not write events never do. `pending_events` are
    committed but not yet readable; `blocking_pid` is the backend of the transaction holding
    the feed back and `oldest_transaction_age` its age.
    """

    readable: Position | None
    """The last readable position (None when nothing is readable yet)."""
    pending_events: int
    oldest_transaction_age: timedelta | None
    """Age of the transaction holding the horizon back (None when none does)."""
    blocking_pid: int | None = None
    """Backend process id of that transaction (`pg_stat_activity.pid`), None when none."""

    def stuck(self, threshold: timedelta | float) -> bool:
        """True when a writing transaction older than `threshold` (a timedelta or seconds)
        holds the feed back: what a health check reports (and `blocking_pid` names whom)."""
        if self.oldest_transaction_age is None:
            return False
        limit = threshold if isinstance(threshold, timedelta) else timedelta(seconds=threshold)
        return self.oldest_transaction_age > limit


def partition_clause(partitions: str, partition: str) -> str:
    """SQL true for the rows of partition `partition` of `partitions` (`ReadOptions.partition`:
    ``aggregate_id.int % n == p``, exactly as Python computes it, since partition checkpoints
    depend on it). Both arguments are bigint parameters; `partitions` is at most 2**31.

    PostgreSQL has no 128-bit integer and a numeric modulo costs more, so the uuid's 16 bytes
    (`uuid_send`, big-endian like `UUID.int`) are read as four unsigned 32-bit words w0..w3
    and reduced by Horner's rule: r = (r * 2**32 + w) % n. With r < n <= 2**31 the largest
    intermediate is (2**31 - 1) * 2**32 + 2**32 - 1 = 2**63 - 1: it never overflows. Words
    built from `get_byte` cost a little less than words parsed from the uuid's hex text
    (about 2 against 3 microseconds a row over 100,000 rows, on a noisy machine).

    The test is wrapped in a CASE on purpose. PostgreSQL has no statistics for the expression
    and guesses that an equality on it keeps 0.5% of the rows; for a feed page (ORDER BY the
    feed index, LIMIT) it then prefers to fetch every row after the position, filter and sort
    them over walking the index in order, and each page costs the rest of the feed (measured:
    0.45 s a page at 100,000 events). A boolean CASE is estimated at 50%, close to a real
    partition's share, and keeps the ordered index walk (0.02 s a page).
    """
    byte = [f"get_byte(uuid_send(aggregate_id), {i})" for i in range(16)]
    remainder = ""
    for word in range(4):
        b0, b1, b2, b3 = byte[4 * word : 4 * word + 4]
        # Each shift in parentheses: PostgreSQL gives << and | the same precedence.
        value = f"(({b0}::bigint << 24) | ({b1} << 16) | ({b2} << 8) | {b3})"
        if word == 0:
            remainder = f"{value} % {partitions}"
        else:
            remainder = f"(({remainder}) * 4294967296 + {value}) % {partitions}"
    return f"CASE WHEN {remainder} = {partition} THEN true ELSE false END"
