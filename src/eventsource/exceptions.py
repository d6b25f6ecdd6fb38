"""The one exception hierarchy of the library: every error raised on purpose derives from
`EventSourceError`, and each message says what happened, where, and what the caller can do."""

from __future__ import annotations

from enum import Enum
from uuid import UUID

__all__ = [
    "AggregateNotFoundError",
    "AppendTooLargeError",
    "AuthenticationError",
    "BusConnectionError",
    "BusPublishError",
    "CheckpointError",
    "ConfigurationError",
    "DecryptionError",
    "DuplicateEventTypeError",
    "EventBusError",
    "EventIdConflictError",
    "EventNotFoundError",
    "EventSourceError",
    "EventStoreError",
    "EventTypeNotFoundError",
    "FeedOrderConflictError",
    "InvalidEventError",
    "InvalidPositionError",
    "LockError",
    "LockLostError",
    "LockTimeoutError",
    "MessageTooLargeError",
    "MigrationConflictError",
    "MigrationError",
    "OptimisticLockError",
    "PermissionDeniedError",
    "PersonalDataError",
    "ProjectionError",
    "RedisNotAvailableError",
    "SagaDefinitionError",
    "SagaError",
    "SagaNotFoundError",
    "SagaTransitionError",
    "SerializationError",
    "StoreConnectionError",
    "StoreSchemaError",
    "SyncAdapterError",
    "TenantError",
    "TenantMismatchError",
    "TenantRequiredError",
    "TransientStoreError",
    "UnhandledEventError",
    "UpcasterRegistrationError",
    "UpcastingError",
]


class EventSourceError(Exception):
    """Base class of every error the library raises on purpose."""


class EventStoreError(EventSourceError):
    """An event store operation failed (storage unreachable, schema missing, ...)."""


class TransientStoreError(EventStoreError):
    """The storage failed for a reason that may pass: a lost connection, a serialization
    failure, a deadlock.

    Nothing was half-written. Retrying the same append (same event ids) is safe: appends are
    idempotent, so a retry of an append that did commit returns the original result.
    """


class StoreConnectionError(TransientStoreError):
    """The connection to the storage was lost or could not be opened."""


class FeedOrderConflictError(TransientStoreError):
    """An append inside the caller's transaction was refused to keep the global feed in order.

    The transaction got its id before this append (it wrote something else first, or an
    earlier attempt in it failed) and a younger transaction has already committed events (or
    is appending the same way): events written now could reach readers after their stream's
    later versions, or behind readers that moved on. Nothing of the append was written. The
    transaction keeps its id, so retrying inside it cannot succeed: roll it back and retry
    the whole unit of work. Appending before the transaction's other writes avoids it.
    """

    def __init__(self, aggregate_id: UUID | None, reason: str) -> None:
        self.aggregate_id = aggregate_id
        """The stream of the refused append (None from `take_writer_lock()`)."""
        self.reason = reason
        what = "the feed's writer lock" if aggregate_id is None else f"stream {aggregate_id}"
        super().__init__(
            f"append to {what} refused: {reason}, so the global feed could deliver it out of "
            "order; nothing was written. Roll back and retry the whole transaction (append, or "
            "call take_writer_lock(), before the transaction's other writes to avoid this)"
        )


class StoreSchemaError(EventStoreError):
    """The storage schema is missing or differs from what this version expects.

    Run the store's `create_schema()` (or its migrations); a migration file changed after it was
    applied is reported here too (migrations are append-only).
    """


class AuthenticationError(EventStoreError):
    """A store service refused the call's credentials: no bearer token, or one it does not
    know. Nothing was read or written; give the client a token the server accepts."""


class PermissionDeniedError(EventStoreError):
    """A store service refused the call: the caller's tenant may not read or write that
    stream (it belongs to another tenant), or may not read another tenant's feed. Nothing
    was read or written."""


class MessageTooLargeError(EventStoreError, ValueError):
    """A request or reply is larger than a store service's message size limit (an append of
    too many or too large events, or one stored event above the server's send limit).

    Nothing was written: split the append into smaller ones, or raise the limits of both the
    server (`max_message_size`) and the client."""


class OptimisticLockError(EventStoreError):
    """An append found the stream at another version than the caller expected.

    Another writer appended first: reload the aggregate and retry the command
    (`AggregateRepository.execute` does this for you).
    """

    def __init__(self, aggregate_id: UUID, expected_version: int, actual_version: int) -> None:
        self.aggregate_id = aggregate_id
        self.expected_version = expected_version
        """What the append expected, as given: a version, or an `ExpectedVersion` member
        (an int too: `NO_STREAM`, `STREAM_EXISTS`, `ANY`)."""
        self.actual_version = actual_version
        shown = expected_version.name if isinstance(expected_version, Enum) else expected_version
        super().__init__(
            f"stream {aggregate_id}: expected version {shown}, "
            f"but the stream is at version {actual_version}; reload and retry"
        )


class EventIdConflictError(EventStoreError):
    """An event id is already stored with other content or at another place.

    Re-appending exactly the events of an earlier append is idempotent; reusing one of their
    ids for a different event, stream or version is this error.
    """

    def __init__(self, event_id: UUID, reason: str) -> None:
        self.event_id = event_id
        super().__init__(f"event {event_id} is already stored: {reason}")


class InvalidEventError(EventSourceError, ValueError):
    """An event or an append request is not valid (wrong stream, bad expected version, ...)."""


class AppendTooLargeError(InvalidEventError):
    """An append does not fit in what the store can write at once (NATS: one message of at
    most the server's `max_payload`). Nothing was stored; split the batch or shrink events."""


class InvalidPositionError(EventSourceError, ValueError):
    """A position token could not be parsed (it did not come from `str(position)`)."""


class AggregateNotFoundError(EventSourceError):
    """No event exists for the aggregate that was asked for."""

    def __init__(self, aggregate_id: UUID, aggregate_type: str | None = None) -> None:
        self.aggregate_id = aggregate_id
        self.aggregate_type = aggregate_type
        kind = f"{aggregate_type} " if aggregate_type else ""
        super().__init__(f"aggregate {kind}{aggregate_id} has no events")


class EventNotFoundError(EventSourceError):
    """An event looked up by id does not exist."""

    def __init__(self, event_id: UUID) -> None:
        self.event_id = event_id
        super().__init__(f"event {event_id} does not exist")


class SerializationError(EventSourceError):
    """An event could not be turned into its stored form, or a stored payload back into an event."""


class UpcastingError(SerializationError):
    """A stored payload of an old schema version could not be brought to the current version."""


class EventTypeNotFoundError(EventSourceError, LookupError):
    """No event class is registered under a type name."""

    def __init__(self, event_type: str, available: list[str]) -> None:
        self.event_type = event_type
        self.available = available
        shown = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "")
        super().__init__(
            f"unknown event type {event_type!r}: no DomainEvent subclass is registered under "
            f"this name (import the module that defines it); registered: {shown or 'none'}"
        )


class DuplicateEventTypeError(EventSourceError):
    """Two different classes claim the same event type name in one registry."""

    def __init__(self, event_type: str, existing: type, new: type, *, lookup: bool = False) -> None:
        self.event_type = event_type
        first = f"{existing.__module__}.{existing.__qualname__}"
        second = f"{new.__module__}.{new.__qualname__}"
        if lookup:
            message = (
                f"event type {event_type!r} is claimed by both {first} and {second} (each "
                "joined the default registry by being defined), so it cannot be decoded: give "
                "one of them another event_type, mark the one to use with @register_event, or "
                "define the other with registry=EventRegistry() (or registry=None)"
            )
        else:
            message = (
                f"event type {event_type!r} is already registered by {first}; {second} cannot "
                "take it too (give one of them another event_type)"
            )
        super().__init__(message)


class UpcasterRegistrationError(EventSourceError, ValueError):
    """An upcaster was registered twice for one step, or for an impossible version."""


class UnhandledEventError(EventSourceError):
    """An aggregate received an event it has no handler for (and it is set to raise)."""


class EventBusError(EventSourceError):
    """An event bus could not publish, consume or reach its broker."""


class BusConnectionError(EventBusError, ConnectionError):
    """The broker cannot be reached (or the connection dropped and could not be re-made).

    Safe to retry: nothing was published, or the publish is retried with the same event ids."""


class BusPublishError(EventBusError):
    """The broker refused or did not confirm a publish; the events may not have been accepted."""


class RedisNotAvailableError(EventBusError, ImportError):
    """The Redis bus was used without the `redis` package: install `eventsource-async[redis]`."""


class ProjectionError(EventSourceError):
    """A projection failed to process an event (raise it from a projection's handler, naming
    the projection and the event); subscriptions retry it, then dead-letter the event."""


class CheckpointError(EventSourceError):
    """A checkpoint could not be read or recorded as asked. A checkpoint table that cannot be
    reached raises the store errors (`TransientStoreError`, `StoreConnectionError`) instead,
    which subscriptions retry."""


class TenantError(EventSourceError):
    """A multi-tenancy rule was broken."""


class TenantRequiredError(TenantError, LookupError):
    """Code that needs the current tenant ran outside a `tenant_scope`."""


class TenantMismatchError(TenantError):
    """An aggregate or event of one tenant was used in the scope of another.

    The message names both tenants; do not show it to the other tenant's users."""

    def __init__(self, what: str, expected: UUID, actual: UUID | None) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"{what} belongs to tenant {actual}, not to the current tenant {expected}")


class ConfigurationError(EventSourceError, ValueError):
    """A URL or option that names no usable backend: unknown scheme, bad form, unknown option,
    a value of the wrong type, or a backend whose driver is not installed."""


class SyncAdapterError(EventSourceError):
    """A blocking sync-adapter method cannot run here: the calling thread runs an event loop
    (await the async API instead, or call it from a worker thread such as
    `asyncio.to_thread`), or the adapter is closed."""


class LockError(EventSourceError):
    """A distributed lock could not be taken, kept or released."""


class LockTimeoutError(LockError, TimeoutError):
    """A lock was not acquired within its timeout; nothing is held, retry or give up."""

    def __init__(self, name: str, timeout: float) -> None:
        self.name = name
        self.timeout = timeout
        super().__init__(
            f"lock {name!r} was not acquired within {timeout:g}s: another holder has it; "
            "retry later or wait longer"
        )


class LockLostError(LockError):
    """A held lock was lost (its database session ended), so others may have taken it.

    Work done since the loss was not protected by the lock: check its effects before
    trusting them, and acquire the lock again to go on.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"lock {name!r} was lost while held (its connection to the database ended); "
            "another holder may have taken it: acquire it again before going on"
        )


class MigrationError(EventSourceError):
    """A store migration cannot go on: the source holds a row it cannot copy, a checkpoint
    lies beyond what was copied, or the target disagrees with the source."""


class MigrationConflictError(MigrationError):
    """The target holds other events than the source where the migration copies to (a
    stream written to on the target by someone else): nothing was overwritten."""

    def __init__(self, aggregate_id: UUID, detail: str) -> None:
        self.aggregate_id = aggregate_id
        super().__init__(
            f"stream {aggregate_id} differs between source and target: {detail}; the "
            "target was written to outside this migration. Find who writes it, then copy "
            "into an empty target (or remove that stream from it)"
        )


class PersonalDataError(EventSourceError):
    """Personal data (`eventsource.gdpr`) cannot be handled as asked: an event whose subject
    field is empty while a personal field is set, a plain personal value about to be written
    as JSON, or a key store that cannot be reached."""


class DecryptionError(PersonalDataError):
    """A sealed personal value failed authentication: it was tampered with, sealed with
    another key, or moved to another field or event type. Never silently replaced."""

    def __init__(self, subject: str, event_type: str, field: str) -> None:
        self.subject = subject
        self.event_type = event_type
        self.field = field
        super().__init__(
            f"the sealed value of field {field!r} of a {event_type!r} event (subject "
            f"{subject!r}) does not authenticate with the subject's key: it was altered, "
            "sealed with another key or copied from another field. Restore the stored row "
            "from a backup; the value cannot be read"
        )


class SagaError(EventSourceError):
    """A saga (`eventsource.sagas`) cannot do what was asked."""


class SagaDefinitionError(SagaError, ValueError):
    """A saga definition is invalid (two steps of one name, an empty saga), or the engine
    was asked to run a saga name it has no definition registered for."""


class SagaNotFoundError(SagaError, LookupError):
    """No saga instance has this id (its stream is empty)."""

    def __init__(self, saga_id: UUID) -> None:
        self.saga_id = saga_id
        super().__init__(
            f"saga {saga_id} does not exist (its stream has no events): start it first, or "
            "check the id"
        )


class SagaTransitionError(SagaError):
    """A saga was asked to move between two states its `StateMachine` does not allow (for
    example, to cancel a saga that has completed already)."""

    def __init__(self, saga_id: UUID | None, current: str, target: str) -> None:
        self.saga_id = saga_id
        self.current = current
        self.target = target
        where = f"saga {saga_id}" if saga_id is not None else "a saga"
        super().__init__(
            f"{where} cannot go from {current} to {target}: not in "
            "StateMachine.valid_transitions; check the saga's status first"
        )
