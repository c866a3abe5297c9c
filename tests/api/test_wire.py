"""Sending a body as it comes (``respond_stream``): one piece keeps its content-length, more go chunked."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from zeroscale.api.wire import respond_stream


async def _pieces(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def _sent(parts: list[bytes]) -> list[MutableMapping[str, Any]]:
    messages: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        messages.append(message)

    asyncio.run(respond_stream(send, 200, _pieces(parts), [(b"content-type", b"text/plain")]))
    return messages


@pytest.mark.parametrize("parts", [[], [b"all of it"]], ids=["empty", "one piece"])
def test_a_body_in_one_piece_is_sent_with_its_length(parts: list[bytes]) -> None:
    """What a client that reads only content-length (a small script) still reads: /metrics of a server with
    a few endpoints is one piece."""
    start, body = _sent(parts)
    body_bytes = b"".join(parts)
    assert (b"content-length", str(len(body_bytes)).encode()) in start["headers"]
    assert body["body"] == body_bytes and not body.get("more_body")


def test_a_body_in_pieces_is_sent_as_they_come_without_a_length() -> None:
    start, *bodies = _sent([b"a", b"b", b"c"])
    assert start["type"] == "http.response.start"
    assert not any(name == b"content-length" for name, _ in start["headers"])
    assert [(m["body"], bool(m.get("more_body"))) for m in bodies] == [
        (b"a", True),
        (b"b", True),
        (b"c", True),
        (b"", False),
    ]
