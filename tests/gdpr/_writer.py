"""A writer process of the concurrent-first-key test.

    python -m tests.gdpr._writer POSTGRES_URL SCHEMA SUBJECT GO_FILE

Opens its own store, key store and vault, prints `ready`, waits for GO_FILE to exist, then
appends 5 events of SUBJECT (the subject's first key is created by whichever writer wins)
and prints the hex of the key it used.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from uuid import uuid4

from eventsource import PostgreSQLEventStore
from eventsource.gdpr import EncryptedEventStore, PersonalDataVault, PostgreSQLKeyStore
from tests.gdpr._events import CustomerRegistered, registry


def _start_line(go: str) -> None:
    """Wait for `go` to exist: a busy start line that every writer leaves within a ms."""
    while not os.path.exists(go):
        time.sleep(0.001)


async def main(url: str, schema: str, subject: str, go: str) -> None:
    inner = PostgreSQLEventStore.from_url(url, schema=schema, registry=registry)
    keys = PostgreSQLKeyStore.from_url(url, schema=schema)
    try:
        await keys.get_keys(["warm-up"])  # connected before the start
        store = EncryptedEventStore(inner, PersonalDataVault(keys), registry=registry)
        print("ready", flush=True)
        _start_line(go)
        for _ in range(5):
            event = CustomerRegistered(customer_id=subject, email="w@example.org", name="W")
            await store.append_events(uuid4(), "Customer", [event], 0)
        print((await keys.get_keys([subject]))[subject].hex(), flush=True)
    finally:
        await keys.close()
        await inner.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
