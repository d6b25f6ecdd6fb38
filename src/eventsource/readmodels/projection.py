"""`ReadModelProjection`: a declarative projection that keeps its read models in a
`ReadModelRepository`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic

from eventsource.projections.base import DeclarativeProjection
from eventsource.readmodels.interface import ModelId, ReadModelRepository, TModel

__all__ = ["ReadModelProjection"]


class ReadModelProjection(DeclarativeProjection, Generic[TModel]):
    """A `DeclarativeProjection` whose `@handles` methods maintain read models in
    `self.models`, usually with `await self.update(id, change)`.

    Subscriptions deliver each event at least once: write handlers so that a second delivery
    changes nothing (set values rather than add to them, or keep the aggregate version a model
    was built from and skip older events). To rebuild, `await self.models.clear()` and replay
    the projection from the start of the feed.
    """

    def __init__(self, models: ReadModelRepository[TModel]) -> None:
        self.models = models

    async def get_or_create(self, id: ModelId, **defaults: Any) -> TModel:
        """The model stored under `id`, or a new one from `id` and `defaults` (not saved yet:
        change it, then `await self.models.save(model)`)."""
        found = await self.models.get(id)
        return found if found is not None else self.models.model(id=id, **defaults)

    async def update(
        self, id: ModelId, change: Callable[[TModel | None], TModel | None]
    ) -> TModel | None:
        """Load the model under `id` (None if there is none), pass it to `change`, and save
        what `change` returns, or delete the model when it returns None. Returns the result.

        Read, change and write are separate steps: one subscription handles one event at a
        time, so they do not race within a projection.
        """
        current = await self.models.get(id)
        changed = change(current)
        if changed is None:
            if current is not None:
                await self.models.delete(id)
            return None
        key = str(getattr(changed, "id"))  # noqa: B009 - TModel is any BaseModel with an `id`
        if key != str(id):
            raise ValueError(
                f"{type(self).__qualname__}.update({str(id)!r}): the change returned the model "
                f"of id {key!r}; keep the id (or save other models with self.models.save)"
            )
        await self.models.save(changed)
        return changed
