"""The native data plane (``zeroscale serve --native-port``, docs/dataplane.md) against the real server and
real workers: warm invocations answered by the plane itself, everything else relayed to the Python server,
and the same answers either way: the model's errors, a timeout, a crash, rights revoked, an endpoint
deleted, the runtime's other operations, and HTTP that an attacker would send.

Whether the plane answered a request itself is read from ``zeroscale_native_requests_total`` on /metrics:
a request the test expects the plane to have served must not move the ``relayed`` count."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from e2e.conftest import handler_model
from zeroscale.testing import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    SKLEARN_IMAGE,
    ServerProcess,
    deploy,
    free_port,
    mutate,
    wait_final,
    wait_for,
)

BEHAVIOURS = """
import os
import time


def model_fn(model_dir):
    return "model"


def predict_fn(data, model):
    if isinstance(data, dict):
        if data.get("raise"):
            raise ValueError("bad input here")
        if data.get("exit"):
            os._exit(1)
        if data.get("sleep"):
            time.sleep(data["sleep"])
    return {"ok": True, "pid": os.getpid(), "echo": data}
"""
NAME = "native-behaves"


@pytest.fixture(scope="module")
def server(server_factory: Any) -> ServerProcess:
    return server_factory(native_port=free_port(), invocation_timeout_s=2)


@pytest.fixture(scope="module")
def native(server: ServerProcess) -> Any:
    return server.client("sagemaker-runtime", url=server.native_url)


@pytest.fixture(scope="module")
def endpoint(server: ServerProcess, sm: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = handler_model(tmp_path_factory.mktemp("native"), BEHAVIOURS)
    desc = deploy(sm, NAME, url, max_concurrency=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return NAME


def counts(server: ServerProcess) -> dict[str, float]:
    found = re.findall(
        r'^zeroscale_native_requests_total\{path="(\w+)"\} ([0-9.e+]+)$', server.metrics(), re.M
    )
    return {path: float(value) for path, value in found}


def invoke(client: Any, payload: Any, endpoint: str = NAME, **extra: Any) -> tuple[dict[str, Any], Any]:
    resp = client.invoke_endpoint(
        EndpointName=endpoint,
        Body=json.dumps(payload).encode(),
        ContentType="application/json",
        Accept="application/json",
        **extra,
    )
    return json.loads(resp["Body"].read()), resp


def failure(client: Any, payload: Any, endpoint: str = NAME) -> dict[str, Any]:
    with pytest.raises(ClientError) as err:
        invoke(client, payload, endpoint)
    response: dict[str, Any] = err.value.response
    return response


def warm(client: Any, endpoint: str = NAME, payload: Any = None) -> None:
    """Invocations until the plane holds a grant and a lease (the first is relayed and earns them)."""
    body = json.dumps(payload or {"warm": 1}).encode()
    for _ in range(3):
        client.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json")[
            "Body"
        ].read()


def test_warm_invocations_are_answered_by_the_plane_as_the_main_port_answers(
    server: ServerProcess, smr: Any, native: Any, endpoint: str
) -> None:
    warm(native)
    before = counts(server)
    answers = [invoke(native, {"n": i}) for i in range(20)]
    after = counts(server)
    assert after["relayed"] == before["relayed"]
    assert after["served"] - before["served"] == 20
    for i, (body, resp) in enumerate(answers):
        assert body["ok"] is True and body["echo"] == {"n": i}
        assert resp["ContentType"] == "application/json"
        assert resp["InvokedProductionVariant"] == "AllTraffic"
        headers = resp["ResponseMetadata"]["HTTPHeaders"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"] == "sandbox; default-src 'none'"
    ids = {resp["ResponseMetadata"]["RequestId"] for _, resp in answers}
    assert len(ids) == 20
    main_body, main_resp = invoke(smr, {"n": 0})
    assert (
        main_body["echo"] == answers[0][0]["echo"]
        and main_resp["ContentType"] == answers[0][1]["ContentType"]
    )

    # metered and counted as every invocation is (the plane hands its records over within 10 ms)
    def invocations() -> float:
        found = re.search(
            rf'^zeroscale_invocations_total\{{[^}}]*endpoint_name="{NAME}"[^}}]*\}} ([0-9.e+]+)$',
            server.metrics(),
            re.M,
        )
        return float(found.group(1)) if found else 0.0

    wait_for(lambda: invocations() >= 24, timeout_s=5)


def test_the_headers_a_worker_gets_are_forwarded_by_the_plane(
    server: ServerProcess, native: Any, endpoint: str
) -> None:
    """CustomAttributes (of any length to 1,024) and InferenceId together: the plane forwards both itself."""
    warm(native)
    before = counts(server)
    for size in (0, 200, 1024):
        body, _ = invoke(native, {"h": size}, CustomAttributes="a" * size, InferenceId=f"id-{size}")
        assert body["echo"] == {"h": size}
    assert counts(server)["relayed"] == before["relayed"]
    assert counts(server)["served"] >= before["served"] + 3


def _same_error(main: dict[str, Any], through: dict[str, Any]) -> None:
    assert through["Error"]["Code"] == main["Error"]["Code"] == "ModelError"
    assert through["ResponseMetadata"]["HTTPStatusCode"] == main["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert through["OriginalStatusCode"] == main["OriginalStatusCode"]
    strip = re.compile(r"AllTraffic/[A-Za-z0-9-]+")
    assert strip.sub("", through["Error"]["Message"]) == strip.sub("", main["Error"]["Message"])


@pytest.mark.parametrize(
    "payload", [{"raise": 1}, {"exit": 1}, {"sleep": 3}], ids=["raises", "crashes", "times-out"]
)
def test_a_failed_invocation_is_answered_as_the_main_port_answers_it(
    server: ServerProcess, smr: Any, native: Any, endpoint: str, payload: dict[str, Any]
) -> None:
    main = failure(smr, payload)
    warm(native)
    before = counts(server)
    through = failure(native, payload)
    assert counts(server)["relayed"] == before["relayed"], "sent to the worker by the plane itself"
    _same_error(main, through)
    body, _ = invoke(native, {"after": 1})  # served on: a new worker where the old one died
    assert body["ok"] is True


def test_a_revoked_right_is_refused_at_the_next_request(
    server: ServerProcess, sm: Any, native: Any, endpoint: str
) -> None:
    iam = server.client("iam")
    iam.create_user(UserName="native-tenant")
    arn = f"arn:aws:sagemaker:{REGION}:000000000000:endpoint/{NAME}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sagemaker:InvokeEndpoint", "Resource": arn}],
    }
    iam.put_user_policy(UserName="native-tenant", PolicyName="invoke", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="native-tenant")["AccessKey"]
    tenant = server.client("sagemaker-runtime", key, url=server.native_url)
    warm(tenant)
    before = counts(server)
    invoke(tenant, {"as": "tenant"})
    assert counts(server)["served"] == before["served"] + 1  # the plane holds the tenant's grant
    iam.delete_user_policy(UserName="native-tenant", PolicyName="invoke")
    denied = failure(tenant, {"as": "tenant"})
    assert denied["Error"]["Code"] == "AccessDeniedException", denied
    iam.put_user_policy(UserName="native-tenant", PolicyName="invoke", PolicyDocument=json.dumps(policy))
    warm(tenant)
    iam.update_access_key(UserName="native-tenant", AccessKeyId=key["AccessKeyId"], Status="Inactive")
    gone = failure(tenant, {"as": "tenant"})
    assert gone["Error"]["Code"] == "UnrecognizedClientException", gone


def test_a_deleted_endpoint_is_not_found_through_the_plane(
    server: ServerProcess, sm: Any, native: Any, tmp_path: Path
) -> None:
    name = "native-deleted"
    assert deploy(sm, name, handler_model(tmp_path, BEHAVIOURS))["EndpointStatus"] == "InService"
    warm(native, name)
    sm.delete_endpoint(EndpointName=name)
    wait_for(lambda: not sm.list_endpoints(NameContains=name)["Endpoints"], timeout_s=30)
    response = failure(native, {}, name)
    assert response["Error"]["Code"] == "ValidationError"
    assert f"Endpoint {name} of account" in response["Error"]["Message"]


def test_the_runtimes_other_requests_are_relayed_and_served(
    server: ServerProcess, native: Any, endpoint: str
) -> None:
    warm(native)
    before = counts(server)
    body, resp = invoke(native, {"t": 1}, TargetVariant="AllTraffic")
    assert body["echo"] == {"t": 1} and resp["InvokedProductionVariant"] == "AllTraffic"
    missing = failure(native, {}, "no-such-endpoint")
    assert missing["Error"]["Code"] == "ValidationError"
    large = {"big": "x" * 1_200_000}  # over the 1 MB the plane hashes itself: hashed by the Python server
    body, _ = invoke(native, large)
    assert body["echo"] == large
    assert counts(server)["relayed"] >= before["relayed"] + 3
    stream = native.invoke_endpoint_with_response_stream(
        EndpointName=NAME, Body=b'{"s": 1}', ContentType="application/json"
    )
    parts = b"".join(e["PayloadPart"]["Bytes"] for e in stream["Body"] if "PayloadPart" in e)
    assert json.loads(parts)["echo"] == {"s": 1}
    control = server.client("sagemaker", url=server.native_url)
    with pytest.raises(ClientError) as err:
        control.list_endpoints()
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    assert f"on port {server.port}" in str(err.value)


# ---- HTTP as an attacker sends it ----
def _connect(server: ServerProcess) -> socket.socket:
    port = int(server.flags["native_port"])
    return socket.create_connection(("127.0.0.1", port), timeout=20)


def _read_answer(sock: socket.socket, data: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One answer: (status line and headers, body, what came after it)."""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed mid-answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("connection closed mid-body")
        rest += chunk
    return head, rest[:length], rest[length:]


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def _signed(
    server: ServerProcess, body: bytes, path: str = f"/endpoints/{NAME}/invocations", **extra: str
) -> bytes:
    """A request to the native port (by default, an invocation of the module's endpoint) signed as
    botocore signs it (``extra``: unsigned headers)."""
    port = int(server.flags["native_port"])
    req = AWSRequest(
        "POST", f"{server.native_url}{path}", data=body, headers={"Content-Type": "application/json"}
    )
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(req)
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in req.headers.items()]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_hostile_http_is_refused_and_the_plane_serves_on(
    server: ServerProcess, native: Any, endpoint: str
) -> None:
    cases = [
        (b"GARBAGE\r\n\r\n", b"400"),
        (b"POST /endpoints/x/invocations HTTP/1.1\nHost: a\n\n", b"400"),  # bare LF
        (b"POST /endpoints/x/invocations HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", b"400"),
        (
            b"POST /endpoints/x/invocations HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            b"400",
        ),
        (b"POST /endpoints/x/invocations HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"POST /endpoints/x/invocations HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"411"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
        (b"POST /endpoints/x/invocations HTTP/1.1\r\nBad Name: 1\r\n\r\n", b"400"),
        (b"POST /endpoints/x/invocations HTTP/1.1\r\nX: a\x00b\r\n\r\n", b"400"),
    ]
    for request, status in cases:
        with _connect(server) as sock:
            sock.sendall(request)
            head, _, _ = _read_answer(sock)
            assert head.startswith(b"HTTP/1.1 " + status), (request[:60], head)
            assert _closed(sock)
    # a body over the payload limit: refused by name, unread, and the connection closed
    with _connect(server) as sock:
        sock.sendall(
            b"POST /endpoints/%s/invocations HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
            % (NAME.encode(), 7 * 1024 * 1024)
        )
        head, body, _ = _read_answer(sock)
        assert head.startswith(b"HTTP/1.1 4"), head
        assert b"oversize body" in body or b"Missing Authentication Token" in body, body
    body_out, _ = invoke(native, {"still": "serving"})
    assert body_out["echo"] == {"still": "serving"}


def test_pipelined_and_closing_requests_are_answered_in_order(
    server: ServerProcess, native: Any, endpoint: str
) -> None:
    warm(native)
    one, two = json.dumps({"p": 1}).encode(), json.dumps({"p": 2}).encode()
    with _connect(server) as sock:
        sock.sendall(_signed(server, one) + _signed(server, two))
        head1, body1, rest = _read_answer(sock)
        head2, body2, _ = _read_answer(sock, rest)
        assert head1.startswith(b"HTTP/1.1 200") and head2.startswith(b"HTTP/1.1 200")
        assert json.loads(body1)["echo"] == {"p": 1} and json.loads(body2)["echo"] == {"p": 2}
    with _connect(server) as sock:  # Connection: close is honoured after the answer
        sock.sendall(_signed(server, one, Connection="close"))
        head, body, _ = _read_answer(sock)
        assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["echo"] == {"p": 1}
        assert _closed(sock)
    with _connect(server) as sock:  # a client that leaves mid-invocation does not stop the plane
        sock.sendall(_signed(server, json.dumps({"sleep": 0.3}).encode()))
    time.sleep(0.5)
    body_out, _ = invoke(native, {"after": "gone"})
    assert body_out["echo"] == {"after": "gone"}


def test_a_client_holds_no_more_than_the_main_port_lets_it(server_factory: Any) -> None:
    """--max-connections-per-client and the head and body deadlines hold on the plane's port as on the main
    one: past the cap a connection is answered 503 and closed; a head or body that does not arrive in
    time is answered 408 and closed."""
    held = server_factory(
        native_port=free_port(), max_connections_per_client=3, header_timeout_s=1, body_timeout_s=1
    )
    port = int(held.flags["native_port"])
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
    try:
        for sock in conns:  # each one accepted, and held: a partial head
            sock.sendall(b"POST /endpoints/x/invocations HTTP/1.1\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as extra:
            head, body, _ = _read_answer(extra)
            assert head.startswith(b"HTTP/1.1 503") and b"too many connections" in body
            assert _closed(extra)
        started = time.monotonic()
        head, _, _ = _read_answer(conns[0])
        assert head.startswith(b"HTTP/1.1 408"), head
        assert time.monotonic() - started < 3
        assert _closed(conns[0])
    finally:
        for sock in conns:
            sock.close()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow_body:
        slow_body.sendall(
            b"POST /endpoints/x/invocations HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"
        )
        head, _, _ = _read_answer(slow_body)
        assert head.startswith(b"HTTP/1.1 408"), head


# predict_fn yields parts (the worker answers chunked, with an error trailer when it fails mid-way)
PARTS = """
def model_fn(model_dir):
    return "parts"


def predict_fn(data, model):
    for i in range(int(data["parts"])):
        if i == data.get("fail_at"):
            raise ValueError(f"the model failed at part {i}")
        yield "x" * int(data.get("size", 10))


def output_fn(prediction, accept):
    return prediction, "text/plain"
"""


@pytest.fixture(scope="module")
def parts(server: ServerProcess, sm: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = handler_model(tmp_path_factory.mktemp("parts"), PARTS)
    assert deploy(sm, "native-parts", url)["EndpointStatus"] == "InService"
    return "native-parts"


def test_a_chunked_answer_is_joined_by_the_plane_and_its_error_trailer_is_a_model_error(
    server: ServerProcess, smr: Any, native: Any, parts: str
) -> None:
    warm(native, parts, {"parts": 1})
    before = counts(server)
    resp = native.invoke_endpoint(
        EndpointName=parts, Body=b'{"parts": 5, "size": 3}', ContentType="application/json"
    )
    assert resp["Body"].read() == b"x" * 15
    assert counts(server)["relayed"] == before["relayed"]  # its chunks joined by the plane itself
    main = failure(smr, {"parts": 5, "fail_at": 2}, parts)
    warm(native, parts, {"parts": 1})
    through = failure(native, {"parts": 5, "fail_at": 2}, parts)
    _same_error(main, through)
    assert "the model failed at part 2" in through["Error"]["Message"]
    assert counts(server)["relayed"] <= before["relayed"] + 1  # the warm-up's after the failure


def test_a_response_stream_to_a_slow_reader_arrives_whole(server: ServerProcess, parts: str) -> None:
    """InvokeEndpointWithResponseStream is relayed: its 8 MB go out as the client takes them (the plane holds
    the Python side back past 1 MB unwritten), and all of them arrive."""
    port = int(server.flags["native_port"])
    body = json.dumps({"parts": 32, "size": 256 * 1024}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(_signed(server, body, f"/endpoints/{parts}/invocations-response-stream"))
        data = b""
        while not data.endswith(b"\r\n0\r\n\r\n"):
            chunk = sock.recv(64 * 1024)
            assert chunk, "closed before the stream's end"
            data += chunk
            time.sleep(0.005)
    head = data.split(b"\r\n\r\n", 1)[0]
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head.lower()
    assert data.count(b"x" * 1024) >= 32 * 256  # every part's bytes, in event-stream frames


def test_a_native_port_in_use_is_a_one_line_error_naming_the_flag(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        server = ServerProcess(tmp_path / "data", {"native_port": port})
        with pytest.raises(RuntimeError, match="server exited"):
            server.start(timeout_s=20)
        assert f"--native-port {port}: 127.0.0.1:{port} is in use" in server.log()
        assert "Traceback" not in server.log()


def test_mutated_requests_never_take_the_plane_down(
    server: ServerProcess, native: Any, endpoint: str
) -> None:
    """Three thousand mutations of a signed invocation (bytes flipped, cut, repeated, CR, LF and NUL put in,
    lengths made huge), each on its own connection, one in twenty read to its end and the rest dropped
    mid-way: every one answered or dropped, and the plane serves on, with the same answers."""
    import random

    rng = random.Random(1515)
    good = _signed(server, json.dumps({"fuzz": 1}).encode())
    specials = [
        b"\r",
        b"\n",
        b"\x00",
        b"\r\n",
        b":",
        b" ",
        b"\xff",
        b"9" * 20,
        b"-1",
        b"chunked",
        b"\r\n\r\n",
    ]
    port = int(server.flags["native_port"])
    for i in range(3000):
        data = mutate(rng, good, specials, edits=4, cut=40, repeat=True)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(data)
            if i % 20 == 0:  # read this one to its end: an answer, or the connection closed
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(65536):
                    pass
        if i % 500 == 0:
            body, _ = invoke(native, {"alive": i})
            assert body["echo"] == {"alive": i}
    body, _ = invoke(native, {"after": "fuzz"})
    assert body["echo"] == {"after": "fuzz"}


def test_production_variants_are_chosen_by_their_weights_through_the_plane(
    server: ServerProcess, sm: Any, native: Any, tmp_path: Path
) -> None:
    """An endpoint with two real-time production variants (weights 1 and 3): the plane holds workers of
    both, picks each request's variant by the weights (about a quarter and three quarters), and follows a
    change of the weights (UpdateEndpointWeightsAndCapacities)."""
    name = "native-ab"
    url = handler_model(tmp_path, BEHAVIOURS)
    sm.create_model(ModelName=name, PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": url})
    sm.create_endpoint_config(  # real-time variants (serverless endpoints have one): ml.t2.medium, 2 workers
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": v,
                "ModelName": name,
                "InstanceType": "ml.t2.medium",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": w,
            }
            for v, w in (("a", 1.0), ("b", 3.0))
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    assert wait_final(sm, name)["EndpointStatus"] == "InService"

    def variants(n: int) -> dict[str, int]:
        seen = {"a": 0, "b": 0}
        for i in range(n):
            _, resp = invoke(native, {"ab": i}, name)
            seen[resp["InvokedProductionVariant"]] += 1
        return seen

    for _ in range(20):  # until the plane holds a worker of each (a relayed success lends one)
        before = counts(server)
        variants(20)
        if counts(server)["relayed"] == before["relayed"]:
            break
    before = counts(server)
    seen = variants(400)
    assert counts(server)["relayed"] == before["relayed"], "every one served by the plane"
    assert 60 <= seen["a"] <= 140, seen  # 100 expected; p < 1e-5 outside
    sm.update_endpoint_weights_and_capacities(
        EndpointName=name,
        DesiredWeightsAndCapacities=[
            {"VariantName": "a", "DesiredWeight": 3.0},
            {"VariantName": "b", "DesiredWeight": 1.0},
        ],
    )
    wait_for(lambda: sm.describe_endpoint(EndpointName=name)["EndpointStatus"] == "InService", timeout_s=30)
    time.sleep(0.3)  # the plane's route follows within its 0.1 s check
    seen = variants(400)
    assert 260 <= seen["a"] <= 340, seen


def test_a_worker_the_plane_holds_counts_busy_only_while_it_serves_a_request(
    server: ServerProcess, native: Any, endpoint: str
) -> None:
    """A lent worker is busy in its pool (nothing else reaches it), but the pool's load, its gauges and
    CloudWatch's concurrency and utilization read from them, count it busy only while the plane has a request
    on it: an endpoint invoked every half second through the plane is not busy all the time."""
    import threading

    from metrics.promtext import value

    def read() -> tuple[float, float]:
        text = server.metrics()
        busy = value(
            text, "zeroscale_concurrent_executions", endpoint_name=endpoint, variant_name="AllTraffic"
        )
        return value(text, "zeroscale_native_lent_workers") or 0.0, busy or 0.0

    for _ in range(5):  # lent and idle (given back after 1 s idle: again, where the scrape came later)
        warm(native)
        lent, busy = read()
        if lent >= 1:
            break
    assert lent >= 1 and busy == 0, (lent, busy)
    for _ in range(3):  # busy while the plane serves a request on it (again, where it was given back first)
        warm(native)
        before = counts(server)
        slow = threading.Thread(target=invoke, args=(native, {"sleep": 1.0}))
        slow.start()
        deadline, seen = time.monotonic() + 5, False
        while slow.is_alive() and not seen and time.monotonic() < deadline:
            lent, busy = read()
            seen = lent >= 1 and busy == 1
        slow.join()
        if counts(server)["relayed"] == before["relayed"]:
            break
    assert seen and counts(server)["relayed"] == before["relayed"]
    assert value(server.metrics(), "zeroscale_native_waiting_requests") == 0


def test_a_request_that_waited_in_the_plane_for_its_workers_is_throttled_at_the_queue_wait_not_twice_it(
    server_factory: Any, tmp_path: Path
) -> None:
    """MaxConcurrency 1, its worker the plane's and busy for longer than --queue-wait-s: the next request
    waits in the plane, is relayed when its wait is up, and the pool throttles it at once (its queue wait
    counts the time in the plane), as the main port would after the same wait, not after twice it."""
    import threading

    from metrics.promtext import value

    srv = server_factory(native_port=free_port(), queue_wait_s=1, invocation_timeout_s=10)
    url = handler_model(tmp_path, BEHAVIOURS)
    assert (
        deploy(srv.client("sagemaker"), "native-one", url, max_concurrency=1)["EndpointStatus"] == "InService"
    )
    through = srv.client("sagemaker-runtime", url=srv.native_url)
    warm(through, "native-one")
    before = counts(srv)
    slow = threading.Thread(target=invoke, args=(through, {"sleep": 3}, "native-one"))
    slow.start()
    wait_for(lambda: counts(srv)["relayed"] == before["relayed"], timeout_s=1)  # served by the plane
    time.sleep(0.2)
    started = time.monotonic()
    got: list[dict[str, Any]] = []
    waiting = threading.Thread(target=lambda: got.append(failure(through, {"n": 1}, "native-one")))
    waiting.start()
    seen = []  # while it waits in the plane: queued for the variant, as a request waiting in the pool is
    while waiting.is_alive() and not seen:
        text = srv.metrics()
        depth = value(text, "zeroscale_queue_depth", endpoint_name="native-one", variant_name="AllTraffic")
        if depth == 1 and value(text, "zeroscale_native_waiting_requests") == 1:
            seen.append(depth)
    waiting.join()
    took = time.monotonic() - started
    slow.join()
    refused = got[0]
    assert seen
    assert refused["Error"]["Code"] == "ThrottlingException", refused
    assert "within 1 s" in refused["Error"]["Message"]
    assert 0.9 <= took < 1.8, took
