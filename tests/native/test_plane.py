"""The native data plane's loop (``zeroscale._dataplane.Plane``) on its own, in this process: a listening
socket, grants and routes for thousands of endpoints, and a worker that is one end of a socket pair the test
answers for. What the plane serves itself, what it relays, what it journals and reports, with no server."""

from __future__ import annotations

import errno
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from zeroscale._dataplane import Plane

AKID, SECRET, REGION = "AKIDPLANETEST", "plane-secret", "us-east-1"
ENDPOINTS = 3000
QUEUE_WAIT_S = 1.0


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[tuple[Any, int, Path]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    journal = tmp_path / "journal"
    journal.mkdir()
    found = Plane(
        listen_fd=listener.fileno(),
        region=REGION,
        service="sagemaker",
        payload_limit=6 * 1024 * 1024,
        request_id_prefix="00000000-0000-0000-0000-",
        error_trailer="x-zeroscale-stream-error",
        keep_alive_s=5.0,
        lease_idle_s=30.0,
        header_timeout_s=5.0,
        body_timeout_s=5.0,
        max_header_bytes=64 * 1024,
        max_connections=100,
        max_connections_per_client=50,
        journal_dir=str(journal),
        journal_segment=1,
        queue_wait_s=QUEUE_WAIT_S,
        max_queue=2,
    )
    found.start()
    try:
        yield found, listener.getsockname()[1], journal
    finally:
        found.stop()
        listener.close()


def events(plane: Any, kinds: set[str], timeout_s: float = 5.0) -> list[tuple[Any, ...]]:
    """The plane's events until one of ``kinds`` is among them."""
    got: list[tuple[Any, ...]] = []
    deadline = time.monotonic() + timeout_s
    while not any(e[0] in kinds for e in got):
        left = deadline - time.monotonic()
        assert left > 0, f"no {kinds} event: {got}"
        select.select([plane.fileno()], [], [], min(left, 0.05))
        got += plane.take()  # records wait up to 10 ms without a wake-up: take them anyway
    return got


def signed(port: int, endpoint: str, body: bytes) -> bytes:
    req = AWSRequest(
        "POST",
        f"http://127.0.0.1:{port}/endpoints/{endpoint}/invocations",
        data=body,
        headers={"Content-Type": "text/plain"},
    )
    SigV4Auth(Credentials(AKID, SECRET), "sagemaker", REGION).add_auth(req)
    lines = [f"POST /endpoints/{endpoint}/invocations HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items()] + [f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(
        next(
            v for k, _, v in (line.partition(b": ") for line in head.split(b"\r\n")) if k == b"content-length"
        )
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head, body


def test_a_granted_routed_and_leased_endpoint_among_thousands_is_served_journaled_and_reported(
    plane: tuple[Any, int, Path],
) -> None:
    p, port, journal = plane
    for i in range(ENDPOINTS):  # grants and routes of thousands of endpoints: each request finds its own
        p.grant(AKID, SECRET, f"ep-{i}")
        p.route(f"ep-{i}", [("AllTraffic", 1.0, 1)])
    worker, lent = socket.socketpair()
    lent.setblocking(False)
    target = f"ep-{ENDPOINTS - 1}"
    p.lease(7, lent.detach(), target, "AllTraffic", "worker-7", 2048, False, 5.0, 1 << 20, 1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(signed(port, target, b"hello"))
        worker.settimeout(5)
        request = worker.recv(65536)
        assert request.startswith(b"POST /invocations HTTP/1.1\r\n") and request.endswith(b"\r\n\r\nhello")
        assert b"Content-Type: text/plain\r\n" in request
        worker.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nworld")
        head, body = read_answer(client)
        assert head.startswith(b"HTTP/1.1 200 OK") and body == b"world"
        assert b"x-amzn-invoked-production-variant: AllTraffic" in head
        assert b"x-amzn-requestid: 00000000-0000-0000-0000-" in head
        done = next(e for e in events(p, {"done"}) if e[0] == "done")
        _, lease_id, _at, model_s, total_s, bytes_in, bytes_out, status, position = done
        assert (lease_id, bytes_in, bytes_out, status) == (7, 5, 5, 200) and 0 < model_s <= total_s
        line = (journal / "journal-00000001.log").read_text()
        assert line.startswith(f"{target}\tAllTraffic\tworker-7\t") and line.endswith("\t2048\tNone\t0\t1\n")
        assert position == (1, len(line))

        # another endpoint, granted and routed but with no worker lent: relayed, naming its key
        client.sendall(signed(port, "ep-5", b"x"))
        request_event = next(e for e in events(p, {"request"}) if e[0] == "request")
        assert request_event[4:6] == (AKID, "ep-5")
        p.respond(request_event[1], b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", True, False)
        assert read_answer(client)[1] == b"ok"

        # its grants dropped: the key is not known here any more, and the request is relayed without it
        p.clear_grants()
        client.sendall(signed(port, target, b"again"))
        relayed = next(e for e in events(p, {"request"}) if e[0] == "request")
        assert relayed[4:6] == ("", target)
        p.respond(relayed[1], b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", True, False)
        read_answer(client)
    p.recall(7)
    assert ("returned", 7, 0) in events(p, {"returned"})


def test_a_worker_that_answers_an_error_is_reported_with_its_answer(plane: tuple[Any, int, Path]) -> None:
    p, port, _ = plane
    p.grant(AKID, SECRET, "ep")
    p.route("ep", [("AllTraffic", 1.0, 1)])
    worker, lent = socket.socketpair()
    lent.setblocking(False)
    p.lease(1, lent.detach(), "ep", "AllTraffic", "w", 1024, False, 5.0, 1 << 20, 1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(signed(port, "ep", b"boom"))
        worker.settimeout(5)
        worker.recv(65536)
        worker.sendall(b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\nContent-Length: 4\r\n\r\nbad!")
        got = events(p, {"failed"})
        failed = next(e for e in got if e[0] == "failed")
        _, _conn, lease_id, kind, status, request, answer, *_ = failed
        assert (lease_id, kind, status) == (1, "answer", 500)
        assert request[0:2] == (b"POST", b"/endpoints/ep/invocations") and request[4] == b"boom"
        assert answer == ([(b"content-type", b"text/plain"), (b"content-length", b"4")], b"bad!")
        if ("returned", 1, 0) not in got:  # the lease comes back after the failure, in its batch or the next
            got += events(p, {"returned"})
        assert ("returned", 1, 0) in got


def _quiet(p: Any, worker: socket.socket, within_s: float = 0.3) -> None:
    """Neither a relayed request nor a worker's request within ``within_s``: the request waits."""
    deadline = time.monotonic() + within_s
    seen: list[tuple[Any, ...]] = []
    while time.monotonic() < deadline:
        select.select([p.fileno(), worker], [], [], 0.05)
        seen += [e for e in p.take() if e[0] == "request"]
        assert not seen, seen
        worker.setblocking(False)
        try:
            assert not worker.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            pass
        finally:
            worker.setblocking(True)


def _answer(worker: socket.socket, body: bytes) -> bytes:
    request = worker.recv(65536)
    worker.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    return request


def _one_lease(p: Any, max_concurrency: int) -> socket.socket:
    """``ep`` granted, routed with ``max_concurrency``, and one worker lent (lease 1): the worker's end."""
    p.grant(AKID, SECRET, "ep")
    p.route("ep", [("AllTraffic", 1.0, max_concurrency)])
    worker, lent = socket.socketpair()
    worker.settimeout(5)
    p.lease(1, lent.detach(), "ep", "AllTraffic", "w", 1024, False, 30.0, 1 << 20, 1 << 20)
    return worker


def test_requests_past_the_workers_wait_for_the_plane_s_lease_until_it_goes_or_their_time_is_up(
    plane: tuple[Any, int, Path],
) -> None:
    """An endpoint whose every worker (MaxConcurrency 1) the plane holds: a request finding it busy waits here
    for it, rather than relayed to wait in the pool for the same worker; in order, at most ``max_queue`` of
    them, relayed when their time is up or the lease goes."""
    p, port, _ = plane
    worker = _one_lease(p, max_concurrency=1)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        a, b, c, d = clients
        a.sendall(signed(port, "ep", b"a"))
        assert worker.recv(65536).endswith(b"a")
        b.sendall(signed(port, "ep", b"b"))
        time.sleep(0.05)
        c.sendall(signed(port, "ep", b"c"))
        _quiet(p, worker)  # b and c wait for the lease
        assert p.counts()["waiting"] == 2 and p.idle_leases() == []
        assert p.waiting() == {("ep", "AllTraffic"): 2}
        d.sendall(signed(port, "ep", b"d"))  # past max_queue (2): relayed at once
        relayed = next(e for e in events(p, {"request"}) if e[0] == "request")
        assert relayed[2][4] == b"d"
        p.respond(relayed[1], b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nD!", True, False)
        assert read_answer(d)[1] == b"D!"

        worker.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nA!")
        assert read_answer(a)[1] == b"A!"
        assert _answer(worker, b"B!").endswith(b"b")  # the oldest first, on the same worker
        assert read_answer(b)[1] == b"B!"
        assert _answer(worker, b"C!").endswith(b"c")
        assert read_answer(c)[1] == b"C!"
        assert p.counts()["waiting"] == 0 and p.idle_leases() == [1] and p.waiting() == {}

        # a request that waits past queue_wait_s is relayed (the pool then waits for a worker for it)
        a.sendall(signed(port, "ep", b"slow"))
        assert worker.recv(65536).endswith(b"slow")
        started = time.monotonic()
        b.sendall(signed(port, "ep", b"late"))
        late = next(e for e in events(p, {"request"}) if e[0] == "request")
        assert late[2][4] == b"late" and time.monotonic() - started >= QUEUE_WAIT_S * 0.9
        assert late[6] >= QUEUE_WAIT_S * 0.9  # how long it waited here: the pool's queue wait counts it
        p.respond(late[1], b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", True, False)
        read_answer(b)

        # the lease recalled while busy: what waits for it is relayed at once, not when it comes back
        c.sendall(signed(port, "ep", b"orphan"))
        _quiet(p, worker, 0.1)
        p.recall(1)
        orphan = next(e for e in events(p, {"request"}) if e[0] == "request")
        assert orphan[2][4] == b"orphan"
        p.respond(orphan[1], b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", True, False)
        read_answer(c)
        worker.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        read_answer(a)
        assert ("returned", 1, 0) in events(p, {"returned"})
    finally:
        for client in clients:
            client.close()


def test_a_request_relays_while_the_pool_has_room_past_the_plane_s_leases(
    plane: tuple[Any, int, Path],
) -> None:
    """MaxConcurrency 2 and one lease, busy: the next request is relayed (the pool serves it on its other
    worker, or starts one); the one after, with that relay in flight, waits for the lease."""
    p, port, _ = plane
    worker = _one_lease(p, max_concurrency=2)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as a,
        socket.create_connection(("127.0.0.1", port), timeout=5) as b,
        socket.create_connection(("127.0.0.1", port), timeout=5) as c,
    ):
        a.sendall(signed(port, "ep", b"a"))
        assert worker.recv(65536).endswith(b"a")
        b.sendall(signed(port, "ep", b"b"))
        relayed = next(e for e in events(p, {"request"}) if e[0] == "request")
        assert relayed[2][4] == b"b"
        c.sendall(signed(port, "ep", b"c"))
        _quiet(p, worker)
        p.respond(relayed[1], b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", True, False)
        read_answer(b)
        worker.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        read_answer(a)
        assert _answer(worker, b"C!").endswith(b"c")
        assert read_answer(c)[1] == b"C!"
    p.recall(1)


class _Worker:
    """One end of a lease: reads the plane's requests whole and answers them (or breaks)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setblocking(False)
        self.buf = b""

    def request(self) -> bytes | None:
        """The body of the request the plane sent, once whole; None before."""
        try:
            while chunk := self.sock.recv(65536):
                self.buf += chunk
        except BlockingIOError:
            pass
        head, sep, rest = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return None
        length = int(
            next(v for k, _, v in (x.partition(b": ") for x in head.split(b"\r\n")) if k == b"Content-Length")
        )
        if len(rest) < length:
            return None
        self.buf = rest[length:]
        return rest[:length]


def test_random_traffic_leases_recalls_and_grants_answer_every_request_once(
    plane: tuple[Any, int, Path],
) -> None:
    """Clients, leases that come and go, failures, relays, grants dropped and given again, MaxConcurrency
    changed, clients that leave while they wait, at random (seeded): every request of a client that stays is
    answered exactly once, with its own body, by the worker, a relay or a failure's answer."""
    import random

    p, port, _ = plane
    rng = random.Random(1505)
    p.grant(AKID, SECRET, "ep")
    p.route("ep", [("AllTraffic", 1.0, 2)])
    workers: dict[int, _Worker] = {}
    ids = iter(range(1, 10_000))

    def lease() -> None:
        worker, lent = socket.socketpair()
        lease_id = next(ids)
        workers[lease_id] = _Worker(worker)
        p.lease(
            lease_id, lent.detach(), "ep", "AllTraffic", f"w{lease_id}", 1024, False, 30.0, 1 << 20, 1 << 20
        )

    def connect() -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        return sock

    clients = [connect() for _ in range(6)]
    waiting: dict[int, bytes] = {}  # client -> the body it waits for the answer to
    got: dict[int, bytes] = dict.fromkeys(range(len(clients)), b"")
    answered = 0

    def reply(conn_id: int, text: bytes) -> None:
        p.respond(
            conn_id, b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%b" % (len(text), text), True, False
        )

    def service() -> None:
        nonlocal answered
        for kind, *rest in p.take():
            if kind == "request":
                reply(rest[0], b"relayed:" + rest[1][4])
            elif kind == "failed" and rest[4] is not None:
                reply(rest[0], b"failed:" + rest[4][4])
            elif kind == "returned":
                workers.pop(rest[0]).sock.close()
        for worker in list(workers.values()):
            body = worker.request()
            if body is None:
                continue
            if rng.random() < 0.1:
                worker.sock.sendall(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
            else:
                worker.sock.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\nserved:%b" % (len(body) + 7, body)
                )
        for k, sock in enumerate(clients):
            try:
                while chunk := sock.recv(65536):
                    got[k] += chunk
            except BlockingIOError:
                pass
            head, sep, rest = got[k].partition(b"\r\n\r\n")
            if not sep:
                continue
            length = int(
                next(
                    v
                    for k2, _, v in (x.partition(b": ") for x in head.lower().split(b"\r\n"))
                    if k2 == b"content-length"
                )
            )
            if len(rest) < length:
                continue
            body, got[k] = rest[:length], rest[length:]
            assert head.startswith(b"HTTP/1.1 200") and k in waiting, (k, head, body)
            assert body.split(b":", 1)[1] == waiting.pop(k), (k, body)
            answered += 1

    lease()
    for step in range(3000):
        action = rng.random()
        idle = [k for k in range(len(clients)) if k not in waiting]
        if action < 0.45 and idle:
            k = rng.choice(idle)
            body = f"c{k}-{step}".encode()
            waiting[k] = body
            clients[k].sendall(signed(port, "ep", body))
        elif action < 0.50 and workers:
            p.recall(rng.choice(list(workers)))
        elif action < 0.56 and len(workers) < 3:
            lease()
        elif action < 0.58:
            p.clear_grants()
            p.grant(AKID, SECRET, "ep")
        elif action < 0.60:
            p.route("ep", [("AllTraffic", 1.0, rng.randint(1, 3))])
        elif action < 0.61 and waiting:  # a client leaves while it waits, another takes its place
            k = rng.choice(list(waiting))
            clients[k].close()
            clients[k] = connect()
            waiting.pop(k)
            got[k] = b""
        if step % 25 == 0:  # read from this thread while the plane's changes them
            assert all(n > 0 for n in p.waiting().values()) and set(p.idle_leases()) <= set(workers)
        select.select([p.fileno()], [], [], 0.001)
        service()
    deadline = time.monotonic() + 10
    while waiting and time.monotonic() < deadline:  # the rest: every one answered
        select.select([p.fileno()], [], [], 0.01)
        service()
    assert not waiting and answered > 500, (waiting, answered)
    for sock in clients:
        sock.close()


def test_a_tcp_worker_s_lease_is_served_while_its_connection_is_made_and_a_refused_one_is_not_delivered(
    plane: tuple[Any, int, Path],
) -> None:
    """A worker on another node is leased with its TCP connection still being made (so the lease reaches
    the plane before the answer that earned it): a request finds it, waits for the connection, and is
    served. A worker that refuses the connection: the request is reported never delivered (it goes to
    another worker), not as a worker that broke."""
    p, port, _ = plane
    p.grant(AKID, SECRET, "ep")
    p.route("ep", [("AllTraffic", 1.0, 1)])
    node = socket.socket()
    node.bind(("127.0.0.1", 0))
    node.listen(1)
    connecting = socket.socket()
    connecting.setblocking(False)
    assert connecting.connect_ex(node.getsockname()) in (0, errno.EINPROGRESS)
    p.lease(1, connecting.detach(), "ep", "AllTraffic", "w", 1024, False, 5.0, 1 << 20, 1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(signed(port, "ep", b"far"))
        worker, _ = node.accept()
        worker.settimeout(5)
        with worker:
            assert _answer(worker, b"near").endswith(b"far")
            assert read_answer(client)[1] == b"near"
    node.close()
    p.recall(1)

    # a node whose accept queue is full drops the connection's SYN: it is still being made when the request
    # comes, and refused once the node's port closes (the SYN sent again meets a reset)
    node = socket.socket()
    node.bind(("127.0.0.1", 0))
    node.listen(0)
    queued: list[socket.socket] = []
    while True:  # connections until one is still being made (its SYN dropped): the next is too
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(node.getsockname())
        queued.append(sock)
        if not select.select([], [sock], [], 0.2)[1]:
            break
        assert len(queued) < 10, "the node's accept queue never filled"
    pending = socket.socket()
    pending.setblocking(False)
    pending.connect_ex(node.getsockname())
    assert not select.select([], [pending], [], 0.1)[1]  # still being made as it is lent
    p.lease(2, pending.detach(), "ep", "AllTraffic", "w2", 1024, False, 10.0, 1 << 20, 1 << 20)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(signed(port, "ep", b"lost"))
        time.sleep(0.2)
        node.close()
        failed = next(e for e in events(p, {"failed"}, timeout_s=8) if e[0] == "failed")
        assert failed[2:4] == (2, "not_delivered") and failed[5][4] == b"lost"
    for sock in queued:
        sock.close()
