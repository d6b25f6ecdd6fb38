"""Packaging promises: no driver on import, pinned public API, extras named in errors."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
from pathlib import Path

import pytest

import eventsource

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = ("asyncpg", "aiosqlite", "redis", "aio_pika", "aiokafka", "opentelemetry", "nats", "grpc")

PUBLIC_API = {
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
}


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_public_api_is_pinned() -> None:
    """Adding or removing a public name is a decision: update this set and the CHANGELOG."""
    assert set(eventsource.__all__) == PUBLIC_API
    assert len(eventsource.__all__) == len(PUBLIC_API), "duplicate names in __all__"


def test_every_public_name_resolves() -> None:
    missing = [name for name in eventsource.__all__ if not hasattr(eventsource, name)]
    assert missing == []


def test_import_eventsource_imports_no_driver() -> None:
    result = run_python(
        f"""
        import sys
        import eventsource
        import eventsource.observability
        import eventsource.testing
        assert eventsource.SQLITE_AVAILABLE and eventsource.POSTGRESQL_AVAILABLE
        loaded = sorted(
            name for name in sys.modules
            if name.split(".")[0] in {DRIVERS!r}
        )
        print(",".join(loaded))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_instrumented_code_runs_without_opentelemetry() -> None:
    result = run_python(
        """
        import asyncio, sys
        from uuid import uuid4
        sys.modules["opentelemetry"] = None  # an environment without the telemetry extra
        import eventsource
        from eventsource import DomainEvent, InMemoryEventBus, InMemoryEventStore
        from eventsource.observability import TELEMETRY_AVAILABLE, configure_telemetry

        class Pinged(DomainEvent):
            pass

        async def main() -> None:
            configure_telemetry()
            bus = InMemoryEventBus()
            seen = []
            bus.subscribe(Pinged, seen.append)
            store = InMemoryEventStore()
            result = await store.append_events(uuid4(), "Ping", [Pinged()], 0)
            await bus.publish(list(result.events))
            await bus.shutdown()
            assert len(seen) == 1

        asyncio.run(main())
        print(TELEMETRY_AVAILABLE)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_lazy_backend_imports_its_driver_on_first_use() -> None:
    result = run_python(
        """
        import sys
        import eventsource
        assert "aiosqlite" not in sys.modules
        store_class = eventsource.SQLiteEventStore
        store_class(":memory:")
        assert "aiosqlite" in sys.modules
        """
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("driver", "construct", "extra"),
    [
        ("aiosqlite", "eventsource.SQLiteEventStore(':memory:')", "sqlite"),
        (
            "asyncpg",
            "eventsource.PostgreSQLEventStore.from_url('postgresql://127.0.0.1/x')",
            "postgresql",
        ),
        ("redis", "eventsource.RedisEventBus(eventsource.RedisEventBusConfig())", "redis"),
        (
            "aio_pika",
            "eventsource.RabbitMQEventBus(eventsource.RabbitMQEventBusConfig())",
            "rabbitmq",
        ),
        ("aiokafka", "eventsource.KafkaEventBus(eventsource.KafkaEventBusConfig())", "kafka"),
        ("nats", "eventsource.NATSEventBus(eventsource.NATSEventBusConfig())", "nats"),
        ("aiosqlite", "eventsource.SQLiteOutboxRepository(':memory:')", "sqlite"),
        ("grpc", "eventsource.GrpcEventStore('127.0.0.1:1')", "grpc"),
        ("grpc", "eventsource.GrpcStoreServer(eventsource.InMemoryEventStore())", "grpc"),
    ],
)
def test_backend_without_its_extra_names_the_extra(driver: str, construct: str, extra: str) -> None:
    result = run_python(
        f"""
        import sys
        sys.modules[{driver!r}] = None  # what an environment without the extra looks like
        import eventsource
        try:
            {construct}
        except ImportError as exc:
            print(exc)
        else:
            raise SystemExit("no ImportError")
        """
    )
    assert result.returncode == 0, result.stderr
    assert f"eventsource-async[{extra}]" in result.stdout


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchThing"):
        _ = eventsource.NoSuchThing  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("flag", "module"),
    [
        ("POSTGRESQL_AVAILABLE", "asyncpg"),
        ("POSTGRESQL_AVAILABLE", "greenlet"),
        ("SQLITE_AVAILABLE", "aiosqlite"),
        ("REDIS_AVAILABLE", "redis"),
        ("RABBITMQ_AVAILABLE", "aio_pika"),
        ("KAFKA_AVAILABLE", "aiokafka"),
        ("TELEMETRY_AVAILABLE", "opentelemetry"),
        ("NATS_AVAILABLE", "nats"),
        ("GRPC_AVAILABLE", "grpc"),
        ("GDPR_AVAILABLE", "cryptography"),
    ],
)
def test_availability_flags_follow_installed_drivers(flag: str, module: str) -> None:
    """The dev environment installs every extra, so every flag is true; a hidden driver is not."""
    assert getattr(eventsource, flag) is True
    result = run_python(
        f"""
        import importlib.abc, sys

        class Hide(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == {module!r}:
                    raise ModuleNotFoundError(name)
                return None

        sys.meta_path.insert(0, Hide())
        import eventsource
        print(eventsource.{flag})
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_version_matches_the_distribution() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert eventsource.__version__ == project["version"]
    assert project["name"] == "eventsource-async"
    extras = project["optional-dependencies"]
    assert {"postgresql", "sqlite", "redis", "rabbitmq", "kafka", "telemetry", "all"} <= set(extras)


def test_typed_marker_is_shipped() -> None:
    assert (Path(eventsource.__file__).parent / "py.typed").is_file()


def test_the_source_distribution_ships_the_project_not_the_repository_tooling(
    tmp_path: Path,
) -> None:
    uv = shutil.which("uv")
    assert uv is not None, "the tests run under uv (README: uv run pytest)"
    built = subprocess.run(
        [uv, "build", "--sdist", "--out-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (archive,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(archive) as sdist:
        names = {name.partition("/")[2] for name in sdist.getnames()}
    assert {"LICENSE", "README.md", "pyproject.toml", "src/eventsource/__init__.py"} <= names
    leaked = {name for name in names if name.split("/")[0] in {".claude", ".ci", "CLAUDE.md"}}
    assert not leaked
