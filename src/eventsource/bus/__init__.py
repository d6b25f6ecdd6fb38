"""Event buses: distribute events to other services through a broker.

`InMemoryEventBus` needs nothing; `RedisEventBus`, `RabbitMQEventBus` and `KafkaEventBus`
import their driver on first use (extras `redis`, `rabbitmq`, `kafka`).
"""

from __future__ import annotations

from eventsource.bus.in_memory import InMemoryBroker, InMemoryEventBus, InMemoryEventBusConfig
from eventsource.bus.interface import (
    AsyncEventHandler,
    BusDeadLetter,
    BusStats,
    EventBus,
    EventBusConfig,
    EventHandlerFunc,
    EventSubscriber,
)

__all__ = [
    "AsyncEventHandler",
    "BusDeadLetter",
    "BusStats",
    "EventBus",
    "EventBusConfig",
    "EventHandlerFunc",
    "EventSubscriber",
    "InMemoryBroker",
    "InMemoryEventBus",
    "InMemoryEventBusConfig",
]
