"""Runtime invocations without an ASGI cycle: uvicorn's httptools protocol, plus a direct path for the one
request the data plane serves at volume, ``POST /endpoints/{name}/invocations``.

uvicorn serves every request through a ``RequestResponseCycle``: an event and a ``receive`` coroutine to hand
the body over, and a ``send`` that checks each ASGI message and every response header. On this project's
2-core machines that cycle is most of what a bare uvicorn app costs per request (``bench/floor.py``: a
no-op ASGI app about 100 us of CPU per request, a no-op on the same parser without the cycle about 20 us).
An invocation's body is at most the payload limit and is always read whole before the app looks at it, so
the direct path buffers it in the parser's callbacks, hands the app the finished body, and writes the
answer's head and body in one write.

A request takes the direct path only when nothing about it needs the cycle: HTTP/1.1 keep-alive, a
``Content-Length`` within the payload limit (no chunked body, no ``Expect: 100-continue``, no upgrade), and
no earlier request still being answered on the connection. Everything else (the control plane, the
console, async and streaming invocations, a body over the limit, pipelined requests) goes through
uvicorn's cycle as before, and gets the same answers: the app's handler is the same code either way
(``App.buffered_invocation``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
log = logging.getLogger("zeroscale.api")

_PREFIX = b"/endpoints/"
_SUFFIX = b"/invocations"
# What uvicorn refuses in a response header value (CR, LF and other controls): the answer's content type
# and custom attributes come from the model's worker, untrusted code.
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class DirectRoute:
    """Where direct requests go: the app's handler for a whole body, the largest body it takes, and
    whether a request whose headers have arrived may take the path (its body then read whole, unchecked
    until it has): one refused goes through uvicorn's cycle, whose app reads no body it refuses."""

    handler: Callable[[Scope, bytes, Send], Awaitable[None]]
    limit_bytes: int
    admit: Callable[[Scope], bool]


class _Unused:
    """uvicorn's protocol sets its cycle's ``message_event`` when the connection is lost; a direct cycle
    waits on nothing."""

    __slots__ = ()

    def set(self) -> None:
        pass


_UNUSED = _Unused()


class DirectCycle:
    """One invocation on a connection: the attributes uvicorn's protocol reads from its cycle (so its
    pipelining, graceful shutdown and connection loss treat both alike), the body as the parser delivers
    it, and a ``send`` that writes the answer at its body message."""

    __slots__ = (
        "_headers",
        "_protocol",
        "_scope",
        "_status",
        "body",
        "disconnected",
        "keep_alive",
        "message_event",
        "response_complete",
        "response_started",
        "transport",
    )

    def __init__(self, protocol: DirectHttpTools, scope: Scope) -> None:
        self.body: list[bytes] = []
        self.disconnected = False
        self.keep_alive = True
        self.response_started = False
        self.response_complete = False
        self.message_event = _UNUSED
        self.transport: asyncio.Transport = protocol.transport
        self._protocol = protocol
        self._scope = scope
        self._status = 200
        self._headers: list[tuple[bytes, bytes]] = []

    async def run(self, handler: Callable[[Scope, bytes, Send], Awaitable[None]]) -> None:
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        self.body = []
        try:
            await handler(self._scope, body, self.send)
        except BaseException:  # as uvicorn's cycle: logged, answered 500 if nothing was sent, else cut
            log.exception("a direct invocation failed")
            if not self.response_started and not self.disconnected:
                self._write(500, [(b"content-type", b"text/plain; charset=utf-8")], b"Internal Server Error")
            else:
                self.transport.close()
            return
        if not self.response_complete and not self.disconnected:
            log.error("a direct invocation returned without a complete answer")
            self.transport.close()

    async def send(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start" and not self.response_started:
            self.response_started = True
            self._status = message["status"]
            self._headers = message.get("headers", [])
            return
        if message["type"] != "http.response.body" or not self.response_started or self.response_complete:
            raise RuntimeError(f"Unexpected ASGI message {message['type']!r} on a direct invocation.")
        if message.get("more_body"):
            raise RuntimeError("A direct invocation's answer is one body message.")
        flow = self._protocol.flow
        if flow.write_paused and not self.disconnected:
            await flow.drain()  # the client reads slowly: hold this answer until the last one has gone
        if self.disconnected:
            return
        self._write(self._status, self._headers, message.get("body", b""))

    def _write(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        parts = [STATUS_LINE[status]]
        has_length = False
        for name, value in [*self._protocol.server_state.default_headers, *headers]:
            if _BAD_VALUE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            if name == b"content-length":
                if int(value) != len(body):
                    raise RuntimeError("Content-Length does not match the answer's body.")
                has_length = True
            parts += (name, b": ", value, b"\r\n")
        if not has_length:
            parts += (b"content-length: ", str(len(body)).encode(), b"\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts += (b"\r\n", body)
        self.response_started = True
        self.transport.write(b"".join(parts))
        self.response_complete = True
        if not self.keep_alive:
            self.transport.close()
        self._protocol.on_response_complete()


class DirectHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with the direct path (module docstring). ``direct`` is set per server
    (``api/guard.py`` ``protocol``); None serves everything through the ASGI cycle."""

    direct: ClassVar[DirectRoute | None] = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._receiving: DirectCycle | None = None  # a direct request whose body is arriving
        self._answering: DirectCycle | None = None  # a direct request being answered

    def connection_lost(self, exc: Exception | None) -> None:
        answering = self._answering
        if answering is not None and not answering.response_complete:
            answering.disconnected = True  # it may no longer be ``cycle`` (a pipelined request after it)
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        route = self.direct
        if route is None or not self._direct_eligible(route.limit_bytes):
            super().on_headers_complete()
            return
        parsed = httptools.parse_url(self.url)
        raw_path: bytes = parsed.path
        if not (raw_path.startswith(_PREFIX) and raw_path.endswith(_SUFFIX)):
            super().on_headers_complete()
            return
        path = raw_path.decode("ascii")
        scope: Scope = self.scope  # type: ignore[assignment]
        scope["method"] = "POST"
        scope["path"] = urllib.parse.unquote(path) if "%" in path else path
        scope["raw_path"] = raw_path
        scope["query_string"] = parsed.query or b""
        if not route.admit(scope):
            super().on_headers_complete()
            return
        cycle = DirectCycle(self, scope)
        self.cycle = cycle  # type: ignore[assignment]
        self._receiving = cycle

    def _direct_eligible(self, limit: int) -> bool:
        existing = self.cycle
        if existing is not None and not existing.response_complete:
            return False  # pipelined behind an answer in progress: uvicorn queues it
        parser = self.parser
        if (
            self.limit_concurrency is not None  # uvicorn's own limit, checked in its cycle's path
            or self.expect_100_continue
            or parser.get_method() != b"POST"
            or parser.get_http_version() != "1.1"
            or not parser.should_keep_alive()
            or parser.should_upgrade()
        ):
            return False
        length = -1
        for name, value in self.headers:
            if name == b"content-length":
                if length >= 0 or not value.isdigit():
                    return False
                length = int(value)
            elif name == b"transfer-encoding":
                return False
        return 0 <= length <= limit

    def on_body(self, body: bytes) -> None:
        receiving = self._receiving
        if receiving is None:
            super().on_body(body)
        else:  # at most the Content-Length, which is within the limit
            receiving.body.append(body)

    def on_message_complete(self) -> None:
        cycle = self._receiving
        if cycle is None:
            super().on_message_complete()
            return
        self._receiving = None
        self._answering = cycle
        assert self.direct is not None
        task = self.loop.create_task(cycle.run(self.direct.handler))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
