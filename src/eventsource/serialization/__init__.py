"""JSON for the values around events (ids, timestamps, decimals, models): `EventSourceJSONEncoder`
and `dumps`."""

from eventsource.serialization.json import EventSourceJSONEncoder, dumps

__all__ = ["EventSourceJSONEncoder", "dumps"]
