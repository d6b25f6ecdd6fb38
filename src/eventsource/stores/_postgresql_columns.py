"""The arrays a PostgreSQL append sends: one per column that differs between the events.

An append is one ``INSERT ... SELECT FROM unnest(...)`` (see `postgresql`). What it costs in
Python is mostly the driver encoding its arrays: asyncpg runs about one to two ``isinstance``
checks against abstract classes per element of every array, and the store used to send nine
arrays per batch. Most of them carry the same value for every event of a typical batch, so
each such column travels as the shortest thing that states it:

* event type and schema version: a scalar when the batch has one type (the usual case), else
  an array; the statement reads ``COALESCE(array element, scalar)``;
* tenant, causation id, metadata: an empty array when no event has one (unnest pads a shorter
  array with NULLs, which is what they hold then);
* correlation id: an empty array when every event is its own correlation id (an event that
  starts a flow; the default), read as ``COALESCE(element, event_id)``.

Event ids and timestamps differ per event and are always sent in full. Measured on appends
of 100 events, the client's CPU time in the driver call fell from 0.6 ms to 0.33 ms (see
docs/postgresql.md); the statement costs the server the same.

The payloads travel as ONE JSON array (`json_array_elements` in the statement, each element
cast to jsonb as a text payload was): a batch of one event class is then serialized by one
call of pydantic's Rust core (`EventCodec.encode_lean_batch`) instead of one call per event,
and the driver encodes one string instead of an array of them. Measured on appends of 100
events: about 2 us less client CPU per event, the server's CPU the same within the noise.
The `json` type (not `jsonb`) keeps a batch's size limit where a text array had it (1 GB)
rather than jsonb's 255 MB for the whole array.

`AppendSql` holds the statements built from these (once per store). A *uniform* batch (one
event type and schema version, and no tenant, causation id, metadata or correlation id other
than the event's own: what an aggregate's command usually appends) goes through a statement
that unnests only the three arrays it has and takes 11 parameters instead of 19, which saves
the driver about 25 us a call; any other batch takes the general statement. Both write the
same rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from eventsource.events.base import DomainEvent
from eventsource.events.serialization import EventCodec

__all__ = ["EXACT_EPOCH", "AppendArrays", "AppendSql", "append_arrays"]

EXACT_EPOCH = (0.0, 4294967296.0)
"""Unix epoch seconds [1970-01-01, 2106-02-07 06:28:16 UTC) that travel as float8 both
ways and come back exact to the microsecond (`to_timestamp`, `date_part('epoch', ...)`;
checked against PostgreSQL with 200,000 random values on each side of the bounds: earlier
and later times lost their last microsecond in a tenth to nine tenths of the cases). Times
outside it travel as ISO text cast to timestamptz, exact for any time an event can hold
(not as asyncpg's timestamptz, which sends datetime.min and datetime.max as -infinity and
infinity)."""

AppendArrays = tuple[
    list[UUID],  # event ids
    list[str],  # event types ([] when all are `event_type`)
    str | None,  # event_type: the type of every event, or None
    list[int],  # schema versions ([] when all are `event_version`)
    int | None,  # event_version
    list[UUID | None],  # tenants ([] when none has one)
    list[float],  # occurred_at as Unix epoch seconds (0.0 where `exact` has it)
    str,  # payloads: one JSON array
    list[UUID | None],  # correlation ids ([] when each event is its own)
    list[UUID | None],  # causation ids ([] when none has one)
    list[str | None],  # metadata JSON ([] when none has any)
    list[str | None],  # occurred_at outside `EXACT_EPOCH`, ISO text ([] when none is)
]
"""What `append_arrays` returns, in the order the statement's parameters take them."""


def append_arrays(events: Sequence[DomainEvent], *, lean: bool) -> AppendArrays:
    """The per-event arguments of an append of `events` (already attached to their stream).

    With `lean` the payloads hold the events' own fields and the envelope goes to columns;
    otherwise (rows as written before migration 0008) the payloads hold the complete events
    and correlation, causation and metadata stay empty. Raises `SerializationError` for an
    event no backend can store (see `EventCodec.encode`).
    """
    event_ids: list[UUID] = []
    types: list[str] = []
    versions: list[int] = []
    stamps: list[float] = []
    tenants: list[UUID | None] = []
    correlations: list[UUID | None] = []
    causations: list[UUID | None] = []
    exact: list[str | None] = []
    any_tenant = any_causation = any_correlation = False
    low, high = EXACT_EPOCH
    for event in events:
        fields = event.__dict__
        event_id = fields["event_id"]
        event_ids.append(event_id)
        types.append(fields["event_type"])
        versions.append(fields["event_version"])
        occurred_at = fields["occurred_at"]
        stamp = occurred_at.timestamp()
        if low <= stamp < high:
            stamps.append(stamp)
            if exact:
                exact.append(None)
        else:  # rare: a time a float8 would not carry exactly
            if not exact:
                exact = [None] * len(stamps)
            stamps.append(0.0)
            exact.append(occurred_at.isoformat())
        tenant = fields["tenant_id"]
        tenants.append(tenant)
        any_tenant = any_tenant or tenant is not None
        if lean:
            correlation = fields["correlation_id"]
            correlations.append(correlation)
            any_correlation = any_correlation or (
                correlation is not event_id and correlation != event_id
            )
            causation = fields["causation_id"]
            causations.append(causation)
            any_causation = any_causation or causation is not None
    metadata: list[str | None] = []
    if lean:
        payloads, metadata = EventCodec.encode_lean_batch(events)
    else:
        payloads = f"[{','.join(EventCodec.encode(event) for event in events)}]"
    event_type: str | None = types[0] if types else None
    if event_type is not None and types.count(event_type) == len(types):
        types = []
    else:
        event_type = None
    event_version: int | None = versions[0] if versions else None
    if event_version is not None and versions.count(event_version) == len(versions):
        versions = []
    else:
        event_version = None
    return (
        event_ids,
        types,
        event_type,
        versions,
        event_version,
        tenants if any_tenant else [],
        stamps,
        payloads,
        correlations if any_correlation else [],
        causations if any_causation else [],
        metadata if any(m is not None for m in metadata) else [],
        exact,
    )


class AppendSql:
    """The append statements of one store (built once) and the arguments of one append.

    `table` is the quoted events table, `lean` whether rows are lean (else correlation_id
    stays NULL), `notify_in_statement` whether the statement NOTIFYs the channel itself (only
    in a caller's transaction), and `outbox_cte` the outbox CTE (empty without the outbox),
    which reads the inserted rows from the CTE `appended`, aggregate id and type being $1
    and $2.
    """

    def __init__(
        self,
        table: str,
        *,
        lean: bool,
        notify_in_statement: bool,
        outbox_cte: str,
    ) -> None:
        correlation = "COALESCE(e.correlation_id, e.event_id)" if lean else "NULL::uuid"
        # $1 aggregate id, $2 aggregate type, base at $9 / $10, channel $11, lock $12 $13,
        # exact occurred_at text $19.
        self.general = _statement(
            table,
            row=(
                "e.event_id, COALESCE(e.event_type, $17::text),"
                " COALESCE(e.event_version, $18::int), $1, $2, $10 + e.ord, e.tenant_id,"
                " COALESCE(e.exact_at::timestamptz, to_timestamp(e.occurred_at)), e.payload::jsonb,"
                f" {correlation}, e.causation_id, e.metadata::jsonb"
            ),
            source=(
                "ROWS FROM (unnest($3::uuid[]), unnest($4::text[]), unnest($5::int[]),"
                " unnest($6::uuid[]), unnest($7::float8[]), json_array_elements($8::json),"
                " unnest($14::uuid[]), unnest($15::uuid[]), unnest($16::text[]),"
                " unnest($19::text[]))"
                " WITH ORDINALITY AS e(event_id, event_type, event_version, tenant_id,"
                " occurred_at, payload, correlation_id, causation_id, metadata, exact_at, ord)"
            ),
            base="$9::bigint",
            channel="$11",
            lock="$12::int, $13::int",
            notify_in_statement=notify_in_statement,
            outbox_cte=outbox_cte,
        )
        # The uniform batch: $3 ids, $4 stamps, $5 payloads (a JSON array), base $6,
        # channel $7, lock $8 $9, the batch's event type $10 and schema version $11.
        self.uniform = _statement(
            table,
            row=(
                "e.event_id, $10::text, $11::int, $1, $2, $6 + e.ord, NULL::uuid,"
                " to_timestamp(e.occurred_at), e.payload::jsonb,"
                f" {'e.event_id' if lean else 'NULL::uuid'}, NULL::uuid, NULL::jsonb"
            ),
            source=(
                "ROWS FROM (unnest($3::uuid[]), unnest($4::float8[]),"
                " json_array_elements($5::json)) WITH ORDINALITY"
                " AS e(event_id, occurred_at, payload, ord)"
            ),
            base="$6::bigint",
            channel="$7",
            lock="$8::int, $9::int",
            notify_in_statement=notify_in_statement,
            outbox_cte=outbox_cte,
        )

    def call(
        self,
        aggregate_id: UUID,
        aggregate_type: str,
        base: int,
        arrays: AppendArrays,
        channel: str,
        writer: tuple[int, int],
    ) -> tuple[str, tuple[object, ...]]:
        """The statement and arguments that append `arrays` to the stream after `base`."""
        (
            event_ids,
            event_types,
            event_type,
            event_versions,
            event_version,
            tenants,
            stamps,
            payloads,
            correlation_ids,
            causation_ids,
            metadata,
            exact,
        ) = arrays
        if (
            event_type is not None
            and event_version is not None
            and not (tenants or correlation_ids or causation_ids or metadata or exact)
        ):
            return self.uniform, (
                aggregate_id,
                aggregate_type,
                event_ids,
                stamps,
                payloads,
                base,
                channel,
                *writer,
                event_type,
                event_version,
            )
        return self.general, (
            aggregate_id,
            aggregate_type,
            event_ids,
            event_types,
            event_versions,
            tenants,
            stamps,
            payloads,
            base,
            base,
            channel,
            *writer,
            correlation_ids,
            causation_ids,
            metadata,
            event_type,
            event_version,
            exact,
        )


def _statement(
    table: str,
    *,
    row: str,
    source: str,
    base: str,
    channel: str,
    lock: str,
    notify_in_statement: bool,
    outbox_cte: str,
) -> str:
    """One append statement: `row` (the inserted columns' values) for each row of `source`.

    The writer lock (a CTE the row source is joined with) is taken before the first row,
    hence before the transaction gets its id. The version guard also refuses to append after
    a version written by a younger transaction (only possible in a caller's transaction that
    already has an id: then the store raises FeedOrderConflictError). occurred_at travels as
    epoch seconds (exact to the microsecond both ways): asyncpg encodes a datetime at ~1.3 us,
    ten times a float.

    Without the outbox the INSERT is the statement itself and RETURNING gives the rows in
    insertion order (`ORDER BY e.ord`, positions drawn in that order): no CTE to materialise
    and sort again, about a sixth of the server's CPU per append (measured with the backend's
    CPU time on appends of 1 and of 100 events). The outbox CTE reads the inserted rows from
    a CTE. In a caller's transaction the statement NOTIFYs (once: an InitPlan) when it
    inserted rows.
    """
    notify = (  # the channel parameter needs a type also when it is not used
        f", (SELECT pg_notify({channel}, $2)) IS NULL"
        if notify_in_statement
        else f", {channel}::text IS NULL"
    )
    writer = f"WITH writer AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared({lock}) IS NULL)"
    insert = (
        f"INSERT INTO {table} (event_id, event_type, event_version, aggregate_id,"
        " aggregate_type, aggregate_version, tenant_id, occurred_at, payload,"
        " correlation_id, causation_id, metadata)"
        f" SELECT {row} FROM writer, {source}"
        f" WHERE {base} = 0 OR EXISTS (SELECT 1 FROM {table}"
        f" WHERE aggregate_id = $1 AND aggregate_version = {base}"
        " AND (transaction_id <= pg_current_xact_id_if_assigned()) IS NOT FALSE)"
        " ORDER BY e.ord"
    )
    if not outbox_cte:
        return f"{writer} {insert} RETURNING transaction_id, position{notify}"
    outboxed = (
        "event_id, event_type, event_version, aggregate_version, tenant_id, occurred_at,"
        " correlation_id, causation_id, metadata, payload"
    )
    return (
        f"{writer}, appended AS ({insert} RETURNING transaction_id, position, {outboxed})"
        f"{outbox_cte} SELECT transaction_id, position{notify} FROM appended ORDER BY position"
    )
