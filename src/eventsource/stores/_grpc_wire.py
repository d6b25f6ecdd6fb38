"""The wire format shared by `GrpcEventStore` and the store service: messages of
`eventsource/store/v1/store.proto` to and from the library's values, and errors to and from
gRPC statuses.

An event travels as its complete JSON (`EventCodec.encode`, the envelope included) plus the
envelope columns readers use without parsing it, so the server never needs the application's
event classes: it stores and returns the JSON, and the client decodes it through its own
registry (lazily, like every store: an event of an unknown type fails only where it is read).

An error travels as a status code (what other languages act on) and the trailing metadata
`eventsource-error`: a JSON object naming the exception class and its attributes, from which
the Python client raises the same typed error the store raised on the server.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from eventsource import exceptions
from eventsource._internal.optional import require
from eventsource.exceptions import (
    AuthenticationError,
    EventIdConflictError,
    EventNotFoundError,
    EventSourceError,
    EventStoreError,
    EventTypeNotFoundError,
    InvalidEventError,
    InvalidPositionError,
    MessageTooLargeError,
    OptimisticLockError,
    PermissionDeniedError,
    SerializationError,
    StoreConnectionError,
    StoreSchemaError,
    TenantError,
    TransientStoreError,
)
from eventsource.stores.interface import ExpectedVersion, Position, ReadOptions

require("grpc", extra="grpc", feature="the gRPC event store")
require("google.protobuf", extra="grpc", feature="the gRPC event store")

import grpc  # noqa: E402

from eventsource._proto.eventsource.store.v1 import store_pb2 as pb  # noqa: E402
from eventsource._proto.eventsource.store.v1 import store_pb2_grpc as _pb_grpc  # noqa: E402

pb_grpc: Any = _pb_grpc
"""The generated stub and servicer classes (untyped: grpcio ships no type hints)."""

__all__ = [
    "ERROR_KEY",
    "MAX_MESSAGE_HEADER",
    "SERVICE_NAME",
    "datetime_from_us",
    "error_from_status",
    "error_status",
    "filter_message",
    "grpc",
    "pb",
    "pb_grpc",
    "position_from",
    "position_message",
    "read_options_filters",
    "us_from_datetime",
]

SERVICE_NAME = "eventsource.store.v1.EventStore"
MAX_MESSAGE_HEADER = "x-eventsource-max-message-size"
"""Call metadata: the largest reply the client accepts (the server cuts pages to fit)."""
ERROR_KEY = "eventsource-error"
"""Trailing metadata key of the JSON description of an error."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def us_from_datetime(moment: datetime) -> int:
    """Microseconds since the Unix epoch (exact: datetimes hold microseconds)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def datetime_from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def position_message(position: Position) -> pb.Position:
    return pb.Position(commit=position.commit, sequence=position.sequence)


def position_from(message: pb.Position) -> Position:
    return Position(message.commit, message.sequence)


def filter_message(options: ReadOptions) -> pb.ReadFilter:
    """The filters of `options` (not its range, direction, limit or page size)."""
    message = pb.ReadFilter()
    if options.event_types is not None:
        message.filter_event_types = True
        message.event_types.extend(sorted(options.event_types))
    if options.aggregate_type is not None:
        message.aggregate_type = options.aggregate_type
    if options.tenant_id is not None:
        message.tenant_id = str(options.tenant_id)
    if options.from_timestamp is not None:
        message.from_timestamp_us = us_from_datetime(options.from_timestamp)
    if options.to_timestamp is not None:
        message.to_timestamp_us = us_from_datetime(options.to_timestamp)
    if options.partition is not None:
        message.partition.index, message.partition.count = options.partition
    return message


def read_options_filters(message: pb.ReadFilter) -> dict[str, Any]:
    """`ReadOptions` keyword arguments of a `ReadFilter` (`InvalidEventError` when bad)."""
    filters: dict[str, Any] = {}
    if message.filter_event_types:
        filters["event_types"] = frozenset(message.event_types)
    if message.HasField("aggregate_type"):
        filters["aggregate_type"] = message.aggregate_type
    if message.HasField("tenant_id"):
        filters["tenant_id"] = parse_uuid(message.tenant_id, "tenant_id")
    if message.HasField("from_timestamp_us"):
        filters["from_timestamp"] = datetime_from_us(message.from_timestamp_us)
    if message.HasField("to_timestamp_us"):
        filters["to_timestamp"] = datetime_from_us(message.to_timestamp_us)
    if message.HasField("partition"):
        filters["partition"] = (message.partition.index, message.partition.count)
    return filters


def parse_uuid(text: str, what: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise InvalidEventError(f"{what} {text!r} is not a UUID") from None


# -- errors ---------------------------------------------------------------------------------

_CODES: tuple[tuple[type[EventSourceError], grpc.StatusCode], ...] = (
    (OptimisticLockError, grpc.StatusCode.ABORTED),
    (EventIdConflictError, grpc.StatusCode.ALREADY_EXISTS),
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
    (TenantError, grpc.StatusCode.PERMISSION_DENIED),
    (MessageTooLargeError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (TransientStoreError, grpc.StatusCode.UNAVAILABLE),
    (StoreSchemaError, grpc.StatusCode.FAILED_PRECONDITION),
    (EventNotFoundError, grpc.StatusCode.NOT_FOUND),
    (InvalidEventError, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidPositionError, grpc.StatusCode.INVALID_ARGUMENT),
    (SerializationError, grpc.StatusCode.INVALID_ARGUMENT),
    (EventTypeNotFoundError, grpc.StatusCode.FAILED_PRECONDITION),
)
_UUID_ATTRIBUTES = frozenset({"aggregate_id", "event_id", "expected", "actual"})
_ATTRIBUTES = (
    "aggregate_id",
    "event_id",
    "expected_version",
    "actual_version",
    "event_type",
    "available",
    "reason",
    "expected",
    "actual",
)


def error_status(exc: EventSourceError) -> tuple[grpc.StatusCode, str, str]:
    """(status code, details, `eventsource-error` JSON) of a library error."""
    code = next((code for kind, code in _CODES if isinstance(exc, kind)), grpc.StatusCode.INTERNAL)
    description: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    for name in _ATTRIBUTES:
        if name in vars(exc):
            value = vars(exc)[name]
            description[name] = str(value) if isinstance(value, UUID) else value
    return code, str(exc), json.dumps(description, default=str)


def error_from_status(
    code: grpc.StatusCode, details: str | None, trailing: Iterable[tuple[str, Any]] | None
) -> EventSourceError:
    """The library error a failed call stands for: the server's own error when it described
    one, else an error of the status code's kind."""
    for key, value in trailing or ():
        if key == ERROR_KEY:
            error = _described(value)
            if error is not None:
                return error
    text = details or code.name
    if code is grpc.StatusCode.UNAVAILABLE:
        return StoreConnectionError(f"the event store service is unavailable: {text}")
    if code is grpc.StatusCode.CANCELLED:
        # Not the caller's own cancellation (that raises asyncio.CancelledError): the server
        # or the connection ended the call, as a server shutting down does with the calls in
        # flight. Another try, on the restarted server, may well work.
        return TransientStoreError(
            f"the event store service ended the call ({text}), as a server shutting down "
            "does; an append may or may not have been stored: retrying it with the same "
            "events is safe (idempotent)"
        )
    if code is grpc.StatusCode.DEADLINE_EXCEEDED:
        return TransientStoreError(
            f"the event store service did not answer in time ({text}); an append may or may "
            "not have been stored: retrying it with the same events is safe (idempotent)"
        )
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return MessageTooLargeError(
            f"the event store service refused the message ({text}): append fewer or smaller "
            "events, or raise the message size limits of the server and the client"
        )
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationError(f"the event store service refused the credentials: {text}")
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDeniedError(f"the event store service refused the call: {text}")
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidEventError(f"the event store service refused the request: {text}")
    return EventStoreError(f"the event store service failed ({code.name}): {text}")


def _described(value: Any) -> EventSourceError | None:
    try:
        description = json.loads(value)
        kind = getattr(exceptions, description["type"])
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
    if not (
        isinstance(kind, type)
        and issubclass(kind, EventSourceError)
        and kind.__name__ in exceptions.__all__
    ):
        return None
    error: EventSourceError = kind.__new__(kind)
    Exception.__init__(error, str(description.get("message", "")))
    for name in _ATTRIBUTES:
        if name in description:
            attribute = description[name]
            if name in _UUID_ATTRIBUTES and isinstance(attribute, str):
                with contextlib.suppress(ValueError):
                    attribute = UUID(attribute)
            if name == "expected_version" and isinstance(attribute, int) and attribute < 0:
                with contextlib.suppress(ValueError):
                    attribute = ExpectedVersion(attribute)
            setattr(error, name, attribute)
    return error
