"""One `tenant_scope` object entered by many tasks and threads at once (a scope kept in a
module, a request object, a fixture): every entry restores what it replaced."""

from __future__ import annotations

import asyncio
import contextvars
import random
import threading
from uuid import UUID, uuid4

import pytest

from eventsource import InMemoryEventStore, SyncAggregateRepository, SyncEventStoreAdapter
from eventsource.exceptions import AggregateNotFoundError, TenantError, TenantMismatchError
from eventsource.multitenancy import TenantAggregateRepository, get_current_tenant, tenant_scope
from tests.multitenancy.test_multitenancy import Account, registry


async def test_one_scope_object_entered_by_200_interleaved_tasks() -> None:
    a, b = uuid4(), uuid4()
    shared = {a: tenant_scope(a), b: tenant_scope(b)}
    rng = random.Random(14)
    outer = uuid4()

    async def request(index: int) -> list[UUID | None]:
        mine, other = (a, b) if index % 2 else (b, a)
        seen: list[UUID | None] = []
        if index % 3:
            async with shared[mine]:
                seen.append(get_current_tenant())
                await asyncio.sleep(rng.choice((0.0, 0.001)))
                with shared[other]:  # the other shared scope, nested, entered by many too
                    await asyncio.sleep(0)
                    seen.append(get_current_tenant())
                seen.append(get_current_tenant())
                await asyncio.sleep(rng.choice((0.0, 0.001)))
                seen.append(get_current_tenant())
        else:
            with shared[mine]:
                await asyncio.sleep(rng.choice((0.0, 0.001)))
                seen += [get_current_tenant(), other, mine, get_current_tenant()]
        seen.append(get_current_tenant())
        return seen

    with tenant_scope(outer):
        results = await asyncio.gather(*(request(i) for i in range(200)))
        assert get_current_tenant() == outer
    for index, seen in enumerate(results):
        mine, other = (a, b) if index % 2 else (b, a)
        assert seen == [mine, other, mine, mine, outer], index
    assert get_current_tenant() is None


def test_one_scope_object_shared_by_threads_through_the_sync_adapter() -> None:
    """Eight threads, two shared scope objects, one tenant repository behind the sync
    adapter: each thread's calls run as its own tenant, and another's aggregate is refused."""
    a, b = uuid4(), uuid4()
    shared = {a: tenant_scope(a), b: tenant_scope(b)}
    accounts = {a: uuid4(), b: uuid4()}
    failures: list[str] = []
    with SyncEventStoreAdapter(InMemoryEventStore(registry=registry)) as adapter:
        repo = SyncAggregateRepository(adapter, TenantAggregateRepository(adapter.store, Account))

        def worker(tenant: UUID) -> None:
            other = b if tenant == a else a
            for _ in range(25):
                with shared[tenant]:
                    repo.execute(accounts[tenant], lambda acc: acc.deposit(1), create=True)
                    if get_current_tenant() != tenant:
                        failures.append(f"thread of {tenant} ran as {get_current_tenant()}")
                    if repo.exists(accounts[other]):
                        failures.append(f"{tenant} sees that {other}'s account exists")
                    try:
                        repo.load(accounts[other])
                    except (TenantMismatchError, AggregateNotFoundError):
                        pass  # not found: the other tenant has not deposited yet
                    else:
                        failures.append(f"{tenant} loaded {other}'s account")
                if get_current_tenant() is not None:
                    failures.append("a tenant stayed current after the scope")

        threads = [threading.Thread(target=worker, args=((a, b)[i % 2],)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []
        for tenant in (a, b):
            with tenant_scope(tenant):
                assert repo.load(accounts[tenant]).state.balance == 100
    assert get_current_tenant() is None


def test_exiting_a_scope_in_a_context_that_did_not_enter_it_raises() -> None:
    scope = tenant_scope(uuid4())
    context = contextvars.copy_context()
    context.run(scope.__enter__)
    with pytest.raises(TenantError, match="did not enter it"):
        scope.__exit__(None, None, None)
    context.run(scope.__exit__, None, None, None)
    assert context.run(get_current_tenant) is None
