"""The `ReadModelRepository` contract: pydantic read models kept as JSON documents by id.

Every backend stores a model as the JSON of `model_dump_json(by_alias=True)` (computed fields
left out) under `str(id)` and reads it back with `model_validate_json`, so what a query
compares is what the JSON holds: `query(owner_id=uuid)` matches the UUID's text,
`query(active=True)` only JSON `true`. A model class whose JSON would not read back is refused
when the first model is saved (`SerializationError`), nothing stored.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any, Generic, TypeAlias, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError
from pydantic_core import to_jsonable_python

from eventsource._internal.closing import AsyncClosing
from eventsource.exceptions import SerializationError

__all__ = ["JSONScalar", "ModelId", "ReadModelRepository", "TModel", "default_table"]

TModel = TypeVar("TModel", bound=BaseModel)

ModelId: TypeAlias = UUID | str
"""A read model's id: its `id` field, a UUID or a string."""

JSONScalar: TypeAlias = str | int | float | bool | None
"""What a query compares a field with, once converted to JSON."""

_WORD_START = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def default_table(model: type[BaseModel]) -> str:
    """`rm_` and the model class name in snake case: `AccountSummary` -> `rm_account_summary`."""
    return "rm_" + _WORD_START.sub("_", model.__name__).lower()


class ReadModelRepository(AsyncClosing, ABC, Generic[TModel]):
    """Keeps read models of one pydantic class, each under its `id` (a UUID or str field).

    `get`, `save` (an upsert), `delete` and `query` by equality of top-level fields: enough
    for the read side of most projections, without an ORM. Every backend passes
    `eventsource.testing.ReadModelRepositoryContract`. A stored row that no longer validates
    as the model (the class changed shape) raises `SerializationError`: `clear()` and replay
    the projection to rebuild it.
    """

    def __init__(self, model: type[TModel], *, table: str | None = None) -> None:
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(
                f"a read model is a pydantic BaseModel subclass with an `id` field, not {model!r}"
            )
        field = model.model_fields.get("id")
        if field is None or field.annotation not in (UUID, str):
            raise TypeError(
                f"read model {model.__qualname__} needs an `id` field typed UUID or str, the key "
                "it is stored under"
            )
        self.model = model
        self.table = table or default_table(model)
        """The table's name (unquoted); in memory, the name errors use."""
        # Field name -> its key in the stored JSON (an alias, when the model has one).
        self._keys = {
            name: info.serialization_alias or name for name, info in model.model_fields.items()
        }
        computed = model.__pydantic_computed_fields__
        self._exclude: set[str] | None = set(computed) if computed else None
        """Computed fields: derived from the others, never stored."""
        self._reads_back = False  # set once a saved model's JSON was seen to read back

    @abstractmethod
    async def get(self, id: ModelId) -> TModel | None:
        """The model stored under `id`, or None."""

    @abstractmethod
    async def save(self, model: TModel) -> None:
        """Store `model` under its id, replacing what was there."""

    @abstractmethod
    async def save_many(self, models: Iterable[TModel]) -> None:
        """`save` each model, in one round trip on the database backends (the last of several
        models with one id wins)."""

    @abstractmethod
    async def delete(self, id: ModelId) -> bool:
        """Forget the model stored under `id`; True if there was one."""

    @abstractmethod
    async def query(
        self,
        *,
        limit: int | None = None,
        order_by: str | None = None,
        descending: bool = False,
        **equals: Any,
    ) -> list[TModel]:
        """The models whose top-level fields equal `equals` (all of them), as JSON values.

        Values are compared after conversion to JSON, and must convert to a single value
        (str, number, bool or null): a UUID, enum or datetime compares as its JSON text; a
        bool never equals a number. `order_by` names a top-level field (values of one JSON
        type; nulls first when ascending); ties, and every result without `order_by`, are in
        id order. A field name the model lacks is a `ValueError`.
        """

    @abstractmethod
    async def count(self, **equals: Any) -> int:
        """How many models `query(**equals)` would return."""

    @abstractmethod
    async def clear(self) -> int:
        """Delete every model (before a projection is rebuilt); returns how many there were."""

    # Helpers for the backends: the rules every backend applies in the same way.

    def _dump(self, model: TModel) -> tuple[str, str]:
        """The key and JSON text a model is stored as."""
        if not isinstance(model, self.model):
            raise TypeError(
                f"read model table {self.table!r} keeps {self.model.__qualname__} models, "
                f"not {type(model).__qualname__}"
            )
        key = str(getattr(model, "id"))  # noqa: B009 - TModel is any BaseModel with an `id`
        text = model.model_dump_json(by_alias=True, exclude=self._exclude)
        if not self._reads_back:
            self._check(model, text)
        return key, text

    def _check(self, model: TModel, text: str) -> None:
        """Refuse, before the first one is stored, a model class whose JSON does not read
        back: a field only a serialization alias names, a field left out of the JSON without
        a default (`Field(exclude=True)`), a serializer writing what the field refuses.
        Checked once per repository, on the first model saved."""
        try:
            self.model.model_validate_json(text)
        except ValidationError as exc:
            raise SerializationError(
                f"read model {self.model.__qualname__} cannot be stored: the JSON it is kept as "
                f"does not read back ({exc.errors()[0]['loc']}: {exc.errors()[0]['msg']}); give "
                "each field an alias that validation accepts too (`alias=`), a default to a "
                "field excluded from serialization, and a serializer what the field accepts"
            ) from None
        self._reads_back = True

    def _load(self, key: str, data: str | bytes) -> TModel:
        """The model a stored row holds, or `SerializationError` naming the row."""
        try:
            return self.model.model_validate_json(data)
        except ValidationError as exc:
            raise self._corrupt(key, exc) from exc

    def _corrupt(self, key: str, exc: Exception) -> SerializationError:
        if isinstance(exc, ValidationError):
            problems = "; ".join(
                f"{'.'.join(map(str, error['loc'])) or 'row'}: {error['msg']}"
                for error in exc.errors()[:3]
            )
        else:
            problems = str(exc)
        return SerializationError(
            f"read model table {self.table!r}, id {key!r}: the stored JSON is not a valid "
            f"{self.model.__qualname__} ({problems}); delete or fix the row, or clear the table "
            "and replay its projection"
        )

    def _key_of(self, field: str) -> str:
        """The JSON key of a field named in a query; `ValueError` for a field the model lacks."""
        key = self._keys.get(field)
        if key is None:
            raise ValueError(
                f"read model {self.model.__qualname__} has no field {field!r} to query or order "
                f"by; its fields: {', '.join(self._keys)}"
            )
        return key

    def _where(self, equals: dict[str, Any]) -> dict[str, JSONScalar]:
        """JSON key -> JSON value of each equality of a query, checked."""
        where: dict[str, JSONScalar] = {}
        for field, value in equals.items():
            converted = to_jsonable_python(value)
            if isinstance(converted, list | dict):
                raise ValueError(
                    f"query compares single values: {field}={value!r} converts to a JSON "
                    f"{'array' if isinstance(converted, list) else 'object'}"
                )
            where[self._key_of(field)] = converted
        return where

    def _order(self, order_by: str | None, limit: int | None) -> str | None:
        """The JSON key to order by (None: by id), once `limit` is checked."""
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be None or >= 0, got {limit}")
        return None if order_by is None else self._key_of(order_by)
