"""Event buses: distribute events to other services through a broker.

`InMemoryEventBus` needs nothing; `RedisEventBus`, `RabbitMQEventBus`, `KafkaEventBus` and
`NATSEventBus` import their driver on first use (extras `redis`, `rabbitmq`, `kafka`, `nats`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from eventsource.bus.kafka import KafkaEventBus, KafkaEventBusConfig
    from eventsource.bus.nats import NATSEventBus, NATSEventBusConfig
    from eventsource.bus.rabbitmq import RabbitMQEventBus, RabbitMQEventBusConfig
    from eventsource.bus.redis import RedisEventBus, RedisEventBusConfig, RedisEventBusStats

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
    "KafkaEventBus",
    "KafkaEventBusConfig",
    "NATSEventBus",
    "NATSEventBusConfig",
    "RabbitMQEventBus",
    "RabbitMQEventBusConfig",
    "RedisEventBus",
    "RedisEventBusConfig",
    "RedisEventBusStats",
]

_LAZY = {
    "KafkaEventBus": "eventsource.bus.kafka",
    "KafkaEventBusConfig": "eventsource.bus.kafka",
    "NATSEventBus": "eventsource.bus.nats",
    "NATSEventBusConfig": "eventsource.bus.nats",
    "RabbitMQEventBus": "eventsource.bus.rabbitmq",
    "RabbitMQEventBusConfig": "eventsource.bus.rabbitmq",
    "RedisEventBus": "eventsource.bus.redis",
    "RedisEventBusConfig": "eventsource.bus.redis",
    "RedisEventBusStats": "eventsource.bus.redis",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
