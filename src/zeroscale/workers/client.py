"""One keep-alive HTTP/1.1 connection to a worker (Unix socket or TCP), parsed with httptools.

A worker serves one request at a time, so one connection per worker is all the router needs: no pool, no
locking, no framework on the invoke path.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import BinaryIO

import httptools

_READ_CHUNK = 256 * 1024
_WRITE_CHUNK = 1024 * 1024


class FilePayload:
    """A request body streamed from a file, and the response body streamed into another (a success's;
    an error answer's body stays in memory for the error message): the server never holds either whole.
    ``len()`` is the request body's size, as for bytes."""

    def __init__(self, source: BinaryIO, size: int, sink: BinaryIO) -> None:
        self.source = source
        self.size = size
        self.sink = sink
        self.written = 0  # response bytes written to the sink

    def __len__(self) -> int:
        return self.size


Body = bytes | FilePayload


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
        self.sink: FilePayload | None = None  # where a 2xx body goes instead of memory

    def on_headers_complete(self) -> None:
        # llhttp resets its flags once the message completes: ask while the headers are fresh.
        assert self.parser is not None
        self.keep_alive = bool(self.parser.should_keep_alive())
        if self.sink is not None and self.parser.get_status_code() >= 400:
            self.sink = None

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.sink.write(body)
            self.sink.written += len(body)
        else:
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
        body: Body = b"",
    ) -> WorkerResponse:
        if self.closed:
            raise WorkerConnectionError("connection is closed")
        head = [method, b" ", path, b" HTTP/1.1\r\nHost: worker\r\nContent-Length: ", str(len(body)).encode()]
        for name, value in headers or ():
            head += [b"\r\n", name, b": ", value]
        head.append(b"\r\n\r\n")
        try:
            self._writer.write(b"".join(head))
            if isinstance(body, FilePayload):
                await self._write_file(body)
                return await self._read_response(body)
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

    async def _write_file(self, payload: FilePayload) -> None:
        left = payload.size
        while left > 0:
            chunk = payload.source.read(min(_WRITE_CHUNK, left))
            if not chunk:
                raise WorkerConnectionError(f"request body file ended {left} bytes early")
            left -= len(chunk)
            self._writer.write(chunk)
            await self._writer.drain()

    async def _read_response(self, sink: FilePayload | None = None) -> WorkerResponse:
        collector = _Collector()
        collector.sink = sink
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
