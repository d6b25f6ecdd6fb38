"""AES-GCM sealing of one personal value (the only module that imports `cryptography`).

A token is ``"gdpr:v1:"`` + base64 of a 12-byte nonce followed by the ciphertext and its
16-byte tag. The associated data binds it to the event id, the event type, the field name
and the subject, so a token copied into another field, another event or another subject's
event fails authentication instead of reading as that field's value.
"""

from __future__ import annotations

import binascii
import functools
import hmac
from uuid import UUID

from eventsource._internal.optional import require
from eventsource.gdpr.values import SEALED_PREFIX

require("cryptography", extra="gdpr", feature="eventsource.gdpr encryption")

from cryptography.exceptions import InvalidTag  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

__all__ = [
    "KEY_SIZE",
    "InvalidToken",
    "associated_data",
    "associated_head",
    "open_token",
    "seal_value",
]

KEY_SIZE = 32
"""Bytes of a subject key (AES-256)."""
_NONCE = 12
_SKIP = len(SEALED_PREFIX)
_b2a = binascii.b2a_base64
_a2b = binascii.a2b_base64


class InvalidToken(Exception):
    """A token that does not authenticate (the caller raises `DecryptionError`)."""


def associated_head(event_id: UUID, event_type: str) -> bytes:
    """The part of the associated data shared by an event's fields (made once per event)."""
    return b"eventsource-gdpr-v1\x00" + event_id.bytes + b"\x00" + event_type.encode() + b"\x00"


def associated_data(head: bytes, field: str, subject: str) -> bytes:
    """What a token is bound to: the event and its type (`head`), the field, the subject."""
    return head + field.encode() + b"\x00" + subject.encode()


@functools.lru_cache(maxsize=1024)
def _aead(key: bytes) -> AESGCM:
    """The cipher of a key (its key schedule made once, not per value)."""
    return AESGCM(key)


@functools.lru_cache(maxsize=1024)
def _nonce_key(key: bytes) -> bytes:
    return hmac.digest(key, b"eventsource-gdpr-v1 nonce", "sha256")


def seal_value(key: bytes, plaintext: bytes, aad: bytes) -> str:
    """The token of `plaintext`. The nonce is derived from the key, `aad` and the plaintext
    (a synthetic IV): sealing the same value of the same event again gives the same token,
    so re-appending an event stays idempotent, while two different messages get different
    nonces (a nonce is never reused with another plaintext, which AES-GCM cannot afford)."""
    framed = len(aad).to_bytes(4, "big") + aad + plaintext
    nonce = hmac.digest(_nonce_key(key), framed, "sha256")[:_NONCE]
    sealed = _aead(key).encrypt(nonce, plaintext, aad)
    return SEALED_PREFIX + _b2a(nonce + sealed, newline=False).decode()


def open_token(key: bytes, token: str, aad: bytes) -> bytes:
    try:
        raw = _a2b(token[_SKIP:])
        if len(raw) < _NONCE + 16:
            raise InvalidToken
        return _aead(key).decrypt(raw[:_NONCE], raw[_NONCE:], aad)
    except (InvalidTag, binascii.Error, ValueError) as exc:
        raise InvalidToken from exc
