"""`ReadModelRepositoryContract`: the behaviour every `ReadModelRepository` backend must have.

A backend's test module subclasses it and supplies an empty repository for a model class, and
a way to overwrite a stored row (to check that a corrupt row is reported)::

    class TestMyReadModels(ReadModelRepositoryContract):
        async def create_repository(self, model: type[TModel]) -> ReadModelRepository[TModel]:
            return MyReadModelRepository(model, ...)

        async def corrupt(self, repository: ReadModelRepository[Any], id: str, data: str) -> None:
            ...  # store `data` as the JSON of the row `id`, bypassing the repository
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import pytest
from pydantic import BaseModel, ConfigDict, Field, computed_field
from pydantic.alias_generators import to_camel

from eventsource.exceptions import SerializationError
from eventsource.readmodels.interface import ReadModelRepository, TModel
from eventsource.testing._cancel import PAUSES, cancel_in_flight

__all__ = [
    "ContractHidden",
    "ContractItem",
    "ContractLabel",
    "ContractRenamed",
    "ContractTotal",
    "ReadModelRepositoryContract",
]

ODD_TEXT = 'Zoë "quoted" \\ it\'s; DROP TABLE x; -- 🚀 ü'


class ContractItem(BaseModel):
    """The read model most contract tests keep."""

    id: UUID
    name: str
    count: int
    active: bool
    tags: list[str] = []
    note: str | None = None


class ContractLabel(BaseModel):
    """A read model with a str id whose JSON keys are aliases (camelCase)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    display_name: str
    sort_rank: int = 0


class ContractTotal(BaseModel):
    """A read model with a computed field, extra fields refused: the computed value is not
    stored (it would be refused on the way back) and is computed again."""

    model_config = ConfigDict(extra="forbid")
    id: UUID
    unit_cents: int
    quantity: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_cents(self) -> int:
        return self.unit_cents * self.quantity


class ContractRenamed(BaseModel):
    """A field only a serialization alias names: its JSON cannot read back."""

    id: UUID
    full_name: str = Field(serialization_alias="fullName")


class ContractHidden(BaseModel):
    """A field left out of the JSON, without a default: its JSON cannot read back."""

    id: UUID
    secret: str = Field(exclude=True)


def _item(name: str = "item", count: int = 0, active: bool = True, **fields: Any) -> ContractItem:
    return ContractItem(id=uuid4(), name=name, count=count, active=active, **fields)


def _ids(models: list[ContractItem]) -> list[UUID]:
    return [model.id for model in models]


def _by_id(*models: ContractItem) -> list[UUID]:
    return sorted((model.id for model in models), key=str)


class ReadModelRepositoryContract(ABC):
    """Abstract pytest suite; subclasses implement `create_repository` and `corrupt`."""

    pytestmark = pytest.mark.asyncio

    @abstractmethod
    async def create_repository(self, model: type[TModel]) -> ReadModelRepository[TModel]:
        """A new, empty repository of `model`."""

    @abstractmethod
    async def corrupt(self, repository: ReadModelRepository[Any], id: str, data: str) -> None:
        """Overwrite the stored JSON of the row `id` with `data` (a JSON object), bypassing the
        repository, as a change of the model class or a stray write would leave it."""

    @pytest.fixture
    async def items(self) -> AsyncIterator[ReadModelRepository[ContractItem]]:
        repository = await self.create_repository(ContractItem)
        try:
            yield repository
        finally:
            await repository.close()

    @pytest.fixture
    async def four(self, items: ReadModelRepository[ContractItem]) -> list[ContractItem]:
        saved = [
            _item("ann", 1, True),
            _item("bob", 2, False, note="x"),
            _item("cy", 1, False),
            _item("dee", 10, True, note="1", tags=["vip"]),
        ]
        for model in saved:
            await items.save(model)
        return saved

    async def test_missing_model_is_none(self, items: ReadModelRepository[ContractItem]) -> None:
        assert await items.get(uuid4()) is None
        assert await items.query() == []
        assert await items.count() == 0
        await items.save(_item())
        assert await items.get(uuid4()) is None
        assert await items.get("not-a-uuid") is None

    async def test_round_trip_keeps_every_field(
        self, items: ReadModelRepository[ContractItem]
    ) -> None:
        saved = _item(ODD_TEXT, 7, False, tags=["a", ODD_TEXT], note=ODD_TEXT)
        await items.save(saved)
        assert await items.get(saved.id) == saved
        assert await items.get(str(saved.id)) == saved

    async def test_save_replaces_the_model_of_the_same_id(
        self, items: ReadModelRepository[ContractItem]
    ) -> None:
        first = _item("first", 1, True, tags=["a", "b"], note="kept?")
        other = _item("other")
        await items.save(first)
        await items.save(other)
        second = first.model_copy(update={"name": "second", "tags": [], "note": None})
        await items.save(second)
        assert await items.get(first.id) == second
        assert await items.get(other.id) == other
        assert await items.count() == 2

    async def test_a_cancelled_call_leaves_the_repository_usable_and_saves_all_or_nothing(
        self, items: ReadModelRepository[ContractItem]
    ) -> None:
        for pauses in PAUSES:
            batch = [_item(f"batch-{n}") for n in range(5)]
            await cancel_in_flight(items.save_many(batch), pauses)
            await cancel_in_flight(items.save(_item("single")), pauses)
            later = _item("later")
            await items.save(later)
            assert await items.get(later.id) == later
            found = [await items.get(model.id) for model in batch]
            assert found in ([None] * len(batch), batch)
        await items.clear()
        assert await items.count() == 0

    async def test_save_many(self, items: ReadModelRepository[ContractItem]) -> None:
        await items.save_many([])
        models = [_item(f"n{n}", n) for n in range(5)]
        later = models[2].model_copy(update={"count": 99})
        await items.save_many([*models, later])
        assert await items.count() == 5
        assert await items.get(models[2].id) == later
        assert [await items.get(m.id) for m in models[:2]] == models[:2]

    async def test_delete(self, items: ReadModelRepository[ContractItem]) -> None:
        doomed, kept = _item("doomed"), _item("kept")
        await items.save_many([doomed, kept])
        assert await items.delete(doomed.id) is True
        assert await items.delete(doomed.id) is False
        assert await items.delete(str(uuid4())) is False
        assert await items.get(doomed.id) is None
        assert await items.get(kept.id) == kept

    async def test_query_by_one_field_of_each_json_type(
        self, items: ReadModelRepository[ContractItem], four: list[ContractItem]
    ) -> None:
        ann, bob, cy, dee = four
        assert _ids(await items.query(active=True)) == _by_id(ann, dee)
        assert _ids(await items.query(active=False)) == _by_id(bob, cy)
        assert _ids(await items.query(count=1)) == _by_id(ann, cy)
        assert _ids(await items.query(count=1.0)) == _by_id(ann, cy)
        assert _ids(await items.query(name="bob")) == [bob.id]
        assert _ids(await items.query(note=None)) == _by_id(ann, cy)
        assert _ids(await items.query(note="1")) == [dee.id]
        assert _ids(await items.query(id=cy.id)) == [cy.id]
        assert _ids(await items.query()) == _by_id(*four)

    async def test_query_compares_json_types_strictly(
        self, items: ReadModelRepository[ContractItem], four: list[ContractItem]
    ) -> None:
        assert await items.query(count=True) == []  # a bool never equals a number
        assert await items.query(active=1) == []
        assert await items.query(note=1) == []  # nor a number a string
        assert await items.query(count="1") == []
        assert await items.query(name=None) == []

    async def test_query_by_several_fields(
        self, items: ReadModelRepository[ContractItem], four: list[ContractItem]
    ) -> None:
        ann, bob, cy, dee = four
        assert _ids(await items.query(count=1, active=True, note=None)) == [ann.id]
        assert _ids(await items.query(count=1, active=False)) == [cy.id]
        assert _ids(await items.query(active=True, note="1", count=10)) == [dee.id]
        assert _ids(await items.query(active=False, note=None, name="cy")) == [cy.id]
        assert await items.query(count=1, active=True, note="x") == []
        assert await items.query(name="ann", id=bob.id) == []

    async def test_count(
        self, items: ReadModelRepository[ContractItem], four: list[ContractItem]
    ) -> None:
        assert await items.count() == 4
        assert await items.count(active=True) == 2
        assert await items.count(count=1, active=False) == 1
        assert await items.count(name="nobody") == 0

    async def test_order_by_ascending_and_descending_with_limit(
        self, items: ReadModelRepository[ContractItem]
    ) -> None:
        ranked = [_item(name, count) for name, count in [("c", 5), ("a", 30), ("d", 1), ("b", 7)]]
        await items.save_many(ranked)

        async def names(**options: Any) -> list[str]:
            return [model.name for model in await items.query(**options)]

        assert await names(order_by="count") == ["d", "c", "b", "a"]
        assert await names(order_by="count", descending=True) == ["a", "b", "c", "d"]
        assert await names(order_by="count", limit=2) == ["d", "c"]
        assert await names(order_by="count", descending=True, limit=3) == ["a", "b", "c"]
        assert await names(order_by="name") == ["a", "b", "c", "d"]
        assert await names(order_by="name", descending=True, limit=1) == ["d"]
        assert await names(order_by="name", limit=0) == []
        assert len(await items.query(limit=3)) == 3

    async def test_order_by_with_ties_nulls_and_a_filter(
        self, items: ReadModelRepository[ContractItem]
    ) -> None:
        tied = [_item("tie", 2, note=note) for note in ("b", None, "a", None)]
        other = _item("other", 1, active=False)
        await items.save_many([*tied, other])
        by_note = await items.query(order_by="note", active=True)
        assert [m.note for m in by_note] == [None, None, "a", "b"]
        assert _ids(by_note[:2]) == _by_id(tied[1], tied[3])  # ties in id order
        down = await items.query(order_by="note", descending=True, active=True)
        assert [m.note for m in down] == ["b", "a", None, None]
        assert _ids(down[2:]) == _by_id(tied[1], tied[3])
        assert _ids(await items.query(order_by="count", name="tie")) == _by_id(*tied)
        assert _ids(await items.query(order_by="count", limit=1)) == [other.id]

    async def test_clear_returns_how_many_were_deleted(
        self, items: ReadModelRepository[ContractItem], four: list[ContractItem]
    ) -> None:
        assert await items.clear() == 4
        assert await items.count() == 0
        assert await items.get(four[0].id) is None
        assert await items.clear() == 0
        await items.save(four[1])
        assert await items.query() == [four[1]]

    async def test_unknown_fields_and_bad_arguments_are_value_errors(
        self, items: ReadModelRepository[ContractItem]
    ) -> None:
        with pytest.raises(ValueError, match="'colour'"):
            await items.query(colour="red")
        with pytest.raises(ValueError, match="'rank'"):
            await items.query(order_by="rank")
        with pytest.raises(ValueError, match="'colour'"):
            await items.count(colour="red")
        with pytest.raises(ValueError, match="tags"):
            await items.query(tags=["vip"])
        with pytest.raises(ValueError, match="limit"):
            await items.query(limit=-1)

    async def test_saving_another_model_class_is_a_type_error(
        self, items: ReadModelRepository[ContractItem]
    ) -> None:
        with pytest.raises(TypeError, match="ContractLabel"):
            await items.save(ContractLabel(id="x", display_name="x"))  # type: ignore[arg-type]
        assert await items.count() == 0

    async def test_values_with_quotes_and_unicode(
        self, items: ReadModelRepository[ContractItem]
    ) -> None:
        odd, plain = _item(ODD_TEXT, note=ODD_TEXT), _item("Zoe")
        await items.save_many([odd, plain])
        assert await items.query(name=ODD_TEXT) == [odd]
        assert await items.query(name=ODD_TEXT, note=ODD_TEXT) == [odd]
        assert await items.query(name=ODD_TEXT[:-1]) == []
        assert await items.count(name="Zoe") == 1

    async def test_string_ids_and_aliased_fields(self) -> None:
        labels = await self.create_repository(ContractLabel)
        try:
            odd = ContractLabel(id=f"label {ODD_TEXT}", display_name="b", sort_rank=2)
            plain = ContractLabel(id="label-1", display_name="a", sort_rank=3)
            await labels.save_many([odd, plain])
            assert await labels.get(odd.id) == odd
            assert await labels.query(display_name="a") == [plain]
            assert await labels.query(order_by="sort_rank", descending=True) == [plain, odd]
            assert await labels.delete(odd.id) is True
            assert await labels.query() == [plain]
        finally:
            await labels.close()

    async def test_computed_fields_are_not_stored_and_come_back(self) -> None:
        totals = await self.create_repository(ContractTotal)
        try:
            total = ContractTotal(id=uuid4(), unit_cents=150, quantity=2)
            await totals.save(total)
            assert await totals.get(total.id) == total
            assert (await totals.query(quantity=2))[0].total_cents == 300
        finally:
            await totals.close()

    async def test_a_model_whose_json_does_not_read_back_is_refused(self) -> None:
        """Refused with a clear error when the first one is saved, nothing stored, rather
        than stored and unreadable on every `get` and `query`."""
        renamed = await self.create_repository(ContractRenamed)
        hidden = await self.create_repository(ContractHidden)
        try:
            with pytest.raises(SerializationError, match="cannot be stored"):
                await renamed.save(ContractRenamed(id=uuid4(), full_name="Ada"))
            with pytest.raises(SerializationError, match="cannot be stored"):
                await hidden.save_many([ContractHidden(id=uuid4(), secret="s")])
            assert await renamed.count() == 0
            assert await hidden.count() == 0
        finally:
            await renamed.close()
            await hidden.close()

    async def test_concurrent_saves(self, items: ReadModelRepository[ContractItem]) -> None:
        models = [_item(f"n{n}", n) for n in range(40)]
        same = [models[0].model_copy(update={"count": 1000 + n}) for n in range(10)]
        await asyncio.gather(*(items.save(model) for model in [*models, *same]))
        assert await items.count() == 40
        assert [await items.get(m.id) for m in models[1:]] == models[1:]
        kept = await items.get(models[0].id)
        assert kept is not None
        assert kept.count in {0, *(1000 + n for n in range(10))}

    async def test_a_corrupt_row_is_a_serialization_error(
        self, items: ReadModelRepository[ContractItem]
    ) -> None:
        broken, fine = _item("broken"), _item("fine")
        await items.save_many([broken, fine])
        key = str(broken.id)
        data = {"id": key, "name": "broken", "count": "many", "active": True}
        await self.corrupt(items, key, json.dumps(data))
        with pytest.raises(SerializationError) as raised:
            await items.get(broken.id)
        assert items.table in str(raised.value)
        assert key in str(raised.value)
        assert "count" in str(raised.value)
        with pytest.raises(SerializationError, match=key):
            await items.query(name="broken")
        assert await items.query(name="fine") == [fine]
        assert await items.count(name="broken") == 1
