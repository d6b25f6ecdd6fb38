"""Cached and snapshotted states come back as they were, whatever the state model's shape.

A cache entry and a snapshot keep the state as JSON (`snapshot_state`) and restore it with
the state model. Models with aliases, computed fields or fields left out of the JSON used to
restore to a different state (or fail): the aggregate then decided on defaults.
"""

from __future__ import annotations

import logging
from uuid import uuid4

import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field
from pydantic.alias_generators import to_camel

from eventsource import (
    AggregateCache,
    AggregateRepository,
    DeclarativeAggregate,
    DomainEvent,
    EventRegistry,
    InMemoryEventStore,
    InMemorySnapshotStore,
    SnapshotPolicy,
    handles,
)
from eventsource.aggregates import repository

registry = EventRegistry()


class Joined(DomainEvent, registry=registry):
    member: str


class Camel(BaseModel):
    """Every field aliased (camelCase), no populate_by_name."""

    model_config = ConfigDict(alias_generator=to_camel)
    last_member: str = ""
    member_count: int = 0


class Counted(BaseModel):
    """A computed field, and extra fields refused."""

    model_config = ConfigDict(extra="forbid")
    member_count: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        return f"{self.member_count} members"


class Secretive(BaseModel):
    """A field left out of the JSON: the state cannot be kept as JSON."""

    member_count: int = 0
    last_member: str = Field("", exclude=True)


class CamelClub(DeclarativeAggregate[Camel]):
    @handles(Joined)
    def _joined(self, event: Joined) -> None:
        self.state.last_member = event.member
        self.state.member_count += 1


class CountedClub(DeclarativeAggregate[Counted]):
    @handles(Joined)
    def _joined(self, event: Joined) -> None:
        self.state.member_count += 1


class SecretiveClub(DeclarativeAggregate[Secretive]):
    @handles(Joined)
    def _joined(self, event: Joined) -> None:
        self.state.last_member = event.member
        self.state.member_count += 1


def join(member: str):  # type: ignore[no-untyped-def]
    return lambda club: club.apply_event(Joined(member=member))


@pytest.mark.parametrize("kind", ["cache", "snapshots"])
@pytest.mark.parametrize("club", [CamelClub, CountedClub, SecretiveClub])
async def test_a_state_comes_back_from_cache_or_snapshot_as_it_was(
    club: type[DeclarativeAggregate[BaseModel]],
    kind: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the warning comes once per state model and process: as if this were the first time
    monkeypatch.setattr(repository, "_UNFAITHFUL_STATES", set())
    store = InMemoryEventStore(registry=registry)
    options: dict[str, object] = (
        {"cache": AggregateCache()}
        if kind == "cache"
        else {"snapshot_store": InMemorySnapshotStore(), "snapshot_policy": SnapshotPolicy.every(1)}
    )
    repo = AggregateRepository(store, club, **options)  # type: ignore[arg-type]
    plain = AggregateRepository(store, club)
    stream = uuid4()
    with caplog.at_level(logging.WARNING, logger="eventsource.aggregates.repository"):
        for member in ["ann", "bob", "cy"]:
            await repo.execute(stream, join(member), create=True)
        loaded = await repo.load(stream)
    replayed = await plain.load(stream)
    assert loaded.state.__dict__ == replayed.state.__dict__  # excluded fields included
    assert loaded.state.__dict__["member_count"] == 3
    kept = repo.stats.cache_hits if kind == "cache" else repo.stats.snapshot_loads
    if club is SecretiveClub:  # not kept at all, and said so
        assert kept == 0
        assert "does not read back from its JSON" in caplog.text
    else:
        assert kept > 0
