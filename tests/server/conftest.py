"""Helpers of the store service tests: a service on a free loopback port, a self-signed
certificate made for the test."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventsource import EventStore, GrpcStoreServer


@contextlib.asynccontextmanager
async def served(store: EventStore, **options: Any) -> AsyncIterator[GrpcStoreServer]:
    """`store` served on a free loopback port until the block ends (`server.port`)."""
    server = GrpcStoreServer(store, **options)
    await server.start("127.0.0.1:0")
    try:
        yield server
    finally:
        await server.close(grace=0.1)


@pytest.fixture(scope="session")
def certificate() -> tuple[bytes, bytes]:
    """(certificate, private key) in PEM, self-signed for localhost and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
