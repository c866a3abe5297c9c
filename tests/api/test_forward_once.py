"""An invocation sent to another front end runs at most once (``api/forward.py``), against real holder
sockets that fail as a front end can: one that provably never had the call (nothing listens, or it reset the
connection with the call unread) leaves it here, to run as if never sent; one that had it and then closed
the connection, answered no HTTP, broke off its answer or outlasted the invocation's time may have run it,
so the client gets InternalFailure and it is not run here too."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from api.test_forward_stream import KEY
from api.test_forward_stream import forward as forward_stream
from zeroscale import peers
from zeroscale.api.forward import Forwarder
from zeroscale.errors import InternalFailure

HEADERS = [(b"content-type", b"application/json")]
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
Then = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    return head + await reader.readexactly(length)


@asynccontextmanager
async def holder(then: Then, *, read: bool = True) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A front end on a free port that reads each request whole (unless not ``read``), then does ``then``
    with the connection: its URL, and the requests it read."""
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if read:
            got.append(await read_request(reader))
        await then(writer)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", got
    finally:
        server.close()


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()


async def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a reset at once (SO_LINGER 0), as a socket closed with a request unread ends."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def answering(data: bytes, *, then_close: bool = True) -> Then:
    async def then(writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if then_close:
            writer.close()
        else:
            await asyncio.sleep(30)

    return then


async def forward(
    url: str, *, timeout_s: float = 5.0, spill: bool = False, counts: Counter[str] | None = None
) -> tuple[int, bytes] | None:
    """What ``forward`` answers for an invocation of "ep" that a holder at ``url`` runs; ``counts``: how it
    went to the holder, as the forwarder counted it."""
    peer = peers.Peer("fe-a", url)
    client = peers.PeerClient(KEY, "fe-b", lambda: [peer])
    forwarder = Forwarder(client, lambda endpoint, variant: [peer], timeout_s=timeout_s)
    try:
        got = await forwarder.forward("ep", "A", HEADERS, b"{}", spill=spill)
    finally:
        client.close()
        if counts is not None:
            counts.update({how: n for (_, _, how), n in forwarder.counts.items()})
    return None if got is None else (got[0], got[2])


def nowhere() -> str:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_a_call_the_holder_never_had_stays_here() -> None:
    counts: Counter[str] = Counter()

    async def reset_unread() -> tuple[tuple[int, bytes] | None, list[bytes]]:
        async with holder(reset, read=False) as (url, got):
            return await forward(url, spill=True, counts=counts), got

    assert asyncio.run(forward(nowhere())) is None
    assert asyncio.run(reset_unread()) == (None, [])
    assert counts == {"refused": 1}  # a spill left here, as one the holder refused

    async def stream() -> tuple[bool, list[MutableMapping[str, Any]]]:
        async with holder(reset, read=False) as (url, _):
            return await forward_stream(url)

    assert asyncio.run(stream()) == (False, [])


@pytest.mark.parametrize(
    "then",
    [
        close,  # it read the call and closed the connection (it died)
        answering(b"garbage\r\n\r\n"),  # no HTTP
        answering(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}"),  # its answer broke off
        answering(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{}", then_close=False),  # and stalled
        answering(b"", then_close=False),  # it never answers
    ],
    ids=["closed", "not-http", "broke-off", "stalled", "silent"],
)
@pytest.mark.parametrize("spill", [False, True])
def test_a_call_the_holder_had_and_did_not_answer_is_internal_failure_not_run_here(
    then: Then, spill: bool
) -> None:
    counts: Counter[str] = Counter()

    async def run() -> list[bytes]:
        async with holder(then) as (url, got):
            with pytest.raises(InternalFailure, match="may have run it"):
                await forward(url, timeout_s=0.5, spill=spill, counts=counts)
            return got

    assert len(asyncio.run(run())) == 1
    assert counts == {"spilled" if spill else "forwarded": 1}  # sent on, not refused


def test_a_response_stream_the_holder_had_and_closed_before_its_head_is_internal_failure() -> None:
    async def run() -> list[bytes]:
        async with holder(close) as (url, got):
            with pytest.raises(InternalFailure):
                await forward_stream(url)
            return got

    assert len(asyncio.run(run())) == 1


def test_a_holder_gone_while_its_connection_was_kept_may_have_run_the_call() -> None:
    """The first call's connection is kept; the holder then reads the second call on it and goes away (its
    port closed). Sent once more on a new connection, which cannot be made: the holder may have read the
    call before it went, so it is not run here."""
    calls: list[bytes] = []

    async def run() -> tuple[int, bytes] | None:
        stop = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            calls.append(await read_request(reader))
            writer.write(ANSWER)
            await writer.drain()
            calls.append(await read_request(reader))
            server.close()  # gone: no new connection is taken
            stop.set()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        peer = peers.Peer("fe-a", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        client = peers.PeerClient(KEY, "fe-b", lambda: [peer])
        forwarder = Forwarder(client, lambda endpoint, variant: [peer], timeout_s=5.0)
        try:
            first = await forwarder.forward("ep", "A", HEADERS, b"{}")
            with pytest.raises(InternalFailure):
                await forwarder.forward("ep", "A", HEADERS, b"{}")
            assert stop.is_set()
            return None if first is None else (first[0], first[2])
        finally:
            client.close()

    assert asyncio.run(run()) == (200, b"{}")
    assert len(calls) == 2


def test_a_response_stream_s_error_that_breaks_off_fails_and_a_refusal_that_does_stays_here() -> None:
    """Before any part: the model's error (its JSON) broken off may have been the model's own failure after
    it ran; the peer's refusal of the call (403), broken off or not, ran nothing."""
    error_head = (
        b"HTTP/1.1 424 Failed Dependency\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n"
    )
    refusal_head = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 50\r\n\r\n{"

    async def run(answer: bytes) -> bool:
        async with holder(answering(answer)) as (url, got):
            done, sent = await forward_stream(url)
            assert len(got) == 1 and sent == []
            return done

    with pytest.raises(InternalFailure):
        asyncio.run(run(error_head + b'{"ErrorCode"'))
    assert asyncio.run(run(refusal_head)) is False
