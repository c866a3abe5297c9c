"""A response stream forwarded to the front end that holds a share (``api/forward.py``), against a real holder
socket that answers as a broken or refusing front end could: whole event-stream messages relayed as they
complete, a stream that breaks off mid-message ended with an InternalStreamFailure event a client can read,
the holder's errors relayed as they came, and a holder that refuses or is not there left to this front end."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from typing import Any

import pytest
from botocore.eventstream import EventStreamBuffer

from zeroscale import peers
from zeroscale.api import eventstream
from zeroscale.api.forward import Forwarder, stream_path
from zeroscale.iam.secrets import SecretBox

KEY = SecretBox(b"k" * 32).derive(peers.KEY_LABEL)


def test_frames_pass_on_whole_messages_whatever_the_cuts() -> None:
    messages = [eventstream.payload_part(b"x" * n) for n in (0, 1, 300)]
    wire = b"".join(messages)
    for cut in (1, 3, 7, 16, len(wire)):
        frames, out = eventstream.Frames(), []
        for i in range(0, len(wire), cut):
            got = frames.feed(wire[i : i + cut])
            if got:
                out.append(got)
        assert b"".join(out) == wire and not frames.partial
        for chunk in out:  # every chunk passed on is whole messages: botocore parses all of it alone
            buffer = EventStreamBuffer()
            buffer.add_data(chunk)
            assert sum(message.prelude.total_length for message in buffer) == len(chunk)
    frames = eventstream.Frames()
    assert frames.feed(wire[:20]) == b"" and frames.partial
    with pytest.raises(ValueError):
        eventstream.Frames().feed(b"\x00\x00\x00\x05rest")


@asynccontextmanager
async def holder(answer: bytes, *, close: bool = True) -> AsyncIterator[tuple[str, list[bytes]]]:
    """A front end on a free port that reads one request and writes ``answer`` (then closes): its URL and
    the requests it got."""
    got: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        got.append(head + await reader.readexactly(length))
        writer.write(answer)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(30)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", got
    finally:
        server.close()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)


async def forward(url: str, timeout_s: float = 5.0) -> tuple[bool, list[MutableMapping[str, Any]]]:
    """What ``forward_stream`` answers and sends for a stream of "ep" that a holder at ``url`` runs."""
    peer = peers.Peer("fe-a", url)
    client = peers.PeerClient(KEY, "fe-b", lambda: [peer])
    forwarder = Forwarder(client, lambda endpoint, variant: [peer], timeout_s=timeout_s)
    sent: list[MutableMapping[str, Any]] = []
    never = asyncio.Event()

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def receive() -> MutableMapping[str, Any]:
        await never.wait()  # the client stays
        return {"type": "http.disconnect"}

    headers = [(b"content-type", b"application/json"), (b"x-amzn-sagemaker-target-variant", b"B")]
    try:
        done = await forwarder.forward_stream("ep", "A", headers, b'{"parts": 2}', send, receive)
    finally:
        client.close()
    return done, sent


def events(sent: list[MutableMapping[str, Any]]) -> list[dict[str, Any]]:
    buffer = EventStreamBuffer()
    buffer.add_data(b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body"))
    return [{"headers": e.headers, "payload": e.payload} for e in buffer]


def test_a_stream_that_breaks_off_mid_message_ends_with_a_readable_failure() -> None:
    first, second = eventstream.payload_part(b"one"), eventstream.payload_part(b"two")
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n"
        b"x-amzn-sagemaker-content-type: application/jsonlines\r\ntransfer-encoding: chunked\r\n\r\n"
    )

    async def run() -> tuple[bool, list[MutableMapping[str, Any]], list[bytes]]:
        async with holder(head + chunked(first + second[:5])) as (url, got):
            done, sent = await forward(url)
            return done, sent, got

    done, sent, got = asyncio.run(run())
    assert done
    request = got[0]
    assert request.startswith(f"POST {stream_path('ep')} HTTP/1.1".encode())
    assert b"x-amzn-sagemaker-target-variant: A" in request  # the variant this front end chose, once
    assert b"x-amzn-sagemaker-target-variant: B" not in request
    header_line = next(line for line in request.split(b"\r\n") if line.startswith(peers.HEADER.encode()))
    head_text, body = request.split(b"\r\n\r\n", 1)
    received = [tuple(line.split(b": ", 1)) for line in head_text.split(b"\r\n")[1:]]
    path = stream_path("ep")
    signed = header_line.split(b": ", 1)[1].decode()
    me = peers.run_of("fe-a", 0)  # the run the call was signed for (the peer's id, and its pid as listed)
    assert peers.verify(KEY, signed, body, path=path, headers=received, me=me) == "fe-b"  # type: ignore[arg-type]
    start = sent[0]
    assert start["status"] == 200
    assert (b"x-amzn-sagemaker-content-type", b"application/jsonlines") in start["headers"]
    assert all(k != b"transfer-encoding" for k, _ in start["headers"])
    got_events = events(sent)
    assert got_events[0]["payload"] == b"one"
    assert got_events[1]["headers"][":exception-type"] == "InternalStreamFailure"
    assert len(got_events) == 2 and sent[-1]["more_body"] is False


def test_the_holders_error_is_relayed_and_a_refusal_or_no_holder_is_left_here() -> None:
    error = json.dumps({"message": "busy"}).encode()
    throttled = (
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\n"
        b"x-amzn-errortype: ThrottlingException\r\ncontent-length: %d\r\n\r\n%s" % (len(error), error)
    )
    refused = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\n{}"

    async def run(answer: bytes) -> tuple[bool, list[MutableMapping[str, Any]]]:
        async with holder(answer) as (url, _):
            return await forward(url)

    done, sent = asyncio.run(run(throttled))
    assert done and sent[0]["status"] == 429 and sent[1]["body"] == error
    assert (b"x-amzn-errortype", b"ThrottlingException") in sent[0]["headers"]
    assert asyncio.run(run(refused)) == (False, [])
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert asyncio.run(forward(f"http://127.0.0.1:{port}")) == (False, [])


def test_a_holder_that_stops_answering_is_given_the_invocations_time_only() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.amazon.eventstream\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )

    async def run() -> tuple[bool, list[MutableMapping[str, Any]]]:
        async with holder(head + chunked(eventstream.payload_part(b"one")), close=False) as (url, _):
            return await forward(url, timeout_s=0.5)

    done, sent = asyncio.run(run())
    assert done
    got_events = events(sent)
    assert [e["payload"] for e in got_events[:1]] == [b"one"]
    assert got_events[1]["headers"][":exception-type"] == "InternalStreamFailure"


def test_forwarded_calls_keep_their_connection_and_retry_one_the_peer_closed_while_idle() -> None:
    """Three forwarded invocations to one holder: the first two share one connection (no new handshake). The
    holder then closes that connection as it reads the third, as a front end closes an idle one (its
    keep-alive timeout): the third is sent again on a new connection and answered."""
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(0)
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            connections[-1] += 1
            if len(connections) == 1 and connections[0] == 3:  # the third on the first connection
                break
            writer.write(answer)
            await writer.drain()
        writer.close()

    async def run() -> list[tuple[int, bytes] | None]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        peer = peers.Peer("fe-a", f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        client = peers.PeerClient(KEY, "fe-b", lambda: [peer])
        forwarder = Forwarder(client, lambda endpoint, variant: [peer], timeout_s=5.0)
        out = []
        try:
            for _ in range(3):
                got = await forwarder.forward("ep", "A", [(b"content-type", b"application/json")], b"{}")
                out.append(None if got is None else (got[0], got[2]))
        finally:
            client.close()
            server.close()
        return out

    assert asyncio.run(run()) == [(200, b"{}")] * 3
    assert connections == [3, 1]  # two answered and one dropped on the first, the retry on a second
