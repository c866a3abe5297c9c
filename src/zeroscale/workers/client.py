"""One keep-alive HTTP/1.1 connection to a worker (Unix socket or TCP), parsed with httptools.

A worker serves one request at a time, so one connection per worker is all the router needs: no pool, no
locking, no framework on the invoke path. The connection is its own asyncio protocol: a response's bytes go
from the event loop's read straight into the parser, and the request's future is resolved from the parser's
last callback (no stream reader, no read task in between). A request's deadline is checked by one timer per
connection that is re-armed only when it fires early: a request that answers in time schedules no timer
of its own.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import BinaryIO, cast

import httptools

_READ_CHUNK = 256 * 1024
_WRITE_CHUNK = 1024 * 1024
_EARLY_S = 0.001  # a timer may fire this much before its time (the loop's clock resolution)


class FilePayload:
    """A request body streamed from a file, and the response body streamed into another (a success's;
    an error answer's body stays in memory for the error message): the server never holds either whole.
    ``len()`` is the request body's size, as for bytes."""

    def __init__(self, source: BinaryIO, size: int, sink: BinaryIO) -> None:
        self.source = source
        self.size = size
        self.sink = sink
        self.written = 0  # response bytes written to the sink
        self.start = source.tell()  # where the body begins in ``source``

    def rewind(self) -> None:
        """Send it again from its start (a request that never reached its worker goes to another)."""
        self.source.seek(self.start)

    def __len__(self) -> int:
        return self.size


Body = bytes | FilePayload


class WorkerConnectionError(Exception):
    """The worker closed the connection or answered something that is not HTTP."""


class NotDelivered(WorkerConnectionError):
    """The request provably never reached the worker's server: connecting failed (the listener is gone),
    the connection was closed before it was written, writing it failed with a broken pipe, or the
    connection was reset before any byte of the answer came. A Unix socket (and TCP, which sends a reset)
    closed with unread data in its receive queue resets its peer; one that read the request and then
    closed ends with an EOF, which stays a WorkerConnectionError (the model may have run). Safe to send to
    another worker."""


# How a connection ends when its peer closed it with our bytes unread (or was gone when we wrote).
_UNREAD = (ConnectionResetError, BrokenPipeError)


class AnswerRefused(WorkerConnectionError):
    """The worker answered something the server does not take (not HTTP, a head past ``MAX_ANSWER_HEAD``):
    it is alive, and stopped for it."""


# The most bytes a worker's answer may take before its headers end: the head is held in memory, on the
# event loop every endpoint shares (a model answering a 100 MB header stalled them all for seconds).
MAX_ANSWER_HEAD = 64 * 1024
HEAD_REFUSED = (
    f"its answer has more than {MAX_ANSWER_HEAD} bytes of head (status line and headers) or trailers"
)


class AnswerFraming:
    """What an answer's parser was fed that was no body, for the httptools callbacks of a whole answer and
    of a streamed one: a head, interim 1xx heads, chunk size lines and trailers. A chunk's framing takes a
    few bytes, so past ``MAX_ANSWER_HEAD`` and 8 bytes a chunk the rest is a head or a trailer grown without
    end (the parser holds a header value whole in memory, copying it as it grows)."""

    def __init__(self) -> None:
        self.fed = self.body_bytes = self.chunk_heads = 0

    def on_chunk_header(self) -> None:
        self.chunk_heads += 1

    def over(self, fed: int) -> bool:
        """Count ``fed`` more bytes (their body already counted by ``on_body``): past the bound now?"""
        self.fed += fed
        return self.fed - self.body_bytes - 8 * self.chunk_heads > MAX_ANSWER_HEAD


def interim_refusal(status: int, headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a 1xx head is no interim response, or None where it is one (100 Continue, 103 Early Hints, or
    any other 1xx: skipped, the answer follows it). A 1xx has no body (RFC 9110: no Content-Length, no
    Transfer-Encoding), and 101 switches protocols, which no request asks for: the parser would read such
    a body as an answer's and wait for the answer after it, the whole invocation timeout."""
    if status == 101:
        return (
            "its answer is 101 Switching Protocols, which no request asked for; answer with a final "
            "status (2xx for a success, 4xx or 5xx for an error)"
        )
    if any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers):
        return (
            f"its answer has status {status} with a body, but a 1xx status is informational and has no "
            "body; answer with a final status (2xx for a success, 4xx or 5xx for an error)"
        )
    return None


class InterimRefused(Exception):
    """Raised from a parser callback to stop the parser at a 1xx head that is no interim response (the
    parser raises HttpParserCallbackError for it; the collector keeps why)."""


class AnswerTooLarge(Exception):
    """The worker's answer is larger than the request's ``max_answer``: it was not read on (the connection
    is closed; the worker itself is fine, and the next request opens a new one)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer is larger than {limit} bytes")
        self.limit = limit


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


class _Collector(AnswerFraming):
    """httptools callbacks for the answers on one connection, one at a time (``start`` before each): one
    parser per connection, as llhttp parses the answers of a kept-alive connection one after the other.

    The parser calls back into the collector and the collector asks the parser: a reference cycle, which
    ``release`` breaks once the connection is gone (else each closed connection waits for a full
    collection)."""

    def __init__(self) -> None:
        super().__init__()
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.done = False
        self.keep_alive = False
        self.status = 0
        self.sink: FilePayload | None = None  # where a 2xx body goes instead of memory
        self.limit: int | None = None  # the most bytes of body taken into memory
        self.room = -1  # what is left of it (-1: no limit)
        self.too_large = False
        self.refused = False  # its head or trailers were too large: nothing more is fed
        self.interim = False  # the message being parsed is an interim 1xx: the answer follows it
        self.extra = False  # bytes came after the answer: another message no request asked for
        self.headed = False  # the answer's final head was read
        self.refusal: str | None = None  # why a 1xx head was refused (``interim_refusal``)
        self.parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)

    def start(self, sink: FilePayload | None, limit: int | None) -> None:
        self.headers, self.chunks, self.done, self.keep_alive, self.sink = [], [], False, False, sink
        self.limit, self.room, self.too_large = limit, (-1 if limit is None else limit), False
        self.refused = self.interim = self.extra = self.headed = False
        self.refusal = None
        self.fed = self.body_bytes = self.chunk_heads = 0

    def until_close(self) -> bool:
        """Whether the answer being read is one whose body ends where the connection does (a final head with
        neither Content-Length nor chunked transfer: HTTP/1.1 allows it, and an HTTP/1.0 server such as
        Python's ``http.server`` answers so), its head whole and nothing refused."""
        if not self.headed or self.done or self.refused or self.too_large or self.extra:
            return False
        names = {name.lower() for name, _ in self.headers}
        return b"content-length" not in names and b"transfer-encoding" not in names

    def release(self) -> None:
        self.parser = None

    def on_headers_complete(self) -> None:
        # llhttp resets its flags once the message completes: ask while the headers are fresh.
        parser = self.parser
        assert parser is not None  # only a parser calls this
        if self.extra:
            return
        self.status = parser.get_status_code()
        if 100 <= self.status < 200:  # 100 Continue, 103 Early Hints: not the answer, which follows (the
            self.refusal = interim_refusal(self.status, self.headers)  # interim heads count toward
            if self.refusal is not None:  # MAX_ANSWER_HEAD all together); one with a body is refused
                raise InterimRefused(self.refusal)  # here, before the parser reads its body
            self.interim, self.headers = True, []
            return
        self.keep_alive = bool(parser.should_keep_alive())
        self.headed = True
        if self.sink is not None and self.status >= 400:
            self.sink = None

    def on_message_begin(self) -> None:
        if self.done:  # a second message after the answer (smuggled): kept out of the answer, refused
            self.extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.extra:
            return
        self.headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        if self.extra:
            return
        self.body_bytes += len(body)
        if self.sink is not None:
            self.sink.sink.write(body)
            self.sink.written += len(body)
        elif self.room < 0:
            self.chunks.append(body)
        elif len(body) <= self.room:
            self.room -= len(body)
            self.chunks.append(body)
        else:  # over the limit: nothing more is kept (``_feed`` ends the request)
            self.too_large, self.chunks = True, []

    def on_message_complete(self) -> None:
        if self.interim:  # before, it was taken for the answer, and the answer for the next request's
            self.interim = False
            return
        self.done = True


def request_head(method: bytes, path: bytes, headers: list[tuple[bytes, bytes]], length: int) -> bytes:
    head = [method, b" ", path, b" HTTP/1.1\r\nHost: worker\r\nContent-Length: ", str(length).encode()]
    for name, value in headers:
        head += [b"\r\n", name, b": ", value]
    head.append(b"\r\n\r\n")
    return b"".join(head)


_JOIN_BELOW = 64 * 1024  # a body up to this is copied after the head; a larger one goes by writelines


class WorkerConnection(asyncio.Protocol):
    """Made by ``open_unix`` / ``open_tcp``. ``request`` for a whole answer; ``write`` and ``read`` for an
    answer read as it comes (``stream.py``), one user at a time either way."""

    def __init__(self) -> None:
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._answer = _Collector()
        self._done: asyncio.Future[None] | None = None  # set while ``request`` reads an answer
        self._lost: str | None = None  # why the connection ended, once it did
        self._unread = False  # it ended with a reset or a broken pipe (``NotDelivered``)
        # raw bytes for ``read`` (a streamed answer), and its waiter
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._reader: asyncio.Future[None] | None = None
        self._drain: asyncio.Future[None] | None = None  # set while the transport's buffer is full
        # the deadline of the request in flight (inf: none), and the one timer that watches it
        self._deadline = math.inf
        self._watchdog: asyncio.TimerHandle | None = None

    @classmethod
    async def open_unix(cls, path: str) -> WorkerConnection:
        _, conn = await asyncio.get_running_loop().create_unix_connection(cls, path)
        return conn

    @classmethod
    async def open_tcp(cls, host: str, port: int) -> WorkerConnection:
        _, conn = await asyncio.get_running_loop().create_connection(cls, host, port)
        return conn

    # ---- requests ----
    async def request(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
        body: Body = b"",
        timeout_s: float | None = None,
        max_answer: int | None = None,
    ) -> WorkerResponse:
        """The whole answer. ``timeout_s``: TimeoutError past it (the connection is closed, as on any error
        or cancellation mid-answer: the stream position is unknown, it is never reused). ``max_answer``: the
        most bytes of body held in memory (a file payload's success goes to its file, unbounded);
        AnswerTooLarge past it, as soon as it is passed."""
        if self.closed or self._transport is None or self._lost is not None:
            raise NotDelivered(self._lost or "connection is closed")  # nothing of it was written
        collector = self._answer
        collector.start(body if isinstance(body, FilePayload) else None, max_answer)
        done = self._done = self._loop.create_future()
        if timeout_s is not None:
            self._watch(timeout_s)
        try:
            if self._chunks:  # sent unasked (an earlier answer's rest, smuggled): no answer of this one
                self._take()
                raise WorkerConnectionError("the worker sent bytes no request asked for")
            head = request_head(method, path, headers or [], len(body))
            if isinstance(body, FilePayload):
                self._transport.write(head)
                await self._write_file(body)
            elif len(body) <= _JOIN_BELOW:  # one write, one wake-up of the worker (not head, then body)
                self._transport.write(head + body)
            else:
                self._transport.writelines((head, body))
            await done
        except TimeoutError:  # an OSError too, but not the connection's: the deadline passed
            self.close()
            raise
        except (ConnectionError, OSError) as exc:
            self.close()
            if isinstance(exc, _UNREAD) and not collector.fed:
                raise NotDelivered(str(exc) or type(exc).__name__) from exc
            raise WorkerConnectionError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            self.close()
            raise
        finally:
            self._done = None
            self._deadline = math.inf
            if done.done() and not done.cancelled():
                done.exception()  # retrieved: an error that came while the body was still being sent
        if collector.extra:  # the worker sent more than its answer: never anyone's answer, not kept
            self.close()
            raise AnswerRefused("its answer was followed by bytes no request asked for")
        if not collector.keep_alive:
            self.close()
        chunks = collector.chunks
        body_out = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return WorkerResponse(collector.status, collector.headers, body_out)

    def write(self, data: bytes) -> None:
        if self._transport is None or self.closed:
            raise WorkerConnectionError("connection is closed")
        self._transport.write(data)

    async def read(self) -> bytes:
        """The bytes that arrived since the last read, waiting for some; b"" once the connection ended."""
        while not self._chunks:
            if self._lost is not None:
                return b""
            self._reader = self._loop.create_future()
            try:
                await self._reader
            finally:
                self._reader = None
        return self._take()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._transport is not None:
                self._transport.close()
        self._unwatch()

    # ---- the protocol ----
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        if self._done is not None:
            self._feed(data)
            return
        self._chunks.append(data)
        self._buffered += len(data)
        transport = self._transport
        if self._buffered >= _READ_CHUNK and transport is not None and transport.is_reading():
            transport.pause_reading()
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    def eof_received(self) -> bool:
        self._end("worker closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._unread = isinstance(exc, _UNREAD)
        self._end((str(exc) or type(exc).__name__) if exc is not None else "worker closed the connection")
        self.closed = True
        self._answer.release()  # no more bytes will come to parse
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    # ---- inside ----
    def _feed(self, data: bytes) -> None:
        collector, done = self._answer, self._done
        assert done is not None and collector.parser is not None  # fed only while connected
        if collector.refused:
            return  # nothing more is held
        try:
            collector.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not done.done():
                done.set_exception(AnswerRefused(collector.refusal or f"its answer is not HTTP ({exc})"))
            return
        if collector.over(len(data)):
            collector.refused, collector.headers = True, []
            if not done.done():
                done.set_exception(AnswerRefused(HEAD_REFUSED))
            return
        if collector.too_large:
            if not done.done():
                done.set_exception(AnswerTooLarge(collector.limit or 0))
        elif collector.done and not done.done():
            done.set_result(None)

    def lost_error(self, fed: int) -> WorkerConnectionError:
        """The error of a request whose connection ended after ``fed`` bytes of its answer came: NotDelivered
        where it was reset (or the pipe broke) before the first."""
        why = self._lost or "worker closed the connection"
        return NotDelivered(why) if self._unread and not fed else WorkerConnectionError(why)

    def _take(self) -> bytes:
        chunks, self._chunks, self._buffered = self._chunks, [], 0
        transport = self._transport
        if transport is not None and not self.closed and not transport.is_reading():
            transport.resume_reading()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _end(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
        if self._done is not None and not self._done.done() and self._answer.until_close():
            self._answer.done, self._answer.keep_alive = True, False  # its body ended with the connection
            self._done.set_result(None)
        if self._done is not None and not self._done.done():
            self._done.set_exception(self.lost_error(self._answer.fed))
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    async def _write_file(self, payload: FilePayload) -> None:
        assert self._transport is not None
        left = payload.size
        while left > 0:
            chunk = payload.source.read(min(_WRITE_CHUNK, left))
            if not chunk:
                raise WorkerConnectionError(f"request body file ended {left} bytes early")
            left -= len(chunk)
            if self.closed:
                raise self.lost_error(self._answer.fed)
            self._transport.write(chunk)
            if self._drain is not None and not self._drain.done():
                await self._drain

    # ---- the deadline ----
    def _watch(self, timeout_s: float) -> None:
        deadline = self._deadline = self._loop.time() + timeout_s
        if self._watchdog is None or self._watchdog.when() > deadline:
            self._unwatch()
            self._watchdog = self._loop.call_at(deadline, self._check_deadline)

    def _unwatch(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _check_deadline(self) -> None:
        self._watchdog = None
        done, deadline = self._done, self._deadline
        if done is None or done.done() or deadline == math.inf:
            return  # no request in flight (nothing to watch until the next one arms it)
        if self._loop.time() >= deadline - _EARLY_S:
            done.set_exception(TimeoutError())
        else:  # a later request's deadline: watch that one
            self._watchdog = self._loop.call_at(deadline, self._check_deadline)
