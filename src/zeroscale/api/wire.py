"""Sending responses and serialising errors in each protocol's shape. The only place errors meet the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from zeroscale.errors import ModelError, ZeroscaleError

Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Headers = list[tuple[bytes, bytes]]


async def watch_disconnect(receive: Receive, stop: Callable[[], None], gone: asyncio.Event) -> None:
    """For an answer sent as it comes, once the request body was read whole: the next message is the client
    going away, which sets ``gone`` and calls ``stop`` (the worker, or the front end relaying, stops)."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            gone.set()
            stop()
            return


def header_text(raw: bytes) -> str:
    """A header value as its sender meant it: ASCII as it is; else UTF-8, which is how botocore sends (and
    signs) a str, or latin-1, how http.client sends one, when it is not UTF-8."""
    text = raw.decode("latin-1")
    if text.isascii():  # O(1) on a str
        return text
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return text


JSON_11 = b"application/x-amz-json-1.1"


async def respond(send: Send, status: int, body: bytes, headers: Headers) -> None:
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def respond_stream(send: Send, status: int, body: AsyncIterator[bytes], headers: Headers) -> None:
    """A body sent as it comes: with a content-length when it comes in one piece (what a client reading
    only content-length, such as a small script, then still reads), chunked (HTTP/1.1) when in more."""
    pieces = aiter(body)
    first = await anext(pieces, None)
    second = await anext(pieces, None) if first is not None else None
    if second is None:
        await respond(send, status, first or b"", headers)
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": first, "more_body": True})
    await send({"type": "http.response.body", "body": second, "more_body": True})
    async for piece in pieces:
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def control_ok(send: Send, request_id: str, payload: dict[str, Any]) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await respond(send, 200, body, [(b"content-type", JSON_11), (b"x-amzn-requestid", request_id.encode())])


async def control_error(send: Send, request_id: str, err: ZeroscaleError) -> None:
    """JSON 1.1: ``{"__type": code, "message": text}``; botocore reads the code from ``__type``."""
    body = json.dumps({"__type": err.code, "message": err.message}).encode()
    headers = [
        (b"content-type", JSON_11),
        (b"x-amzn-requestid", request_id.encode()),
        (b"x-amzn-errortype", err.code.encode()),
    ]
    await respond(send, err.status, body, headers)


async def runtime_error(send: Send, request_id: str, err: ZeroscaleError) -> None:
    """REST-JSON: the code in ``x-amzn-ErrorType``, the message (and ModelError's details) in the body."""
    payload: dict[str, Any] = {"Message": err.message, "message": err.message}
    if isinstance(err, ModelError):
        payload.update(
            OriginalStatusCode=err.original_status,
            OriginalMessage=err.original_message,
            LogStreamArn=err.log_stream_arn,
        )
    headers = [
        (b"content-type", b"application/json"),
        (b"x-amzn-requestid", request_id.encode()),
        (b"x-amzn-errortype", f"{err.code}:".encode()),
    ]
    await respond(send, err.status, json.dumps(payload).encode(), headers)
