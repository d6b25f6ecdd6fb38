"""`NATSEventBusConfig`, the naming rules of the NATS bus (subjects, streams, consumers)
and its header values: what needs no driver, kept apart from `bus/nats.py`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from eventsource.bus import _wire
from eventsource.bus.interface import EventBusConfig
from eventsource.exceptions import BusPublishError

__all__ = [
    "NATSEventBusConfig",
    "app_headers",
    "attempt_of",
    "clean_headers",
    "refuse_oversized",
    "seconds_of",
    "subject_token",
]

_SUBJECT = re.compile(r"[^.*>\s]+(\.[^.*>\s]+)*")
_STREAM = re.compile(r"[^.*>\s/\\]+")
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


def subject_token(text: str) -> str:
    """`text` as one NATS subject token (also a valid stream or consumer name): ASCII
    letters, digits and `-` stay, any other character becomes `_` and the hex of its UTF-8
    bytes; "" becomes `_`. Distinct texts give distinct tokens."""
    if not text:
        return "_"
    return "".join(ch if ch in _SAFE else "".join(f"_{b:02x}" for b in ch.encode()) for ch in text)


@dataclass(kw_only=True)
class NATSEventBusConfig(EventBusConfig):
    """Where the streams are and how the consumer paces itself; seconds unless said otherwise."""

    url: str = field(default="nats://localhost:4222", repr=False)
    """Kept out of the repr: it may hold credentials."""
    subject_prefix: str = "eventsource-bus"
    """Events go to `{subject_prefix}.{aggregate_type}.{aggregate_id}`."""
    stream: str = ""
    """The events stream; "" names it `subject_token(subject_prefix)`. Group traffic goes to
    `{stream}-groups`."""
    batch_size: int = 32
    """Messages one fetch takes; `stop_consuming()` finishes those taken first."""
    fetch_wait: float = 2.0
    """How long a fetch waits for messages before it asks again."""
    ack_wait: float = 30.0
    """A message its consumer has not acknowledged (nor reported progress on) for this long
    is redelivered: how long a consumer that died holds its messages."""
    duplicate_window: float = 120.0
    """How long JetStream remembers an event id to drop a re-send of it (set on creation)."""
    max_age: float | None = None
    """Age after which the events stream drops events, read by every group or not (set on
    creation). None keeps them (until `max_messages`)."""
    max_messages: int | None = None
    """Events the events stream keeps at most, the oldest dropped first, read or not."""
    memory_storage: bool = False
    """Keep the streams in memory instead of files (lost when the server restarts)."""
    replicas: int = 1
    """Copies of each stream in a JetStream cluster."""
    connect_timeout: float = 5.0
    """How long one connection attempt may take."""
    reconnect_interval: float = 0.5
    """Pause between attempts to reconnect to the server."""
    reconnect_timeout: float = 10.0
    """How long a publish, a settlement or `start_consuming()` keeps retrying through a lost
    connection before `BusConnectionError`."""
    request_timeout: float = 2.5
    """How long one request (a confirm, a stream or consumer lookup) waits for its reply; a
    batch waits while confirms keep coming, and gives up after this long without one."""
    ping_interval: float = 20.0
    """Seconds between pings; two unanswered ones make the client reconnect."""
    client_name: str | None = None
    """The connection's name on the server; default `eventsource {group} {consumer}`."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if urlsplit(self.url).scheme not in ("nats", "tls"):
            raise ValueError("url must be a nats:// or tls:// URL")
        if not _SUBJECT.fullmatch(self.subject_prefix):
            raise ValueError(
                f"subject_prefix {self.subject_prefix!r} is not a NATS subject: dot-separated "
                "tokens without spaces, '*' or '>'"
            )
        if self.stream and not _STREAM.fullmatch(self.stream):
            raise ValueError(f"stream {self.stream!r} is not a valid JetStream stream name")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        positive = (self.fetch_wait, self.ack_wait, self.duplicate_window, self.connect_timeout)
        timing = (self.reconnect_timeout, self.request_timeout, self.ping_interval)
        if min(*positive, *timing) <= 0 or self.reconnect_interval < 0:
            raise ValueError("the timeouts, waits and intervals must be positive")
        if self.max_age is not None and self.max_age <= 0:
            raise ValueError("max_age must be None or positive")
        if self.max_messages is not None and self.max_messages < 1:
            raise ValueError("max_messages must be None or at least 1")
        if self.replicas < 1:
            raise ValueError(f"replicas must be at least 1, not {self.replicas}")


def clean_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Header values on one line: NATS headers end at a line break."""
    return {key: " ".join(value.splitlines()) for key, value in headers.items()}


def app_headers(raw: Mapping[str, str] | None) -> dict[str, str]:
    """The application's headers of a message (JetStream's own `Nats-*` ones left out)."""
    return {k: v for k, v in (raw or {}).items() if not k.lower().startswith("nats-")}


def attempt_of(headers: Mapping[str, str]) -> int:
    value = headers.get(_wire.ATTEMPT, "")
    return int(value) if value.isdigit() and int(value) > 0 else 2


def seconds_of(value: str) -> float:
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0


def refuse_oversized(
    messages: list[tuple[str, bytes, dict[str, str]]], limit: int, what: str
) -> None:
    """Refuse a batch holding a message the server would not take, before sending any."""
    for subject, body, headers in messages:
        size = len(body) + sum(len(k) + len(v) + 4 for k, v in headers.items())
        if limit and size > limit:
            raise BusPublishError(
                f"could not {what}: message {headers.get('Nats-Msg-Id', '')} for {subject} is "
                f"{size} bytes, more than the server's max_payload ({limit}); nothing was "
                "published: make the event smaller or raise max_payload"
            )
