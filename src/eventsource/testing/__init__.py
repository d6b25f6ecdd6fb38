"""Test support shipped with the library: contract suites every backend subclasses, and the
events they use. Importing this package needs pytest (a test-time dependency)."""

from eventsource.testing.event_store import EventStoreContract
from eventsource.testing.events import contract_registry

__all__ = ["EventStoreContract", "contract_registry"]
