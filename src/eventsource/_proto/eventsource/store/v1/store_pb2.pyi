from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Position(_message.Message):
    __slots__ = ("commit", "sequence")
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    commit: int
    sequence: int
    def __init__(self, commit: _Optional[int] = ..., sequence: _Optional[int] = ...) -> None: ...

class EventData(_message.Message):
    __slots__ = ("event_id", "event_type", "event_version", "aggregate_id", "aggregate_type", "aggregate_version", "payload")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    EVENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    event_type: str
    event_version: int
    aggregate_id: str
    aggregate_type: str
    aggregate_version: int
    payload: str
    def __init__(self, event_id: _Optional[str] = ..., event_type: _Optional[str] = ..., event_version: _Optional[int] = ..., aggregate_id: _Optional[str] = ..., aggregate_type: _Optional[str] = ..., aggregate_version: _Optional[int] = ..., payload: _Optional[str] = ...) -> None: ...

class RecordedEvent(_message.Message):
    __slots__ = ("event", "position", "recorded_at_us")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_US_FIELD_NUMBER: _ClassVar[int]
    event: EventData
    position: Position
    recorded_at_us: int
    def __init__(self, event: _Optional[_Union[EventData, _Mapping]] = ..., position: _Optional[_Union[Position, _Mapping]] = ..., recorded_at_us: _Optional[int] = ...) -> None: ...

class AppendRequest(_message.Message):
    __slots__ = ("aggregate_id", "aggregate_type", "expected_version", "events")
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    aggregate_id: str
    aggregate_type: str
    expected_version: int
    events: _containers.RepeatedCompositeFieldContainer[EventData]
    def __init__(self, aggregate_id: _Optional[str] = ..., aggregate_type: _Optional[str] = ..., expected_version: _Optional[int] = ..., events: _Optional[_Iterable[_Union[EventData, _Mapping]]] = ...) -> None: ...

class AppendResponse(_message.Message):
    __slots__ = ("new_version", "positions", "already_stored", "tenant_id")
    NEW_VERSION_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    ALREADY_STORED_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    new_version: int
    positions: _containers.RepeatedCompositeFieldContainer[Position]
    already_stored: bool
    tenant_id: str
    def __init__(self, new_version: _Optional[int] = ..., positions: _Optional[_Iterable[_Union[Position, _Mapping]]] = ..., already_stored: _Optional[bool] = ..., tenant_id: _Optional[str] = ...) -> None: ...

class Partition(_message.Message):
    __slots__ = ("index", "count")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    index: int
    count: int
    def __init__(self, index: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class ReadFilter(_message.Message):
    __slots__ = ("filter_event_types", "event_types", "aggregate_type", "tenant_id", "from_timestamp_us", "to_timestamp_us", "partition")
    FILTER_EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPES_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_TYPE_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    TO_TIMESTAMP_US_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    filter_event_types: bool
    event_types: _containers.RepeatedScalarFieldContainer[str]
    aggregate_type: str
    tenant_id: str
    from_timestamp_us: int
    to_timestamp_us: int
    partition: Partition
    def __init__(self, filter_event_types: _Optional[bool] = ..., event_types: _Optional[_Iterable[str]] = ..., aggregate_type: _Optional[str] = ..., tenant_id: _Optional[str] = ..., from_timestamp_us: _Optional[int] = ..., to_timestamp_us: _Optional[int] = ..., partition: _Optional[_Union[Partition, _Mapping]] = ...) -> None: ...

class ReadStreamRequest(_message.Message):
    __slots__ = ("aggregate_id", "backward", "from_version", "to_version", "limit", "filter")
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    FROM_VERSION_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    aggregate_id: str
    backward: bool
    from_version: int
    to_version: int
    limit: int
    filter: ReadFilter
    def __init__(self, aggregate_id: _Optional[str] = ..., backward: _Optional[bool] = ..., from_version: _Optional[int] = ..., to_version: _Optional[int] = ..., limit: _Optional[int] = ..., filter: _Optional[_Union[ReadFilter, _Mapping]] = ...) -> None: ...

class ReadAllRequest(_message.Message):
    __slots__ = ("backward", "after", "limit", "filter")
    BACKWARD_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    backward: bool
    after: Position
    limit: int
    filter: ReadFilter
    def __init__(self, backward: _Optional[bool] = ..., after: _Optional[_Union[Position, _Mapping]] = ..., limit: _Optional[int] = ..., filter: _Optional[_Union[ReadFilter, _Mapping]] = ...) -> None: ...

class ReadResponse(_message.Message):
    __slots__ = ("events", "more")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RecordedEvent]
    more: bool
    def __init__(self, events: _Optional[_Iterable[_Union[RecordedEvent, _Mapping]]] = ..., more: _Optional[bool] = ...) -> None: ...

class CountResponse(_message.Message):
    __slots__ = ("count",)
    COUNT_FIELD_NUMBER: _ClassVar[int]
    count: int
    def __init__(self, count: _Optional[int] = ...) -> None: ...

class StreamRequest(_message.Message):
    __slots__ = ("aggregate_id",)
    AGGREGATE_ID_FIELD_NUMBER: _ClassVar[int]
    aggregate_id: str
    def __init__(self, aggregate_id: _Optional[str] = ...) -> None: ...

class StreamVersionResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class CurrentPositionRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PositionResponse(_message.Message):
    __slots__ = ("position",)
    POSITION_FIELD_NUMBER: _ClassVar[int]
    position: Position
    def __init__(self, position: _Optional[_Union[Position, _Mapping]] = ...) -> None: ...

class EventRequest(_message.Message):
    __slots__ = ("event_id",)
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    def __init__(self, event_id: _Optional[str] = ...) -> None: ...

class EventResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: RecordedEvent
    def __init__(self, event: _Optional[_Union[RecordedEvent, _Mapping]] = ...) -> None: ...

class EventExistsResponse(_message.Message):
    __slots__ = ("exists",)
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    exists: bool
    def __init__(self, exists: _Optional[bool] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("after", "filter", "batch_size")
    AFTER_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    after: Position
    filter: ReadFilter
    batch_size: int
    def __init__(self, after: _Optional[_Union[Position, _Mapping]] = ..., filter: _Optional[_Union[ReadFilter, _Mapping]] = ..., batch_size: _Optional[int] = ...) -> None: ...

class SubscribeResponse(_message.Message):
    __slots__ = ("events", "caught_up")
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[RecordedEvent]
    caught_up: bool
    def __init__(self, events: _Optional[_Iterable[_Union[RecordedEvent, _Mapping]]] = ..., caught_up: _Optional[bool] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AppendNotice(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
