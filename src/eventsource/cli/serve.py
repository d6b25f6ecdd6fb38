"""`eventsource serve`: serve an event store over gRPC to other services and languages.

    eventsource serve --url URL [--listen HOST:PORT] (--token TOKEN=TENANT ... |
                      --token-file PATH | --no-auth) [--tls-cert PEM --tls-key PEM]
                      [--max-message-size BYTES]

The store is any URL `eventsource.config` reads (`postgresql://...`, `sqlite:///...`,
`memory://`); PostgreSQL tables are created if needed. TENANT is a tenant id (UUID), a
tenant name (its id is `eventsource.sdk.tenant_uuid(name)`, as the SDK's clients compute it),
or `*` for a token that acts for every tenant. A token file holds one `TOKEN TENANT` per line (`#`
starts a comment), which keeps tokens out of the process list. Serving without tokens needs
`--no-auth`, said out loud. Runs until interrupted (Ctrl-C or SIGTERM), then stops gracefully.
Exit status: 0 stopped, 1 the store or the server failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from uuid import UUID

from eventsource._internal.ids import tenant_uuid
from eventsource.cli._urls import open_store
from eventsource.events import EventRegistry
from eventsource.exceptions import ConfigurationError, EventSourceError

__all__ = ["add_parser", "parse_tokens"]

_PROG = "eventsource serve"


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "serve",
        help="serve an event store over gRPC (tokens per tenant, TLS)",
        description="Serve an event store over gRPC (eventsource.store.v1): append, read, "
        "subscribe; health and reflection. Runs until interrupted.",
    )
    parser.add_argument("--url", required=True, help="the store's URL (see eventsource.config)")
    parser.add_argument(
        "--listen", default="127.0.0.1:50051", metavar="HOST:PORT", help="address to serve on"
    )
    auth = parser.add_mutually_exclusive_group(required=True)
    auth.add_argument(
        "--token",
        dest="tokens",
        action="append",
        metavar="TOKEN=TENANT",
        help="a bearer token and the tenant (id or name; * = every) it acts for; repeatable",
    )
    auth.add_argument("--token-file", type=Path, metavar="PATH", help="lines of `TOKEN TENANT`")
    auth.add_argument("--no-auth", action="store_true", help="accept every call, for every tenant")
    parser.add_argument("--tls-cert", type=Path, metavar="PEM", help="certificate chain (TLS)")
    parser.add_argument("--tls-key", type=Path, metavar="PEM", help="private key (TLS)")
    parser.add_argument(
        "--max-message-size", type=int, metavar="BYTES", help="largest request or reply"
    )
    parser.set_defaults(handler=_handle)


def parse_tokens(lines: list[str]) -> dict[str, UUID | None]:
    """`TOKEN=TENANT` or `TOKEN TENANT` entries to the server's token table."""
    tokens: dict[str, UUID | None] = {}
    for line in lines:
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        token, _, tenant = entry.replace("=", " ", 1).partition(" ")
        token, tenant = token.strip(), tenant.strip()
        if not token or not tenant:
            raise ConfigurationError(f"a token entry needs TOKEN and TENANT, got {line.strip()!r}")
        if token in tokens:
            raise ConfigurationError("the same token is given twice")
        tokens[token] = None if tenant == "*" else tenant_uuid(tenant)
    if not tokens:
        raise ConfigurationError("no token given: pass --token TOKEN=TENANT or use --no-auth")
    return tokens


def _handle(args: argparse.Namespace) -> int:
    try:
        tokens = _tokens(args)
        tls = _tls(args)
        return asyncio.run(_serve(args, tokens, tls))
    except (ConfigurationError, OSError, ValueError) as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    except EventSourceError as exc:
        print(f"{_PROG}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def _tokens(args: argparse.Namespace) -> dict[str, UUID | None] | None:
    if args.no_auth:
        return None
    if args.token_file is not None:
        return parse_tokens(args.token_file.read_text().splitlines())
    return parse_tokens(list(args.tokens))


def _tls(args: argparse.Namespace) -> tuple[bytes, bytes] | None:
    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigurationError("TLS needs both --tls-cert and --tls-key")
    if args.tls_cert is None:
        return None
    return args.tls_cert.read_bytes(), args.tls_key.read_bytes()


async def _serve(
    args: argparse.Namespace,
    tokens: dict[str, UUID | None] | None,
    tls: tuple[bytes, bytes] | None,
) -> int:
    from eventsource.server.grpc import GrpcStoreServer

    # The service never decodes events: an empty registry makes sure of it.
    opened = open_store(args.url, registry=EventRegistry())
    options = {} if args.max_message_size is None else {"max_message_size": args.max_message_size}
    async with opened.store as store:
        if opened.prepare is not None:
            await opened.prepare()
        server = GrpcStoreServer(
            store,
            tokens=tokens,
            tls_certificate=None if tls is None else tls[0],
            tls_private_key=None if tls is None else tls[1],
            **options,
        )
        port = await server.start(args.listen)
        host = args.listen.rpartition(":")[0]
        security = "no authentication" if tokens is None else f"{len(tokens)} tokens"
        transport = "TLS" if tls is not None else "plaintext"
        print(
            f"serving {opened.description} on {host}:{port} ({transport}, {security})",
            file=sys.stderr,
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, stop.set)
        try:
            await stop.wait()
        finally:
            await server.close(grace=5.0)
        print("stopped", file=sys.stderr)
    return 0
