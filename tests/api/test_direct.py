"""api/direct.py under a real uvicorn server on a free port, with handlers that misbehave on purpose: which
requests take the direct path, and what a client sees when the handler raises, writes a header value that
would split the answer, or answers twice."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator, MutableMapping
from typing import Any

import pytest
import uvicorn

from zeroscale.api import guard
from zeroscale.api.direct import DirectRoute
from zeroscale.config import HttpLimits
from zeroscale.testing import free_port

LIMIT = 1024
seen: list[tuple[str, bytes]] = []  # (which path, body) per request


async def direct(scope: MutableMapping[str, Any], body: bytes, send: Any) -> None:
    seen.append(("direct", body))
    if body == b"raise":
        raise RuntimeError("the handler broke")
    value = b"text/plain\r\nx-injected: yes" if body == b"split" else b"text/plain"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", value)]})
    await send({"type": "http.response.body", "body": body})
    if body == b"twice":
        await send({"type": "http.response.body", "body": body})


def admit(scope: MutableMapping[str, Any]) -> bool:
    """The app's check of a request's head (its signature): here, no ``x-refuse`` header."""
    return all(name != b"x-refuse" for name, _ in scope["headers"])


async def app(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    seen.append(("asgi", b"".join(chunks)))
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"4")]})
    await send({"type": "http.response.body", "body": b"asgi"})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    port = free_port()
    http = guard.protocol(HttpLimits(), direct=DirectRoute(direct, LIMIT, admit))
    config = uvicorn.Config(app, port=port, loop="uvloop", http=http, lifespan="off", log_level="critical")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    yield port
    server.should_exit = True
    thread.join(10)


def exchange(port: int, request: bytes) -> bytes:
    """Everything the server sends back until it closes or goes quiet for 0.5 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
        sock.sendall(request)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
    return data


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: x", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


INVOKE = "/endpoints/demo/invocations"


def test_only_invocations_within_the_limit_take_the_direct_path(port: int) -> None:
    seen.clear()
    assert exchange(port, post(INVOKE, b"ok")).endswith(b"\r\n\r\nok")
    exchange(port, post("/endpoints/demo/async-invocations", b"async"))
    exchange(port, post("/", b"control"))
    exchange(port, post(INVOKE, b"y" * (LIMIT + 1)))
    exchange(port, post(INVOKE, b"continue", "Expect: 100-continue"))
    exchange(port, post(INVOKE, b"refused", "X-Refuse: yes"))  # not admitted: the app reads its body, or not
    get = f"GET {INVOKE} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    exchange(port, get)
    assert seen == [
        ("direct", b"ok"),
        ("asgi", b"async"),
        ("asgi", b"control"),
        ("asgi", b"y" * (LIMIT + 1)),
        ("asgi", b"continue"),
        ("asgi", b"refused"),
        ("asgi", b""),
    ]


def test_an_answer_carries_the_server_headers_and_its_length(port: int) -> None:
    answer = exchange(port, post(INVOKE, b"hello"))
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert b"content-length: 5" in lines
    assert b"content-type: text/plain" in lines
    assert any(line.startswith(b"date: ") for line in lines)  # uvicorn's default headers, as on its cycle
    assert body == b"hello"


def test_a_handler_that_raises_gets_a_500(port: int) -> None:
    answer = exchange(port, post(INVOKE, b"raise"))
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert answer.endswith(b"\r\n\r\nInternal Server Error")


def test_a_header_value_that_would_split_the_answer_is_not_sent(port: int) -> None:
    """A worker's content type with CR LF in it: the connection is cut, no header is injected."""
    answer = exchange(port, post(INVOKE, b"split"))
    assert b"x-injected" not in answer
    assert not answer.startswith(b"HTTP/1.1 200")


def test_a_second_answer_is_refused_and_the_first_stands(port: int) -> None:
    answer = exchange(port, post(INVOKE, b"twice"))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.endswith(b"\r\n\r\ntwice")
