"""Bus URLs: `memory://`, `redis://`, `amqp://`, `kafka://`, `nats://`."""

from __future__ import annotations

import dataclasses
import importlib
import re
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlsplit

from eventsource.bus.interface import EventBus, EventBusConfig
from eventsource.config._options import building, mask_url, read_options
from eventsource.exceptions import ConfigurationError

if TYPE_CHECKING:
    from eventsource.events.registry import EventRegistry

_BUSES = {
    # scheme: (module, class prefix)
    "memory": ("in_memory", "InMemory"),
    "redis": ("redis", "Redis"),
    "rediss": ("redis", "Redis"),
    "amqp": ("rabbitmq", "RabbitMQ"),
    "amqps": ("rabbitmq", "RabbitMQ"),
    "kafka": ("kafka", "Kafka"),
    "nats": ("nats", "NATS"),
}
_BUS_FORMS = (
    "memory://, redis://HOST:PORT/DB, rediss://..., amqp://USER:PASSWORD@HOST/VHOST, "
    "amqps://..., kafka://HOST:PORT,HOST2:PORT or nats://USER:PASSWORD@HOST:PORT"
)
_FROM_URL = ("url", "bootstrap_servers")
_REDIS_DB = re.compile(r"/?\d*")


def _bus(url: str, options: Mapping[str, object]) -> tuple[EventBusConfig, type[EventBus]]:
    """The config a bus URL and keyword options describe, and the bus class to give it to."""
    shown = repr(mask_url(url))
    try:
        parts = urlsplit(url)
        _ = parts.port if parts.scheme != "kafka" else None  # a bad port raises ValueError
    except ValueError:
        raise ConfigurationError(f"{shown} is not a valid bus URL; use {_BUS_FORMS}") from None
    if parts.scheme.lower() not in _BUSES or not url.partition(":")[2].startswith("//"):
        raise ConfigurationError(f"{shown}: unsupported bus URL; use {_BUS_FORMS}")
    scheme = parts.scheme.lower()
    module, tech = _BUSES[scheme]
    with building(shown):
        found = importlib.import_module(f"eventsource.bus.{module}")
    config_cls: type[EventBusConfig] = getattr(found, f"{tech}EventBusConfig")
    hints = typing.get_type_hints(config_cls)
    accepted = {
        f.name: hints[f.name]
        for f in dataclasses.fields(config_cls)
        if f.init and f.name not in _FROM_URL
    }
    aliases = {"group": "consumer_group", "consumer": "consumer_name"}
    if module == "redis":
        aliases["prefix"] = "stream_prefix"
    if module == "nats":
        aliases["prefix"] = "subject_prefix"
    query = parse_qsl(parts.query, keep_blank_values=True)
    values, _ = read_options(shown, query, options, accepted, aliases)
    location = url.partition("#")[0].partition("?")[0]
    if parts.fragment:
        raise ConfigurationError(f"{shown}: a bus URL takes no #fragment")
    if module == "in_memory" and location.lower() != "memory://":
        raise ConfigurationError(f"{shown}: an in-memory bus takes no host or path; use memory://")
    if module == "redis" and not _REDIS_DB.fullmatch(parts.path):
        raise ConfigurationError(f"{shown}: the path of a Redis URL is a database number, e.g. /0")
    if module == "nats" and parts.path.strip("/"):
        raise ConfigurationError(f"{shown}: a NATS URL takes no path; use nats://HOST:PORT")
    if module == "kafka":
        servers = parts.netloc.split(",")
        if "@" in parts.netloc or parts.path.strip("/") or not all(servers):
            raise ConfigurationError(
                f"{shown}: a Kafka URL lists servers only, e.g. kafka://HOST:9092,HOST2:9092 "
                "(TLS and SASL settings go in the client_options keyword)"
            )
        values["bootstrap_servers"] = parts.netloc
    elif module != "in_memory":
        values["url"] = location
    with building(shown):
        config = config_cls(**values)
    return config, getattr(found, f"{tech}EventBus")


def event_bus_config(url: str, **options: object) -> EventBusConfig:
    """The `*EventBusConfig` a bus URL and keyword options (which win) describe, for
    inspection or to build the bus yourself; `ConfigurationError` when they describe none."""
    return _bus(url, options)[0]


def create_event_bus(
    url: str, *, registry: EventRegistry | None = None, **options: object
) -> EventBus:
    """The bus a URL names, not connected yet: it connects on first publish or on
    `start_consuming()`. Options are the fields of its `*EventBusConfig`, e.g.
    `create_event_bus("redis://localhost:6379/0?group=billing", max_attempts=3)`."""
    config, bus_cls = _bus(url, options)
    return bus_cls(config, registry=registry)
