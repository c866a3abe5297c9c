"""The HTTP server's limits against slow and flooding clients: uvicorn's httptools protocol with deadlines
and caps it does not have on its own.

- **Request head:** a connection must deliver a request's line and headers within ``header_timeout_s`` of
  opening (or of the next request's first byte on a keep-alive connection), else ``408`` and the connection
  is closed: a slow-loris client holds a connection for seconds, not forever. Deadlines are armed only for
  what a read left unfinished: a request that arrives whole costs no timer (``bench/http_guard.py``). A
  head larger than ``max_header_bytes`` is ``431``, before it is buffered further: counted on the bytes
  received while a head lasts, and on the request line and headers the parser hands over (a head that
  arrives whole in one read, or pipelined behind another request); past it nothing more is kept and no
  application sees the request.
- **Request body:** once the head is in, the body must arrive within ``body_timeout_s`` (``408``; a 6 MB
  payload at that deadline is 100 KB/s). Sizes are the application's: ``App`` refuses a body past the
  operation's limit by Content-Length first, then while reading.
- **Response:** a client that stops reading an answer (the write buffer stays full for ``body_timeout_s``)
  is disconnected, so a stalled reader holds no response in memory.
- **Connections:** at most ``max_connections`` open at once and ``max_connections_per_client`` from one
  address; past either, the new connection gets ``503`` and is closed before anything is read. One client
  address cannot take every slot from the others. When all slots are taken, a newcomer takes the slot of a
  connection that waits for its next request (idle, or silent since it opened) from the address holding the
  most, as long as that address holds more than the newcomer's would: a few addresses parking kept-alive
  connections (an unsigned ``GET /ping`` keeps one for ``timeout_keep_alive``) cannot lock others out.
- Idle keep-alive connections are closed by uvicorn's ``timeout_keep_alive``, and when the server stops
  (TLS ones without waiting long for the client's own close: ``shutdown``).
"""

from __future__ import annotations

import asyncio
import fcntl
import struct
import termios
from typing import Any, ClassVar

from zeroscale.api.direct import DirectCycle, DirectHttpTools, DirectRoute
from zeroscale.api.proxies import TrustedProxies
from zeroscale.config import HttpLimits


def _response(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


_408 = _response(b"408 Request Timeout")
_431 = _response(b"431 Request Header Fields Too Large")
_503 = _response(b"503 Service Unavailable")


class _OneWrite:
    """A request's transport, as its response cycle sees it: the response's head is held until its first body
    bytes (or its end), so a small response leaves in one write, one segment and one wake-up of the client
    instead of two (uvicorn writes the head on ``http.response.start``)."""

    __slots__ = ("_head", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head = b""

    def write(self, data: bytes) -> None:
        if self._head:
            head, self._head = self._head, b""
            if len(data) <= _JOIN_BELOW:
                self._transport.write(head + data)
            else:
                self._transport.writelines((head, data))
        elif data[:9] == b"HTTP/1.1 " and data[9:10] != b"1" and data[-4:] == b"\r\n\r\n":
            self._head = data  # a response's status line and headers (not a 1xx interim response)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


_JOIN_BELOW = 64 * 1024  # a body up to this is joined to the head; a larger one goes by writelines
STOP_GRACE_S = 0.5  # the server stops: how long a TLS connection, answered, may wait for its client's close


class GuardedHttpTools(DirectHttpTools):
    limits: ClassVar[HttpLimits] = HttpLimits()
    # client address -> its open connections, per server (a class made per server by ``protocol``)
    per_client: ClassVar[dict[str, set[GuardedHttpTools]]] = {}
    # reverse proxies (--trusted-proxy): their connections carry many clients, so no per-client cap
    trusted: ClassVar[TrustedProxies | None] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._writer = _OneWrite(transport)
        self._host: str | None = None
        self._in_head = True  # waiting for, or reading, a request's line and headers
        self._head_bytes = 0
        self._parsed_head = 0  # of the request being parsed: its line and headers as handed over
        self._head_over = False  # a head past the limit was parsed: the connection is refused
        self._timer: asyncio.TimerHandle | None = None
        self._timer_kind = ""
        self._stopping: asyncio.TimerHandle | None = None  # the server stops: ``shutdown``
        host = str(self.client[0]) if self.client else ""
        mine = self.per_client.get(host)
        count = len(mine) if mine is not None else 0
        capped = self.trusted is None or not self.trusted.trusts(host)
        if (capped and count >= self.limits.max_connections_per_client) or (
            len(self.connections) > self.limits.max_connections and not self._make_room(count)
        ):
            transport.write(_503)
            transport.close()
            return
        if mine is None:
            mine = self.per_client[host] = set()
        mine.add(self)
        self._host = host
        self._arm("head", self.limits.header_timeout_s)  # it must say something

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._stopping is not None:
            self._stopping.cancel()
            self._stopping = None
        if self._host is not None:
            mine = self.per_client.get(self._host)
            if mine is not None:
                mine.discard(self)
                if not mine:
                    del self.per_client[self._host]
            self._host = None
        super().connection_lost(exc)

    def _make_room(self, count: int) -> bool:
        """Every slot is taken: close a connection waiting for its next request from the address holding the
        most, when that address holds more than this one's ``count`` + 1 (module docstring). False when there
        is none to close: the newcomer is refused."""
        most = max(self.per_client.values(), key=len, default=None)
        if most is None or len(most) <= count + 1:
            return False
        victim = next((c for c in most if c._waiting()), None)
        if victim is None:
            return False
        victim._disarm()  # closed as an idle keep-alive connection is: without a word (clients open another)
        victim.transport.close()
        return True

    def _waiting(self) -> bool:
        """Between requests: nothing of the next one received, no answer owed."""
        cycle = self.cycle
        return (
            self._in_head
            and self._head_bytes == 0
            and (cycle is None or cycle.response_complete)
            and not self.transport.is_closing()
        )

    def data_received(self, data: bytes) -> None:
        # Deadlines are armed only for what one read left unfinished: a request that arrives whole (the usual
        # case on a keep-alive connection) costs no timer at all.
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._head_over:
            self._refuse(_431)
            return
        if self._in_head:
            if self._head_bytes > self.limits.max_header_bytes:
                self._refuse(_431)
            elif self._head_bytes and self._timer_kind != "head":
                self._arm("head", self.limits.header_timeout_s)
        elif self._timer_kind != "body":
            self._arm("body", self.limits.body_timeout_s)

    # ---- the parser's callbacks ----
    def on_message_begin(self) -> None:
        self._parsed_head = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        if self._within_head(len(url)):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._within_head(len(name) + len(value) + 4):
            super().on_header(name, value)

    def _within_head(self, size: int) -> bool:
        self._parsed_head += size
        if self._parsed_head > self.limits.max_header_bytes:
            self._head_over = True
        return not self._head_over

    def on_body(self, body: bytes) -> None:
        if not self._head_over:
            super().on_body(body)

    def on_headers_complete(self) -> None:
        if self._head_over:
            return  # no cycle: refused once the parser is done with this read
        self._in_head = False
        if self._timer_kind == "head":
            self._disarm()
        super().on_headers_complete()
        cycle = self.cycle  # responses on a connection go one after the other: one writer serves all
        if cycle is not None and not isinstance(cycle, DirectCycle):  # a direct answer is one write already
            cycle.transport = self._writer  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        self._writer.flush()  # a response without body bytes (HEAD)
        super().on_response_complete()

    def on_message_complete(self) -> None:
        if self._head_over:
            return
        if self._timer_kind == "body":
            self._disarm()
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._arm("write", self.limits.body_timeout_s)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._timer_kind == "write":
            self._disarm()

    # ---- the server's stop ----
    def shutdown(self) -> None:
        """The server stops: uvicorn closes the connection now if it is between requests, else after its
        answer. A TLS close waits for the client's own close (up to 30 s), which a client between requests
        never sends, so the stop waited that long for each kept-alive client. Here a TLS connection still
        open ``STOP_GRACE_S`` later is cut, once its client has every byte of its last answer (the kernel
        holds none unacknowledged, and the TLS layer nothing unsent)."""
        super().shutdown()
        if self.transport.get_extra_info("ssl_object") is not None:
            self._stopping = self.loop.call_later(STOP_GRACE_S, self._cut_when_answered)

    def _cut_when_answered(self) -> None:
        cycle = self.cycle
        answered = (cycle is None or cycle.response_complete) and not self.transport.get_write_buffer_size()
        if answered and _unacknowledged(self.transport) == 0:
            self._stopping = None
            self.transport.abort()
        else:  # an answer still being made or sent: it goes out whole first
            self._stopping = self.loop.call_later(STOP_GRACE_S, self._cut_when_answered)

    # ---- deadlines ----
    def _arm(self, kind: str, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)
        self._timer_kind = kind

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_kind = ""

    def _timed_out(self) -> None:
        self._timer = None
        self._timer_kind = ""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self._refuse(_408)
        else:  # it stopped reading our answer
            self.transport.abort()

    def _refuse(self, response: bytes) -> None:
        self._disarm()
        self.transport.write(response)
        self.transport.close()


def _unacknowledged(transport: asyncio.BaseTransport) -> int:
    """The bytes written to ``transport``'s socket that its peer has not acknowledged yet (0 when the socket
    is gone)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        out = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", out)[0])


def protocol(
    limits: HttpLimits, direct: DirectRoute | None = None, trusted: TrustedProxies | None = None
) -> type[GuardedHttpTools]:
    """uvicorn's ``http=`` class for one server with these limits, and runtime invocations to ``direct``
    without an ASGI cycle (``api/direct.py``; None: every request through the cycle); ``trusted``: reverse
    proxies, not held to the per-client connection cap."""
    attrs: dict[str, Any] = {"limits": limits, "per_client": {}, "direct": direct, "trusted": trusted}
    return type("ZeroscaleHttp", (GuardedHttpTools,), attrs)
