"""One keep-alive HTTP/1.1 connection to a worker (Unix socket or TCP), parsed with httptools.

A worker serves one request at a time, so one connection per worker is all the router needs: no pool, no
locking, no framework on the invoke path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import httptools

_READ_CHUNK = 256 * 1024


class WorkerConnectionError(Exception):
    """The worker closed the connection or answered something that is not HTTP."""


@dataclass
class WorkerResponse:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""

    def header(self, name: bytes) -> bytes | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None


class _Collector:
    """httptools callbacks for one response."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.done = False
        self.keep_alive = False
        self.parser: httptools.HttpResponseParser | None = None

    def on_headers_complete(self) -> None:
        # llhttp resets its flags once the message completes: ask while the headers are fresh.
        assert self.parser is not None
        self.keep_alive = bool(self.parser.should_keep_alive())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        self.done = True


class WorkerConnection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.closed = False

    @classmethod
    async def open_unix(cls, path: str) -> WorkerConnection:
        reader, writer = await asyncio.open_unix_connection(path, limit=_READ_CHUNK)
        return cls(reader, writer)

    @classmethod
    async def open_tcp(cls, host: str, port: int) -> WorkerConnection:
        reader, writer = await asyncio.open_connection(host, port, limit=_READ_CHUNK)
        return cls(reader, writer)

    async def request(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: bytes = b"",
    ) -> WorkerResponse:
        if self.closed:
            raise WorkerConnectionError("connection is closed")
        head = [method, b" ", path, b" HTTP/1.1\r\nHost: worker\r\nContent-Length: ", str(len(body)).encode()]
        for name, value in headers or ():
            head += [b"\r\n", name, b": ", value]
        head.append(b"\r\n\r\n")
        try:
            self._writer.write(b"".join(head))
            if body:
                self._writer.write(body)
            return await self._read_response()
        except (ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            self.close()
            raise WorkerConnectionError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            # Cancelled or timed out mid-response: the stream position is unknown, never reuse it.
            self.close()
            raise

    async def _read_response(self) -> WorkerResponse:
        collector = _Collector()
        parser = collector.parser = httptools.HttpResponseParser(collector)
        while not collector.done:
            data = await self._reader.read(_READ_CHUNK)
            if not data:
                self.close()
                raise WorkerConnectionError("worker closed the connection")
            try:
                parser.feed_data(data)
            except httptools.HttpParserError as exc:
                self.close()
                raise WorkerConnectionError(f"malformed response from worker: {exc}") from exc
        if not collector.keep_alive:
            self.close()
        body = collector.chunks[0] if len(collector.chunks) == 1 else b"".join(collector.chunks)
        return WorkerResponse(parser.get_status_code(), collector.headers, body)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._writer.close()
