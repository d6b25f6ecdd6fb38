"""Forgetting a subject, end to end on a real database: after `forget`, its plaintext is
nowhere in the database (every table's text scanned), while the rest keeps working.

One scenario, run on PostgreSQL and on SQLite (subclasses supply the backends only): an
aggregate repository with snapshots on an `EncryptedEventStore` whose wrapped store writes an
outbox; a subscription feeding a read model and one dead-lettering every event of the
subject, both reading the sealed store through `OpenedProjection`.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel

from eventsource import (
    AggregateRepository,
    DeclarativeAggregate,
    EventStore,
    SnapshotPolicy,
    SubscriptionConfig,
    SubscriptionManager,
    handles,
)
from eventsource.exceptions import DecryptionError
from eventsource.gdpr import (
    EncryptedEventStore,
    KeyStore,
    OpenedProjection,
    PersonalDataVault,
    is_erased,
)
from eventsource.projections import DeclarativeProjection
from eventsource.readmodels import ReadModelProjection, ReadModelRepository
from eventsource.snapshots import SnapshotStore
from tests.gdpr._events import PLAIN_EMAIL, PLAIN_NAME, CustomerRegistered, EmailChanged

NEW_EMAIL = "zoe.second.address@example.org"
SECRETS = [PLAIN_EMAIL, "Secretname", NEW_EMAIL, "1979-02-03"]
KEPT_EMAIL = "kept.customer@example.org"


class CustomerState(BaseModel):
    customer_id: str = ""
    email: str = ""
    name: str = ""


class Customer(DeclarativeAggregate[CustomerState]):
    aggregate_type = "Customer"

    def register(self, customer_id: str, email: str, name: str) -> None:
        born = date(1979, 2, 3)
        self.apply_event(
            CustomerRegistered(customer_id=customer_id, email=email, name=name, birthday=born)
        )

    def change_email(self, email: str) -> None:
        self.apply_event(EmailChanged(customer_id=self.state.customer_id, email=email))

    @handles(CustomerRegistered)
    def _registered(self, event: CustomerRegistered) -> None:
        self.state = CustomerState(
            customer_id=event.customer_id, email=event.email, name=event.name
        )

    @handles(EmailChanged)
    def _changed(self, event: EmailChanged) -> None:
        self.state.email = event.email or ""


class CustomerView(BaseModel):
    id: UUID
    customer_id: str
    email: str


class Directory(ReadModelProjection[CustomerView]):
    @handles(CustomerRegistered)
    async def _registered(self, event: CustomerRegistered) -> None:
        await self.models.save(
            CustomerView(id=event.aggregate_id, customer_id=event.customer_id, email=event.email)
        )

    @handles(EmailChanged)
    async def _changed(self, event: EmailChanged) -> None:
        def change(view: CustomerView | None) -> CustomerView | None:
            return None if view is None else view.model_copy(update={"email": event.email})

        await self.update(event.aggregate_id, change)


class Rejecting(DeclarativeProjection):
    """Fails on every event of one subject: its events end up as dead letters."""

    def __init__(self, subject: str) -> None:
        super().__init__()
        self.subject = subject

    @handles(CustomerRegistered)
    def _registered(self, event: CustomerRegistered) -> None:
        if event.customer_id == self.subject:
            raise RuntimeError("this projection refuses the subject")


@dataclass
class Backends:
    store: EventStore
    """The wrapped store (sealed), writing an outbox."""
    snapshots: SnapshotStore
    keys: KeyStore
    checkpoints: Any
    dead_letters: Any
    views: ReadModelRepository[CustomerView]


class ForgetScenario(ABC):
    @abstractmethod
    def backends(self) -> AsyncIterator[Backends]:
        """The backends on one database, closed when the iterator ends."""

    @abstractmethod
    async def database_text(self) -> str:
        """Every row of every table of the test's database, as text."""

    @abstractmethod
    async def swap_email_and_name(self, aggregate_id: UUID) -> None:
        """Swap the stored (sealed) email and name of the stream's events, in SQL."""

    async def test_a_value_moved_in_the_database_is_a_typed_error(self) -> None:
        """Someone with database access swaps two sealed fields of a row: reading it raises
        DecryptionError, and a subscription parks it as a dead letter (not a crash, not
        garbage in the read model)."""
        async for backends in self.backends():
            vault = PersonalDataVault(backends.keys)
            store = EncryptedEventStore(backends.store, vault, registry=_registry())
            customers = AggregateRepository(store, Customer)
            victim, other = uuid4(), uuid4()
            await customers.execute(
                victim, lambda c: c.register("t-1", PLAIN_EMAIL, PLAIN_NAME), create=True
            )
            await customers.execute(
                other, lambda c: c.register("t-2", KEPT_EMAIL, "Kept Person"), create=True
            )
            await self.swap_email_and_name(victim)
            with pytest.raises(DecryptionError) as raised:
                await customers.load(victim)
            assert (raised.value.subject, raised.value.event_type) == ("t-1", "CustomerRegistered")
            assert (await customers.load(other)).state.email == KEPT_EMAIL

            await self._project(backends, vault, "nobody")
            letters = await backends.dead_letters.list()
            assert sorted((x.subscription, x.event_type) for x in letters) == [
                ("Directory", "CustomerRegistered"),
                ("Rejecting", "CustomerRegistered"),
            ]
            assert all(x.error.startswith("DecryptionError") for x in letters)
            assert await backends.views.get(victim) is None
            assert (await backends.views.get(other)).email == KEPT_EMAIL  # type: ignore[union-attr]

    async def _project(self, backends: Backends, vault: PersonalDataVault, subject: str) -> None:
        config = SubscriptionConfig(max_attempts=1, poll_interval=0.05, circuit_breaker=None)
        async with SubscriptionManager(
            backends.store, backends.checkpoints, backends.dead_letters, config=config
        ) as manager:
            subscriptions = [
                manager.subscribe(OpenedProjection(Directory(backends.views), vault)),
                manager.subscribe(OpenedProjection(Rejecting(subject), vault)),
            ]
            end = await backends.store.current_position()
            for subscription in subscriptions:
                await subscription.wait_for(end, timeout=30)

    async def test_forgotten_plaintext_is_nowhere_in_the_database(self) -> None:
        gone, kept = f"gone-{uuid4()}", f"kept-{uuid4()}"
        async for backends in self.backends():
            vault = PersonalDataVault(backends.keys)
            store = EncryptedEventStore(backends.store, vault, registry=_registry())
            customers = AggregateRepository(
                store,
                Customer,
                snapshot_store=backends.snapshots,
                snapshot_policy=SnapshotPolicy.every(1),
            )
            gone_id, kept_id = uuid4(), uuid4()
            await customers.execute(
                gone_id, lambda c: c.register(gone, PLAIN_EMAIL, PLAIN_NAME), create=True
            )
            await customers.execute(gone_id, lambda c: c.change_email(NEW_EMAIL))
            await customers.execute(
                kept_id, lambda c: c.register(kept, KEPT_EMAIL, "Kept Person"), create=True
            )
            await self._project(backends, vault, gone)
            assert (await backends.views.get(gone_id)).email == NEW_EMAIL  # type: ignore[union-attr]
            letters = await backends.dead_letters.list()
            assert [letter.event_type for letter in letters] == ["CustomerRegistered"]
            assert "gdpr:v1:" in letters[0].payload  # dead letters keep ciphertext
            before = await self.database_text()
            # the scan can fail: before forgetting, the snapshot and the read model hold it
            assert NEW_EMAIL in before
            assert "Secretname" in before

            exported = await store.export(gone)
            assert [e.event_type for e in exported.events] == ["CustomerRegistered", "EmailChanged"]
            assert {r["value"] for r in exported.personal_data() if r["field"] == "email"} == {
                PLAIN_EMAIL,
                NEW_EMAIL,
            }

            report = await store.forget(gone, snapshots=backends.snapshots)
            assert report.key_deleted
            assert report.aggregate_ids == {gone_id}
            assert report.snapshots_deleted == 1
            # rebuild the read model from the events
            await backends.views.clear()
            for name in ("Directory", "Rejecting"):
                await backends.checkpoints.reset(name)
            await self._project(backends, vault, gone)

            after = await self.database_text()
            leaked = [secret for secret in SECRETS if secret in after]
            assert leaked == []
            assert KEPT_EMAIL in after  # the other subject is untouched

            view = await backends.views.get(gone_id)
            assert view is not None
            assert is_erased(view.email) or view.email == "[erased]"
            assert view.customer_id == gone  # the rest of the event stays readable
            assert (await backends.views.get(kept_id)).email == KEPT_EMAIL  # type: ignore[union-attr]
            reloaded = await AggregateRepository(
                store, Customer, snapshot_store=backends.snapshots
            ).load(gone_id)
            assert (reloaded.version, reloaded.state.email) == (2, "[erased]")
            assert reloaded.state.customer_id == gone
            erased = await store.export(gone)
            assert all(is_erased(r["value"]) for r in erased.personal_data())
            # the dead letter still reads: as erased
            letter = (await backends.dead_letters.list())[0]
            [opened] = await vault.open([CustomerRegistered.model_validate_json(letter.payload)])
            assert is_erased(opened.email)
            assert opened.plan == "basic"


def _registry() -> Any:
    from tests.gdpr._events import registry

    return registry


@pytest.mark.postgresql
class TestForgetOnPostgreSQL(ForgetScenario):
    @pytest.fixture(autouse=True)
    def _where(self, postgres_url: str, schema: str) -> None:
        self.url, self.schema = postgres_url, schema

    async def backends(self) -> AsyncIterator[Backends]:
        from eventsource import (
            PostgreSQLCheckpointRepository,
            PostgreSQLDLQRepository,
            PostgreSQLEventStore,
        )
        from eventsource.gdpr import PostgreSQLKeyStore
        from eventsource.readmodels import PostgreSQLReadModelRepository
        from eventsource.snapshots import PostgreSQLSnapshotStore

        store = PostgreSQLEventStore.from_url(
            self.url, schema=self.schema, registry=_registry(), outbox=True
        )
        await store.create_schema()
        engine = store.engine
        views = PostgreSQLReadModelRepository(CustomerView, engine, schema=self.schema)
        await views.create_table()
        parts = Backends(
            store,
            PostgreSQLSnapshotStore(engine, schema=self.schema),
            PostgreSQLKeyStore(engine, schema=self.schema),
            PostgreSQLCheckpointRepository(engine, schema=self.schema),
            PostgreSQLDLQRepository(engine, schema=self.schema, event_store=store),
            views,
        )
        try:
            yield parts
        finally:
            for closing in (parts.views, parts.dead_letters, parts.checkpoints, parts.keys):
                await closing.close()
            await parts.snapshots.close()
            await store.close()

    async def swap_email_and_name(self, aggregate_id: UUID) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            await conn.execute(
                f'UPDATE "{self.schema}".events SET payload = jsonb_set(jsonb_set(payload,'
                " '{email}', payload->'name'), '{name}', payload->'email')"
                " WHERE aggregate_id = $1",
                aggregate_id,
            )
        finally:
            await conn.close()

    async def database_text(self) -> str:
        import asyncpg

        conn = await asyncpg.connect(self.url)
        try:
            tables = await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = $1",
                self.schema,
            )
            assert len(tables) >= 8  # events, snapshots, outbox, dead letters, ...
            rows = []
            for (table,) in tables:
                quoted = f'"{self.schema}"."{table}"'
                rows += [r[0] for r in await conn.fetch(f"SELECT CAST(t AS text) FROM {quoted} t")]
            return "\n".join(rows)
        finally:
            await conn.close()


@pytest.mark.sqlite
class TestForgetOnSQLite(ForgetScenario):
    @pytest.fixture(autouse=True)
    def _file(self, tmp_path: Path) -> None:
        self.path = tmp_path / "app.db"

    async def backends(self) -> AsyncIterator[Backends]:
        from eventsource import SQLiteCheckpointRepository, SQLiteDLQRepository, SQLiteEventStore
        from eventsource.gdpr import SQLiteKeyStore
        from eventsource.readmodels import SQLiteReadModelRepository
        from eventsource.snapshots import SQLiteSnapshotStore

        store = SQLiteEventStore(self.path, registry=_registry(), outbox=True)
        parts = Backends(
            store,
            SQLiteSnapshotStore(self.path),
            SQLiteKeyStore(self.path),
            SQLiteCheckpointRepository(self.path),
            SQLiteDLQRepository(self.path, event_store=store),
            SQLiteReadModelRepository(CustomerView, self.path),
        )
        try:
            yield parts
        finally:
            for closing in (parts.views, parts.dead_letters, parts.checkpoints, parts.keys):
                await closing.close()
            await parts.snapshots.close()
            await store.close()

    async def swap_email_and_name(self, aggregate_id: UUID) -> None:
        def swap() -> None:
            with sqlite3.connect(self.path) as conn:
                conn.execute(
                    "UPDATE events SET payload = json_set(payload, '$.email',"
                    " json_extract(payload, '$.name'), '$.name', json_extract(payload, '$.email'))"
                    " WHERE aggregate_id = ?",
                    (str(aggregate_id),),
                )

        await asyncio.to_thread(swap)

    async def database_text(self) -> str:
        def scan() -> str:
            with sqlite3.connect(self.path) as conn:
                tables = [
                    r[0]
                    for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                ]
                assert len(tables) >= 6
                rows = []
                for table in tables:
                    quoted = '"' + table.replace('"', '""') + '"'
                    for row in conn.execute(f"SELECT * FROM {quoted}"):
                        rows.append(
                            json.dumps(
                                [v.decode("latin-1") if isinstance(v, bytes) else v for v in row],
                                ensure_ascii=False,
                                default=str,
                            )
                        )
                return "\n".join(rows)

        return await asyncio.to_thread(scan)
