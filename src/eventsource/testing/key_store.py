"""`KeyStoreContract`: the behaviour every GDPR `KeyStore` backend must have.

A backend's test module subclasses it and supplies `create_store`; every store it returns
within one test reaches the same storage (another connection to the same database or file),
so that concurrent creators can be tested::

    class TestMyKeys(KeyStoreContract):
        async def create_store(self) -> KeyStore:
            return MyKeyStore(...)
"""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from eventsource.gdpr.interface import KeyStore

__all__ = ["KeyStoreContract"]


class KeyStoreContract(ABC):
    """Abstract pytest suite; subclasses implement `create_store`."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_store(self) -> KeyStore:
        """A key store on this test's storage (empty at the test's start)."""

    @pytest.fixture
    async def keys(self) -> AsyncIterator[KeyStore]:
        store = await self.create_store()
        try:
            yield store
        finally:
            await store.close()

    async def test_unknown_subjects_have_no_key(self, keys: KeyStore) -> None:
        assert await keys.get_keys([f"nobody-{uuid4()}"]) == {}
        assert await keys.get_keys([]) == {}
        assert await keys.get_or_create_keys([]) == {}

    async def test_created_keys_are_stable_and_distinct(self, keys: KeyStore) -> None:
        subjects = [f"customer-{uuid4()}" for _ in range(3)]
        created = await keys.get_or_create_keys(subjects)
        assert sorted(created) == sorted(subjects)
        assert all(isinstance(k, bytes) and len(k) == 32 for k in created.values())
        assert len(set(created.values())) == 3
        assert await keys.get_or_create_keys(subjects) == created
        assert await keys.get_keys([*subjects, "missing"]) == created

    async def test_a_mix_of_known_and_new_subjects(self, keys: KeyStore) -> None:
        known = f"known-{uuid4()}"
        first = await keys.get_or_create_keys([known])
        new = f"new-{uuid4()}"
        both = await keys.get_or_create_keys([new, known, known])
        assert both[known] == first[known]
        assert set(both) == {known, new}

    async def test_delete_forgets_the_key(self, keys: KeyStore) -> None:
        subject, other = f"s-{uuid4()}", f"o-{uuid4()}"
        created = await keys.get_or_create_keys([subject, other])
        assert await keys.delete_key(subject) is True
        assert await keys.delete_key(subject) is False
        assert await keys.get_keys([subject, other]) == {other: created[other]}
        again = await keys.get_or_create_keys([subject])
        assert again[subject] != created[subject]  # a new key: the old data stays unreadable

    async def test_subjects_are_any_text(self, keys: KeyStore) -> None:
        subjects = ['Zoë "quoted" \' \\ ; DROP TABLE x', "🙂" * 40, "a" * 2000, " ", "1"]
        subjects = [f"{s}-{uuid4()}" for s in subjects]
        created = await keys.get_or_create_keys(subjects)
        assert await keys.get_keys(subjects) == created
        assert len(created) == len(subjects)

    async def test_many_subjects_in_one_call(self, keys: KeyStore) -> None:
        subjects = [f"bulk-{i}-{uuid4()}" for i in range(1200)]
        created = await keys.get_or_create_keys(subjects)
        assert len(created) == 1200
        assert await keys.get_keys(subjects) == created

    async def test_concurrent_creators_agree_on_one_key(self, keys: KeyStore) -> None:
        """Several store objects (connections) create the first keys of the same subjects
        at once, in different orders: every one of them gets the same key per subject."""
        subjects = [f"race-{i}-{uuid4()}" for i in range(20)]
        stores = [keys, *[await self.create_store() for _ in range(5)]]
        try:
            orders = []
            for n in range(len(stores) * 2):
                order = list(subjects)
                random.Random(n).shuffle(order)
                orders.append(order)
            results = await asyncio.gather(
                *(stores[n % len(stores)].get_or_create_keys(o) for n, o in enumerate(orders))
            )
        finally:
            for store in stores[1:]:
                await store.close()
        assert all(result == results[0] for result in results)
        assert await keys.get_keys(subjects) == results[0]
