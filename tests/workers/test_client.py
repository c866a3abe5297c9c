"""The worker connection against a real Unix-socket server that answers as the test tells it: whole answers,
deadlines (one timer per connection, re-armed lazily), a worker that closes, malformed answers, file bodies
and raw reads."""

from __future__ import annotations

import asyncio
import gc
import io
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from zeroscale.workers.client import (
    MAX_ANSWER_HEAD,
    AnswerRefused,
    AnswerTooLarge,
    FilePayload,
    NotDelivered,
    WorkerConnection,
    WorkerConnectionError,
)
from zeroscale.workers.manager import WorkerHandle, WorkerSpec
from zeroscale.workers.stream import open_stream

# Each test on both loops (tests/workers/conftest.py): the server runs uvloop, whose transports differ.
pytestmark = pytest.mark.asyncio(loop_factories=["asyncio", "uvloop"])

Answer = Callable[[bytes], tuple[float, bytes]]  # request body -> (delay, raw bytes to send back)


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


class Worker:
    """Reads one request at a time (Content-Length bodies) and answers with ``answer(body)``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.answer: Answer = lambda body: (0.0, ok(body))
        self.bodies: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None
        self.later = b""  # sent 0.1 s after the next answer, once: bytes no request asked for
        self.close_after = False  # close the connection after each answer (an HTTP/1.0 server's way)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                body = await reader.readexactly(length)
                self.bodies.append(body)
                delay, raw = self.answer(body)
                if delay:
                    await asyncio.sleep(delay)
                if not raw:
                    writer.close()
                    return
                writer.write(raw)
                await writer.drain()
                if self.close_after:
                    writer.close()
                    return
                if self.later:
                    await asyncio.sleep(0.1)
                    writer.write(self.later)
                    self.later = b""
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Worker]:
    w = Worker(tmp_path / "w.sock")
    w.server = await asyncio.start_unix_server(w._serve, w.path)
    yield w
    w.server.close()


async def test_answers_come_back_whole_on_one_kept_alive_connection(worker: Worker) -> None:
    conn = await WorkerConnection.open_unix(worker.path)
    for i in range(50):
        resp = await conn.request(
            b"POST", b"/invocations", [(b"Content-Type", b"text/plain")], b"n%d" % i, 5.0
        )
        assert (resp.status, resp.body, resp.header(b"content-type")) == (200, b"n%d" % i, b"text/plain")
    assert not conn.closed
    big = bytes(range(256)) * 8192  # 2 MB: many reads
    assert (await conn.request(b"POST", b"/invocations", [], big)).body == big
    conn.close()


async def test_an_answer_past_its_deadline_is_a_timeout_and_the_connection_is_not_reused(
    worker: Worker,
) -> None:
    conn = await WorkerConnection.open_unix(worker.path)
    worker.answer = lambda body: (1.0, ok(body))
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TimeoutError):
        await conn.request(b"POST", b"/invocations", [], b"slow", 0.1)
    assert 0.09 <= loop.time() - began < 0.5
    assert conn.closed
    with pytest.raises(WorkerConnectionError):
        await conn.request(b"POST", b"/invocations", [], b"again", 1.0)


async def test_a_shorter_deadline_after_a_longer_one_is_kept(worker: Worker) -> None:
    """The connection's one timer is armed for the first request's (long) deadline; a later request with a
    shorter one must not wait for it."""
    conn = await WorkerConnection.open_unix(worker.path)
    assert (await conn.request(b"POST", b"/invocations", [], b"fast", 30.0)).body == b"fast"
    worker.answer = lambda body: (2.0, ok(body))
    loop = asyncio.get_running_loop()
    began = loop.time()
    with pytest.raises(TimeoutError):
        await conn.request(b"POST", b"/invocations", [], b"slow", 0.1)
    assert loop.time() - began < 1.0


async def test_an_earlier_requests_timer_does_not_time_out_a_later_request(worker: Worker) -> None:
    """The first request's deadline passes while the second is in flight, well within its own."""
    conn = await WorkerConnection.open_unix(worker.path)
    assert (await conn.request(b"POST", b"/invocations", [], b"first", 0.2)).body == b"first"
    worker.answer = lambda body: (0.4, ok(body))
    assert (await conn.request(b"POST", b"/invocations", [], b"second", 2.0)).body == b"second"
    worker.answer = lambda body: (0.3, ok(body))  # no deadline at all, after the ones above
    assert (await conn.request(b"POST", b"/invocations", [], b"third")).body == b"third"


async def test_a_worker_that_closes_mid_answer_or_answers_garbage_breaks_the_connection(
    worker: Worker,
) -> None:
    conn = await WorkerConnection.open_unix(worker.path)
    worker.answer = lambda body: (0.0, b"")  # closes without a word
    with pytest.raises(WorkerConnectionError, match="closed"):
        await conn.request(b"POST", b"/invocations", [], b"x", 5.0)
    assert conn.closed
    conn = await WorkerConnection.open_unix(worker.path)
    worker.answer = lambda body: (0.0, b"NOT HTTP AT ALL\r\n\r\n")
    with pytest.raises(AnswerRefused, match="its answer is not HTTP"):  # a WorkerConnectionError
        await conn.request(b"POST", b"/invocations", [], b"x", 5.0)
    assert conn.closed


async def test_an_answer_whose_body_ends_with_the_connection_is_whole(worker: Worker) -> None:
    """A head with neither Content-Length nor chunked transfer: the body is what comes until the worker
    closes (HTTP/1.1 allows it; Python's http.server answers so by default). A probe's image answering so
    got "the worker process was killed by signal 15" instead of its answer."""
    worker.close_after = True
    for version in (b"1.0", b"1.1"):
        worker.answer = lambda body, v=version: (
            0.0,
            b"HTTP/" + v + b" 200 OK\r\nContent-Type: a/b\r\n\r\n" + body,
        )
        conn = await WorkerConnection.open_unix(worker.path)
        resp = await conn.request(b"POST", b"/invocations", [], b"whole body", 5.0)
        assert (resp.status, resp.body, resp.header(b"content-type")) == (200, b"whole body", b"a/b")
        assert conn.closed  # never reused
    # an answer cut short is no answer: a chunked one, or one whose length says more was coming
    for cut in (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", ok(b"abcdef")[:-2]):
        worker.answer = lambda body, raw=cut: (0.0, raw)
        conn = await WorkerConnection.open_unix(worker.path)
        with pytest.raises(WorkerConnectionError):
            await conn.request(b"POST", b"/invocations", [], b"x", 5.0)


async def test_an_interim_1xx_is_not_the_answer_and_no_answer_goes_to_another_request(worker: Worker) -> None:
    """A security review's finding: a 103 Early Hints was taken for the answer (an empty 200) and the
    answer that followed it for the next request's, another caller's; two answers in one write were merged
    into one. The answer is the one after the interim heads, and bytes after it are refused, never kept."""
    conn = await WorkerConnection.open_unix(worker.path)
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
    worker.answer = lambda body: (0.0, early + b"HTTP/1.1 100 Continue\r\n\r\n" + ok(body))
    resp = await conn.request(b"POST", b"/invocations", [], b"first", 5.0)
    assert (resp.status, resp.body, resp.header(b"link")) == (200, b"first", None)
    worker.answer = lambda body: (0.0, ok(body) + ok(b"SMUGGLED"))
    with pytest.raises(AnswerRefused, match="followed by bytes no request asked for"):
        await conn.request(b"POST", b"/invocations", [], b"second", 5.0)
    assert conn.closed
    conn = await WorkerConnection.open_unix(worker.path)
    worker.answer = lambda body: (0.0, ok(body))
    worker.later = ok(b"FOR WHOEVER ASKS NEXT")
    assert (await conn.request(b"POST", b"/invocations", [], b"third", 5.0)).body == b"third"
    await asyncio.sleep(0.3)  # the worker's unasked answer has arrived
    with pytest.raises(WorkerConnectionError, match="bytes no request asked for"):
        await conn.request(b"POST", b"/invocations", [], b"fourth", 5.0)
    assert conn.closed


NO_INTERIM = [  # a 1xx head that is no interim response, and what the refusal says
    (
        b'HTTP/1.1 199 Odd\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}',
        "199 with a body",
    ),
    (b"HTTP/1.1 100 Continue\r\nContent-Length: 2\r\n\r\nok", "100 with a body"),
    (
        b"HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        "103 with a body",
    ),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", "101 Switching"),
]


async def test_a_1xx_with_a_body_or_a_101_is_refused_at_once_and_a_bodiless_1xx_is_skipped(
    worker: Worker,
) -> None:
    """A probe's finding: a model answering status 199 with a body made the invocation wait out its whole
    timeout (the parser read the body as the 1xx's, and waited for the answer after it). A 1xx has no body
    and 101 switches protocols, which no request asks for: refused as soon as the head is in, for a whole
    answer and a streamed one alike. A 1xx without a body, known or not, is an interim response: skipped."""
    loop = asyncio.get_running_loop()
    for raw, says in NO_INTERIM:
        worker.answer = lambda body, raw=raw: (0.0, raw)  # and the connection stays open
        conn = await WorkerConnection.open_unix(worker.path)
        began = loop.time()
        with pytest.raises(AnswerRefused, match=says):
            await conn.request(b"POST", b"/invocations", [], b"x", 10.0)
        assert loop.time() - began < 1.0 and conn.closed
        conn = await WorkerConnection.open_unix(worker.path)
        with pytest.raises(AnswerRefused, match=says):
            await asyncio.wait_for(open_stream(conn, b"POST", b"/invocations", [], b"x"), 10.0)
        assert loop.time() - began < 2.0 and conn.closed
    interims = b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 199 Odd\r\nX-Odd: 1\r\n\r\n"
    worker.answer = lambda body: (0.0, interims + ok(body))
    conn = await WorkerConnection.open_unix(worker.path)
    resp = await conn.request(b"POST", b"/invocations", [], b"whole", 5.0)
    assert (resp.status, resp.body, resp.header(b"x-odd")) == (200, b"whole", None)
    stream = await open_stream(conn, b"POST", b"/invocations", [], b"streamed")
    assert stream.status == 200 and stream.header(b"x-odd") is None
    assert await stream.read_all() == b"streamed"
    conn.close()


def chunked(parts: list[bytes], trailer: bytes = b"") -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body + b"0\r\n" + trailer + b"\r\n"


async def test_a_trailer_or_a_streamed_head_without_end_is_refused_past_the_head_limit(
    worker: Worker,
) -> None:
    """A security review's finding: only a whole answer's head was bounded. A chunked answer's trailer, and
    the head of a streamed answer, grew without end (the parser holds a header value whole, copying it as
    it grows), holding the event loop for seconds. Many small chunks are not framing past the limit."""
    conn = await WorkerConnection.open_unix(worker.path)
    many = [b"x"] * 50_000  # 5 bytes of framing a byte of body: within 8 a chunk
    worker.answer = lambda body: (0.0, chunked(many, b"X-Fine: 1\r\n"))
    assert (await conn.request(b"POST", b"/invocations", [], b"a", 5.0)).body == b"x" * 50_000
    worker.answer = lambda body: (0.0, chunked([body], b"X-Trailer: " + b"t" * (4 * 1024 * 1024) + b"\r\n"))
    with pytest.raises(AnswerRefused, match=f"more than {MAX_ANSWER_HEAD} bytes"):
        await conn.request(b"POST", b"/invocations", [], b"b", 5.0)
    assert conn.closed
    conn = await WorkerConnection.open_unix(worker.path)
    worker.answer = lambda body: (0.0, ok(body, b"X-Big: " + b"h" * (4 * 1024 * 1024) + b"\r\n"))
    with pytest.raises(AnswerRefused, match=f"more than {MAX_ANSWER_HEAD} bytes of head"):
        await open_stream(conn, b"POST", b"/invocations", [], b"c")
    assert conn.closed
    conn = await WorkerConnection.open_unix(worker.path)
    worker.answer = lambda body: (0.0, b"HTTP/1.1 103 Early Hints\r\nLink: <x>\r\n\r\n" + ok(body))
    stream = await open_stream(conn, b"POST", b"/invocations", [], b"streamed")
    assert stream.status == 200 and stream.header(b"link") is None
    assert await stream.read_all() == b"streamed"
    conn.close()


async def test_an_answer_whose_headers_never_end_is_refused_past_its_head_limit(worker: Worker) -> None:
    """A model answering one 8 MB header (or many small ones): refused once the head passes
    MAX_ANSWER_HEAD, not held whole in the server's memory on the loop every endpoint shares; a large head
    within it is read."""
    conn = await WorkerConnection.open_unix(worker.path)
    worker.answer = lambda body: (0.0, ok(body, b"X-Big: " + b"a" * (8 * 1024 * 1024) + b"\r\n"))
    with pytest.raises(WorkerConnectionError, match=f"more than {MAX_ANSWER_HEAD} bytes"):
        await conn.request(b"POST", b"/invocations", [], b"x", 5.0)
    conn.close()
    conn = await WorkerConnection.open_unix(worker.path)
    many = b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(2000))  # ~220 KB of headers
    worker.answer = lambda body: (0.0, ok(body, many))
    with pytest.raises(WorkerConnectionError, match="status line and headers"):
        await conn.request(b"POST", b"/invocations", [], b"x", 5.0)
    conn.close()
    conn = await WorkerConnection.open_unix(worker.path)
    fits = b"X-Fits: " + b"c" * 40_000 + b"\r\n"
    worker.answer = lambda body: (0.0, ok(body * 300_000, fits))
    resp = await conn.request(b"POST", b"/invocations", [], b"y", 5.0)
    assert resp.status == 200 and resp.header(b"x-fits") == b"c" * 40_000 and len(resp.body) == 300_000
    conn.close()


async def test_connection_close_from_the_worker_is_honoured(worker: Worker) -> None:
    conn = await WorkerConnection.open_unix(worker.path)
    worker.answer = lambda body: (0.0, ok(body, b"Connection: close\r\n"))
    assert (await conn.request(b"POST", b"/invocations", [], b"bye")).body == b"bye"
    assert conn.closed


async def test_a_file_body_is_streamed_out_and_the_answer_into_a_file(worker: Worker) -> None:
    conn = await WorkerConnection.open_unix(worker.path)
    data = b"0123456789" * 300_000  # 3 MB: the socket's buffer fills, writes wait for it to drain
    payload = FilePayload(io.BytesIO(data), len(data), io.BytesIO())
    resp = await conn.request(b"POST", b"/invocations", [], payload, 10.0)
    assert resp.status == 200 and resp.body == b""
    assert payload.sink.getvalue() == data and payload.written == len(data)  # type: ignore[attr-defined]
    assert worker.bodies[-1] == data


async def test_an_answer_over_its_limit_is_not_read_on(worker: Worker) -> None:
    conn = await WorkerConnection.open_unix(worker.path)
    assert (await conn.request(b"POST", b"/invocations", [], b"x" * 1000, 5.0, max_answer=1000)).body
    with pytest.raises(AnswerTooLarge, match="larger than 1000 bytes") as err:
        await conn.request(b"POST", b"/invocations", [], b"x" * 1001, 5.0, max_answer=1000)
    assert err.value.limit == 1000 and conn.closed  # the rest of it is never read
    big = b"y" * (8 * 1024 * 1024)
    again = await WorkerConnection.open_unix(worker.path)  # the worker serves on
    with pytest.raises(AnswerTooLarge):
        await again.request(b"POST", b"/invocations", [], big, 10.0, max_answer=1024 * 1024)
    # a file payload's answer goes to its file: the limit is for what is held in memory
    payload = FilePayload(io.BytesIO(big), len(big), io.BytesIO())
    third = await WorkerConnection.open_unix(worker.path)
    assert (await third.request(b"POST", b"/invocations", [], payload, 10.0, max_answer=1024)).status == 200
    assert payload.written == len(big)
    third.close()


async def test_raw_reads_for_a_streamed_answer(worker: Worker) -> None:
    conn = await WorkerConnection.open_unix(worker.path)
    worker.answer = lambda body: (0.0, ok(body))
    conn.write(b"POST /invocations HTTP/1.1\r\nHost: w\r\nContent-Length: 2\r\n\r\nhi")
    got = b""
    while not got.endswith(b"hi"):
        got += await conn.read()
    assert got.startswith(b"HTTP/1.1 200 OK")
    worker.answer = lambda body: (0.0, b"")
    conn.write(b"POST /invocations HTTP/1.1\r\nHost: w\r\nContent-Length: 1\r\n\r\nx")
    assert await conn.read() == b""  # the worker went away


async def test_a_large_answer_nobody_reads_yet_is_held_back_then_read_whole(worker: Worker) -> None:
    """Past 256 KB buffered the connection stops reading from the socket; a read takes what is buffered and
    reading resumes, so the rest arrives."""
    big = bytes(range(256)) * 4096  # 1 MB
    worker.answer = lambda body: (0.0, ok(big))
    conn = await WorkerConnection.open_unix(worker.path)
    conn.write(b"POST /invocations HTTP/1.1\r\nHost: w\r\nContent-Length: 1\r\n\r\nx")
    await asyncio.sleep(0.2)  # the worker writes all it can; the connection buffers and pauses
    got = b""
    while not got.endswith(big):
        got += await asyncio.wait_for(conn.read(), 5.0)
    assert got.startswith(b"HTTP/1.1 200 OK") and len(got) > len(big)


async def test_a_closed_connection_is_freed_without_waiting_for_a_full_collection(worker: Worker) -> None:
    # The parser calls back into its collector and the collector asks the parser: a cycle, which kept every
    # closed worker connection (one per exited worker) until a full collection. Closing breaks it.
    gc.collect()
    gc.disable()
    try:
        conn = await WorkerConnection.open_unix(worker.path)
        assert (await conn.request(b"POST", b"/invocations", [], b"x", 5.0)).body == b"x"
        worker.answer = lambda body: (0.0, ok(body, b"Connection: close\r\n"))
        assert (await conn.request(b"POST", b"/invocations", [], b"y", 5.0)).status == 200
        assert conn.closed
        await asyncio.sleep(0.01)  # connection_lost
        answer, protocol = weakref.ref(conn._answer), weakref.ref(conn)
        del conn
        await asyncio.sleep(0)
        assert (answer(), protocol()) == (None, None)
    finally:
        gc.enable()


async def test_a_streamed_answer_is_freed_without_waiting_for_a_full_collection(worker: Worker) -> None:
    gc.collect()
    gc.disable()
    try:
        conn = await WorkerConnection.open_unix(worker.path)
        stream = await open_stream(conn, b"POST", b"/invocations", [], b"streamed")
        assert (stream.status, await stream.read_all()) == (200, b"streamed")
        parts = weakref.ref(stream._parts)
        conn.close()
        del stream
        await asyncio.sleep(0.01)
        assert parts() is None
    finally:
        gc.enable()


# ---- a request that never reached the worker, and one that did ----
class Leaving:
    """A worker on a blocking socket (Unix or TCP) that answers one request, then leaves as ``how`` says:
    "unread": closes with the next request unread in its socket (as a process that exits while idle);
    "read": reads the next request, then closes (the model may have run it); "partial": sends the first
    bytes of an answer, then closes with the request unread."""

    def __init__(self, tmp_path: Path, family: str, how: str) -> None:
        if family == "unix":
            self.sock = socket.socket(socket.AF_UNIX)
            self.path = str(tmp_path / "leaving.sock")
            self.sock.bind(self.path)
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.port = self.sock.getsockname()[1]
        self.family, self.how = family, how
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    async def connect(self) -> WorkerConnection:
        if self.family == "unix":
            return await WorkerConnection.open_unix(self.path)
        return await WorkerConnection.open_tcp("127.0.0.1", self.port)

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        conn.recv(65536)
        conn.sendall(ok(b"first"))
        if self.how == "read":
            conn.recv(65536)
        else:
            time.sleep(0.3)  # the next request comes meanwhile, and stays unread
            if self.how == "partial":
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
        conn.close()
        self.sock.close()


@pytest.mark.parametrize("family", ["unix", "tcp"])
async def test_a_request_left_unread_by_a_worker_that_went_is_not_delivered(
    tmp_path: Path, family: str
) -> None:
    """A socket closed with unread data resets its peer (Unix and TCP alike): the request never reached the
    worker's server, and the router may send it to another worker."""
    leaving = Leaving(tmp_path, family, "unread")
    conn = await leaving.connect()
    assert (await conn.request(b"POST", b"/invocations", [], b"first", 5.0)).body == b"first"
    with pytest.raises(NotDelivered):
        await conn.request(b"POST", b"/invocations", [], b"second", 5.0)
    assert conn.closed
    with pytest.raises(NotDelivered):  # and a closed connection writes nothing
        await conn.request(b"POST", b"/invocations", [], b"third", 5.0)


@pytest.mark.parametrize("family", ["unix", "tcp"])
async def test_a_streamed_request_left_unread_is_not_delivered(tmp_path: Path, family: str) -> None:
    leaving = Leaving(tmp_path, family, "unread")
    conn = await leaving.connect()
    assert (await conn.request(b"POST", b"/invocations", [], b"first", 5.0)).body == b"first"
    with pytest.raises(NotDelivered):
        await open_stream(conn, b"POST", b"/invocations", [], b"second")


@pytest.mark.parametrize("how", ["read", "partial"])
@pytest.mark.parametrize("family", ["unix", "tcp"])
async def test_a_request_the_worker_read_or_began_to_answer_is_not_taken_back(
    tmp_path: Path, family: str, how: str
) -> None:
    """An EOF after the worker read the request, or a reset after the first bytes of its answer: the model
    may have run it, so it is a broken connection, never NotDelivered (no second run elsewhere)."""
    leaving = Leaving(tmp_path, family, how)
    conn = await leaving.connect()
    assert (await conn.request(b"POST", b"/invocations", [], b"first", 5.0)).body == b"first"
    with pytest.raises(WorkerConnectionError) as err:
        await conn.request(b"POST", b"/invocations", [], b"second", 5.0)
    assert not isinstance(err.value, NotDelivered), err.value


async def test_a_worker_whose_server_is_gone_is_not_delivered(tmp_path: Path) -> None:
    """Connecting is refused (its listener closed) or its socket is gone: NotDelivered, from the handle."""
    path = tmp_path / "gone.sock"
    spec = WorkerSpec("sklearn", "/m", 1024, tmp_path)
    handle = WorkerHandle("w", spec, str(path), tmp_path / "w.log", started_at=0.0)
    with pytest.raises(NotDelivered):  # no such socket
        await handle.request(b"POST", b"/invocations", [], b"x", 5.0)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # a socket file nobody listens on
    with pytest.raises(NotDelivered):
        await handle.request(b"POST", b"/invocations", [], b"x", 5.0)
