"""Two front ends on one PostgreSQL database: each serves every endpoint with the same control-plane answers,
MaxConcurrency holds across them, and a front end killed with SIGKILL costs only its in-flight requests."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, EventStreamError
from click.testing import CliRunner

from e2e.conftest import handler_model
from e2e.test_streaming import STREAMING
from metrics.promtext import value
from pgserver import PostgresServer
from zeroscale.cli.client import ApiError, Clients
from zeroscale.cli.main import cli
from zeroscale.store import Store
from zeroscale.store.frontends import Frontends
from zeroscale.testing import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    SKLEARN_IMAGE,
    ServerProcess,
    deploy,
    make_tar,
    wait_final,
    wait_for,
)

SLEEPY = """
import os, time


def model_fn(model_dir):
    return "sleepy"


def predict_fn(data, model):
    start = time.time()
    time.sleep(data.get("sleep", 0))
    print(f"served by {os.getpid()}")
    return {"pid": os.getpid(), "start": start, "end": time.time()}
"""
TTL_S = 2.0


@pytest.fixture(scope="module")
def pair(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    url = postgres.create_database("frontends")
    flags = {"database_url": url, "frontend_ttl_s": TTL_S, "autoscaling_period_s": 1}
    a = ServerProcess(tmp_path_factory.mktemp("a"), flags).start()
    b = ServerProcess(tmp_path_factory.mktemp("b"), flags).start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture(scope="module")
def model_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return handler_model(tmp_path_factory.mktemp("sleepy"), SLEEPY)


def invoke(server: ServerProcess, name: str, sleep_s: float = 0.0) -> int:
    resp = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=name, Body=json.dumps({"sleep": sleep_s}).encode(), ContentType="application/json"
    )
    return int(json.loads(resp["Body"].read())["pid"])


def serves(server: ServerProcess, name: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            invoke(server, name)
            return True
        except ClientError:
            return False

    return check


def gauge(server: ServerProcess, metric: str, endpoint: str) -> float | None:
    prefix = f'{metric}{{endpoint_name="{endpoint}",variant_name="AllTraffic"}} '
    for line in server.metrics().splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return None


def membership(*servers: ServerProcess) -> str:
    """Each server's MaxConcurrency gauge for "shared" and what its log says about front ends and fencing."""
    out = []
    for server in servers:
        lines = [
            line
            for line in server.log_path.read_text(errors="replace").splitlines()
            if "zeroscale.cluster" in line or "front end" in line or "heartbeat" in line
        ]
        gauge_now = gauge(server, "zeroscale_max_concurrency", "shared")
        out.append(f"{server.data_dir.name}: gauge {gauge_now}\n  " + "\n  ".join(lines[-20:]))
    return "\n".join(out)


def test_an_endpoint_made_on_one_is_described_invoked_updated_and_deleted_on_the_other(
    pair: tuple[ServerProcess, ServerProcess], model_url: str
) -> None:
    a, b = pair
    sm_a, sm_b = a.client("sagemaker"), b.client("sagemaker")
    assert deploy(sm_a, "shared", model_url, max_concurrency=3)["EndpointStatus"] == "InService"
    desc_a, desc_b = (
        sm_a.describe_endpoint(EndpointName="shared"),
        sm_b.describe_endpoint(EndpointName="shared"),
    )
    for desc in (desc_a, desc_b):
        desc.pop("ResponseMetadata")
    assert desc_a == desc_b
    assert [e["EndpointName"] for e in sm_b.list_endpoints()["Endpoints"]] == ["shared"]
    invoke(b, "shared")
    # A third front end that polls once a minute serves it at once too (with its share, one of three): a
    # miss makes it catch up.
    c = ServerProcess(a.data_dir.parent / "c", {**a.flags, "sync_interval_s": 60}).start()
    try:
        invoke(c, "shared")
    finally:
        c.stop()

    # Updated through B: A follows to the new deployment.
    sm_b.create_endpoint_config(
        EndpointConfigName="shared-4",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "shared",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 4},
            }
        ],
    )
    sm_b.update_endpoint(EndpointName="shared", EndpointConfigName="shared-4")
    wait_for(lambda: sm_a.describe_endpoint(EndpointName="shared")["EndpointStatus"] == "InService", 30)
    assert sm_a.describe_endpoint(EndpointName="shared")["EndpointConfigName"] == "shared-4"
    for server in (a, b):  # half of 4 each, once both saw the third one leave
        try:
            wait_for(lambda s=server: gauge(s, "zeroscale_max_concurrency", "shared") == 2, timeout_s=10)
        except TimeoutError:  # say what each front end saw (how a stale share was once found)
            pytest.fail(f"MaxConcurrency not split in two in 10 s:\n{membership(a, b)}")
    invoke(a, "shared")

    # Deleted through B: gone on A too, control plane and runtime.
    sm_b.delete_endpoint(EndpointName="shared")
    wait_for(lambda: not serves(a, "shared")(), timeout_s=10)
    with pytest.raises(ClientError, match="Could not find endpoint"):
        sm_a.describe_endpoint(EndpointName="shared")


def test_iam_users_and_their_keys_hold_on_every_front_end(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    """IAM lives in the database: a user and a key made through one front end work through the other within
    its sync interval, and a key deleted through one stops working on the other; a front end started with
    another key than the one sealing the database's secrets is refused, saying what to do."""
    a, b = pair
    iam = a.client("iam")
    iam.create_user(UserName="roamer")
    allow = {"Statement": [{"Effect": "Allow", "Action": "sagemaker:List*", "Resource": "*"}]}
    iam.put_user_policy(UserName="roamer", PolicyName="list", PolicyDocument=json.dumps(allow))
    key = iam.create_access_key(UserName="roamer")["AccessKey"]
    on_b = b.client("sagemaker", key=key)

    def lists() -> bool:
        try:
            on_b.list_models()
        except ClientError as err:
            assert err.response["Error"]["Code"] == "UnrecognizedClientException"
            return False
        return True

    wait_for(lists, timeout_s=10)
    iam.delete_access_key(UserName="roamer", AccessKeyId=key["AccessKeyId"])
    wait_for(lambda: not lists(), timeout_s=10)
    other = tmp_path / "other.key"
    flags = {"database_url": a.flags["database_url"], "iam_key_file": other}
    with pytest.raises(RuntimeError, match="is not the key the database's IAM access keys were sealed with"):
        ServerProcess(tmp_path / "c", flags).start()


def _console(server: ServerProcess, method: str, path: str, cookie: str = "", body: bytes = b"",
             csrf: str = "") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    headers = {"Content-Type": "application/json", **({"Cookie": cookie} if cookie else {})}
    if csrf:
        headers["X-CSRF-Token"] = csrf
    req = urllib.request.Request(f"{server.url}/console/api/{path}", data=body or None, headers=headers,
                                 method=method)  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_a_console_session_holds_on_every_front_end(pair: tuple[ServerProcess, ServerProcess]) -> None:
    """The console's sign-in sessions live in the database: a browser signed in through one front end may be
    sent to the other behind a load balancer, and signing out through either ends it on both."""
    a, b = pair
    proof = json.dumps({"AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET_KEY}).encode()
    status, headers, body = _console(a, "POST", "session", body=proof)
    assert status == 200, body
    cookie = {k.lower(): v for k, v in headers.items()}["set-cookie"].split(";")[0]
    csrf = json.loads(body)["CsrfToken"]
    status, _, body = _console(b, "GET", "session", cookie)
    assert status == 200 and json.loads(body)["CsrfToken"] == csrf
    status, _, body = _console(b, "POST", "sagemaker/ListEndpoints", cookie, b"{}", csrf)
    assert status == 200, body
    assert _console(b, "DELETE", "session", cookie, csrf=csrf)[0] == 204
    status, _, body = _console(a, "GET", "session", cookie)
    assert status == 401 and json.loads(body)["__type"] == "NotSignedIn"


def peer_call(server: ServerProcess, path: str, body: bytes, headers: dict[str, str]) -> int:
    """The status a POST to ``/zeroscale/peer/v1<path>`` gets (not signed with the front ends' key)."""
    request = urllib.request.Request(f"{server.url}/zeroscale/peer/v1{path}", body, headers, method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    return refused.value.code


def test_a_front_end_without_a_share_forwards_to_one_that_holds_it(
    pair: tuple[ServerProcess, ServerProcess], model_url: str
) -> None:
    """MaxConcurrency 1 over two front ends: the oldest holds it, and the other sends its invocations there
    (the answer, a ModelError included, relayed as it came); a forwarded call not signed with the front ends'
    key is refused."""
    a, b = pair
    assert (
        deploy(a.client("sagemaker"), "single", model_url, max_concurrency=1)["EndpointStatus"] == "InService"
    )
    wait_for(lambda: gauge(b, "zeroscale_max_concurrency", "single") == 0, timeout_s=10)
    assert gauge(a, "zeroscale_max_concurrency", "single") == 1
    served_by_a = invoke(a, "single")
    resp = b.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="single", Body=b'{"sleep": 0}', ContentType="application/json", CustomAttributes="c=1"
    )
    assert json.loads(resp["Body"].read())["pid"] == served_by_a  # a's worker answered
    assert resp["InvokedProductionVariant"] == "AllTraffic" and resp["ContentType"] == "application/json"
    assert b.workers("single") == 0  # b started nothing
    with pytest.raises(ClientError) as failed:
        b.client("sagemaker-runtime").invoke_endpoint(
            EndpointName="single", Body=b"not json", ContentType="application/json"
        )
    assert failed.value.response["Error"]["Code"] == "ModelError"
    assert peer_call(a, "/invoke/single", b"{}", {"x-zeroscale-peer": f"b {int(time.time())} 00"}) == 403
    a.client("sagemaker").delete_endpoint(EndpointName="single")


def test_a_front_end_without_a_share_forwards_response_streams(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    """MaxConcurrency 1 over two front ends: a response stream invoked on the one without a share is run by
    the other and relayed part by part as the model yields them; an error mid-stream arrives as its event;
    a client that goes away frees the holder's one worker at once."""
    a, b = pair
    url = handler_model(tmp_path, STREAMING)
    assert deploy(a.client("sagemaker"), "streams", url, max_concurrency=1)["EndpointStatus"] == "InService"
    wait_for(lambda: gauge(b, "zeroscale_max_concurrency", "streams") == 0, timeout_s=10)
    smr = b.client("sagemaker-runtime")

    def stream(**body: Any) -> Any:
        return smr.invoke_endpoint_with_response_stream(
            EndpointName="streams", Body=json.dumps(body).encode(), ContentType="application/json"
        )

    resp = stream(parts=3, delay=0.4)
    assert resp["ContentType"] == "application/jsonlines" and resp["InvokedProductionVariant"] == "AllTraffic"
    parts = [(time.time(), json.loads(event["PayloadPart"]["Bytes"])) for event in resp["Body"]]
    assert [doc["part"] for _, doc in parts] == [0, 1, 2]
    assert parts[0][0] < parts[-1][1]["at"]  # the first part was here before the model yielded the last
    assert b.workers("streams") == 0 and a.workers("streams") == 1
    with pytest.raises(EventStreamError) as failed:
        list(stream(parts=3, fail_at=1)["Body"])
    assert failed.value.response["Error"]["Code"] == "ModelStreamError"
    # abandoned after its first part: the 10 s stream stops, and the one worker serves the next at once
    abandoned = stream(parts=40, delay=0.25)
    assert json.loads(next(iter(abandoned["Body"]))["PayloadPart"]["Bytes"])["part"] == 0
    abandoned["Body"].close()
    started = time.monotonic()
    assert [json.loads(e["PayloadPart"]["Bytes"])["part"] for e in stream(parts=1)["Body"]] == [0]
    assert time.monotonic() - started < 3.0
    assert (
        peer_call(a, "/invoke-stream/streams", b"{}", {"x-zeroscale-peer": f"b {int(time.time())} 00"}) == 403
    )
    a.client("sagemaker").delete_endpoint(EndpointName="streams")


def test_max_concurrency_holds_across_front_ends(
    pair: tuple[ServerProcess, ServerProcess], model_url: str
) -> None:
    """MaxConcurrency 2 over two front ends: each serves with one worker, so six slow requests on each
    are answered by two processes in all, never more."""
    a, b = pair
    assert (
        deploy(a.client("sagemaker"), "capped", model_url, max_concurrency=2)["EndpointStatus"] == "InService"
    )
    wait_for(serves(b, "capped"), timeout_s=10)
    pids: dict[str, set[int]] = {"a": set(), "b": set()}
    errors: list[BaseException] = []

    def hit(name: str, server: ServerProcess) -> None:
        try:
            pids[name].add(invoke(server, "capped", sleep_s=0.2))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [
        threading.Thread(target=hit, args=(name, server))
        for name, server in (("a", a), ("b", b))
        for _ in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(pids["a"] | pids["b"]) == 2  # one worker each (either may have run the other's: spill-over)
    assert (
        gauge(a, "zeroscale_max_concurrency", "capped")
        == gauge(b, "zeroscale_max_concurrency", "capped")
        == 1
    )


def peer_invocations(server: ServerProcess, endpoint: str, how: str) -> float:
    """``zeroscale_peer_invocations_total`` of the endpoint's AllTraffic on ``server`` (0 when absent)."""
    labels = {"endpoint_name": endpoint, "variant_name": "AllTraffic", "how": how}
    return value(server.metrics(), "zeroscale_peer_invocations_total", **labels) or 0.0


def test_a_client_sticking_to_one_front_end_gets_the_whole_max_concurrency(
    pair: tuple[ServerProcess, ServerProcess], model_url: str
) -> None:
    """MaxConcurrency 2 over two front ends (one each), one client whose connection stays with A: two slow
    invocations at once both run at once, the one A has no room for by B's worker (spill-over); three at
    once never run three at once: B refuses the one it has no room for, and it waits in A's queue. Once the
    endpoint is deleted, A's /metrics no longer names it (the peer counts included)."""
    a, b = pair
    assert (
        deploy(a.client("sagemaker"), "sticky", model_url, max_concurrency=2)["EndpointStatus"] == "InService"
    )
    wait_for(lambda: gauge(b, "zeroscale_max_concurrency", "sticky") == 1, timeout_s=10)
    pid_a, pid_b = invoke(a, "sticky"), invoke(b, "sticky")  # a warm worker on each
    smr = a.client("sagemaker-runtime")

    def slow(_: int) -> dict[str, Any]:
        resp = smr.invoke_endpoint(
            EndpointName="sticky", Body=b'{"sleep": 1.0}', ContentType="application/json"
        )
        return dict(json.loads(resp["Body"].read()))

    with ThreadPoolExecutor(3) as pool:
        started = time.monotonic()
        docs = list(pool.map(slow, range(2)))
        took = time.monotonic() - started
        assert sorted(d["pid"] for d in docs) == sorted([pid_a, pid_b])  # one ran on B's worker
        assert took < 1.8, took  # at once: about one model time, not two
        assert peer_invocations(a, "sticky", "spilled") == 1

        docs = list(pool.map(slow, range(3)))
    spans = [(d["start"], d["end"]) for d in docs]
    assert max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans) == 2  # never three
    assert {d["pid"] for d in docs} == {pid_a, pid_b}
    assert peer_invocations(a, "sticky", "spilled") == 2
    assert peer_invocations(a, "sticky", "refused") == 1  # B had no room: queued on A
    assert a.workers("sticky") == b.workers("sticky") == 1
    a.client("sagemaker").delete_endpoint(EndpointName="sticky")
    # the deleted endpoint's counts go with its other series
    wait_for(lambda: 'endpoint_name="sticky"' not in a.metrics(), timeout_s=10)


def test_response_streams_spill_over_too(pair: tuple[ServerProcess, ServerProcess], tmp_path: Path) -> None:
    """The same with InvokeEndpointWithResponseStream: two streams at once through A, one streamed by B."""
    a, b = pair
    url = handler_model(tmp_path, STREAMING)
    assert deploy(a.client("sagemaker"), "spills", url, max_concurrency=2)["EndpointStatus"] == "InService"
    wait_for(lambda: gauge(b, "zeroscale_max_concurrency", "spills") == 1, timeout_s=10)
    smr = a.client("sagemaker-runtime")
    b.client("sagemaker-runtime").invoke_endpoint(EndpointName="spills", Body=b'{"parts": 1}')  # B's worker

    def stream(_: int) -> list[int]:
        resp = smr.invoke_endpoint_with_response_stream(
            EndpointName="spills", Body=b'{"parts": 2, "delay": 1.0}', ContentType="application/json"
        )
        return [json.loads(event["PayloadPart"]["Bytes"])["part"] for event in resp["Body"]]

    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(stream, range(2))) == [[0, 1], [0, 1]]
    assert time.monotonic() - started < 1.8
    assert peer_invocations(a, "spills", "spilled") == 1
    a.client("sagemaker").delete_endpoint(EndpointName="spills")


def test_a_front_end_that_joins_serves_an_endpoint_whose_config_and_model_were_deleted(
    pair: tuple[ServerProcess, ServerProcess], model_url: str, tmp_path: Path
) -> None:
    """SageMaker lets a serving endpoint's configuration and model be deleted: a front end that starts
    afterwards rebuilds the deployment from the documents kept with the endpoint."""
    a, _ = pair
    sm = a.client("sagemaker")
    assert deploy(sm, "kept", model_url, max_concurrency=3)["EndpointStatus"] == "InService"
    sm.delete_endpoint_config(EndpointConfigName="kept")
    sm.delete_model(ModelName="kept")
    late = ServerProcess(tmp_path / "late", a.flags).start()
    try:
        invoke(late, "kept")
    finally:
        late.stop()
    sm.delete_endpoint(EndpointName="kept")


def test_workers_lists_every_front_ends_live_workers(pair: tuple[ServerProcess, ServerProcess]) -> None:
    """Each front end runs its share of "capped" (MaxConcurrency 2: one worker each); either lists both."""
    a, b = pair
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}
    runner = CliRunner()
    ids = sorted((server.data_dir / "frontend-id").read_text().strip() for server in (a, b))
    listed = []
    for server in (a, b):
        out = runner.invoke(cli, ["workers", "capped", "--json", "--endpoint-url", server.url], env=env)
        assert out.exit_code == 0, out.output
        workers = json.loads(out.stdout)["Workers"]  # (a front end that just left may be named on stderr)
        assert [w["Frontend"] for w in workers] == ids  # one worker of each front end, in order
        for worker in workers:
            assert worker["EndpointName"] == "capped" and worker["VariantName"] == "AllTraffic"
            assert worker["State"] == "idle" and worker["Node"] == socket.gethostname()
        listed.append(workers)
    assert [w["WorkerId"] for w in listed[0]] == [w["WorkerId"] for w in listed[1]]
    assert len({w["Pid"] for w in listed[0]}) == 2
    table = runner.invoke(cli, ["workers", "--endpoint-url", a.url], env=env)
    assert table.exit_code == 0, table.output
    assert table.stdout.splitlines()[0].split() == [
        "ENDPOINT",
        "VARIANT",
        "WORKER",
        "NODE",
        "STATE",
        "PID",
        "RSS_MB",
    ]
    assert "capped" in table.output


def test_workers_names_a_live_front_end_that_does_not_answer(
    pair: tuple[ServerProcess, ServerProcess], model_url: str
) -> None:
    """A third front end is live in the database (its heartbeat is fresh) but nothing listens where it
    serves: the listing still shows the two others' workers and exits 0, and says which front end did not
    answer: the REST answer's ``Unreachable``, a warning on the CLI's stderr. Once it is gone, neither."""
    a, b = pair
    if "capped" not in {e["EndpointName"] for e in b.client("sagemaker").list_endpoints()["Endpoints"]}:
        deploy(a.client("sagemaker"), "capped", model_url, max_concurrency=2)
    for server in (a, b):  # a worker on each (MaxConcurrency 2: one each)
        wait_for(serves(server, "capped"), timeout_s=30)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{s.getsockname()[1]}"
    ghosts = Frontends(str(a.flags["database_url"]), ttl_s=TTL_S)
    stop = threading.Event()

    def beat() -> None:
        while not stop.is_set():
            ghosts.beat("ghost-front-end", nowhere, 1)
            stop.wait(TTL_S / 5)

    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}
    runner = CliRunner()

    def listed(*args: str) -> Any:
        out = runner.invoke(cli, ["workers", "capped", *args, "--endpoint-url", a.url], env=env)
        assert out.exit_code == 0, out.output
        return out

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    try:
        wait_for(lambda: json.loads(listed("--json").stdout)["Unreachable"] != [], timeout_s=TTL_S + 5)
        answer = json.loads(listed("--json").stdout)
        assert answer["Unreachable"] == [{"Frontend": "ghost-front-end", "Url": nowhere}]
        ids = sorted((server.data_dir / "frontend-id").read_text().strip() for server in (a, b))
        assert sorted(w["Frontend"] for w in answer["Workers"]) == ids  # what it got, it shows
        table = listed()
        assert table.stderr.strip() == (
            f"warning: front end ghost-front-end at {nowhere} did not answer: its workers are not listed"
        )
        assert table.stdout.splitlines()[0].split()[0] == "ENDPOINT"
        assert len(table.stdout.splitlines()) == 3  # the header and both workers
    finally:
        stop.set()
        beating.join()
        ghosts.leave("ghost-front-end")
        ghosts.close()
    wait_for(lambda: json.loads(listed("--json").stdout)["Unreachable"] == [], timeout_s=TTL_S + 5)
    assert listed().stderr == ""


def test_each_front_ends_worker_logs_are_read_through_any_of_them(
    pair: tuple[ServerProcess, ServerProcess], model_url: str
) -> None:
    """A worker's log stream is a file on the front end that ran it; the CloudWatch Logs API of either
    front end reads both (the other's through its peer route), a page started on one continues on the other,
    and the route refuses a call not signed with the front ends' shared key."""
    a, b = pair
    made = deploy(a.client("sagemaker"), "logged", model_url, max_concurrency=2)
    assert made["EndpointStatus"] == "InService"
    wait_for(serves(b, "logged"), timeout_s=10)
    pids = {invoke(a, "logged"), invoke(b, "logged")}  # a worker on each: its share of MaxConcurrency 2
    assert len(pids) == 2
    group = "/aws/sagemaker/Endpoints/logged"
    wanted = {f"served by {pid}" for pid in pids}

    def served(server: ServerProcess, **kw: Any) -> dict[str, Any]:
        logs = server.client("logs")
        return dict(logs.filter_log_events(logGroupName=group, filterPattern='"served by"', **kw))

    def listing(server: ServerProcess) -> list[str]:
        streams = server.client("logs").describe_log_streams(logGroupName=group)["logStreams"]
        return [s["logStreamName"] for s in streams]

    for server in (a, b):
        wait_for(lambda s=server: {e["message"] for e in served(s)["events"]} == wanted, timeout_s=10)
    # the same streams through either (a template forked after the first answers adds its own meanwhile)
    wait_for(lambda: listing(a) == listing(b), timeout_s=10)
    names = listing(a)
    assert names.count("AllTraffic/platform") == 1, names
    # the stream of b's worker, read through a from its head
    b_pid = invoke(b, "logged")
    logs_a = a.client("logs")

    def messages(stream: str) -> list[str]:
        out = logs_a.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
        return [e["message"] for e in out["events"]]

    wait_for(lambda: f"served by {b_pid}" in str(served(a)["events"]), timeout_s=10)
    workers = [n for n in names if n != "AllTraffic/platform" and not n.startswith("AllTraffic/template-")]
    assert len(workers) == 2, names  # a worker of each front end (and a template's stream where one forked)
    (b_stream,) = [n for n in workers if f"served by {b_pid}" in messages(n)]
    worker_file = b_stream.split("/")[1] + ".log"
    assert not list(a.data_dir.rglob(worker_file)) and list(b.data_dir.rglob(worker_file))  # b's file only
    # one event a page, each next page asked of the other front end
    seen: list[str] = []
    kw: dict[str, Any] = {"limit": 1}
    for n in range(10):
        out = served((a, b)[n % 2], **kw)
        seen += [e["message"] for e in out["events"]]
        if "nextToken" not in out:
            break
        kw["nextToken"] = out["nextToken"]
    whole = [e["message"] for e in served(b)["events"]]  # one page: every event (the checks invoked too)
    assert seen == whole and set(whole) == wanted and whole.count(f"served by {b_pid}") >= 2
    # the peer route: a call without the shared key's MAC is refused, whatever it claims
    body = json.dumps({"op": "logs.search", "args": {"group": group}}).encode()
    for header in ({}, {"x-zeroscale-peer": f"x {int(time.time())} {'0' * 64}"}):
        assert peer_call(a, "", body, header) == 403
    a.client("sagemaker").delete_endpoint(EndpointName="logged")


def test_the_leader_scales_a_variant_on_the_traffic_of_every_front_end(
    pair: tuple[ServerProcess, ServerProcess], model_url: str
) -> None:
    """A real-time variant under a target-tracking policy, its traffic sent only to the front end that
    does not lead: the leader (the oldest front end) reads that front end's samples and scales out; the
    other decides nothing."""
    a, b = pair
    sm = a.client("sagemaker")
    sm.create_model(ModelName="scaled", PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": model_url})
    variant = {"VariantName": "AllTraffic", "ModelName": "scaled", "InstanceType": "ml.t2.medium"}
    sm.create_endpoint_config(
        EndpointConfigName="scaled", ProductionVariants=[{**variant, "InitialInstanceCount": 1}]
    )
    sm.create_endpoint(EndpointName="scaled", EndpointConfigName="scaled")
    assert wait_final(sm, "scaled")["EndpointStatus"] == "InService"
    wait_for(serves(b, "scaled"), timeout_s=10)
    aas = a.client("application-autoscaling")
    scope = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": "endpoint/scaled/variant/AllTraffic",
        "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
    }
    aas.register_scalable_target(**scope, MinCapacity=1, MaxCapacity=2)
    aas.put_scaling_policy(
        **scope,
        PolicyName="per-instance",
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 60.0,  # one invocation a second per instance
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            "ScaleOutCooldown": 1,
            "ScaleInCooldown": 600,
        },
    )

    def desired() -> int:
        (v,) = sm.describe_endpoint(EndpointName="scaled")["ProductionVariants"]
        return int(v["DesiredInstanceCount"])

    stop = threading.Event()

    def load() -> None:  # about 20 a second, all through b
        while not stop.is_set():
            invoke(b, "scaled")
            time.sleep(0.05)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        wait_for(lambda: desired() == 2, timeout_s=30)
    finally:
        stop.set()
        thread.join(10)
    said = "autoscaling endpoint/scaled/variant/AllTraffic: "
    assert said in a.log_path.read_text(errors="replace")  # the leader decided
    assert said not in b.log_path.read_text(errors="replace")
    (activity,) = aas.describe_scaling_activities(ServiceNamespace="sagemaker")["ScalingActivities"]
    assert "SageMakerVariantInvocationsPerInstance was above the target 60" in activity["Cause"]
    aas.deregister_scalable_target(**scope)
    sm.delete_endpoint(EndpointName="scaled")


def rest(server: ServerProcess, method: str, path: str, body: bytes = b"") -> Any:
    """zeroscale's own API (``/zeroscale/v1/<path>``), signed as the CLI signs it."""
    return json.loads(Clients(server.url, REGION, server.data_dir).rest(method, path, body=body))


def test_an_image_pushed_to_one_front_end_is_served_by_every_one(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bring-your-own image pushed to a: b copies it at once (the same content digest and push time); a
    front end that joins later copies it when it deploys an endpoint naming it, and serves it; deleted
    through b while that one is down, it is gone from every front end, that one too once it is back."""
    a, b = pair
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    example = Path(__file__).resolve().parents[2] / "examples" / "byo-image"
    archive = make_tar(tmp_path / "image.tar.gz", {".": example}).read_bytes()
    pushed = rest(a, "PUT", "images/shared-linear/1", archive)
    digest = pushed["Digest"].removeprefix("sha256:")
    assert (b.data_dir / "images" / "shared-linear" / "1" / digest).is_dir()  # copied when a took it
    copied = rest(b, "GET", "images/shared-linear/1")
    assert copied["Digest"] == pushed["Digest"] and copied["PushedAt"] == pushed["PushedAt"]
    listed = rest(b, "GET", "images")["Images"]
    assert [i["Digest"] for i in listed if i["Name"] == "shared-linear"] == [pushed["Digest"]]
    late = ServerProcess(tmp_path / "late", a.flags).start()  # joins after the push
    try:
        assert not (late.data_dir / "images" / "shared-linear").exists()
        model = tmp_path / "model.json"
        model.write_text(json.dumps({"weights": [2.0], "bias": 1.0}))
        url = f"file://{make_tar(tmp_path / 'model.tar.gz', {'model.json': model})}"
        made = deploy(late.client("sagemaker"), "imaged", url, image="shared-linear:1")
        assert made["EndpointStatus"] == "InService", made.get("FailureReason")
        assert (late.data_dir / "images" / "shared-linear" / "1" / digest).is_dir()  # copied to deploy
        runtime = late.client("sagemaker-runtime")
        answer = runtime.invoke_endpoint(
            EndpointName="imaged", Body=b"3\n", ContentType="text/csv", Accept="text/csv"
        )
        assert answer["Body"].read().strip() == b"7.0"
        late.client("sagemaker").delete_endpoint(EndpointName="imaged")
        late.stop()
        rest(b, "DELETE", "images/shared-linear/1")  # while late is down: it is not told
        late.start()  # and forgets it as it starts, from the database
        for server in (a, b, late):
            with pytest.raises(ApiError, match="ResourceNotFound: Image shared-linear:1 is not registered"):
                rest(server, "GET", "images/shared-linear/1")
            assert not (server.data_dir / "images" / "shared-linear" / "1" / "image.json").exists()
        assert all(i["Name"] != "shared-linear" for i in rest(late, "GET", "images")["Images"])
    finally:
        late.stop()


def test_a_front_end_killed_costs_only_its_requests_and_comes_back(
    pair: tuple[ServerProcess, ServerProcess], model_url: str, tmp_path: Path
) -> None:
    a, b = pair
    if "capped" not in {e["EndpointName"] for e in b.client("sagemaker").list_endpoints()["Endpoints"]}:
        deploy(a.client("sagemaker"), "capped", model_url, max_concurrency=2)
    wait_for(serves(a, "capped"), timeout_s=10)
    wait_for(serves(b, "capped"), timeout_s=10)
    outcomes: dict[str, BaseException | int] = {}

    def slow(name: str, server: ServerProcess) -> None:
        try:
            outcomes[name] = invoke(server, "capped", sleep_s=1.0)
        except BaseException as exc:  # recorded: A's request is expected to fail
            outcomes[name] = exc

    in_flight = [threading.Thread(target=slow, args=item) for item in (("a", a), ("b", b))]
    for t in in_flight:
        t.start()
    time.sleep(0.4)
    a.stop(signal.SIGKILL)
    killed_at = time.monotonic()
    for t in in_flight:
        t.join()
    assert isinstance(outcomes["a"], Exception)  # A's in-flight request is lost ...
    assert isinstance(outcomes["b"], int)  # ... B's is answered
    # B answers throughout, and takes the whole MaxConcurrency once A's heartbeat is stale.
    invoke(b, "capped")
    wait_for(lambda: gauge(b, "zeroscale_max_concurrency", "capped") == 2, timeout_s=TTL_S + 5)
    assert time.monotonic() - killed_at < TTL_S + 5
    # An endpoint created while A is down is served by A once it is back (from the database alone).
    assert deploy(b.client("sagemaker"), "later", model_url)["EndpointStatus"] == "InService"
    a.start()
    assert serves(a, "capped")()
    assert serves(a, "later")()
    wait_for(lambda: gauge(b, "zeroscale_max_concurrency", "capped") == 1, timeout_s=TTL_S + 5)
    assert gauge(a, "zeroscale_max_concurrency", "capped") == 1


def test_a_spilled_invocation_whose_holder_dies_mid_call_fails_and_is_not_run_again(
    pair: tuple[ServerProcess, ServerProcess], model_url: str
) -> None:
    """B's share (1 of MaxConcurrency 2) is busy with one request, so the other spills to A, which is killed
    while its model runs it: that one answers InternalFailure, saying it may have run, and B does not run it
    again (it used to, once its own worker was free)."""
    a, b = pair
    wait_for(lambda: a.proc is not None and serves(a, "capped")(), timeout_s=10)
    deploy(a.client("sagemaker"), "once", model_url, max_concurrency=2)
    wait_for(serves(a, "once"), timeout_s=10)
    wait_for(serves(b, "once"), timeout_s=10)
    wait_for(lambda: gauge(b, "zeroscale_max_concurrency", "once") == 1, timeout_s=TTL_S + 5)
    outcomes: list[BaseException | int] = []

    def slow() -> None:
        try:
            outcomes.append(invoke(b, "once", sleep_s=2.0))
        except BaseException as exc:  # recorded: the spilled one is expected to fail
            outcomes.append(exc)

    in_flight = [threading.Thread(target=slow) for _ in range(2)]
    try:
        for t in in_flight:
            t.start()
        time.sleep(1.0)
        a.stop(signal.SIGKILL)
        for t in in_flight:
            t.join()
    finally:
        a.start()
    errors = [o for o in outcomes if isinstance(o, ClientError)]
    assert len(outcomes) == 2 and len(errors) == 1, outcomes
    assert errors[0].response["Error"]["Code"] == "InternalFailure"
    assert "may have run it" in errors[0].response["Error"]["Message"]
    assert errors[0].response["ResponseMetadata"]["HTTPStatusCode"] == 500
    spilled = {
        line.split("how=")[1]
        for line in b.metrics().splitlines()
        if line.startswith("zeroscale_peer_invocations_total") and 'endpoint_name="once"' in line
    }
    assert any(how.startswith('"spilled"') for how in spilled), spilled
    b.client("sagemaker").delete_endpoint(EndpointName="once")


def test_a_dead_front_ends_unfinished_create_and_delete_are_taken_over(
    pair: tuple[ServerProcess, ServerProcess], model_url: str
) -> None:
    """What a front end that died had in progress (its row says Creating or Deleting, owned by it) is
    finished by a live one."""
    a, b = pair
    wait_for(lambda: a.proc is not None and serves(a, "capped")(), timeout_s=10)
    sm = a.client("sagemaker")
    deploy(sm, "orphan", model_url, wait=False)  # model, config and endpoint; then pretend its owner died
    wait_for(lambda: sm.describe_endpoint(EndpointName="orphan")["EndpointStatus"] != "Creating", 30)
    store = Store(str(a.flags["database_url"]))
    try:
        rec = store.get("endpoint", "orphan")
        assert rec is not None
        rec.status, rec.owner = "Creating", "a-front-end-that-died"
        store.update(rec)
        wait_for(lambda: sm.describe_endpoint(EndpointName="orphan")["EndpointStatus"] == "InService", 30)
        taken = store.get("endpoint", "orphan")
        assert taken is not None and taken.owner in {f.strip() for f in _ids(a, b)}
        taken.status, taken.owner = "Deleting", "another-front-end-that-died"
        store.update(taken)
        wait_for(lambda: store.get("endpoint", "orphan") is None, timeout_s=10)
    finally:
        store.close()
    wait_for(lambda: not serves(a, "orphan")() and not serves(b, "orphan")(), timeout_s=10)


def _ids(*servers: ServerProcess) -> list[str]:
    return [(s.data_dir / "frontend-id").read_text() for s in servers]


def test_losing_the_database_is_a_clear_error_and_serving_resumes_when_it_is_back(
    model_url: str, tmp_path: Path
) -> None:
    """Its own PostgreSQL, stopped under a front end: control-plane calls fail, invocations answer 503
    ServiceUnavailable once the front end fenced itself; both work again when the database is back."""
    workdir = Path(tempfile.mkdtemp(prefix="zeroscale-pg-"))
    workdir.chmod(0o755)
    with PostgresServer(workdir) as pg:
        server = ServerProcess(
            tmp_path / "data", {"database_url": pg.create_database("outage"), "frontend_ttl_s": TTL_S}
        ).start()
        try:
            assert deploy(server.client("sagemaker"), "steady", model_url)["EndpointStatus"] == "InService"
            invoke(server, "steady")
            pg.pause()
            with pytest.raises(ClientError, match=r"ServiceUnavailable.*database is unreachable"):
                server.client("sagemaker").describe_endpoint(EndpointName="steady")

            def unavailable() -> bool:
                try:
                    invoke(server, "steady")
                except ClientError as exc:
                    return bool(exc.response["Error"]["Code"] == "ServiceUnavailable")
                return False

            wait_for(unavailable, timeout_s=TTL_S * 3)
            pg.resume()
            wait_for(serves(server, "steady"), timeout_s=TTL_S * 3)
            assert server.client("sagemaker").describe_endpoint(EndpointName="steady")["EndpointStatus"] == (
                "InService"
            )
        finally:
            server.stop()
    shutil.rmtree(workdir, ignore_errors=True)
