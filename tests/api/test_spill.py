"""Spill-over's origin side (``api/forward.py``) against a real holder socket: a spilled invocation is
marked, a holder's refusal leaves it here and closes that holder for a moment (no request is sent to it
meanwhile), an unreachable holder likewise, and an accepted one is relayed and counted."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import MutableMapping
from typing import Any

from api.test_forward_stream import KEY, holder
from zeroscale import peers
from zeroscale.api.forward import Forwarder
from zeroscale.api.refusals import Refusals
from zeroscale.api.wire import Headers

REFUSED = b"HTTP/1.1 429 Too Many Requests\r\nx-zeroscale-spill: refused\r\ncontent-length: 0\r\n\r\n"
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
HEADERS = [(b"content-type", b"application/json"), (b"x-amzn-sagemaker-custom-attributes", b"c=1")]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def forwarder(url: str, clock: Clock) -> tuple[Forwarder, peers.PeerClient]:
    peer = peers.Peer("fe-a", url)
    client = peers.PeerClient(KEY, "fe-b", lambda: [peer])
    refusals = Refusals(clock, first_s=1.0, most_s=4.0)
    return Forwarder(client, lambda endpoint, variant: [peer], 5.0, refusals), client


def test_a_refused_spill_stays_here_and_the_holder_is_not_asked_again_for_a_moment() -> None:
    clock = Clock()

    async def run() -> tuple[list[object], list[bytes], Forwarder]:
        async with holder(REFUSED) as (url, got):
            fwd, client = forwarder(url, clock)
            try:
                out: list[object] = [await fwd.forward("ep", "A", HEADERS, b"{}", spill=True)]
                out.append(await fwd.forward("ep", "A", HEADERS, b"{}", spill=True))  # closed: not sent
                clock.now += 1.0
                out.append(await fwd.forward("ep", "A", HEADERS, b"{}", spill=True))  # asked again
            finally:
                client.close()
            return out, got, fwd

    out, got, fwd = asyncio.run(run())
    assert out == [None, None, None]
    assert len(got) == 2
    assert b"\r\nx-zeroscale-spill: 1\r\n" in got[0]
    assert b"\r\nx-amzn-sagemaker-custom-attributes: c=1\r\n" in got[0]  # carried as forwarding carries it
    assert fwd.counts == {("ep", "A", "refused"): 2}


def test_an_accepted_spill_is_relayed_and_counted() -> None:
    clock = Clock()

    async def run() -> tuple[tuple[int, Headers, bytes] | None, Forwarder]:
        async with holder(ANSWER) as (url, _):
            fwd, client = forwarder(url, clock)
            try:
                return await fwd.forward("ep", "A", HEADERS, b"{}", spill=True), fwd
            finally:
                client.close()

    answer, fwd = asyncio.run(run())
    assert answer is not None and answer[0] == 200 and answer[2] == b"{}"
    assert fwd.counts == {("ep", "A", "spilled"): 1}
    plain: list[bytes] = []

    async def forwarded() -> None:  # a forward (no share here) is not marked
        async with holder(ANSWER) as (url, got):
            fwd, client = forwarder(url, clock)
            try:
                await fwd.forward("ep", "A", HEADERS, b"{}")
            finally:
                client.close()
            plain.extend(got)

    asyncio.run(forwarded())
    assert b"x-zeroscale-spill" not in plain[0]


def test_an_unreachable_holder_leaves_spills_here_and_a_refused_stream_sends_nothing() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"
    clock = Clock()
    fwd, client = forwarder(nowhere, clock)
    try:
        assert asyncio.run(fwd.forward("ep", "A", HEADERS, b"{}", spill=True)) is None
    finally:
        client.close()
    assert fwd.counts == {("ep", "A", "refused"): 1}
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> MutableMapping[str, Any]:
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    async def stream() -> bool:
        async with holder(REFUSED) as (url, _):
            fwd, client = forwarder(url, clock)
            try:
                return await fwd.forward_stream("ep", "A", HEADERS, b"{}", send, receive, spill=True)
            finally:
                client.close()

    assert asyncio.run(stream()) is False and sent == []
