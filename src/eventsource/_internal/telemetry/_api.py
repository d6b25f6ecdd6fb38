"""OpenTelemetry's API, imported on first use, and which providers eventsource records with."""

from __future__ import annotations

import importlib
import os
import weakref
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Literal

from eventsource._internal.telemetry.names import SCOPE

# -- OpenTelemetry, imported on first use -------------------------------------------------------


@dataclass
class OtelApi:
    trace: ModuleType
    propagate: ModuleType
    context: ModuleType
    metrics: ModuleType
    metrics_state: ModuleType
    """The module holding the global meter provider."""
    providers_from_env: bool
    """OTEL_PYTHON_*_PROVIDER is set: the API makes the global providers on first request."""

    def global_provider(self, kind: Literal["tracer", "meter"]) -> Any:
        """The global provider, or None while none is set.

        `get_tracer_provider()` checks the environment on every call (about a microsecond);
        the module attribute it returns is read directly instead, when it exists.
        """
        if kind == "tracer":
            provider = getattr(self.trace, "_TRACER_PROVIDER", _UNKNOWN)
        else:
            provider = getattr(self.metrics_state, "_METER_PROVIDER", _UNKNOWN)
        if provider is None and not self.providers_from_env:
            return None
        if provider is None or provider is _UNKNOWN:
            if kind == "tracer":
                return self.trace.get_tracer_provider()
            return self.metrics.get_meter_provider()
        return provider


_UNKNOWN = object()
_loaded: list[OtelApi | None] = []


def otel_api() -> OtelApi | None:
    """OpenTelemetry's API modules, imported on first use (so that `import eventsource`
    imports no optional package), or None without the extra."""
    if not _loaded:
        try:
            _loaded.append(
                OtelApi(
                    importlib.import_module("opentelemetry.trace"),
                    importlib.import_module("opentelemetry.propagate"),
                    importlib.import_module("opentelemetry.context"),
                    importlib.import_module("opentelemetry.metrics"),
                    _metrics_state(),
                    any(
                        f"OTEL_PYTHON_{kind}_PROVIDER" in os.environ for kind in ("TRACER", "METER")
                    ),
                )
            )
        except ImportError:
            _loaded.append(None)
    return _loaded[0]


def _metrics_state() -> ModuleType:
    try:
        return importlib.import_module("opentelemetry.metrics._internal")
    except ImportError:  # pragma: no cover - a future API without the module: ask the getter
        return importlib.import_module("opentelemetry.metrics")


@dataclass
class _State:
    enabled: bool = True
    tracer_provider: Any = None
    meter_provider: Any = None
    tracer: tuple[Any, Any] | None = None
    """(provider, tracer) of the last lookup."""
    global_instruments: Any = None
    """Made once on the global provider, a proxy until the application sets an SDK's (the
    proxy's instruments then forward to it)."""
    instruments: weakref.WeakKeyDictionary[Any, Any] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    """Made on providers passed to `configure`."""


state = _State()


def configure(
    *, tracer_provider: Any = None, meter_provider: Any = None, enabled: bool = True
) -> None:
    """Use these providers instead of OpenTelemetry's global ones (None: the global one);
    `enabled=False` records nothing even when an SDK is configured."""
    state.enabled = enabled
    state.tracer_provider = tracer_provider
    state.meter_provider = meter_provider
    state.tracer = None


def tracer() -> Any:
    """The library's tracer, or None when spans would record nothing (no SDK)."""
    if not state.enabled:
        return None
    otel = otel_api()
    if otel is None:
        return None
    provider = state.tracer_provider or otel.global_provider("tracer")
    if provider is None:
        return None
    cached = state.tracer
    if cached is not None and cached[0] is provider:
        return cached[1]
    if isinstance(provider, (otel.trace.ProxyTracerProvider, otel.trace.NoOpTracerProvider)):
        return None
    found = provider.get_tracer(SCOPE, library_version())
    state.tracer = (provider, found)
    return found


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eventsource-async")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
