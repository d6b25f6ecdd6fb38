"""A TCP proxy between a PostgreSQL client and server that can delay, cut and drop replies.

Client -> server bytes pass through untouched (only an SSL/GSS encryption request at the start
is noticed: its one-byte answer is not a framed message). Server -> client bytes are split
into the protocol's messages (1 type byte + a 4-byte big-endian length that counts itself), so
the proxy can recognise the server's reply to a COMMIT: a CommandComplete ('C') message whose
tag is "COMMIT". asyncpg (and SQLAlchemy over it) commits with a simple Query "COMMIT;"; a
COMMIT sent any other way gets the same reply.

The same works for any command tag (an autocommit INSERT's "INSERT 0 1"). To drop an
answer, the proxy waits for the ReadyForQuery ('Z') that ends it, so the server has finished
(and committed) the command, then closes the client's connection without forwarding any of
the answer: the work is done and the client cannot know.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Iterator

_ENCRYPTION_REQUESTS = (80877103, 80877104)  # SSLRequest, GSSENCRequest
COMMIT_COMPLETE = b"C" + struct.pack("!I", 4 + len(b"COMMIT\x00")) + b"COMMIT\x00"


def command_tag(complete: bytes) -> str:
    """The command of a CommandComplete message: "COMMIT", "INSERT" (of "INSERT 0 1"), ..."""
    return complete[5:].rstrip(b"\x00").split(b" ", 1)[0].decode("ascii", "replace")


def split_messages(buffer: bytearray) -> Iterator[bytes]:
    """Take the complete messages off the front of `buffer` (what is left is a partial one)."""
    while len(buffer) >= 5:
        (length,) = struct.unpack_from("!I", buffer, 1)
        if length < 4:
            raise ValueError(f"not a PostgreSQL message: length {length}")
        end = 1 + length
        if len(buffer) < end:
            return
        message = bytes(buffer[:end])
        del buffer[:end]
        yield message


class _Link:
    """One client connection and its connection to the server."""

    def __init__(
        self,
        proxy: PostgresProxy,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.client_reader, self.client_writer = client
        self.server_reader, self.server_writer = server
        self.unframed_bytes = 0  # one-byte answers to encryption requests still to come

    async def run(self) -> None:
        upstream = asyncio.create_task(self._client_to_server())
        downstream = asyncio.create_task(self._server_to_client())
        try:
            await asyncio.wait({upstream, downstream}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            upstream.cancel()
            downstream.cancel()
            await asyncio.gather(upstream, downstream, return_exceptions=True)
            self.cut()

    def cut(self) -> None:
        for writer in (self.client_writer, self.server_writer):
            with contextlib.suppress(Exception):
                writer.transport.abort()

    async def _client_to_server(self) -> None:
        first = True
        while data := await self.client_reader.read(65536):
            if first and len(data) >= 8:
                length, code = struct.unpack_from("!II", data)
                if length == 8 and code in _ENCRYPTION_REQUESTS:
                    self.unframed_bytes += 1
                else:
                    first = False
            self.server_writer.write(data)
            await self.server_writer.drain()

    async def _server_to_client(self) -> None:
        buffer = bytearray()
        held = bytearray()  # the start of an answer that is being dropped
        dropping = False
        while data := await self.server_reader.read(65536):
            buffer += data
            out, held = held, bytearray()
            while self.unframed_bytes and buffer:
                out.append(buffer.pop(0))
                self.unframed_bytes -= 1
            answered = 0 if dropping else len(out)  # end of the last complete answer in `out`
            for message in split_messages(buffer):
                dropping = dropping or self.proxy._drop_this(message)
                out += message
                if message[:1] == b"Z":
                    if dropping:
                        # ReadyForQuery: the server finished (and committed) the command; the
                        # client gets nothing of this answer, and its connection is closed.
                        if answered:
                            self.client_writer.write(bytes(out[:answered]))
                        self.cut()
                        return
                    answered = len(out)
            if dropping:
                out, held = out[:answered], out[answered:]
            if out:
                if self.proxy.delay:
                    await asyncio.sleep(self.proxy.delay)
                self.client_writer.write(bytes(out))
                await self.client_writer.drain()


class PostgresProxy:
    """Listens on 127.0.0.1 (a free port) and forwards each connection to `upstream_port`.

    `drop_every = n` drops the answer to every n-th command whose CommandComplete tag is
    `drop_tag` ("COMMIT" by default, or "INSERT", "UPDATE", ...; 0: none): none of the
    answer's messages are forwarded and the connection is closed once the server sent its
    ReadyForQuery.
    `delay` holds every server reply back for that many seconds; `cut()` closes every open
    connection.
    """

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1") -> None:
        if not upstream_host.startswith("127."):
            raise ValueError("the fault proxy only forwards to loopback")
        self.upstream = (upstream_host, upstream_port)
        self.drop_tag = "COMMIT"
        self.drop_every = 0
        self.delay = 0.0
        self.seen = 0
        """Answers tagged `drop_tag` seen so far (dropped ones included)."""
        self.dropped = 0
        self.connections = 0
        self._links: set[_Link] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def _drop_this(self, message: bytes) -> bool:
        if message[:1] != b"C" or command_tag(message) != self.drop_tag:
            return False
        self.seen += 1
        if self.drop_every and self.seen % self.drop_every == 0:
            self.dropped += 1
            return True
        return False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            try:
                server = await asyncio.open_connection(*self.upstream)
            except OSError:
                writer.transport.abort()
                return
            link = _Link(self, (reader, writer), server)
            self.connections += 1
            self._links.add(link)
            try:
                await link.run()
            finally:
                self._links.discard(link)
        finally:
            self._tasks.discard(task)

    def cut(self) -> int:
        """Close every connection now (both sides); returns how many."""
        links = list(self._links)
        for link in links:
            link.cut()
        return len(links)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
