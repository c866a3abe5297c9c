"""A relayed request's ASGI cycle: the scope the app gets for a request the native plane relayed, and the
``send`` that turns the app's answer into HTTP/1.1 bytes for the plane to write to the client.

The plane hands over requests it read whole (head and body, a ``Content-Length`` body within the payload
limit), so ``receive`` has one message with the whole body, then waits for the client to go. An answer in
one body message goes out with a ``Content-Length``; one in several, chunked (HTTP/1.1) or, to an HTTP/1.0
client, delimited by the connection's end. Header values the app sends are checked for control characters
as uvicorn checks them (a content type comes from a worker, untrusted code).
"""

from __future__ import annotations

import asyncio
import http
import re
import urllib.parse
from collections.abc import Callable, MutableMapping
from email.utils import formatdate
from typing import Any

Scope = MutableMapping[str, Any]
Write = Callable[[bytes, bool, bool], None]  # (data, the answer's end, close the connection after it)

_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def scope_of(
    method: bytes,
    target: bytes,
    minor: int,
    headers: list[tuple[bytes, bytes]],
    client: tuple[str, int],
    server: tuple[str, int],
) -> Scope:
    """The ASGI scope of a relayed request (header names lowercase already)."""
    raw_path, _, query = target.partition(b"?")
    path = raw_path.decode("latin-1")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": f"1.{minor}",
        "server": server,
        "client": client,
        "scheme": "http",
        "method": method.decode("latin-1"),
        "root_path": "",
        "path": urllib.parse.unquote(path) if "%" in path else path,
        "raw_path": raw_path,
        "query_string": query,
        "headers": headers,
    }


class RelayedAnswer:
    """The ASGI ``receive`` and ``send`` of one relayed request."""

    def __init__(
        self, write: Write, body: bytes, minor: int, before_end: Callable[[int], None] | None = None
    ) -> None:
        """``before_end``: told the status as the answer's last bytes are about to be written."""
        self._write = write
        self._before_end = before_end
        self._body: bytes | None = body
        self._minor = minor
        self._gone = asyncio.Event()
        self._writable = asyncio.Event()  # cleared while the plane holds too much of it unwritten
        self._writable.set()
        self.status = 0  # once the answer started
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunked = False
        self._has_length = False  # the head says Content-Length (else chunked, or HTTP/1.0's close)
        self.started = False  # its head was written
        self.complete = False

    def client_gone(self) -> None:
        self._gone.set()
        self._writable.set()

    def hold(self, full: bool) -> None:
        """The plane holds more of this answer unwritten than its high-water mark (``full``), or is down to
        its low one: the next pieces wait, or go on."""
        if full and not self.gone:
            self._writable.clear()
        else:
            self._writable.set()

    @property
    def gone(self) -> bool:
        return self._gone.is_set()

    async def receive(self) -> MutableMapping[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: MutableMapping[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start" and not self.status:
            self.status = int(message["status"])
            self._headers = list(message.get("headers", []))
            return
        if kind != "http.response.body" or not self.status or self.complete:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} on a relayed request.")
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body"))
        if not self._writable.is_set():
            await self._writable.wait()  # the client reads slowly: hold this piece until the rest has gone
        if not more and self._before_end is not None:
            self._before_end(self.status)
        if self.gone:
            self.complete = not more
            return
        if not self.started:
            self._write(self._head(None if more else len(body)), False, False)
            self.started = True
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(body), body) if body else b""
            if not more:
                data += b"0\r\n\r\n"
        else:
            data = body
        self.complete = not more
        close = self.complete and self._minor == 0 and not self._has_length
        self._write(data, self.complete, close)

    def fail(self) -> None:
        """The app raised: 500 when nothing was sent yet, else the connection is cut."""
        if self.complete or self.gone:
            return
        if not self.started:
            body = b"Internal Server Error"
            head = (
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\n\r\n" % len(body)
            )
            self._write(head + body, True, False)
        else:
            self._write(b"", True, True)
        self.complete = True

    def _head(self, length: int | None) -> bytes:
        try:
            reason = http.HTTPStatus(self.status).phrase.encode()
        except ValueError:
            reason = b""

        parts = [b"HTTP/1.1 %d %b\r\n" % (self.status, reason)]
        parts.append(b"date: " + formatdate(usegmt=True).encode() + b"\r\nserver: zeroscale\r\n")
        for name, value in self._headers:
            if _BAD_VALUE.search(value) or _BAD_VALUE.search(name):
                raise RuntimeError("Invalid HTTP header value.")
            if name.lower() == b"content-length":
                self._has_length = True
            parts += (name, b": ", value, b"\r\n")
        if not self._has_length:
            if length is not None:
                parts.append(b"content-length: %d\r\n" % length)
                self._has_length = True
            elif self._minor == 1:
                parts.append(b"transfer-encoding: chunked\r\n")
                self._chunked = True
        parts.append(b"\r\n")
        return b"".join(parts)
