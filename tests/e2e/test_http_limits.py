"""Slow and flooding clients, for real, against a server with short limits: each attacking connection is cut
off within its deadline, and another client keeps being served meanwhile.

The attacker connects from 127.0.0.2 (any 127/8 address reaches a server on 127.0.0.1) so that its
connections count against its own address, not against the served client's 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.5
PER_CLIENT = 20
ATTACKER = "127.0.0.2"


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(
        header_timeout_s=HEADER_TIMEOUT_S,
        body_timeout_s=BODY_TIMEOUT_S,
        max_header_kb=16,
        max_connections_per_client=PER_CLIENT,
    )


def attacker(server: ServerProcess) -> socket.socket:
    sock = socket.socket()
    sock.bind((ATTACKER, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", server.port))
    return sock


def answer(sock: socket.socket) -> tuple[bytes, float]:
    """What the server sent before closing (b"" if it closed without a word), and when it closed."""
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic()


def signed(
    server: ServerProcess,
    path: str,
    body: bytes,
    headers: dict[str, str],
    *,
    secret: str = SECRET_KEY,
    declared: bytes | None = None,
) -> tuple[bytes, bytes]:
    """(the head, the body) of a POST that botocore signed with ``secret``; with ``declared``, its head says
    the body hashes to sha256(declared) (``x-amz-content-sha256``), signed as such."""
    headers = {"Content-Type": "application/x-amz-json-1.1", **headers}
    if declared is not None:
        headers["X-Amz-Content-SHA256"] = hashlib.sha256(declared).hexdigest()
    request = AWSRequest(method="POST", url=f"{server.url}{path}", data=body, headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, secret), "sagemaker", REGION).add_auth(request)
    prepared = request.prepare()
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{server.port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in prepared.headers.items() if k.lower() not in ("host", "content-length")]
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), body


def first_answer(sock: socket.socket) -> bytes:
    """The head and body of the first answer on ``sock`` (by its Content-Length), without waiting for the
    connection to close: a server that waits for the rest of a body would answer nothing here."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lengths = [
        line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    ]
    length = int(lengths[0]) if lengths else 0
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


class Served:
    """A well-behaved client calling ListEndpoints in a loop: its slowest call, and any failure."""

    def __init__(self, server: ServerProcess) -> None:
        self._client = server.client("sagemaker")
        self.slowest = 0.0
        self.calls = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                self._client.list_endpoints()
            except BaseException as exc:
                self.errors.append(exc)
            self.slowest = max(self.slowest, time.monotonic() - start)
            self.calls += 1
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


@pytest.fixture
def served(server: ServerProcess) -> Iterator[Served]:
    client = Served(server)
    yield client
    client.stop()
    assert not client.errors, client.errors[:3]
    assert client.calls > 0
    assert client.slowest < 2.0, client.slowest


def test_slow_loris_heads_are_cut_off_at_the_deadline(server: ServerProcess, served: Served) -> None:
    socks = [attacker(server) for _ in range(PER_CLIENT)]
    start = time.monotonic()
    for sock in socks:
        sock.sendall(b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    def trickle() -> None:  # one more header byte every 200 ms: never finishing the head
        for _ in range(int(HEADER_TIMEOUT_S * 10)):
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.sendall(b"X")
            time.sleep(0.2)

    threading.Thread(target=trickle, daemon=True).start()
    for sock in socks:
        data, closed_at = answer(sock)
        assert data.startswith(b"HTTP/1.1 408"), data
        assert closed_at - start < HEADER_TIMEOUT_S + 1.0
        sock.close()


def test_an_idle_connection_is_closed_and_a_slow_body_is_cut_off(
    server: ServerProcess, served: Served
) -> None:
    idle = attacker(server)
    start = time.monotonic()
    data, closed_at = answer(idle)
    assert data.startswith(b"HTTP/1.1 408") and closed_at - start < HEADER_TIMEOUT_S + 1.0, data
    idle.close()

    slow = attacker(server)
    start = time.monotonic()
    head, _ = signed(server, "/", b"{" + b" " * 999, {"X-Amz-Target": "SageMaker.ListEndpoints"})
    slow.sendall(head + b"{")  # a signed head: its body is awaited (an unsigned one is refused unread)
    for _ in range(3):  # a byte at a time: it is the deadline that counts, not the silence
        time.sleep(0.3)
        slow.sendall(b" ")
    data, closed_at = answer(slow)
    assert data.startswith(b"HTTP/1.1 408"), data
    assert BODY_TIMEOUT_S - 0.1 < closed_at - start < BODY_TIMEOUT_S + 1.0
    slow.close()


def test_an_oversized_head_is_refused(server: ServerProcess, served: Served) -> None:
    sock = attacker(server)
    sock.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        for i in range(64):  # 64 KB of headers, past the 16 KB limit
            sock.sendall(b"X-Junk-%d: %s\r\n" % (i, b"a" * 1000))
    except OSError:
        pass  # closed on us mid-way
    data, _ = answer(sock)
    assert data.startswith(b"HTTP/1.1 431"), data
    sock.close()


def test_an_oversized_head_arriving_whole_or_pipelined_is_refused(server: ServerProcess) -> None:
    """40 KB of headers (the limit is 16 KB) in one write, where the server reads it in one piece: refused,
    not served; and behind a small request on the same connection: refused too (the small one may be
    answered first, or be cut with the connection), never served."""
    junk = b"".join(b"X-Junk-%d: %s\r\n" % (i, b"a" * 1000) for i in range(40))
    big = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n" + junk + b"\r\n"
    small = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for request in (big, small + big):
        sock = attacker(server)
        sock.sendall(request)
        data, _ = answer(sock)
        sock.close()
        statuses = [part[:3] for part in data.split(b"HTTP/1.1 ")[1:]]
        assert statuses in ([b"431"], [b"200", b"431"]), data[:300]


def test_a_connection_flood_from_one_address_takes_only_its_share(
    server: ServerProcess, served: Served
) -> None:
    held = [attacker(server) for _ in range(PER_CLIENT)]
    time.sleep(0.2)
    refused: list[bytes] = []
    for _ in range(50):  # every further connection from that address: 503 at once, nothing read
        sock = attacker(server)
        refused.append(answer(sock)[0])
        sock.close()
    assert all(r.startswith(b"HTTP/1.1 503") for r in refused), refused[:3]
    # Another address is served all along (the fixture's client, 127.0.0.1), and the held connections, once
    # they time out, free the attacker's share again.
    for sock in held:
        sock.close()
    time.sleep(0.3)
    fresh = attacker(server)
    fresh.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert fresh.recv(100).startswith(b"HTTP/1.1 ")
    fresh.close()


def test_a_head_request_on_a_kept_alive_connection_is_answered_then_pipelined_ones_in_order(
    server: ServerProcess,
) -> None:
    # A HEAD response has no body bytes: its head must still leave at its end (the server sends a
    # response's head together with its body), not wait for the connection's next response.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"HEAD /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            chunk = sock.recv(4096)  # a held head would time out here (socket timeout: 10 s)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 ") and b"ok\n" not in head
        sock.sendall(
            b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"HEAD /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
            b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        data, _ = answer(sock)
    responses = data.split(b"HTTP/1.1 ")[1:]
    assert len(responses) == 3, data
    assert responses[0].endswith(b"\r\n\r\nok\n") and responses[2].endswith(b"\r\n\r\nok\n")
    assert b"ok\n" not in responses[1]


BIG = 4 * 1024 * 1024  # within the payload limit: what a server reading bodies first would hold


@pytest.mark.parametrize(
    ("path", "target"),
    [("/endpoints/nowhere/invocations", ""), ("/", "SageMaker.ListEndpoints")],
    ids=["invocation", "control-plane"],
)
def test_a_request_refused_by_its_head_is_refused_before_its_body(
    server: ServerProcess, path: str, target: str
) -> None:
    """An unsigned request, one signed with a key the server does not know, and one whose head declares its
    body's hash under a wrong signature are answered as their head arrives, with none of their body sent:
    the server holds no body for a request it can refuse without one (it held 16 MB per connection)."""
    extra = {"X-Amz-Target": target} if target else {}
    unsigned = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {BIG}\r\n"
    unsigned += "".join(f"{k}: {v}\r\n" for k, v in extra.items()) + "\r\n"
    body = b"{}" + b" " * (BIG - 2)
    unknown, _ = signed(server, path, body, extra)
    unknown = unknown.replace(ACCESS_KEY.encode(), b"AKIDNOBODYKNOWS0001")
    wrong, _ = signed(server, path, body, extra, secret="not-the-secret", declared=body)
    expected = [
        ("MissingAuthenticationToken", "Missing Authentication Token"),
        ("UnrecognizedClientException", "security token included in the request is invalid"),
        ("InvalidSignatureException", "does not match the signature you provided"),
    ]
    for head, (code, message) in zip([unsigned.encode(), unknown, wrong], expected, strict=True):
        sock = attacker(server)
        sock.sendall(head + b"{")  # one byte of the body, the rest never sent
        data = first_answer(sock)
        sock.close()
        assert data.startswith(b"HTTP/1.1 403 "), data[:200]
        answer_head, _, answer_body = data.partition(b"\r\n\r\n")
        document = json.loads(answer_body)
        assert code in (document.get("__type", "") + answer_head.decode("latin-1")), data[:400]
        assert message in document.get("message", document.get("Message", "")), document


def test_a_head_declaring_its_body_is_verified_then_its_body_against_it(server: ServerProcess) -> None:
    """A head signed over its declared body hash passes before the body arrives; a body other than the one
    declared is then refused (XAmzContentSHA256Mismatch), and the one declared is served."""
    body = json.dumps({"MaxResults": 1}).encode()
    for sent, status, needle in [
        (body, b"200", b"Endpoints"),
        (body.replace(b"1", b"2"), b"403", b"XAmzContentSHA256Mismatch"),
    ]:
        head, _ = signed(server, "/", body, {"X-Amz-Target": "SageMaker.ListEndpoints"}, declared=body)
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(head + sent)
            data = first_answer(sock)
        assert data.startswith(b"HTTP/1.1 " + status) and needle in data, data[:400]


def test_a_newcomer_takes_an_idle_slot_from_the_address_holding_the_most(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """Every slot taken by two addresses parking connections (an unsigned GET /ping each, then nothing, as a
    kept-alive client does for 75 s): a third address is still served, on the slot of one of the
    connections of the address holding the most."""
    full = server_factory(max_connections=12, max_connections_per_client=8)
    parked: dict[str, list[socket.socket]] = {"127.0.0.2": [], "127.0.0.3": []}
    for host, count in (("127.0.0.2", 8), ("127.0.0.3", 4)):
        for _ in range(count):
            sock = socket.socket()
            sock.bind((host, 0))
            sock.settimeout(10)
            sock.connect(("127.0.0.1", full.port))
            sock.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert first_answer(sock).startswith(b"HTTP/1.1 200"), host
            parked[host].append(sock)
    newcomer = socket.socket()
    newcomer.bind(("127.0.0.4", 0))
    newcomer.settimeout(10)
    newcomer.connect(("127.0.0.1", full.port))
    newcomer.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert first_answer(newcomer).startswith(b"HTTP/1.1 200")
    newcomer.close()
    closed = {host: 0 for host in parked}
    for host, socks in parked.items():
        for sock in socks:
            sock.settimeout(0.5)
            with contextlib.suppress(TimeoutError):
                closed[host] += sock.recv(1) == b""  # closed without a word
            sock.close()
    assert closed == {"127.0.0.2": 1, "127.0.0.3": 0}
