"""The response cycle's writer (api/guard.py ``_OneWrite``): a response's head leaves with its body, in one
write, and nothing is held past the response's end."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from zeroscale.api.guard import _OneWrite

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\n"


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: Any) -> None:
        self.writes.append(b"".join(parts))

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def writer() -> tuple[_OneWrite, FakeTransport]:
    transport = FakeTransport()
    return _OneWrite(cast(asyncio.Transport, transport)), transport


def test_the_head_leaves_with_the_first_body_bytes_in_one_write() -> None:
    w, t = writer()
    w.write(HEAD)
    assert t.writes == []
    w.write(b"ok\n")
    assert t.writes == [HEAD + b"ok\n"]
    w.flush()  # the response's end: nothing was left
    assert t.writes == [HEAD + b"ok\n"]


def test_a_large_body_goes_in_one_call_without_being_copied_into_the_head() -> None:
    w, t = writer()
    body = b"x" * (1024 * 1024)
    w.write(HEAD)
    w.write(body)
    assert t.writes == [HEAD + body]


def test_a_response_without_body_bytes_is_sent_at_its_end() -> None:
    w, t = writer()
    w.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    w.flush()
    assert t.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"]


def test_interim_responses_and_other_bytes_are_not_held() -> None:
    w, t = writer()
    w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert t.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    w.write(b"5\r\nchunk\r\n")  # a later chunk of a streamed response
    assert t.writes[-1] == b"5\r\nchunk\r\n"


def test_close_sends_what_is_held_first_and_the_rest_is_the_transport() -> None:
    w, t = writer()
    w.write(HEAD)
    w.close()
    assert t.writes == [HEAD] and t.closed
    assert w.get_extra_info("peername") == "info:peername"
