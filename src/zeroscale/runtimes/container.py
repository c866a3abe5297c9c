"""A small, fast HTTP/1.1 server for the SageMaker container contract, parsed with httptools.

``GET /ping`` -> 200 with an empty body; ``POST /invocations`` -> ``invoke(body, headers)``; ``POST
/zeroscale/batch`` (the router's dynamic batching, when the server was given ``batch``) -> one framed answer
per framed body (runtimes/batching.py); anything else -> 404.
A streamed answer (an iterator of parts) goes out chunked, one chunk per part as soon as it
exists; a failure mid-stream ends it with the error trailer (streaming.py). One thread per connection
(keep-alive, pipelining, chunked bodies); invocations run one at a time under one lock, which also covers
writing the response (a stream's last part included), so ``drain`` waits for the in-flight request to be
answered. ``/ping`` never waits for that lock.
"""

from __future__ import annotations

import contextlib
import http
import os
import select
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import NoReturn

import httptools

from zeroscale.runtimes import batching
from zeroscale.runtimes.streaming import ERROR_TRAILER, StreamFailed, trailer

# invoke(body, lower-cased headers) -> (status, body or an iterator of parts, content_type); must not raise
# (a streamed body's iterator may raise StreamFailed).
InvokeFn = Callable[[bytes, Mapping[str, str]], tuple[int, bytes | Iterator[bytes], str]]
# Dynamic batching: several bodies with the same headers -> one answer each, as ``InvokeFn`` would give.
BatchFn = Callable[[list[bytes], Mapping[str, str]], list[tuple[int, bytes | Iterator[bytes], str]]]

_RECV_BYTES = 256 * 1024
_TEXT = b"text/plain; charset=utf-8"
_TEXT_STR = _TEXT.decode()
_PING_OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_SMALL_BODY = 64 * 1024


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b"Unknown"


_REASONS = {s.value: s.phrase.encode("ascii") for s in http.HTTPStatus}


def response_head(status: int, content_type: bytes, length: int, close: bool) -> bytes:
    reason = _REASONS.get(status) or _reason(status)
    conn = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s\r\n" % (
        status,
        reason,
        content_type,
        length,
        conn,
    )


def _header_value(value: str) -> bytes:
    return value.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace")


class ContainerServer:
    """Serves one listening socket (Unix or TCP) until ``stop``."""

    def __init__(self, listener: socket.socket, invoke: InvokeFn, batch: BatchFn | None = None) -> None:
        self.listener = listener
        self.invoke = invoke
        self.batch = batch
        self.lock = threading.Lock()  # one invocation at a time
        self.stopping = False
        # Connection threads between taking a look at their input and answering what they read: ``drain``
        # waits for them, so that a request read just as the stop came is answered, not lost with the process.
        self.reading = 0
        self.read_done = threading.Condition()

    def serve_forever(self) -> None:
        """Accept connections until ``stop`` is called (from a signal handler or another thread)."""
        tcp = self.listener.family in (socket.AF_INET, socket.AF_INET6)
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                if self.stopping:
                    break
                threading.Event().wait(0.01)  # e.g. EMFILE: don't spin
                continue
            if tcp:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_Connection(self, conn).run, name="zeroscale-conn", daemon=True).start()

    def stop(self) -> None:
        """Stop accepting; safe to call from a signal handler. Wakes ``serve_forever``."""
        self.stopping = True
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)

    def drain(self, timeout_s: float) -> bool:
        """``stop``, then wait until the in-flight invocation (if any) has been answered.

        Returns False on timeout. The answer of an invocation that ends while stopping says
        ``Connection: close``, and a connection is not read once stopping: a request that came on it is
        left unread, so the peer's connection is reset (it was never read: the router sends it to another
        worker), not answered 503 as if the model had refused it. One already read as the stop came is
        served, as the in-flight one: a connection's thread counts itself in ``reading`` before it looks at
        ``stopping``, and this waits for none to be left."""
        self.stop()
        deadline = time.monotonic() + timeout_s
        with self.read_done:
            self.read_done.wait_for(lambda: self.reading == 0, timeout_s)
        acquired = self.lock.acquire(timeout=max(0.0, deadline - time.monotonic()))
        with contextlib.suppress(OSError):
            self.listener.close()
        return acquired


def _model_exit(exc: SystemExit | KeyboardInterrupt) -> NoReturn:
    """The model's code asked the process to end (``sys.exit(5)`` in predict_fn): it ends, with that code
    and its traceback in the log. On a connection's thread SystemExit would end only the thread, and the
    worker's death would read as a clean exit once the server stopped it."""
    traceback.print_exc(file=sys.stderr)
    code = exc.code if isinstance(exc, SystemExit) else 130
    if not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(code)


_WARM_REQUEST = (
    b"POST /invocations HTTP/1.1\r\nHost: warm\r\nContent-Type: application/json\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


def warm() -> None:
    """What a zygote's spare runs before it waits: a worker's first request through this server, ahead. A
    thread started and joined (a fresh fork's first thread costs ~0.4 ms here, the next ~0.17: every worker
    serves its first connection on a new thread) and one request through a connection's parser and answer,
    over a socket pair, with an answer of its own. Leaves no thread and no socket behind. In a fork, a
    worker's first request then takes ~0.2 ms, not ~0.8."""
    thread = threading.Thread(target=lambda: None, name="zeroscale-warm")
    thread.start()
    thread.join()
    ours, theirs = socket.socketpair()
    try:
        server = ContainerServer(ours, lambda body, headers: (200, body, "application/json"))
        theirs.sendall(_WARM_REQUEST)
        theirs.shutdown(socket.SHUT_WR)
        _Connection(server, ours).run()  # answers, reads the end of the requests, closes its side
        theirs.recv(_RECV_BYTES)
    finally:
        ours.close()
        theirs.close()


class _Connection:
    """The httptools protocol for one connection, and its read loop."""

    __slots__ = ("_body", "_headers", "_ready", "_url", "parser", "server", "sock")

    def __init__(self, server: ContainerServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        # Complete requests: (method, url, headers, body, keep_alive)
        self._ready: list[tuple[bytes, bytes, dict[str, str], bytes, bool]] = []

    # ---- httptools callbacks ----
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = {}
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if self._headers.get("expect", "").lower() == "100-continue":
            self.sock.sendall(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        parts = self._body
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._ready.append(
            (self.parser.get_method(), self._url, self._headers, body, self.parser.should_keep_alive())
        )

    # ---- read loop ----
    def run(self) -> None:
        sock, parser, ready = self.sock, self.parser, self._ready
        # Wait in poll, not in recv: a thread asleep in a Unix socket's recv is also woken when its peer
        # reads the last answer (the kernel's "room to write" wake-up of the same socket), finds nothing
        # and sleeps again, which is a second time slice per request. poll sleeps until there is input.
        readable = select.poll()
        readable.register(sock, select.POLLIN)
        try:
            while True:
                readable.poll()
                if not self._serve_input(sock, parser, ready):
                    return
        except OSError:
            return  # the peer went away
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    def _serve_input(
        self,
        sock: socket.socket,
        parser: httptools.HttpRequestParser,
        ready: list[tuple[bytes, bytes, dict[str, str], bytes, bool]],
    ) -> bool:
        """Read what came and answer every request it completes; whether to go on with the connection. Counted
        in the server's ``reading`` throughout (``ContainerServer.drain``)."""
        server = self.server
        with server.read_done:
            server.reading += 1
        try:
            if server.stopping:
                return False  # not read: a request that came is reset, and the router sends it elsewhere
            data = sock.recv(_RECV_BYTES)
            if not data:
                return False
            closing = False
            try:
                parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                closing = True  # no upgrades: answer what was parsed, then close
            except httptools.HttpParserError as exc:
                message = f"Bad request: {exc}".encode()
                sock.sendall(response_head(400, _TEXT, len(message), True) + message)
                return False
            while ready:
                method, url, headers, body, keep_alive = ready.pop(0)
                if not self._respond(method, url, headers, body, keep_alive and not closing):
                    return False
            return not closing
        finally:
            with server.read_done:
                server.reading -= 1
                server.read_done.notify_all()

    def _respond(self, method: bytes, url: bytes, headers: dict[str, str], body: bytes, keep: bool) -> bool:
        """Answer one request; returns whether to keep the connection open."""
        path = url.split(b"?", 1)[0]
        if path == b"/ping" and method == b"GET":
            if keep and not self.server.stopping:
                self.sock.sendall(_PING_OK)
                return True
            self._send(200, b"", b"text/plain", False)
            return False
        if path == b"/invocations" and method == b"POST":
            server = self.server
            with server.lock:
                try:
                    status, out, content_type = server.invoke(body, headers)
                except (SystemExit, KeyboardInterrupt) as exc:
                    _model_exit(exc)
                except Exception as exc:  # invoke should not raise; answer something anyway
                    traceback.print_exc(file=sys.stderr)
                    status, out, content_type = 500, f"{type(exc).__name__}: {exc}".encode(), "text/plain"
                keep = keep and not server.stopping  # stopping (its own SIGTERM, too): the last answer
                if not isinstance(out, bytes):
                    return self._send_stream(status, out, _header_value(content_type), keep)
                self._send(status, out, _header_value(content_type), keep)
            return keep
        if path == batching.BATCH_PATH and method == b"POST" and self.server.batch is not None:
            return self._respond_batch(self.server.batch, headers, body, keep)
        message = b"Not found: " + method + b" " + path
        self._send(404, message, _TEXT, keep)
        return keep

    def _respond_batch(self, batch: BatchFn, headers: dict[str, str], body: bytes, keep: bool) -> bool:
        """Several requests in one frame: 200 with one framed answer each (a malformed frame: 400)."""
        try:
            bodies = batching.unpack_bodies(body)
        except ValueError as exc:
            message = f"Bad batch: {exc}".encode()
            self._send(400, message, _TEXT, keep)
            return keep
        server = self.server
        with server.lock:
            try:
                results = batch(bodies, headers)
            except (SystemExit, KeyboardInterrupt) as exc:
                _model_exit(exc)
            except Exception as exc:  # batch should not raise; answer something anyway
                traceback.print_exc(file=sys.stderr)
                message = f"{type(exc).__name__}: {exc}".encode()
                self._send(500, message, _TEXT, keep)
                return keep
            answers = []
            for status, out, content_type in results:
                if not isinstance(out, bytes):  # a streamed answer: joined, as the router's reader would
                    try:
                        out = b"".join(out)
                    except StreamFailed as exc:
                        status, content_type = exc.status, _TEXT_STR
                        out = exc.message.encode(errors="replace")
                answers.append((status, out, _header_value(content_type)))
            keep = keep and not server.stopping
            self._send(200, batching.pack_answers(answers), batching.FRAME_TYPE, keep)
        return keep

    def _send_stream(self, status: int, parts: Iterator[bytes], content_type: bytes, keep: bool) -> bool:
        """Chunked, each part sent at once; returns whether to keep the connection (not when the peer went
        away: the parts are closed, which stops the model at its next part)."""
        reason = _REASONS.get(status) or _reason(status)
        conn = b"" if keep else b"Connection: close\r\n"
        sock = self.sock
        try:
            sock.sendall(
                b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\nTrailer: %s\r\n%s\r\n"
                % (status, reason, content_type, ERROR_TRAILER, conn)
            )
            while True:
                try:
                    part = next(parts)
                except StopIteration:
                    end = b"0\r\n\r\n"
                    break
                except StreamFailed as exc:
                    end = b"0\r\n%s: %s\r\n\r\n" % (ERROR_TRAILER, trailer(exc.status, exc.message))
                    break
                except Exception as exc:  # an iterator that is not the handler's: report it all the same
                    traceback.print_exc(file=sys.stderr)
                    message = trailer(500, f"{type(exc).__name__}: {exc}")
                    end = b"0\r\n%s: %s\r\n\r\n" % (ERROR_TRAILER, message)
                    break
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
            sock.sendall(end)
        except OSError:
            close = getattr(parts, "close", None)
            if close is not None:
                close()
            return False
        return keep

    def _send(self, status: int, body: bytes, content_type: bytes, keep: bool) -> None:
        head = response_head(status, content_type, len(body), not keep)
        if len(body) <= _SMALL_BODY:
            self.sock.sendall(head + body)
        else:
            self.sock.sendall(head)
            self.sock.sendall(body)
