"""Optional dependencies: availability flags computed without importing any driver."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from eventsource.exceptions import RedisNotAvailableError

__all__ = ["is_available", "require"]


def is_available(module: str) -> bool:
    """True when `module` can be imported; the module itself is not imported."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import a driver for a backend, or fail with an ImportError naming the pip extra.

    A missing `redis` package raises `RedisNotAvailableError` (an `ImportError` and an
    `EventBusError`), the name the package guide documents."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        error = RedisNotAvailableError if extra == "redis" else ImportError
        raise error(
            f"{feature} needs the {module!r} package: pip install 'eventsource-async[{extra}]'"
        ) from exc
