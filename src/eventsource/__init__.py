"""eventsource: async-first event sourcing with pydantic events.

The public API is re-exported here. Backends that need a third-party driver are imported on
first use (``eventsource.SQLiteEventStore``), so ``import eventsource`` imports no driver;
``*_AVAILABLE`` flags tell which drivers are installed without importing them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from eventsource._internal.optional import is_available
from eventsource.aggregates import (
    AggregateCache,
    AggregateRepository,
    AggregateRoot,
    CommandResult,
    DeclarativeAggregate,
    RepositoryStats,
    SnapshotPolicy,
    UnhandledEventPolicy,
    handles,
)
from eventsource.bus import (
    AsyncEventHandler,
    BusDeadLetter,
    BusStats,
    EventBus,
    EventBusConfig,
    EventHandlerFunc,
    EventSubscriber,
    InMemoryBroker,
    InMemoryEventBus,
    InMemoryEventBusConfig,
)
from eventsource.events import (
    NIL_AGGREGATE_ID,
    DomainEvent,
    EventCodec,
    EventRegistry,
    Upcaster,
    default_registry,
    get_event_class,
    get_event_class_or_none,
    is_event_registered,
    list_registered_events,
    register_event,
    upcaster,
)
from eventsource.exceptions import (
    AggregateNotFoundError,
    AppendTooLargeError,
    AuthenticationError,
    BusConnectionError,
    BusPublishError,
    CheckpointError,
    ConfigurationError,
    DecryptionError,
    DuplicateEventTypeError,
    EventBusError,
    EventIdConflictError,
    EventNotFoundError,
    EventSourceError,
    EventStoreError,
    EventTypeNotFoundError,
    FeedOrderConflictError,
    InvalidEventError,
    InvalidPositionError,
    LockError,
    LockLostError,
    LockTimeoutError,
    MessageTooLargeError,
    MigrationConflictError,
    MigrationError,
    OptimisticLockError,
    PermissionDeniedError,
    PersonalDataError,
    ProjectionError,
    RedisNotAvailableError,
    SagaDefinitionError,
    SagaError,
    SagaNotFoundError,
    SagaTransitionError,
    SerializationError,
    StoreConnectionError,
    StoreSchemaError,
    SyncAdapterError,
    TenantError,
    TenantMismatchError,
    TenantRequiredError,
    TransientStoreError,
    UnhandledEventError,
    UpcasterRegistrationError,
    UpcastingError,
)
from eventsource.locks import (
    DistributedLock,
    InMemoryDistributedLock,
    InMemoryLockHandle,
    LockAcquisition,
    LockHandle,
)
from eventsource.multitenancy import (
    TenantAggregateRepository,
    TenantDomainEvent,
    get_current_tenant,
    require_current_tenant,
    reset_current_tenant,
    set_current_tenant,
    tenant_scope,
)
from eventsource.observability import TELEMETRY_AVAILABLE, configure_telemetry
from eventsource.outbox import (
    InboxHandler,
    InboxRepository,
    InMemoryInboxRepository,
    InMemoryOutboxRepository,
    OutboxBatch,
    OutboxEntry,
    OutboxRelay,
    OutboxRepository,
    OutboxStats,
)
from eventsource.projections import (
    DeclarativeProjection,
    Projection,
    ProjectionCoordinator,
    ProjectionRegistry,
)
from eventsource.protocols import EventHandler, SyncEventHandler
from eventsource.readmodels import (
    InMemoryReadModelRepository,
    ReadModelProjection,
    ReadModelRepository,
)
from eventsource.repositories import (
    Checkpoint,
    CheckpointData,
    CheckpointRepository,
    DeadLetter,
    DeadLetterStatus,
    DLQEntry,
    DLQRepository,
    DLQStats,
    InMemoryCheckpointRepository,
    InMemoryDLQRepository,
    LagMetrics,
    ProjectionFailureCount,
)
from eventsource.serialization import EventSourceJSONEncoder
from eventsource.snapshots import InMemorySnapshotStore, Snapshot, SnapshotStore
from eventsource.stores import (
    AppendResult,
    EventPublisher,
    EventStore,
    EventStream,
    ExpectedVersion,
    InMemoryEventStore,
    Position,
    ReadDirection,
    ReadOptions,
    StoredEvent,
)
from eventsource.subscriptions import (
    CheckpointStrategy,
    Subscription,
    SubscriptionConfig,
    SubscriptionManager,
    SubscriptionState,
)
from eventsource.sync import SyncAggregateRepository, SyncEventStoreAdapter
from eventsource.types import (
    AggregateId,
    CausationId,
    CorrelationId,
    EventId,
    TenantId,
    TState,
    Version,
)

if TYPE_CHECKING:
    from eventsource.bus.kafka import KafkaEventBus, KafkaEventBusConfig
    from eventsource.bus.nats import NATSEventBus, NATSEventBusConfig
    from eventsource.bus.rabbitmq import RabbitMQEventBus, RabbitMQEventBusConfig
    from eventsource.bus.redis import RedisEventBus, RedisEventBusConfig, RedisEventBusStats
    from eventsource.locks.postgresql import PostgreSQLDistributedLock, PostgreSQLLockHandle
    from eventsource.outbox.postgresql import (
        PostgreSQLInboxRepository,
        PostgreSQLOutboxRepository,
    )
    from eventsource.outbox.sqlite import SQLiteInboxRepository, SQLiteOutboxRepository
    from eventsource.readmodels.postgresql import PostgreSQLReadModelRepository
    from eventsource.readmodels.sqlite import SQLiteReadModelRepository
    from eventsource.repositories.nats import NATSCheckpointRepository
    from eventsource.repositories.postgresql import (
        PostgreSQLCheckpointRepository,
        PostgreSQLDLQRepository,
    )
    from eventsource.repositories.sqlite import SQLiteCheckpointRepository, SQLiteDLQRepository
    from eventsource.server.grpc import GrpcStoreServer
    from eventsource.snapshots.nats import NATSSnapshotStore
    from eventsource.snapshots.postgresql import PostgreSQLSnapshotStore
    from eventsource.snapshots.sqlite import SQLiteSnapshotStore
    from eventsource.stores.grpc import GrpcEventStore
    from eventsource.stores.nats import NATSEventStore
    from eventsource.stores.postgresql import PostgreSQLEventStore
    from eventsource.stores.sqlite import SQLiteEventStore

__version__ = "0.1.0"

# SQLAlchemy's asyncio layer, which the PostgreSQL backends pool connections with, needs greenlet.
POSTGRESQL_AVAILABLE: bool = is_available("asyncpg") and is_available("greenlet")
SQLITE_AVAILABLE: bool = is_available("aiosqlite")
REDIS_AVAILABLE: bool = is_available("redis")
RABBITMQ_AVAILABLE: bool = is_available("aio_pika")
KAFKA_AVAILABLE: bool = is_available("aiokafka")
NATS_AVAILABLE: bool = is_available("nats")
GRPC_AVAILABLE: bool = is_available("grpc") and is_available("google.protobuf")
GDPR_AVAILABLE: bool = is_available("cryptography")

_LAZY = {
    "GrpcEventStore": "eventsource.stores.grpc",
    "GrpcStoreServer": "eventsource.server.grpc",
    "NATSCheckpointRepository": "eventsource.repositories.nats",
    "NATSEventStore": "eventsource.stores.nats",
    "NATSSnapshotStore": "eventsource.snapshots.nats",
    "PostgreSQLDistributedLock": "eventsource.locks.postgresql",
    "PostgreSQLLockHandle": "eventsource.locks.postgresql",
    "KafkaEventBus": "eventsource.bus.kafka",
    "KafkaEventBusConfig": "eventsource.bus.kafka",
    "NATSEventBus": "eventsource.bus.nats",
    "NATSEventBusConfig": "eventsource.bus.nats",
    "RabbitMQEventBus": "eventsource.bus.rabbitmq",
    "RabbitMQEventBusConfig": "eventsource.bus.rabbitmq",
    "RedisEventBus": "eventsource.bus.redis",
    "RedisEventBusConfig": "eventsource.bus.redis",
    "RedisEventBusStats": "eventsource.bus.redis",
    "PostgreSQLInboxRepository": "eventsource.outbox.postgresql",
    "PostgreSQLOutboxRepository": "eventsource.outbox.postgresql",
    "SQLiteInboxRepository": "eventsource.outbox.sqlite",
    "SQLiteOutboxRepository": "eventsource.outbox.sqlite",
    "PostgreSQLReadModelRepository": "eventsource.readmodels.postgresql",
    "SQLiteReadModelRepository": "eventsource.readmodels.sqlite",
    "PostgreSQLCheckpointRepository": "eventsource.repositories.postgresql",
    "PostgreSQLDLQRepository": "eventsource.repositories.postgresql",
    "SQLiteCheckpointRepository": "eventsource.repositories.sqlite",
    "SQLiteDLQRepository": "eventsource.repositories.sqlite",
    "PostgreSQLEventStore": "eventsource.stores.postgresql",
    "PostgreSQLSnapshotStore": "eventsource.snapshots.postgresql",
    "SQLiteEventStore": "eventsource.stores.sqlite",
    "SQLiteSnapshotStore": "eventsource.snapshots.sqlite",
}

__all__ = [
    "GDPR_AVAILABLE",
    "GRPC_AVAILABLE",
    "KAFKA_AVAILABLE",
    "NATS_AVAILABLE",
    "NIL_AGGREGATE_ID",
    "POSTGRESQL_AVAILABLE",
    "RABBITMQ_AVAILABLE",
    "REDIS_AVAILABLE",
    "SQLITE_AVAILABLE",
    "TELEMETRY_AVAILABLE",
    "AggregateCache",
    "AggregateId",
    "AggregateNotFoundError",
    "AggregateRepository",
    "AggregateRoot",
    "AppendResult",
    "AppendTooLargeError",
    "AsyncEventHandler",
    "AuthenticationError",
    "BusConnectionError",
    "BusDeadLetter",
    "BusPublishError",
    "BusStats",
    "CausationId",
    "Checkpoint",
    "CheckpointData",
    "CheckpointError",
    "CheckpointRepository",
    "CheckpointStrategy",
    "CommandResult",
    "ConfigurationError",
    "CorrelationId",
    "DLQEntry",
    "DLQRepository",
    "DLQStats",
    "DeadLetter",
    "DeadLetterStatus",
    "DeclarativeAggregate",
    "DeclarativeProjection",
    "DecryptionError",
    "DistributedLock",
    "DomainEvent",
    "DuplicateEventTypeError",
    "EventBus",
    "EventBusConfig",
    "EventBusError",
    "EventCodec",
    "EventHandler",
    "EventHandlerFunc",
    "EventId",
    "EventIdConflictError",
    "EventNotFoundError",
    "EventPublisher",
    "EventRegistry",
    "EventSourceError",
    "EventSourceJSONEncoder",
    "EventStore",
    "EventStoreError",
    "EventStream",
    "EventSubscriber",
    "EventTypeNotFoundError",
    "ExpectedVersion",
    "FeedOrderConflictError",
    "GrpcEventStore",
    "GrpcStoreServer",
    "InMemoryBroker",
    "InMemoryCheckpointRepository",
    "InMemoryDLQRepository",
    "InMemoryDistributedLock",
    "InMemoryEventBus",
    "InMemoryEventBusConfig",
    "InMemoryEventStore",
    "InMemoryInboxRepository",
    "InMemoryLockHandle",
    "InMemoryOutboxRepository",
    "InMemoryReadModelRepository",
    "InMemorySnapshotStore",
    "InboxHandler",
    "InboxRepository",
    "InvalidEventError",
    "InvalidPositionError",
    "KafkaEventBus",
    "KafkaEventBusConfig",
    "LagMetrics",
    "LockAcquisition",
    "LockError",
    "LockHandle",
    "LockLostError",
    "LockTimeoutError",
    "MessageTooLargeError",
    "MigrationConflictError",
    "MigrationError",
    "NATSCheckpointRepository",
    "NATSEventBus",
    "NATSEventBusConfig",
    "NATSEventStore",
    "NATSSnapshotStore",
    "OptimisticLockError",
    "OutboxBatch",
    "OutboxEntry",
    "OutboxRelay",
    "OutboxRepository",
    "OutboxStats",
    "PermissionDeniedError",
    "PersonalDataError",
    "Position",
    "PostgreSQLCheckpointRepository",
    "PostgreSQLDLQRepository",
    "PostgreSQLDistributedLock",
    "PostgreSQLEventStore",
    "PostgreSQLInboxRepository",
    "PostgreSQLLockHandle",
    "PostgreSQLOutboxRepository",
    "PostgreSQLReadModelRepository",
    "PostgreSQLSnapshotStore",
    "Projection",
    "ProjectionCoordinator",
    "ProjectionError",
    "ProjectionFailureCount",
    "ProjectionRegistry",
    "RabbitMQEventBus",
    "RabbitMQEventBusConfig",
    "ReadDirection",
    "ReadModelProjection",
    "ReadModelRepository",
    "ReadOptions",
    "RedisEventBus",
    "RedisEventBusConfig",
    "RedisEventBusStats",
    "RedisNotAvailableError",
    "RepositoryStats",
    "SQLiteCheckpointRepository",
    "SQLiteDLQRepository",
    "SQLiteEventStore",
    "SQLiteInboxRepository",
    "SQLiteOutboxRepository",
    "SQLiteReadModelRepository",
    "SQLiteSnapshotStore",
    "SagaDefinitionError",
    "SagaError",
    "SagaNotFoundError",
    "SagaTransitionError",
    "SerializationError",
    "Snapshot",
    "SnapshotPolicy",
    "SnapshotStore",
    "StoreConnectionError",
    "StoreSchemaError",
    "StoredEvent",
    "Subscription",
    "SubscriptionConfig",
    "SubscriptionManager",
    "SubscriptionState",
    "SyncAdapterError",
    "SyncAggregateRepository",
    "SyncEventHandler",
    "SyncEventStoreAdapter",
    "TState",
    "TenantAggregateRepository",
    "TenantDomainEvent",
    "TenantError",
    "TenantId",
    "TenantMismatchError",
    "TenantRequiredError",
    "TransientStoreError",
    "UnhandledEventError",
    "UnhandledEventPolicy",
    "Upcaster",
    "UpcasterRegistrationError",
    "UpcastingError",
    "Version",
    "__version__",
    "configure_telemetry",
    "default_registry",
    "get_current_tenant",
    "get_event_class",
    "get_event_class_or_none",
    "handles",
    "is_event_registered",
    "list_registered_events",
    "register_event",
    "require_current_tenant",
    "reset_current_tenant",
    "set_current_tenant",
    "tenant_scope",
    "upcaster",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'eventsource' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
