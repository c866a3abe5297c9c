"""Scaling with real worker processes: scale from and to zero, scale out to MaxConcurrency and no further,
throttling, the ProvisionedConcurrency floor, UpdateEndpoint under load, and the host memory budget.

The model reports the pid of the worker that served each request, and each worker writes its pid into a
directory at model_fn time, so the tests can tell exactly which processes an endpoint started.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from zeroscale.testing import ServerProcess, deploy, wait_final, wait_for

from .conftest import handler_model

IDLE_TAG = "zeroscale:idle-timeout-s"

INFERENCE_PY = """
import json, os, time

def model_fn(model_dir):
    pid_dir = os.environ.get("PID_DIR")
    if pid_dir:
        open(os.path.join(pid_dir, str(os.getpid())), "w").close()
    return None

def input_fn(body, content_type):
    return body

def predict_fn(data, model):
    time.sleep(float(os.environ.get("SLEEP_S", "0")))
    return os.getpid()

def output_fn(prediction, accept):
    return json.dumps({"pid": prediction}), "application/json"
"""


# ---- helpers ----
@pytest.fixture(scope="module")
def model_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return handler_model(tmp_path_factory.mktemp("pidmodel"), INFERENCE_PY)


@pytest.fixture(scope="module")
def pids_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where workers write their pids: the servers grant it to every (sandboxed) worker."""
    return tmp_path_factory.mktemp("pids")


@pytest.fixture
def pid_dir(pids_root: Path, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """A fresh directory per name where the workers of one model write their pids."""

    def make(name: str) -> Path:
        path = pids_root / request.node.name / name
        path.mkdir(parents=True)
        return path

    return make


def idle_tag(seconds: float) -> list[dict[str, str]]:
    return [{"Key": IDLE_TAG, "Value": f"{seconds:g}"}]


def deploy_pid_model(
    sm: Any, name: str, url: str, pids: Path | None = None, *, sleep_s: float = 0.0, **kwargs: Any
) -> None:
    # Its workers each write their pid in model_fn: every worker must load the model itself, no template.
    env = {"SLEEP_S": str(sleep_s), "ZEROSCALE_TEMPLATES": "off"}
    if pids is not None:
        env["PID_DIR"] = str(pids)
    desc = deploy(sm, name, url, environment=env, **kwargs)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")


def invoke_pid(smr: Any, name: str) -> int:
    resp = smr.invoke_endpoint(EndpointName=name, Body=b"{}", ContentType="application/json")
    assert resp["ContentType"] == "application/json"
    return int(json.loads(resp["Body"].read())["pid"])


def started(pids: Path) -> set[int]:
    """Every worker process the endpoint started so far."""
    return {int(p.name) for p in pids.iterdir()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def gauges(server: ServerProcess) -> dict[str, int]:
    """Every endpoint's ``zeroscale_workers`` (variant AllTraffic) from one scrape."""
    out: dict[str, int] = {}
    for line in server.metrics().splitlines():
        if line.startswith("zeroscale_workers{") and 'variant_name="AllTraffic"' in line:
            name = line.split('endpoint_name="', 1)[1].split('"', 1)[0]
            out[name] = int(float(line.rsplit(" ", 1)[1]))
    return out


@contextmanager
def sampling(server: ServerProcess, interval_s: float = 0.02) -> Iterator[list[dict[str, int]]]:
    """Scrape the gauges in the background for the duration of the block; yields the samples."""
    samples: list[dict[str, int]] = []
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            samples.append(gauges(server))
            stop.wait(interval_s)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()
        samples.append(gauges(server))


def parallel(n: int, fn: Callable[[], Any]) -> list[Any]:
    """Call ``fn`` from ``n`` threads released at the same moment; re-raises the first error."""
    barrier = threading.Barrier(n)

    def one() -> Any:
        barrier.wait()
        return fn()

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one) for _ in range(n)]
        return [f.result() for f in futures]


def workers_hold(server: ServerProcess, name: str, expected: int, duration_s: float) -> list[int]:
    """Sample the gauge for ``duration_s``; returns the distinct values seen."""
    seen: set[int] = set()
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        seen.add(server.workers(name))
        time.sleep(0.05)
    return sorted(seen)


# ---- servers ----
@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess], pids_root: Path) -> ServerProcess:
    return server_factory(worker_writable_paths=pids_root)


@pytest.fixture(scope="module")
def short(server_factory: Callable[..., ServerProcess], pids_root: Path) -> ServerProcess:
    """Idle workers go after 1 s; a request waits at most 0.5 s for a free worker at MaxConcurrency."""
    return server_factory(idle_timeout_s=1, queue_wait_s=0.5, worker_writable_paths=pids_root)


@pytest.fixture(scope="module")
def budget(server_factory: Callable[..., ServerProcess], pids_root: Path) -> ServerProcess:
    return server_factory(memory_budget_mb=2048, worker_writable_paths=pids_root)


# ---- scale from zero, scale to zero ----
def test_cold_start_from_zero(
    server: ServerProcess, sm: Any, smr: Any, model_url: str, pid_dir: Callable[[str], Path]
) -> None:
    pids = pid_dir("cold")
    deploy_pid_model(sm, "sc-cold", model_url, pids, tags=idle_tag(1))
    wait_for(lambda: server.workers("sc-cold") == 0, timeout_s=10, interval_s=0.05)
    warm_pid = started(pids)
    assert len(warm_pid) == 1
    wait_for(lambda: not any(alive(p) for p in warm_pid), timeout_s=5, interval_s=0.05)

    t0 = time.monotonic()
    pid = invoke_pid(smr, "sc-cold")  # a cold start
    assert time.monotonic() - t0 < 10
    assert pid not in warm_pid
    assert started(pids) == warm_pid | {pid}
    assert server.workers("sc-cold") == 1
    assert invoke_pid(smr, "sc-cold") == pid  # now warm


def test_scale_to_zero_with_the_server_default(
    short: ServerProcess, model_url: str, pid_dir: Callable[[str], Path]
) -> None:
    sm, smr = short.client("sagemaker"), short.client("sagemaker-runtime")
    deploy_pid_model(sm, "sc-default-idle", model_url)
    deploy_pid_model(sm, "sc-long-idle", model_url, tags=idle_tag(60))  # the tag overrides the 1 s default
    invoke_pid(smr, "sc-default-idle")
    invoke_pid(smr, "sc-long-idle")
    t0 = time.monotonic()
    wait_for(lambda: short.workers("sc-default-idle") == 0, timeout_s=10, interval_s=0.05)
    assert time.monotonic() - t0 >= 0.9  # not before the idle timeout
    assert short.workers("sc-long-idle") == 1
    # ... and back to zero again after the next request.
    invoke_pid(smr, "sc-default-idle")
    assert short.workers("sc-default-idle") == 1
    wait_for(lambda: short.workers("sc-default-idle") == 0, timeout_s=10, interval_s=0.05)
    assert short.workers("sc-long-idle") == 1


def test_idle_timeout_tag_overrides_a_long_server_default(
    server: ServerProcess, sm: Any, smr: Any, model_url: str
) -> None:
    deploy_pid_model(sm, "sc-tag-short", model_url, tags=idle_tag(1))
    deploy_pid_model(sm, "sc-tag-none", model_url)  # the server default: 300 s
    invoke_pid(smr, "sc-tag-short")
    invoke_pid(smr, "sc-tag-none")
    wait_for(lambda: server.workers("sc-tag-short") == 0, timeout_s=10, interval_s=0.05)
    assert server.workers("sc-tag-none") == 1


# ---- scale out and throttling ----
def test_scale_out_up_to_max_concurrency_and_never_more(
    server: ServerProcess, sm: Any, model_url: str, pid_dir: Callable[[str], Path]
) -> None:
    pids = pid_dir("out")
    deploy_pid_model(sm, "sc-out", model_url, pids, sleep_s=0.3, max_concurrency=3)
    smr = server.client("sagemaker-runtime", max_pool_connections=16)
    with sampling(server) as samples:
        served = parallel(9, lambda: invoke_pid(smr, "sc-out"))
    assert len(served) == 9
    assert len(set(served)) == 3
    assert set(served) <= started(pids)
    assert len(started(pids)) == 3  # no process beyond MaxConcurrency was ever started
    seen = [s.get("sc-out", 0) for s in samples]
    assert max(seen) == 3
    assert server.workers("sc-out") == 3


def test_throttling_beyond_max_concurrency(short: ServerProcess, model_url: str) -> None:
    sm, smr = short.client("sagemaker"), short.client("sagemaker-runtime")
    deploy_pid_model(sm, "sc-throttle", model_url, sleep_s=2.0, max_concurrency=1, tags=idle_tag(60))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(invoke_pid, smr, "sc-throttle")
        time.sleep(0.3)  # the first request holds the only worker for 2 s
        t0 = time.monotonic()
        with pytest.raises(ClientError) as err:
            invoke_pid(smr, "sc-throttle")
        waited = time.monotonic() - t0
        assert first.result(timeout=10) > 0  # the request in flight is not disturbed
    assert err.value.response["Error"]["Code"] == "ThrottlingException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert "MaxConcurrency" in err.value.response["Error"]["Message"]
    assert 0.4 <= waited < 1.6  # it waited queue_wait_s (0.5 s) for a worker, not for the first request
    assert short.workers("sc-throttle") == 1
    assert invoke_pid(smr, "sc-throttle") > 0  # and serves again once the worker is free


# ---- the provisioned floor ----
def test_provisioned_concurrency_is_a_floor(
    server: ServerProcess, sm: Any, model_url: str, pid_dir: Callable[[str], Path]
) -> None:
    pids = pid_dir("prov")
    deploy_pid_model(
        sm, "sc-prov", model_url, pids, sleep_s=0.5, max_concurrency=4, provisioned=2, tags=idle_tag(1)
    )
    wait_for(lambda: server.workers("sc-prov") == 2, timeout_s=10, interval_s=0.05)
    assert workers_hold(server, "sc-prov", 2, duration_s=3.0) == [2]  # idle past the timeout: still 2
    floor = started(pids)
    assert len(floor) == 2

    smr = server.client("sagemaker-runtime", max_pool_connections=16)
    with sampling(server) as samples:
        served = parallel(8, lambda: invoke_pid(smr, "sc-prov"))
    assert len(served) == 8
    assert 2 < len(started(pids)) <= 4  # the burst scaled out, up to MaxConcurrency
    assert max(s.get("sc-prov", 0) for s in samples) <= 4

    wait_for(lambda: server.workers("sc-prov") == 2, timeout_s=10, interval_s=0.05)
    assert workers_hold(server, "sc-prov", 2, duration_s=1.6) == [2]  # back to the floor, not to zero
    assert sum(alive(p) for p in started(pids)) == 2


# ---- UpdateEndpoint under load ----
def test_update_endpoint_under_load(
    server: ServerProcess, sm: Any, model_url: str, pid_dir: Callable[[str], Path]
) -> None:
    old_pids, new_pids = pid_dir("upd-old"), pid_dir("upd-new")
    deploy_pid_model(sm, "sc-upd", model_url, old_pids, sleep_s=0.05, memory_mb=1024, max_concurrency=2)
    sm.create_model(
        ModelName="sc-upd-v2",
        PrimaryContainer={
            "Image": "sklearn",
            "ModelDataUrl": model_url,
            "Environment": {"SLEEP_S": "0.05", "PID_DIR": str(new_pids), "ZEROSCALE_TEMPLATES": "off"},
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName="sc-upd-v2",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "sc-upd-v2",
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 3},
            }
        ],
    )

    smr = server.client("sagemaker-runtime", max_pool_connections=8)
    stop = threading.Event()
    served: list[int] = []
    errors: list[BaseException] = []

    def stream() -> None:
        while not stop.is_set():
            try:
                served.append(invoke_pid(smr, "sc-upd"))
            except BaseException as exc:  # every failure is a test failure
                errors.append(exc)

    threads = [threading.Thread(target=stream) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(served) >= 10, timeout_s=10, interval_s=0.02)
        sm.update_endpoint(EndpointName="sc-upd", EndpointConfigName="sc-upd-v2")
        desc = wait_final(sm, "sc-upd", timeout_s=30)
        n = len(served)
        wait_for(lambda: len(served) >= n + 10, timeout_s=10, interval_s=0.02)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []

    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert desc["EndpointConfigName"] == "sc-upd-v2"
    variant = desc["ProductionVariants"][0]
    assert variant["CurrentServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 3}
    old, new = started(old_pids), started(new_pids)
    assert old and new and not old & new
    assert served[-1] in new  # the endpoint now serves from the new workers
    assert 1 <= len(new) <= 3

    # The old workers are gone, and the gauge counts exactly the new ones.
    wait_for(lambda: not any(alive(p) for p in old), timeout_s=15, interval_s=0.05)
    live_new = {p for p in new if alive(p)}
    wait_for(lambda: server.workers("sc-upd") == len(live_new), timeout_s=5, interval_s=0.05)
    assert server.workers("sc-upd") == len(live_new) >= 1
    assert invoke_pid(smr, "sc-upd") in live_new

    # Deleting the endpoint stops its workers and drops its series.
    sm.delete_endpoint(EndpointName="sc-upd")
    wait_for(
        lambda: "sc-upd" not in [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]],
        timeout_s=15,
        interval_s=0.05,
    )
    assert "sc-upd" not in gauges(server)
    assert not any(alive(p) for p in live_new)


# ---- the host memory budget ----
def test_memory_budget_evicts_idle_workers_of_others(
    budget: ServerProcess, model_url: str, pid_dir: Callable[[str], Path]
) -> None:
    sm = budget.client("sagemaker")
    smr = budget.client("sagemaker-runtime", max_pool_connections=8)
    sizes = {"sc-mem-a": 1024, "sc-mem-b": 1024, "sc-mem-big": 2048}
    pids = {name: pid_dir(name) for name in sizes}

    def used_mb(sample: dict[str, int]) -> int:
        return sum(sample.get(name, 0) * mb for name, mb in sizes.items())

    with sampling(budget) as samples:
        deploy_pid_model(sm, "sc-mem-a", model_url, pids["sc-mem-a"], memory_mb=1024, max_concurrency=1)
        deploy_pid_model(sm, "sc-mem-b", model_url, pids["sc-mem-b"], memory_mb=1024, max_concurrency=1)
        assert gauges(budget) == {"sc-mem-a": 1, "sc-mem-b": 1}  # the budget is full of idle workers
        a1 = invoke_pid(smr, "sc-mem-a")
        b1 = invoke_pid(smr, "sc-mem-b")

        # The big endpoint's deploy-time worker needs the whole budget: the idle workers of a and b make room.
        deploy_pid_model(sm, "sc-mem-big", model_url, pids["sc-mem-big"], memory_mb=2048, max_concurrency=1)
        big1 = invoke_pid(smr, "sc-mem-big")
        assert gauges(budget) == {"sc-mem-a": 0, "sc-mem-b": 0, "sc-mem-big": 1}
        assert not alive(a1) and not alive(b1)

        # The others still serve: each cold start evicts the idle big worker.
        a2 = invoke_pid(smr, "sc-mem-a")
        b2 = invoke_pid(smr, "sc-mem-b")
        assert a2 != a1 and b2 != b1
        assert gauges(budget) == {"sc-mem-a": 1, "sc-mem-b": 1, "sc-mem-big": 0}
        assert not alive(big1)

        # And invoking the big one evicts the idle workers of both others again.
        big2 = invoke_pid(smr, "sc-mem-big")
        assert big2 != big1
        assert gauges(budget) == {"sc-mem-a": 0, "sc-mem-b": 0, "sc-mem-big": 1}

        # Both at once: one eviction makes room for the two of them.
        assert len(set(parallel(2, lambda: (invoke_pid(smr, "sc-mem-a"), invoke_pid(smr, "sc-mem-b"))))) == 1
        assert gauges(budget) == {"sc-mem-a": 1, "sc-mem-b": 1, "sc-mem-big": 0}

    assert max(used_mb(s) for s in samples) <= 2048
    alive_now = {name: sum(alive(p) for p in started(d)) for name, d in pids.items()}
    assert alive_now == {"sc-mem-a": 1, "sc-mem-b": 1, "sc-mem-big": 0}


def test_an_endpoint_kept_busy_gives_memory_back_to_one_that_waits(
    budget: ServerProcess, model_url: str, pid_dir: Callable[[str], Path]
) -> None:
    """The whole budget held by an endpoint whose queue never empties (four clients, two workers, 1 s
    requests): another endpoint's cold start is served while that load still runs, on a worker the busy
    endpoint gave back as a request ended (it was throttled after the queue wait, 10 s)."""
    sm = budget.client("sagemaker")
    smr = budget.client("sagemaker-runtime", max_pool_connections=8, read_timeout=60)
    deploy_pid_model(sm, "sc-fair-hog", model_url, memory_mb=1024, max_concurrency=2, sleep_s=1.0)
    deploy_pid_model(sm, "sc-fair-other", model_url, pid_dir("other"), memory_mb=1024, max_concurrency=1)
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        while not stop.is_set():
            try:
                invoke_pid(smr, "sc-fair-hog")
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=load, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: gauges(budget).get("sc-fair-hog") == 2, timeout_s=30)
        wait_for(lambda: gauges(budget).get("sc-fair-other", 0) == 0, timeout_s=30)  # evicted for the hog
        time.sleep(1.5)  # the hog's two workers busy, two requests queued behind them
        assert invoke_pid(smr, "sc-fair-other") > 0  # while the load runs: the hog gave a worker back
        assert all(t.is_alive() for t in threads)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:3]
