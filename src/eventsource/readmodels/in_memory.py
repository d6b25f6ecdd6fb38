"""`InMemoryReadModelRepository`: the read-model contract in process memory."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from eventsource.readmodels.interface import JSONScalar, ModelId, ReadModelRepository, TModel

__all__ = ["InMemoryReadModelRepository"]

_MISSING = object()


def _kind(value: Any) -> int:
    """The JSON type of a value, numbers as one (1 and 1.0 are equal, `true` and 1 are not)."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return 3
    if isinstance(value, int | float):
        return 1
    if isinstance(value, str):
        return 2
    return 4


def _equal(stored: Any, wanted: JSONScalar) -> bool:
    return stored is not _MISSING and _kind(stored) == _kind(wanted) and stored == wanted


def _sort_key(value: Any) -> tuple[int, Any]:
    kind = _kind(value)
    if kind == 0:
        return (0, 0)
    return (kind, json.dumps(value, sort_keys=True) if kind == 4 else value)


class InMemoryReadModelRepository(ReadModelRepository[TModel]):
    """Read models in a dict, kept as JSON text and validated on every read like the database
    backends do: for tests and single-process tools (nothing persists)."""

    def __init__(self, model: type[TModel]) -> None:
        super().__init__(model)
        self._rows: dict[str, str] = {}

    async def get(self, id: ModelId) -> TModel | None:
        key = str(id)
        data = self._rows.get(key)
        return None if data is None else self._load(key, data)

    async def save(self, model: TModel) -> None:
        key, data = self._dump(model)
        self._rows[key] = data

    async def save_many(self, models: Iterable[TModel]) -> None:
        self._rows.update([self._dump(model) for model in models])

    async def delete(self, id: ModelId) -> bool:
        return self._rows.pop(str(id), None) is not None

    async def query(
        self,
        *,
        limit: int | None = None,
        order_by: str | None = None,
        descending: bool = False,
        **equals: Any,
    ) -> list[TModel]:
        order = self._order(order_by, limit)
        found = self._matching(self._where(equals))
        if order is not None:  # stable, so ties stay in id order either way
            found.sort(key=lambda row: _sort_key(row[2].get(order)), reverse=descending)
        return [self._load(key, data) for key, data, _ in found[:limit]]

    async def count(self, **equals: Any) -> int:
        return len(self._matching(self._where(equals)))

    async def clear(self) -> int:
        count = len(self._rows)
        self._rows.clear()
        return count

    def _matching(self, where: dict[str, JSONScalar]) -> list[tuple[str, str, dict[str, Any]]]:
        """(key, JSON text, parsed JSON) of the rows matching `where`, in key order."""
        found = []
        for key in sorted(self._rows):
            data = self._rows[key]
            try:
                document = json.loads(data)
            except ValueError as exc:
                raise self._corrupt(key, exc) from exc
            if not isinstance(document, dict):
                raise self._corrupt(key, ValueError("not a JSON object"))
            if all(_equal(document.get(k, _MISSING), v) for k, v in where.items()):
                found.append((key, data, document))
        return found
