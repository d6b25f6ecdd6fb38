"""The pytest plugin's fixtures, in a pytest run inside this one (`pytester`), under
pytest-asyncio's auto and strict modes, on the in-memory store and on PostgreSQL."""

from __future__ import annotations

import asyncio
import re

# Imported here, not in a test: pytester takes the imported C extensions out of sys.modules
# after each test, and importing one a second time in this process crashes it.
import asyncpg
import pytest

from tests.docs.test_docs import DOCS, blocks

# A user's test module: a domain, and tests using every fixture of the plugin.
USER_TESTS = """
from decimal import Decimal
from uuid import uuid4

import pytest
from pydantic import BaseModel

from eventsource import (
    DeclarativeAggregate, DomainEvent, InMemoryReadModelRepository, ReadModelProjection,
    handles,
)
from eventsource.testing import (
    Harness, RecordingEventBus, assert_event_published, assert_stream,
)

MARK = {mark}


class PluginAccountOpened(DomainEvent):
    owner: str


class PluginState(BaseModel):
    owner: str = ""


class PluginAccount(DeclarativeAggregate[PluginState]):
    def open(self, owner):
        self.apply_event(PluginAccountOpened(owner=owner))

    @handles(PluginAccountOpened)
    def _opened(self, event):
        self.state.owner = event.owner


class Owner(BaseModel):
    id: str
    name: str


class Owners(ReadModelProjection[Owner]):
    def __init__(self):
        super().__init__(InMemoryReadModelRepository(Owner))

    @handles(PluginAccountOpened)
    async def _opened(self, event):
        await self.models.save(Owner(id=str(event.aggregate_id), name=event.owner))


@MARK
async def test_repository_factory_store_and_bus(repository_factory, event_store, event_bus):
    assert isinstance(event_bus, RecordingEventBus)
    accounts = repository_factory(PluginAccount)
    assert repository_factory.create_repository(PluginAccount, "Other").aggregate_type == "Other"
    account_id = uuid4()
    await accounts.execute(account_id, lambda a: a.open("ann"), create=True)
    await assert_stream(event_store, account_id, [PluginAccountOpened(owner="ann")])
    assert_event_published(event_bus, PluginAccountOpened(owner="ann"))
    print("STORE", type(event_store).__name__, getattr(event_store, "schema", None))


@MARK
async def test_harness(harness):
    assert isinstance(harness, Harness)
    owners = Owners()
    harness.subscribe(owners)
    account_id = uuid4()
    await harness.repository(PluginAccount).execute(
        account_id, lambda a: a.open("bob"), create=True
    )
    await harness.settle()
    assert await owners.models.get(str(account_id)) == Owner(id=str(account_id), name="bob")


@MARK
async def test_each_test_gets_a_new_store(event_store):
    assert [e async for e in event_store.read_all()] == []
    await event_store.append_events(uuid4(), "PluginAccount", [PluginAccountOpened(owner="x")], -1)


@MARK
async def test_a_second_test_sees_none_of_it(event_store):
    assert [e async for e in event_store.read_all()] == []
"""

STRICT = "pytest.mark.asyncio"
AUTO = "lambda test: test"


def _run(pytester: pytest.Pytester, mode: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_user=USER_TESTS.format(mark=STRICT if mode == "strict" else AUTO))
    return pytester.runpytest_subprocess(
        "-p", "no:randomly", "-p", "no:cacheprovider", "-o", f"asyncio_mode={mode}", "-s", *args
    )


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_the_fixtures_work_in_both_pytest_asyncio_modes(
    pytester: pytest.Pytester, mode: str
) -> None:
    result = _run(pytester, mode)
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*STORE InMemoryEventStore None*"])


@pytest.mark.postgresql
def test_the_store_url_option_picks_postgresql_with_a_schema_per_test(
    pytester: pytest.Pytester, postgres_url: str
) -> None:
    result = _run(pytester, "auto", "--eventsource-store-url", postgres_url)
    result.assert_outcomes(passed=4)
    schemas = re.findall(r"STORE PostgreSQLEventStore (es_test_\w+)", result.stdout.str())
    assert len(schemas) == 1

    async def exists(schema: str) -> bool:
        connection = await asyncpg.connect(postgres_url)
        try:
            query = "SELECT count(*) FROM pg_namespace WHERE nspname = $1"
            return bool(await connection.fetchval(query, schema))
        finally:
            await connection.close()

    assert not asyncio.run(exists(schemas[0])), f"the fixture left {schemas[0]} behind"


def test_the_store_url_can_come_from_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTSOURCE_TEST_STORE_URL", "sqlite:///:memory:")
    result = _run(pytester, "strict")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["*STORE SQLiteEventStore None*"])


def test_a_conftest_fixture_of_the_same_name_wins(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def event_store():
            return "the project's own"
        """
    )
    pytester.makepyfile(
        """
        def test_own(event_store):
            assert event_store == "the project's own"
        """
    )
    pytester.runpytest_subprocess("-p", "no:randomly").assert_outcomes(passed=1)


def _documented_example() -> tuple[str, str]:
    """docs/testing.md's application (its first python block) and its plugin example."""
    found = blocks(DOCS / "testing.md")
    library = next(b for b in found if b.language == "python" and "class Book(" in b.source)
    tests = next(
        b for b in found if b.language == "py" and b.source.startswith("# tests/test_library.py")
    )
    return library.source, tests.source


@pytest.mark.parametrize("mode", ["auto", "strict"])
def test_the_documented_plugin_example_passes(pytester: pytest.Pytester, mode: str) -> None:
    library, tests = _documented_example()
    if mode == "strict":  # as the page says: strict mode wants the tests marked
        tests = "import pytest\npytestmark = pytest.mark.asyncio\n" + tests
    pytester.makepyfile(library=library, test_library=tests)
    result = pytester.runpytest_subprocess("-p", "no:randomly", "-o", f"asyncio_mode={mode}")
    result.assert_outcomes(passed=2)
