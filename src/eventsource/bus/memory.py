"""The package guide's path of the in-memory bus; the code lives in `eventsource.bus.in_memory`
(the module name every backend's `in_memory.py` shares), which is the preferred import."""

from eventsource.bus.in_memory import InMemoryBroker, InMemoryEventBus, InMemoryEventBusConfig

__all__ = ["InMemoryBroker", "InMemoryEventBus", "InMemoryEventBusConfig"]
