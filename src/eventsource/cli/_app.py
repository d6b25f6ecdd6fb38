"""`--app MODULE:ATTR`: the application's own subscriptions, for the commands that must run
its handlers (`projections rebuild`, `dlq retry`). Handlers live in user code, so the command
imports them, the way ASGI servers import an application:

- `MODULE` is imported with the current directory first on `sys.path`; `ATTR` is a name in
  it (dotted for an attribute of an attribute).
- `ATTR` is a `SubscriptionManager` (used as it is: its store, checkpoints, dead letters and
  leases), a `Projection` (a `ProjectionRegistry` is one; subscribed under its name to a
  manager built from `--url`: the store, checkpoints and dead letters of that URL, with
  leases on PostgreSQL), or a function without arguments, plain or async, returning either.

The manager is not started: a command runs only the subscription it names, and closes what
it opened when it ends.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from eventsource.cli._ops import CommandError, store_url
from eventsource.projections.base import Projection
from eventsource.subscriptions import SubscriptionManager

__all__ = ["add_app_option", "open_manager"]


def add_app_option(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--app",
        metavar="MODULE:ATTR",
        required=required,
        help="the application's SubscriptionManager, Projection or ProjectionRegistry, or a "
        "function returning one (e.g. myapp.projections:manager)",
    )


def load(spec: str) -> object:
    """The object `MODULE:ATTR` names; `CommandError` when it names none."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise CommandError(f"--app {spec!r}: expected MODULE:ATTR, e.g. myapp.projections:manager")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise CommandError(f"--app {spec!r}: cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(
                f"--app {spec!r}: {module_name} has no attribute {attribute!r}"
            ) from None
    return target


async def resolve(spec: str) -> SubscriptionManager | Projection:
    """The manager or projection `spec` names, calling (and awaiting) a factory."""
    target = load(spec)
    if not isinstance(target, SubscriptionManager | Projection) and callable(target):
        target = target()
        if inspect.isawaitable(target):
            target = await target
    if not isinstance(target, SubscriptionManager | Projection):
        raise CommandError(
            f"--app {spec!r} is a {type(target).__name__}: expected a SubscriptionManager, a "
            "Projection (or ProjectionRegistry), or a function returning one"
        )
    return target


@contextlib.asynccontextmanager
async def open_manager(args: argparse.Namespace) -> AsyncIterator[SubscriptionManager]:
    """The manager of `--app` (a projection subscribed to one built from `--url`); its
    subscriptions, store and repositories are stopped and closed when the block ends."""
    target = await resolve(args.app)
    if isinstance(target, SubscriptionManager):
        manager = target
    else:
        manager = _manager_for(target, store_url(args))
    try:
        yield manager
    finally:
        await manager.stop()
        for part in (manager.event_store, manager.checkpoints, manager.dead_letters):
            await _close(part)


def _manager_for(projection: Projection, url: str) -> SubscriptionManager:
    from eventsource.config import (
        create_checkpoint_repository,
        create_dlq_repository,
        create_event_store,
        parse_database_url,
    )

    store = create_event_store(url)
    leases = None
    if parse_database_url(url).backend == "postgresql":  # never beside a running process
        from eventsource.subscriptions.postgresql import PostgreSQLLeases

        leases = PostgreSQLLeases.for_store(store)
    manager = SubscriptionManager(
        store, create_checkpoint_repository(url), create_dlq_repository(url), leases=leases
    )
    manager.subscribe(projection)
    return manager


async def _close(part: Any) -> None:
    close = getattr(part, "close", None)
    if close is not None:
        with contextlib.suppress(Exception):  # the command's outcome is decided already
            await close()
