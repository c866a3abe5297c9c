"""Runtime invocations on the direct path (api/direct.py) and the requests that fall back to uvicorn's ASGI
cycle, over raw sockets against the real server: the same answers either way, in order on a connection,
and nothing the direct path skips (chunked bodies, 100-continue, HTTP/1.0, Connection: close, pipelining
behind another request) served wrong."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy

from .conftest import handler_model

ENDPOINT = "direct-echo"
ECHO = """
import time

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    if body.startswith(b"sleep"):
        time.sleep(float(body[5:]))
    return body, content_type
"""


@pytest.fixture(scope="module")
def endpoint(server: ServerProcess, sm: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = handler_model(tmp_path_factory.mktemp("direct"), ECHO)
    assert deploy(sm, ENDPOINT, url)["EndpointStatus"] == "InService"
    return ENDPOINT


def signed_head(server: ServerProcess, body: bytes, version: str = "1.1", **extra: str) -> bytes:
    """An invocation's request line and headers, signed as botocore signs them (``extra`` are sent too,
    unsigned: Transfer-Encoding, Expect, Connection)."""
    url = f"{server.url}/endpoints/{ENDPOINT}/invocations"
    req = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/octet-stream"})
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(req)
    lines = [f"POST /endpoints/{ENDPOINT}/invocations HTTP/{version}", f"Host: 127.0.0.1:{server.port}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items()]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in extra.items()]
    if "Transfer_Encoding" not in extra:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=20)


class Reader:
    """HTTP/1.1 answers off one socket, one at a time: (status, headers lowercased, body)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"closed before an answer's head: {self.buf!r}"
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            assert self._fill(), "closed inside an answer's body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(status_line.split()[1]), headers, body

    def closed(self) -> bool:
        self.sock.settimeout(10)
        return not self.buf and not self._fill()


def test_invocation_answers_with_sagemaker_headers(server: ServerProcess, endpoint: str) -> None:
    body = b"hello direct"
    with connect(server) as sock:
        reader = Reader(sock)
        for _ in range(3):  # kept alive: one connection serves them all
            sock.sendall(signed_head(server, body) + body)
            status, headers, answer = reader.answer()
            assert (status, answer) == (200, body)
            assert headers["content-type"] == "application/octet-stream"
            assert headers["x-amzn-invoked-production-variant"] == "AllTraffic"
            assert headers["content-length"] == str(len(body))
            assert len(headers["x-amzn-requestid"]) == 36


def test_pipelined_requests_are_answered_in_order(server: ServerProcess, endpoint: str) -> None:
    """Three invocations and a ping in one write: the second invocation waits behind a slow first one (the
    direct path takes no request while an answer is in progress), and the answers come back in order."""
    slow, fast = b"sleep0.3", b"second"
    ping = f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
    burst = signed_head(server, slow) + slow + signed_head(server, fast) + fast + ping
    burst += signed_head(server, b"third") + b"third"
    with connect(server) as sock:
        sock.sendall(burst)
        reader = Reader(sock)
        answers = [reader.answer() for _ in range(4)]
    assert [(s, b) for s, _, b in answers] == [(200, slow), (200, fast), (200, b"ok\n"), (200, b"third")]


def test_chunked_body(server: ServerProcess, endpoint: str) -> None:
    body = b"sent in two chunks"
    framed = b"5\r\n" + body[:5] + b"\r\n" + f"{len(body) - 5:x}\r\n".encode() + body[5:] + b"\r\n0\r\n\r\n"
    with connect(server) as sock:
        sock.sendall(signed_head(server, body, Transfer_Encoding="chunked") + framed)
        status, _, answer = Reader(sock).answer()
    assert (status, answer) == (200, body)


def test_expect_100_continue(server: ServerProcess, endpoint: str) -> None:
    body = b"after the go-ahead"
    with connect(server) as sock:
        sock.sendall(signed_head(server, body, Expect="100-continue"))
        reader = Reader(sock)
        while b"\r\n\r\n" not in reader.buf:
            assert reader._fill()
        assert reader.buf.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        reader.buf = reader.buf[len(b"HTTP/1.1 100 Continue\r\n\r\n") :]
        sock.sendall(body)
        status, _, answer = reader.answer()
    assert (status, answer) == (200, body)


@pytest.mark.parametrize(
    ("version", "extra"), [("1.1", {"Connection": "close"}), ("1.0", {})], ids=["close", "http10"]
)
def test_connection_not_kept_alive(
    server: ServerProcess, endpoint: str, version: str, extra: dict[str, str]
) -> None:
    body = b"and goodbye"
    with connect(server) as sock:
        sock.sendall(signed_head(server, body, version, **extra) + body)
        reader = Reader(sock)
        status, headers, answer = reader.answer()
        assert (status, answer) == (200, body)
        assert headers["connection"] == "close"
        assert reader.closed()


def test_body_over_the_limit_is_refused_by_name(server: ServerProcess, endpoint: str) -> None:
    """A Content-Length past the payload limit never takes the direct path: the runtime's own error."""
    body = b"x" * (6 * 1024 * 1024 + 1)
    with connect(server) as sock:
        sock.sendall(signed_head(server, body))
        status, headers, answer = Reader(sock).answer()
    assert status == 400
    assert headers["x-amzn-errortype"].startswith("ValidationError")
    assert b"oversize body" in answer


def test_conflicting_lengths_are_a_bad_request(server: ServerProcess, endpoint: str) -> None:
    """Two Content-Length values (a request-smuggling shape): the parser refuses it and closes."""
    body = b"abcd"
    head = signed_head(server, body).replace(b"\r\n\r\n", b"\r\nContent-Length: 2\r\n\r\n")
    with connect(server) as sock:
        sock.sendall(head + body)
        reader = Reader(sock)
        status, _, _ = reader.answer()
        assert status == 400
        assert reader.closed()


def test_client_gone_mid_invocation(server: ServerProcess, endpoint: str) -> None:
    """A client that hangs up while its invocation runs: the answer is dropped, the server goes on serving,
    and nothing failed on its side."""
    slow = b"sleep0.4"
    with connect(server) as sock:
        sock.sendall(signed_head(server, slow) + slow)
    with connect(server) as sock:
        sock.sendall(signed_head(server, b"still here") + b"still here")
        assert Reader(sock).answer()[2] == b"still here"
    smr = server.client("sagemaker-runtime")
    time.sleep(0.5)  # the first invocation's answer is due by now
    assert smr.invoke_endpoint(EndpointName=ENDPOINT, Body=b"boto3")["Body"].read() == b"boto3"
    assert "direct invocation failed" not in server.log()
    assert "Traceback" not in Path(server.log_path).read_text(errors="replace")
