"""Test support shipped with the library: contract suites every backend subclasses, and the
events they use, and `capture_telemetry` for tests of spans and metrics (with
`opentelemetry-sdk`). Importing this package needs pytest (a test-time dependency)."""

from eventsource.testing.bus import EventBusContract
from eventsource.testing.checkpoints import CheckpointRepositoryContract
from eventsource.testing.dead_letters import DLQRepositoryContract
from eventsource.testing.event_store import EventStoreContract
from eventsource.testing.events import contract_registry
from eventsource.testing.locks import DistributedLockContract
from eventsource.testing.outbox import InboxRepositoryContract, OutboxRepositoryContract
from eventsource.testing.read_models import ReadModelRepositoryContract
from eventsource.testing.snapshot_store import SnapshotStoreContract
from eventsource.testing.telemetry import TelemetryCapture, capture_telemetry
from eventsource.testing.tenancy import TenancyContract
from eventsource.testing.undecodable import UndecodableEventContract

__all__ = [
    "CheckpointRepositoryContract",
    "DLQRepositoryContract",
    "DistributedLockContract",
    "EventBusContract",
    "EventStoreContract",
    "InboxRepositoryContract",
    "OutboxRepositoryContract",
    "ReadModelRepositoryContract",
    "SnapshotStoreContract",
    "TelemetryCapture",
    "TenancyContract",
    "UndecodableEventContract",
    "capture_telemetry",
    "contract_registry",
]
