"""The HTTP server in-process, on a real Unix socket, with a plain invoke function."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import pytest

from zeroscale.runtimes.container import ContainerServer
from zeroscale.runtimes.worker import bind

from .unixhttp import UnixHTTPConnection


@dataclass
class Echo:
    """invoke(): echoes the body and content type; optionally slow; records concurrency."""

    delay_s: float = 0.0
    running: int = 0
    max_running: int = 0
    calls: list[tuple[bytes, dict[str, str]]] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def __call__(self, body: bytes, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        self.started.set()
        time.sleep(self.delay_s)
        self.calls.append((body, dict(headers)))
        self.running -= 1
        if body == b"fail":
            return 418, b"teapot", "text/plain"
        return 200, body, headers.get("content-type", "application/octet-stream")


@dataclass
class Running:
    server: ContainerServer
    path: str
    echo: Echo
    thread: threading.Thread


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    path = str(tmp_path / "w.sock")
    echo = Echo()
    server = ContainerServer(bind(path, None, ""), echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Running(server, path, echo, thread)
    if not server.stopping:
        assert server.drain(5)
    thread.join(5)
    assert not thread.is_alive()


class Responses:
    """httptools response parser callbacks: collects complete responses from a byte stream."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.done: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self._headers: dict[bytes, bytes] = {}
        self._body = b""

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self._headers, self._body))
        self._headers, self._body = {}, b""

    def read(self, sock: socket.socket, count: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
        while len(self.done) < count:
            data = sock.recv(65536)
            assert data, "connection closed early"
            self.parser.feed_data(data)
        out, self.done = self.done[:count], self.done[count:]
        return out


def raw(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(path)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_ping_invocations_and_404(running: Running) -> None:
    conn = UnixHTTPConnection(running.path)
    conn.request("GET", "/ping")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"")
    assert resp.getheader("Content-Length") == "0"
    assert resp.getheader("Content-Type") == "text/plain"

    conn.request(
        "POST", "/invocations", body=b"[1]", headers={"Content-Type": "application/json", "X-A": "b"}
    )
    resp = conn.getresponse()
    assert (resp.status, resp.read(), resp.getheader("Content-Type")) == (200, b"[1]", "application/json")
    assert running.echo.calls[-1][1]["x-a"] == "b"

    conn.request("POST", "/invocations?x=1", body=b"fail")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (418, b"teapot")

    for method, path in (("GET", "/"), ("POST", "/ping"), ("GET", "/invocations"), ("GET", "/models")):
        conn.request(method, path)
        resp = conn.getresponse()
        assert resp.status == 404
        assert resp.getheader("Content-Type")
        assert resp.read().startswith(b"Not found")


def test_keep_alive_many_requests_one_connection(running: Running) -> None:
    conn = UnixHTTPConnection(running.path)
    conn.connect()
    first = conn.sock
    for i in range(50):
        conn.request("POST", "/invocations", body=str(i).encode())
        assert conn.getresponse().read() == str(i).encode()
    assert conn.sock is first


def test_chunked_body(running: Running) -> None:
    sock = raw(running.path)
    sock.sendall(
        b"POST /invocations HTTP/1.1\r\nHost: w\r\nContent-Type: text/csv\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"4\r\n1,2,\r\n"
    )
    time.sleep(0.02)  # the rest arrives in a later packet
    sock.sendall(b"3\r\n3\n4\r\n0\r\n\r\n")
    [(status, headers, body)] = Responses().read(sock, 1)
    assert (status, body, headers[b"content-type"]) == (200, b"1,2,3\n4", b"text/csv")
    assert headers[b"content-length"] == b"7"


def test_pipelined_requests_and_connection_close(running: Running) -> None:
    sock = raw(running.path)
    sock.sendall(
        b"POST /invocations HTTP/1.1\r\nContent-Length: 1\r\n\r\na"
        b"GET /ping HTTP/1.1\r\n\r\n"
        b"POST /invocations HTTP/1.1\r\nContent-Length: 1\r\nConnection: close\r\n\r\nb"
    )
    responses = Responses().read(sock, 3)
    assert [(s, b) for s, _, b in responses] == [(200, b"a"), (200, b""), (200, b"b")]
    assert responses[2][1][b"connection"] == b"close"
    assert closed_by_peer(sock)


def test_http10_closes_and_expect_continue(running: Running) -> None:
    sock = raw(running.path)
    sock.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
    [(status, _, _)] = Responses().read(sock, 1)
    assert status == 200
    assert closed_by_peer(sock)

    sock = raw(running.path)
    sock.sendall(b"POST /invocations HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
    sock.sendall(b"ok")
    [(status, _, body)] = Responses().read(sock, 1)
    assert (status, body) == (200, b"ok")


def test_malformed_request_is_400(running: Running) -> None:
    sock = raw(running.path)
    sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_large_body_both_ways(running: Running) -> None:
    payload = bytes(range(256)) * 20_000  # 5 MB
    conn = UnixHTTPConnection(running.path)
    conn.request("POST", "/invocations", body=payload)
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read() == payload


def test_invocations_run_one_at_a_time_but_ping_does_not_wait(running: Running) -> None:
    running.echo.delay_s = 0.15
    results: list[int] = []

    def call() -> None:
        conn = UnixHTTPConnection(running.path)
        conn.request("POST", "/invocations", body=b"x")
        results.append(conn.getresponse().status)

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    assert running.echo.started.wait(5)
    conn = UnixHTTPConnection(running.path)
    start = time.perf_counter()
    conn.request("GET", "/ping")
    assert conn.getresponse().status == 200
    assert time.perf_counter() - start < 0.1
    for t in threads:
        t.join(5)
    assert results == [200, 200, 200]
    assert running.echo.max_running == 1


def test_drain_answers_the_in_flight_request_saying_close_then_reads_no_other(running: Running) -> None:
    running.echo.delay_s = 0.3
    idle = raw(running.path)
    idle.sendall(b"GET /ping HTTP/1.1\r\nHost: w\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200 OK")
    answer: list[tuple[int, bytes, str | None]] = []

    def call() -> None:
        conn = UnixHTTPConnection(running.path)
        conn.request("POST", "/invocations", body=b"in-flight")
        resp = conn.getresponse()
        answer.append((resp.status, resp.read(), resp.getheader("Connection")))

    caller = threading.Thread(target=call)
    caller.start()
    assert running.echo.started.wait(5)
    assert running.server.drain(5)
    caller.join(5)
    # answered, saying it is the connection's last: the router learns at once that this worker is leaving
    assert answer == [(200, b"in-flight", "close")]
    running.thread.join(5)
    assert not running.thread.is_alive()
    with pytest.raises(OSError):
        raw(running.path)
    # drain() holds the lock until the process exits; a request on an already open connection is not even
    # read: the connection is closed with it unread, which resets the peer's (never a 503 as if the model
    # had refused it): the router knows it never reached the worker, and sends it to another.
    running.server.lock.release()
    idle.sendall(b"POST /invocations HTTP/1.1\r\nHost: w\r\nContent-Length: 4\r\n\r\nlate")
    with pytest.raises(ConnectionResetError):
        idle.recv(4096)
    assert [body for body, _ in running.echo.calls] == [b"in-flight"]


def test_ping_overhead(running: Running) -> None:
    """Guards the fast path; the real number is ~20-40 us on a laptop-class core."""
    sock = raw(running.path)
    request = b"GET /ping HTTP/1.1\r\nHost: w\r\n\r\n"
    samples = []
    for _ in range(2000):
        start = time.perf_counter()
        sock.sendall(request)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        samples.append(time.perf_counter() - start)
    p50_us = statistics.median(samples) * 1e6
    assert p50_us < 1000, f"p50 {p50_us:.0f} us"


CONTAINER_WARM_PROBE = """
    import gc, socket, sys, threading, types
    from zeroscale.runtimes import container
    from zeroscale.runtimes.registry import RUNTIMES
    RUNTIMES["sklearn"].preload()
    import zeroscale.runtimes.worker
    gc.collect(); gc.freeze()
    runtime = types.SimpleNamespace(warm=container.warm)
    REQUEST = b"POST /invocations HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 5\\r\\n\\r\\nhello"

    def untimed():
        path = sys.argv[1] + "/w.sock"
        listener = zeroscale.runtimes.worker.bind(path, None, "127.0.0.1")
        server = container.ContainerServer(listener, lambda body, headers: (200, body[::-1], "text/plain"))
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        return server, client

    def timed(state):
        server, client = state  # a worker's first request: accept, a thread for the connection, the answer
        client.sendall(REQUEST)
        conn, _ = server.listener.accept()
        threading.Thread(target=container._Connection(server, conn).run, daemon=True).start()
        answer = client.recv(65536)
        return answer.split(b"\\r\\n\\r\\n", 1)[1].decode()
    """


def test_the_warm_up_leaves_a_workers_first_request_less_to_copy(tmp_path: Path) -> None:
    """``container.warm`` (what a zygote's spare runs before it waits: a thread started and joined, one
    request through a connection over a socket pair) leaves the fork single-threaded; a worker's first
    request (a new connection's thread, the parse and the answer) then copies under half the pages."""
    from .forkpair import run_pair

    (cold_faults, cold_answer, _), (warm_faults, warm_answer, threads) = run_pair(
        CONTAINER_WARM_PROBE, str(tmp_path)
    )
    assert warm_answer == cold_answer == "olleh"
    assert threads == 1
    assert warm_faults < 0.5 * cold_faults, (warm_faults, cold_faults)


def test_a_request_read_as_the_stop_comes_is_answered_before_drain_returns(running: Running) -> None:
    """A second connection's request, read while the first one's invocation holds the worker, waits for it;
    the stop comes meanwhile. drain() (after which the worker's process exits) returns only once that read
    request is answered too: it is not lost with the process (the router could not tell it from a request
    the model ran, and would answer a ModelError)."""
    running.echo.delay_s = 0.5
    first, second = raw(running.path), raw(running.path)
    first.sendall(b"POST /invocations HTTP/1.1\r\nHost: w\r\nContent-Length: 5\r\n\r\nfirst")
    assert running.echo.started.wait(5)
    second.sendall(b"POST /invocations HTTP/1.1\r\nHost: w\r\nContent-Length: 6\r\n\r\nsecond")
    deadline = time.monotonic() + 5
    while running.server.reading < 2 and time.monotonic() < deadline:  # the second request has been read
        time.sleep(0.005)
    assert running.server.reading == 2
    assert running.server.drain(5)
    second.settimeout(0)  # answered already, not after drain() returned
    status, headers, body = Responses().read(second, 1)[0]
    assert (status, body, headers.get(b"connection")) == (200, b"second", b"close")
    assert [body for body, _ in running.echo.calls] == [b"first", b"second"]
