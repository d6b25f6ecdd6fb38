"""AES-GCM sealing of one personal value (the only module that imports `cryptography`).

A token is ``"gdpr:v1:"`` + unpadded URL-safe base64 of a 12-byte nonce followed by the
ciphertext and its 16-byte tag. The associated data binds it to the event id, the event type,
the field name and the subject, so a token copied into another field, another event or
another subject's event fails authentication instead of reading as that field's value.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from uuid import UUID

from eventsource._internal.optional import require
from eventsource.gdpr.values import SEALED_PREFIX

require("cryptography", extra="gdpr", feature="eventsource.gdpr encryption")

from cryptography.exceptions import InvalidTag  # noqa: E402
from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402

__all__ = ["KEY_SIZE", "InvalidToken", "associated_data", "open_token", "seal_value"]

KEY_SIZE = 32
"""Bytes of a subject key (AES-256)."""
_NONCE = 12


class InvalidToken(Exception):
    """A token that does not authenticate (the caller raises `DecryptionError`)."""


def associated_data(event_id: UUID, event_type: str, field: str, subject: str) -> bytes:
    """What a token is bound to: the event, its type, the field and the subject."""
    return "\x00".join(("eventsource-gdpr-v1", str(event_id), event_type, field, subject)).encode()


def seal_value(key: bytes, plaintext: bytes, aad: bytes) -> str:
    """The token of `plaintext`. The nonce is derived from the key, `aad` and the plaintext
    (a synthetic IV): sealing the same value of the same event again gives the same token,
    so re-appending an event stays idempotent, while two different messages get different
    nonces (a nonce is never reused with another plaintext, which AES-GCM cannot afford)."""
    nonce_key = hmac.digest(key, b"eventsource-gdpr-v1 nonce", "sha256")
    nonce = hmac.digest(nonce_key, len(aad).to_bytes(4, "big") + aad + plaintext, "sha256")[:_NONCE]
    sealed = AESGCM(key).encrypt(nonce, plaintext, aad)
    return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def open_token(key: bytes, token: str, aad: bytes) -> bytes:
    body = token[len(SEALED_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if len(raw) < _NONCE + 16:
            raise InvalidToken
        return AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], aad)
    except (InvalidTag, binascii.Error, ValueError) as exc:
        raise InvalidToken from exc
