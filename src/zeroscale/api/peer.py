"""The internal route another front end on the same database calls (``zeroscale.peers``): authenticated
calls on what this front end holds on its own. ``POST /zeroscale/peer/v1`` answers 200 and the operation's
JSON, 403 to a call that is not authentic (its body unread when the signature's form or time is already
wrong), 400 to one that is not well formed. ``GET /zeroscale/peer/v1/<source>/...`` answers a file a source
makes for the call (a bring-your-own image's archive), removed once sent; 404 when there is none."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from zeroscale import peers
from zeroscale.errors import ZeroscaleError

log = logging.getLogger("zeroscale.peers")

# A blocking read (run in a thread: files) or a coroutine (run on the event loop: what the loop owns)
Operation = Callable[[dict[str, Any]], dict[str, Any]] | Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


# The rest of a file's path -> a file made for this call (the route removes it), or None: no such file
FileSource = Callable[[list[str]], Awaitable[Path | None]]


class PeerRoute:
    def __init__(
        self,
        key: bytes,
        operations: dict[str, Operation],
        files: dict[str, FileSource] | None = None,
        ident: str = "",
    ) -> None:
        """``ident``: this front end's id: calls are taken only when signed for it, in this process."""
        self._key = key
        self._me = peers.run_of(ident, os.getpid()) if ident else ""
        self._replays = peers.Replays()  # every call, a file's GET too, is taken once
        self._refused = _Said()
        self._ops = operations
        self._files = dict(files or {})

    async def file(self, header: str, path: str, headers: peers.Headers = ()) -> tuple[int, bytes | Path]:
        """A ``GET`` of ``path`` under the route: (200, the file to send and then remove) or (status, the
        error's JSON)."""
        try:
            peers.verify(
                self._key,
                header,
                b"",
                path=path,
                method="GET",
                headers=headers,
                replays=self._replays,
                me=self._me,
            )
        except peers.PeerRefused as exc:
            self._refused(exc)
            return 403, _error(str(exc))
        source, *rest = path[len(peers.PATH) + 1 :].split("/")
        handler = self._files.get(source)
        try:
            found = None if handler is None else await handler(rest)
        except (ValueError, ZeroscaleError) as exc:  # a name that is not one (ImageError)
            return 400, _error(str(exc))
        return (200, found) if found is not None else (404, _error(f"no {path} here"))

    def check(self, header: str, body: bytes, path: str, headers: peers.Headers = ()) -> str | None:
        """Why a call to ``path`` with this header, body and ``headers`` is refused (None: it is
        authentic)."""
        try:
            peers.verify(
                self._key, header, body, path=path, headers=headers, replays=self._replays, me=self._me
            )
        except peers.PeerRefused as exc:
            self._refused(exc)
            return str(exc)
        return None

    def precheck(self, header: str) -> str | None:
        """Why a call with this header is refused before its body is read (None: read it, then check)."""
        try:
            peers.timely(header)
        except peers.PeerRefused as exc:
            return str(exc)
        return None

    async def handle(self, header: str, body: bytes, headers: peers.Headers = ()) -> tuple[int, bytes]:
        try:
            caller = peers.verify(
                self._key, header, body, headers=headers, replays=self._replays, me=self._me
            )
        except peers.PeerRefused as exc:
            self._refused(exc)
            return 403, _error(str(exc))
        try:
            op, args = peers.parse(body)
            handler = self._ops.get(op)
            if handler is None:
                raise peers.PeerRefused(f"no peer operation {op!r}")
            if inspect.iscoroutinefunction(handler):
                answer = await handler(args)
            else:
                answer = await asyncio.to_thread(handler, args)
        except (peers.PeerRefused, ValueError, ZeroscaleError) as exc:  # BadArgs is a ValueError
            log.warning("a peer call from %s failed: %s", caller, exc)
            return 400, _error(str(exc))
        return 200, json.dumps(answer, separators=(",", ":")).encode()


class _Said:
    """Refused peer calls, said in the log: the first ten, then one in every thousand (an outsider's junk
    headers, 2,000 a second, wrote 210 KB of log a second)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, exc: Exception) -> None:
        self.count += 1
        if self.count <= 10 or self.count % 1000 == 0:
            log.warning("refused a peer call (%d so far): %s", self.count, exc)


def _error(message: str) -> bytes:
    return json.dumps({"message": message}).encode()
