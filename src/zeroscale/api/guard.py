"""The HTTP server's limits against slow and flooding clients: uvicorn's httptools protocol with deadlines
and caps it does not have on its own.

- **Request head:** a connection must deliver a request's line and headers within ``header_timeout_s`` of
  opening (or of starting the next request on a keep-alive connection), else ``408`` and the connection is
  closed: a slow-loris client holds a connection for seconds, not forever. A head larger than
  ``max_header_bytes`` is ``431``, before it is buffered further.
- **Request body:** once the head is in, the body must arrive within ``body_timeout_s`` (``408``; a 6 MB
  payload at that deadline is 100 KB/s). Sizes are the application's: ``App`` refuses a body past the
  operation's limit by Content-Length first, then while reading.
- **Response:** a client that stops reading an answer (the write buffer stays full for ``body_timeout_s``)
  is disconnected, so a stalled reader holds no response in memory.
- **Connections:** at most ``max_connections`` open at once and ``max_connections_per_client`` from one
  address; past either, the new connection gets ``503`` and is closed before anything is read. One client
  address cannot take every slot from the others.
- Idle keep-alive connections are closed by uvicorn's ``timeout_keep_alive``.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from zeroscale.config import HttpLimits


def _response(status: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


_408 = _response(b"408 Request Timeout")
_431 = _response(b"431 Request Header Fields Too Large")
_503 = _response(b"503 Service Unavailable")


class GuardedHttpTools(HttpToolsProtocol):
    limits: ClassVar[HttpLimits] = HttpLimits()
    # client address -> open connections, per server (a class made per server by ``protocol``)
    per_client: ClassVar[dict[str, int]] = {}

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._host: str | None = None
        self._in_head = True
        self._head_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        host = str(self.client[0]) if self.client else ""
        count = self.per_client.get(host, 0)
        if (
            len(self.connections) > self.limits.max_connections
            or count >= self.limits.max_connections_per_client
        ):
            transport.write(_503)
            transport.close()
            return
        self.per_client[host] = count + 1
        self._host = host
        self._arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._host is not None:
            left = self.per_client.get(self._host, 1) - 1
            if left > 0:
                self.per_client[self._host] = left
            else:
                self.per_client.pop(self._host, None)
            self._host = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > self.limits.max_header_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(_431)

    # ---- the parser's callbacks ----
    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._timer is None:  # the next request on a keep-alive connection
            self._arm(self.limits.header_timeout_s)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        self._arm(self.limits.body_timeout_s)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._disarm()

    # ---- deadlines ----
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
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


def protocol(limits: HttpLimits) -> type[GuardedHttpTools]:
    """uvicorn's ``http=`` class for one server with these limits."""
    attrs: dict[str, Any] = {"limits": limits, "per_client": {}}
    return type("ZeroscaleHttp", (GuardedHttpTools,), attrs)
