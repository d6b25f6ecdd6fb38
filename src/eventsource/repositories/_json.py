"""The package guide's `repositories/_json.py` (internal): JSON of values around events,
re-exported from `eventsource.serialization` (the public form is `EventSourceJSONEncoder`)."""

from __future__ import annotations

import json
from typing import Any

from eventsource.serialization import EventSourceJSONEncoder, dumps

__all__ = ["EventSourceJSONEncoder", "json_dumps", "json_loads"]

json_dumps = dumps


def json_loads(text: str | bytes) -> Any:
    return json.loads(text)
