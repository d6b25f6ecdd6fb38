"""Services that expose the library's stores to other processes and languages.

`GrpcStoreServer` (module `eventsource.server.grpc`, extra `grpc`) serves any `EventStore`
over gRPC; `eventsource serve` runs it. Imported on first use, so importing this package
imports no driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventsource.server.grpc import GrpcStoreServer

__all__ = ["GrpcStoreServer"]


def __getattr__(name: str) -> Any:
    if name == "GrpcStoreServer":
        from eventsource.server.grpc import GrpcStoreServer

        return GrpcStoreServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
