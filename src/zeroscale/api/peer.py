"""The internal route another front end on the same database calls (``zeroscale.peers``): an authenticated
read of what this front end holds on its own disk. Answers 200 and the operation's JSON, 403 to a call that
is not authentic (its body unread when the signature's form or time is already wrong), 400 to one that is
not well formed."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from zeroscale import peers

log = logging.getLogger("zeroscale.peers")

# A blocking read (run in a thread: files) or a coroutine (run on the event loop: what the loop owns)
Operation = Callable[[dict[str, Any]], dict[str, Any]] | Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class PeerRoute:
    def __init__(self, key: bytes, operations: dict[str, Operation]) -> None:
        self._key = key
        self._ops = operations

    def precheck(self, header: str) -> str | None:
        """Why a call with this header is refused before its body is read (None: read it, then check)."""
        try:
            peers.verify(self._key, header, b"", now=time.time())
        except peers.PeerRefused as exc:
            if "does not match" not in str(exc):
                return str(exc)
        return None

    async def handle(self, header: str, body: bytes) -> tuple[int, bytes]:
        try:
            caller = peers.verify(self._key, header, body)
        except peers.PeerRefused as exc:
            log.warning("refused a peer call: %s", exc)
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
        except (peers.PeerRefused, ValueError) as exc:  # BadArgs is a ValueError
            log.warning("a peer call from %s failed: %s", caller, exc)
            return 400, _error(str(exc))
        return 200, json.dumps(answer, separators=(",", ":")).encode()


def _error(message: str) -> bytes:
    return json.dumps({"message": message}).encode()
