"""NATS helpers shared by the NATS backends: connecting, error mapping, JetStream API calls.

The backends speak the JetStream API (`$JS.API.*`) through plain requests where that is both
simpler and cheaper than nats-py's JetStream wrappers: publishing with expectation headers and
reading the reply's error code, direct gets of one message (by sequence or the last one on a
subject filter, wildcards allowed), and bounded reads through an ephemeral pull consumer
(`fetch_messages`). Every nats-py error is turned into one of `eventsource.exceptions` here
(`store_error`), so no driver error escapes a backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventsource._internal.optional import require
from eventsource.exceptions import (
    ConfigurationError,
    EventStoreError,
    StoreConnectionError,
    TransientStoreError,
)

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

__all__ = [
    "ERR_WRONG_LAST_SEQUENCE",
    "JetStreamError",
    "RawMessage",
    "check_name",
    "connect",
    "decode_token",
    "direct_get",
    "encode_token",
    "ensure_stream",
    "fetch_messages",
    "js_request",
    "store_error",
]

ERR_WRONG_LAST_SEQUENCE = 10071
"""JetStream's error code for a failed `Nats-Expected-Last-Subject-Sequence`."""
ERR_MESSAGE_TOO_LARGE = 10054
ERR_STREAM_NOT_FOUND = 10059
ERR_NO_MESSAGE_FOUND = 10037

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_TOKEN_SAFE = re.compile(r"^[A-Za-z0-9_-]+$")


def check_name(value: str, what: str) -> str:
    """A stream, bucket or subject-prefix token: letters, digits, `_` and `-` only (NATS
    refuses `.`, `*`, `>` and white space in them)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"{what} {value!r} may hold only letters, digits, '_' and '-' (NATS names)"
        )
    return value


def encode_token(text: str) -> str:
    """`text` as one subject token: kept as it is when it holds only letters, digits, `_`
    and `-`; otherwise every other character becomes `~XXXX` (its code point in hex; `~`
    itself is encoded too), so any text maps to a valid token and back."""
    if _TOKEN_SAFE.match(text):
        return text
    return "".join(
        char if char.isascii() and (char.isalnum() or char in "_-") else f"~{ord(char):06x}"
        for char in text
    )


def decode_token(token: str) -> str:
    if "~" not in token:
        return token
    parts = token.split("~")
    out = [parts[0]]
    for part in parts[1:]:
        out.append(chr(int(part[:6], 16)) + part[6:])
    return "".join(out)


class JetStreamError(EventStoreError):
    """A JetStream API call answered with an error (its `code` and `err_code` kept)."""

    def __init__(self, message: str, code: int, err_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code


def store_error(what: str, exc: BaseException) -> EventStoreError:
    """The typed error of a failed NATS call: connection loss and timeouts are transient
    (retrying is safe: appends are idempotent), anything else is an `EventStoreError`."""
    errors = require("nats.errors", extra="nats", feature="the NATS backends")
    if isinstance(exc, EventStoreError):
        return exc
    # Before the connection errors: TimeoutError is an OSError, and a late reply is not an
    # unreachable server.
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return TransientStoreError(
            f"{what}: no reply from the NATS server in time; retrying is safe"
        )
    transient = (
        errors.ConnectionClosedError,
        errors.NoServersError,
        errors.StaleConnectionError,
        errors.ConnectionReconnectingError,
        errors.OutboundBufferLimitError,
        errors.NoRespondersError,
        OSError,
    )
    if isinstance(exc, transient):
        return StoreConnectionError(f"{what}: the NATS server is unreachable ({exc!r})")
    return EventStoreError(f"{what}: {exc!r}")


async def connect(
    url: str,
    *,
    name: str,
    connect_timeout: float = 5.0,
    reconnect_wait: float = 0.5,
) -> Client:
    """A nats-py client on `url` that reconnects without end (a server restart never needs
    a restart of ours); an unreachable server is a `StoreConnectionError`."""
    nats = require("nats", extra="nats", feature=name)
    try:
        client: Client = await nats.connect(
            url,
            name=name,
            connect_timeout=connect_timeout,
            reconnect_time_wait=reconnect_wait,
            # The first connection gives up after one retry (an unreachable server is an
            # error now); once connected, reconnecting never gives up.
            max_reconnect_attempts=1,
            allow_reconnect=True,
        )
    except Exception as exc:
        error = store_error(f"{name}: cannot connect to {url}", exc)
        if type(error) is TransientStoreError:  # a timeout: the server did not answer
            error = StoreConnectionError(
                f"{name}: cannot connect to {url}: no answer within {connect_timeout} s"
            )
        raise error from exc
    client.options["max_reconnect_attempts"] = -1
    return client


def _api_error(what: str, reply: Mapping[str, Any]) -> JetStreamError | None:
    error = reply.get("error")
    if not error:
        return None
    code, err_code = int(error.get("code", 0)), int(error.get("err_code", 0))
    description = error.get("description", "")
    return JetStreamError(f"{what}: JetStream said {description!r} ({err_code})", code, err_code)


async def js_request(
    client: Client,
    subject: str,
    body: Mapping[str, Any] | bytes,
    *,
    what: str,
    reply_wait: float,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A JetStream API request (or a publish to a stream subject); its JSON reply, or the
    API's error as a `JetStreamError`."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    try:
        msg = await client.request(subject, data, timeout=reply_wait, headers=headers)
    except Exception as exc:
        raise store_error(what, exc) from exc
    try:
        reply: dict[str, Any] = json.loads(msg.data)
    except ValueError as exc:
        raise EventStoreError(f"{what}: the NATS server sent no JSON reply") from exc
    error = _api_error(what, reply)
    if error is not None:
        raise error
    return reply


async def ensure_stream(
    client: Client, config: dict[str, Any], *, what: str, reply_wait: float
) -> dict[str, Any]:
    """Create the stream `config` describes, or check the one that exists covers its
    subjects (an existing stream is never reconfigured behind its owner's back)."""
    name = config["name"]
    try:
        info = await js_request(
            client, f"$JS.API.STREAM.INFO.{name}", b"", what=what, reply_wait=reply_wait
        )
    except JetStreamError as exc:
        if exc.err_code != ERR_STREAM_NOT_FOUND:
            raise
        return await js_request(
            client, f"$JS.API.STREAM.CREATE.{name}", config, what=what, reply_wait=reply_wait
        )
    if not set(config["subjects"]) <= set(info["config"].get("subjects", ())):
        raise ConfigurationError(
            f"{what}: the JetStream stream {name!r} exists with subjects "
            f"{info['config'].get('subjects')}, not {config['subjects']}; choose another "
            "stream name or subject prefix"
        )
    return info


@dataclass(frozen=True, slots=True)
class RawMessage:
    """A stream message as read: its sequence, subject, headers and body."""

    seq: int
    subject: str
    headers: Mapping[str, str]
    data: bytes


async def direct_get(
    client: Client, stream: str, request: Mapping[str, Any], *, what: str, reply_wait: float
) -> RawMessage | None:
    """One message by `{"seq": n}` or `{"last_by_subj": filter}` (wildcards allowed), or
    None when there is none. A direct get (the stream has `allow_direct`) answers from any
    replica without the API's JSON wrapping."""
    try:
        msg = await client.request(
            f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), timeout=reply_wait
        )
    except Exception as exc:
        raise store_error(what, exc) from exc
    headers = msg.headers or {}
    status = headers.get("Status")
    if status == "404":
        return None
    if status is not None:
        raise JetStreamError(
            f"{what}: direct get failed with status {status} {headers.get('Description', '')}",
            int(status),
            0,
        )
    return RawMessage(int(headers["Nats-Sequence"]), headers["Nats-Subject"], headers, msg.data)


def _metadata(msg: Msg) -> tuple[int, int]:
    """(stream sequence, messages still pending) of a consumer delivery, from its reply
    subject (`$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>`, or the
    longer form with domain and account hash)."""
    tokens = msg.reply.split(".")
    if len(tokens) == 9:
        return int(tokens[5]), int(tokens[8])
    return int(tokens[7]), int(tokens[10])


async def fetch_messages(
    client: Client,
    stream: str,
    *,
    filter_subject: str,
    start_seq: int,
    batch: int,
    what: str,
    reply_wait: float,
    headers_only: bool = False,
) -> AsyncIterator[RawMessage]:
    """The stream's messages on `filter_subject` from sequence `start_seq` on, in order,
    through an ephemeral pull consumer (no acks, in memory, removed afterwards).

    It asks for at most the number of messages the consumer reported pending, so no request
    waits for messages that do not exist: the read ends at the end of the stream as it was
    when the last page was asked for, and holds at most `batch` messages at a time. Close the
    iterator (`contextlib.aclosing`) when leaving it early: that removes the consumer.
    `headers_only` delivers headers without bodies (scans that look at headers only)."""
    config = {
        "deliver_policy": "by_start_sequence",
        "opt_start_seq": max(start_seq, 1),
        "ack_policy": "none",
        "filter_subject": filter_subject,
        "inactive_threshold": 30_000_000_000,
        "mem_storage": True,
        "num_replicas": 1,
        "max_waiting": 4,
        "headers_only": headers_only,
    }
    info = await js_request(
        client,
        f"$JS.API.CONSUMER.CREATE.{stream}",
        {"stream_name": stream, "config": config},
        what=what,
        reply_wait=reply_wait,
    )
    consumer = info["name"]
    pending = int(info.get("num_pending", 0))
    if pending == 0:
        await _delete_consumer(client, stream, consumer)
        return
    # A page's messages are collected by the subscription's callback and handed over when
    # the page is complete (cheaper per message than `next_msg`, which starts a task each).
    page: list[Msg] = []
    ready = asyncio.Event()
    wanted = 0

    async def collect(msg: Msg) -> None:
        page.append(msg)
        if not msg.reply or len(page) >= wanted:  # full, or a status: nothing more now
            ready.set()

    inbox = client.new_inbox()
    try:
        sub = await client.subscribe(inbox, cb=collect)
    except Exception as exc:
        raise store_error(what, exc) from exc
    try:
        while pending > 0:
            wanted = min(batch, pending)
            page.clear()
            ready.clear()
            request = json.dumps({"batch": wanted, "no_wait": True}).encode()
            try:
                await client.publish(
                    f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}", request, reply=inbox
                )
                async with asyncio.timeout(reply_wait):
                    await ready.wait()
            except Exception as exc:
                raise store_error(what, exc) from exc
            delivered = [msg for msg in page if msg.reply]
            page.clear()
            if not delivered:
                break
            for msg in delivered:
                seq, pending = _metadata(msg)
                yield RawMessage(seq, msg.subject, msg.headers or {}, msg.data)
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        await _delete_consumer(client, stream, consumer)


async def _delete_consumer(client: Client, stream: str, consumer: str) -> None:
    """Remove a read's consumer; if that fails it expires by itself (`inactive_threshold`)."""
    with contextlib.suppress(Exception):
        await client.publish(f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}", b"")
