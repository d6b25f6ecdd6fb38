"""`KVBucket`: a JetStream key-value bucket with compare-and-set, for the NATS snapshot
store and checkpoint repository.

Both keep one small JSON document per key and must never let a late writer roll it back, so
every change is a compare-and-set on the key's revision (`change`): read the entry, let the
caller decide the new value from the old one, write it only if the revision is unchanged,
and decide again when another writer got in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from eventsource._internal import nats as jsapi
from eventsource._internal.optional import require

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.js.kv import KeyValue

__all__ = ["KVBucket", "decode_key", "encode_key"]

_KEY_SAFE = re.compile(r"[A-Za-z0-9_/-]")


def encode_key(text: str) -> str:
    """`text` as a KV key: letters, digits, `_`, `-` and `/` are kept, every other character
    (`.` and `=` too) becomes `=XXXXXX`, its code point in hex. Reversible."""
    return "".join(
        char if char.isascii() and _KEY_SAFE.match(char) else f"={ord(char):06x}" for char in text
    )


def decode_key(key: str) -> str:
    if "=" not in key:
        return key
    parts = key.split("=")
    return parts[0] + "".join(chr(int(part[:6], 16)) + part[6:] for part in parts[1:])


_Decide = Callable[[bytes | None], bytes | None]
"""Given the current value (None: no key), the value to write (None: write nothing)."""


class KVBucket:
    """A bucket on the server at `url`, created on first use (history 1, file storage)."""

    def __init__(
        self,
        url: str,
        bucket: str,
        *,
        owner: str,
        replicas: int = 1,
        request_timeout: float = 5.0,
        connect_timeout: float = 5.0,
    ) -> None:
        require("nats", extra="nats", feature=owner)
        self.url = url
        self.bucket = jsapi.check_name(bucket, "bucket name")
        self.owner = owner
        self._replicas = replicas
        self._timeout = request_timeout
        self._connect_timeout = connect_timeout
        self._client: Client | None = None
        self._kv: KeyValue | None = None
        self._lock = asyncio.Lock()

    def _what(self, action: str) -> str:
        return f"{self.owner} (bucket {self.bucket!r}): {action}"

    async def _bucket(self) -> KeyValue:
        kv = self._kv
        if kv is not None:
            return kv
        async with self._lock:
            if self._kv is None:
                errors = require("nats.js.errors", extra="nats", feature=self.owner)
                api = require("nats.js.api", extra="nats", feature=self.owner)
                client = await jsapi.connect(
                    self.url, name=self.owner, connect_timeout=self._connect_timeout
                )
                try:
                    js = client.jetstream(timeout=self._timeout)
                    try:
                        self._kv = await js.key_value(self.bucket)
                    except errors.BucketNotFoundError:
                        self._kv = await js.create_key_value(
                            api.KeyValueConfig(
                                bucket=self.bucket, history=1, replicas=self._replicas
                            )
                        )
                except BaseException as exc:
                    await client.close()
                    if isinstance(exc, Exception):
                        raise jsapi.store_error(self._what("open"), exc) from exc
                    raise
                self._client = client
            return self._kv

    async def get(self, key: str) -> tuple[bytes, int] | None:
        """(value, revision) of `key`, or None when it is missing or deleted."""
        errors = require("nats.js.errors", extra="nats", feature=self.owner)
        kv = await self._bucket()
        try:
            entry = await kv.get(key)
        except (errors.KeyNotFoundError, errors.KeyDeletedError):
            return None
        except Exception as exc:
            raise jsapi.store_error(self._what(f"read {key!r}"), exc) from exc
        if entry.value is None or entry.operation in ("DEL", "PURGE"):
            return None
        return entry.value, int(entry.revision or 0)

    async def change(self, key: str, decide: _Decide) -> bool:
        """Compare-and-set: write `decide(current)` unless it is None, only if nobody wrote
        `key` since it was read (else read and decide again). True when it wrote."""
        errors = require("nats.js.errors", extra="nats", feature=self.owner)
        kv = await self._bucket()
        while True:
            current = await self.get(key)
            value = decide(None if current is None else current[0])
            if value is None:
                return False
            try:
                if current is None:
                    await kv.create(key, value)
                else:
                    await kv.update(key, value, last=current[1])
            except errors.KeyWrongLastSequenceError:
                continue
            except errors.BadRequestError as exc:
                if exc.err_code == jsapi.ERR_WRONG_LAST_SEQUENCE:
                    continue
                raise jsapi.store_error(self._what(f"write {key!r}"), exc) from exc
            except Exception as exc:
                raise jsapi.store_error(self._what(f"write {key!r}"), exc) from exc
            return True

    async def put(self, key: str, value: bytes) -> None:
        kv = await self._bucket()
        try:
            await kv.put(key, value)
        except Exception as exc:
            raise jsapi.store_error(self._what(f"write {key!r}"), exc) from exc

    async def delete(self, key: str, revision: int | None = None) -> bool:
        """Delete `key` (only at `revision`, when given); False when the revision moved."""
        errors = require("nats.js.errors", extra="nats", feature=self.owner)
        kv = await self._bucket()
        try:
            await kv.delete(key, last=revision)
        except errors.KeyWrongLastSequenceError:
            return False
        except errors.BadRequestError as exc:
            if exc.err_code == jsapi.ERR_WRONG_LAST_SEQUENCE:
                return False
            raise jsapi.store_error(self._what(f"delete {key!r}"), exc) from exc
        except Exception as exc:
            raise jsapi.store_error(self._what(f"delete {key!r}"), exc) from exc
        return True

    async def keys(self) -> list[str]:
        errors = require("nats.js.errors", extra="nats", feature=self.owner)
        kv = await self._bucket()
        try:
            return list(await kv.keys())
        except errors.NoKeysError:
            return []
        except Exception as exc:
            raise jsapi.store_error(self._what("list keys"), exc) from exc

    async def close(self) -> None:
        async with self._lock:
            client, self._client, self._kv = self._client, None, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()
