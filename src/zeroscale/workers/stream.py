"""A worker's answer read as it comes, over the worker's one keep-alive connection (``client.py``).

For ``InvokeEndpointWithResponseStream``: ``open_stream`` writes the request and returns once the answer's
head is in; ``WorkerStream.next_parts`` then hands over the body's parts as they arrive: one per HTTP chunk
for a chunked answer (a built-in runtime's streaming hook, or a container that streams), else the body as it
arrives in parts of at most ``MAX_PART_BYTES``. The error trailer of a built-in worker
(``runtimes/streaming.py``) ends a failed stream. No files: the same socket works when the worker is on
another host behind TCP.
"""

from __future__ import annotations

import httptools

from zeroscale.runtimes.streaming import ERROR_TRAILER, parse_trailer
from zeroscale.workers.client import (
    HEAD_REFUSED,
    AnswerFraming,
    AnswerRefused,
    InterimRefused,
    NotDelivered,
    WorkerConnection,
    WorkerConnectionError,
    interim_refusal,
    request_head,
)

MAX_PART_BYTES = 1024 * 1024  # one event stream message each; botocore refuses payloads over 16 MB
_TRAILER = ERROR_TRAILER.lower()


class _Parts(AnswerFraming):
    """httptools callbacks: the head, then parts as they complete. ``parser`` is set until the head is in
    (``on_headers_complete`` asks it), then dropped: the parser holds these callbacks, not the other way."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.chunked = False
        self.keep_alive = False
        self.done = False
        self.error: tuple[int, str] | None = None
        self.ready: list[bytes] = []
        self._current: list[bytes] = []
        self._size = 0
        self.parser: httptools.HttpResponseParser | None = None
        self.interim = False  # an interim 1xx head: the answer's follows
        self.refusal: str | None = None  # why a 1xx head was refused (``interim_refusal``)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # a trailer
            if name.lower() == _TRAILER:
                self.error = parse_trailer(value)
            return
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self.parser is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # 103 Early Hints: not the answer's head
            self.refusal = interim_refusal(status, self.headers)
            if self.refusal is not None:
                raise InterimRefused(self.refusal)
            self.interim = True
            self.headers.clear()  # in place: the stream holds this list
            return
        self.head_done = True
        self.keep_alive = bool(self.parser.should_keep_alive())
        self.chunked = any(
            k.lower() == b"transfer-encoding" and b"chunked" in v.lower() for k, v in self.headers
        )

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        self._current.append(body)
        self._size += len(body)
        if self._size >= MAX_PART_BYTES:
            self._flush()

    def on_chunk_complete(self) -> None:
        self._flush()

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self._flush()
        self.done = True

    def _flush(self) -> None:
        if not self._current:
            return
        data = self._current[0] if len(self._current) == 1 else b"".join(self._current)
        self._current, self._size = [], 0
        for start in range(0, len(data), MAX_PART_BYTES):
            self.ready.append(data[start : start + MAX_PART_BYTES])


class WorkerStream:
    """One answer being read. ``status`` and ``headers`` are known once ``open_stream`` returns."""

    def __init__(self, conn: WorkerConnection, parts: _Parts, parser: httptools.HttpResponseParser) -> None:
        self._conn = conn
        self._parts = parts
        self._parser = parser
        self.headers = parts.headers

    @property
    def status(self) -> int:
        return int(self._parser.get_status_code())

    def header(self, name: bytes) -> bytes | None:
        lname = name.lower()
        return next((v for k, v in self.headers if k.lower() == lname), None)

    @property
    def done(self) -> bool:
        return self._parts.done and not self._parts.ready

    @property
    def error(self) -> tuple[int, str] | None:
        """(status, message) when the worker ended the stream with its error trailer."""
        return self._parts.error

    async def next_parts(self) -> list[bytes]:
        """The parts that arrived since the last call, waiting for at least one; [] once the answer ended.
        Raises WorkerConnectionError when the worker breaks the stream (the connection is closed)."""
        parts = self._parts
        while not parts.ready and not parts.done:
            await self._feed()
        ready, parts.ready = parts.ready, []
        if parts.done and not parts.keep_alive:
            self._conn.close()
        return ready

    async def read_all(self) -> bytes:
        """The rest of the body, joined (an error answer's message)."""
        chunks: list[bytes] = []
        while out := await self.next_parts():
            chunks.extend(out)
        return b"".join(chunks)

    def abort(self) -> None:
        """Stop reading (the client went away, or a timeout): the connection cannot be reused, and a
        worker writing to it gets a broken pipe at its next part."""
        if not self._parts.done:
            self._conn.close()

    async def _feed(self) -> None:
        conn = self._conn
        if conn.closed:
            raise WorkerConnectionError("connection is closed")
        try:
            data = await conn.read()
        except (ConnectionError, OSError) as exc:
            conn.close()
            raise WorkerConnectionError(str(exc) or type(exc).__name__) from exc
        if not data:
            conn.close()
            raise conn.lost_error(self._parts.fed)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            conn.close()
            raise AnswerRefused(self._parts.refusal or f"its answer is not HTTP ({exc})") from exc
        if self._parts.over(len(data)):
            conn.close()
            raise AnswerRefused(HEAD_REFUSED)


async def open_stream(
    conn: WorkerConnection, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> WorkerStream:
    """Write the request and read until the answer's head is in. Raises WorkerConnectionError; on any other
    exception (a cancellation, a timeout) the connection is closed, never reused mid-answer."""
    if conn.closed:
        raise NotDelivered("connection is closed")  # nothing of it was written
    parts = _Parts()
    parser = parts.parser = httptools.HttpResponseParser(parts)
    stream = WorkerStream(conn, parts, parser)
    try:
        conn.write(request_head(method, path, headers, len(body)))
        if body:
            conn.write(body)
        while not parts.head_done:
            await stream._feed()
    except (ConnectionError, OSError) as exc:
        conn.close()
        raise WorkerConnectionError(str(exc) or type(exc).__name__) from exc
    except BaseException:
        conn.close()
        raise
    finally:
        parts.parser = None  # the head is in (or never will be): no cycle between the parser and its parts
    return stream
