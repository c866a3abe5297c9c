"""SageMaker's serverless metrics after scripted load on the real server: exact counts on /metrics and in the
one-minute history (GET /zeroscale/v1/metrics and `zeroscale metrics`), which survives a restart."""

from __future__ import annotations

import datetime
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from click.testing import CliRunner

from e2e.conftest import handler_model
from metrics.promtext import value
from zeroscale.cli.main import cli
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy, wait_for

# Every test here runs on SQLite and on PostgreSQL (the control plane, restarts, metering, metrics).
BACKENDS = ("sqlite", "postgresql")

# {"raise": 1} -> the model raises (the container answers 500); {"sleep": s} sleeps; else {"ok": true}.
MODEL = """
import time


def model_fn(model_dir):
    return "model"


def predict_fn(data, model):
    if isinstance(data, dict):
        if data.get("raise"):
            raise ValueError("asked to fail")
        if data.get("sleep"):
            time.sleep(data["sleep"])
    return {"ok": True}
"""
IDLE_TAG = "zeroscale:idle-timeout-s"


@pytest.fixture(scope="module")
def model_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return handler_model(tmp_path_factory.mktemp("metrics-model"), MODEL)


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(queue_wait_s=0.3)


# ---- helpers ----
def call(smr: Any, endpoint: str, payload: Any, content_type: str = "application/json") -> str:
    """Invoke; returns "ok" or the error code."""
    try:
        smr.invoke_endpoint(
            EndpointName=endpoint, Body=json.dumps(payload).encode(), ContentType=content_type
        )
    except ClientError as err:
        return str(err.response["Error"]["Code"])
    return "ok"


def in_background(fn: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=fn)
    thread.start()
    return thread


def series(server: ServerProcess, name: str, endpoint: str, **labels: str) -> float | None:
    return value(server.metrics(), name, endpoint_name=endpoint, variant_name="AllTraffic", **labels)


def history(server: ServerProcess, endpoint: str, **query: str) -> list[dict[str, Any]]:
    """GET /zeroscale/v1/metrics, signed like every zeroscale API call."""
    params = urllib.parse.urlencode({"endpoint": endpoint, "since": "1h", **query})
    url = f"{server.url}/zeroscale/v1/metrics?{params}"
    request = AWSRequest("GET", url)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(request)
    with urllib.request.urlopen(
        urllib.request.Request(url, headers=dict(request.headers)), timeout=10
    ) as resp:
        points: list[dict[str, Any]] = json.loads(resp.read())["Datapoints"]
    return points


def totals(points: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per metric, the statistics over every minute returned."""
    out: dict[str, dict[str, float]] = {}
    for p in points:
        t = out.setdefault(
            p["MetricName"], {"Sum": 0.0, "SampleCount": 0, "Minimum": math.inf, "Maximum": -math.inf}
        )
        t["Sum"] += p["Sum"]
        t["SampleCount"] += p["SampleCount"]
        t["Minimum"] = min(t["Minimum"], p["Minimum"])
        t["Maximum"] = max(t["Maximum"], p["Maximum"])
    return out


def worker_starts(server: ServerProcess, endpoint: str) -> int:
    """Workers ever started for the endpoint: each writes its own log file, named by its id (0001-...)."""
    return len(list((server.data_dir / "logs" / endpoint.lower() / "AllTraffic").glob("[0-9]*-*.log")))


def busy(server: ServerProcess, endpoint: str, n: int) -> Callable[[], bool]:
    return lambda: series(server, "zeroscale_concurrent_executions", endpoint) == n


# ---- tests ----
def test_counts_are_exact_in_prometheus_and_the_history(server: ServerProcess, model_url: str) -> None:
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    name = "metrics-counts"
    deploy(sm, name, model_url, max_concurrency=1)
    outcomes = [call(smr, name, {"n": i}) for i in range(6)]  # N successes
    outcomes += [call(smr, name, {"raise": 1}) for _ in range(3)]  # M model errors: container 500
    outcomes += [
        call(smr, name, "x", content_type="application/x-unknown") for _ in range(2)
    ]  # container 415
    # K throttles: the one worker (MaxConcurrency 1) is busy past the 0.3 s queue wait.
    slow = in_background(lambda: outcomes.append(call(smr, name, {"sleep": 2.0})))
    wait_for(busy(server, name, 1), timeout_s=10, interval_s=0.02)
    outcomes += [call(smr, name, {"n": 0}) for _ in range(2)]
    slow.join()
    assert sorted(outcomes) == sorted(["ok"] * 7 + ["ModelError"] * 5 + ["ThrottlingException"] * 2)
    total, errors_4xx, errors_5xx, reached = 14, 2 + 2, 3, 12

    assert series(server, "zeroscale_invocations_total", name) == total
    assert series(server, "zeroscale_invocation_4xx_errors_total", name) == errors_4xx
    assert series(server, "zeroscale_invocation_5xx_errors_total", name) == errors_5xx
    assert series(server, "zeroscale_model_latency_seconds_count", name) == reached
    assert series(server, "zeroscale_overhead_latency_seconds_count", name) == total
    assert series(server, "zeroscale_max_concurrency", name) == 1
    starts = worker_starts(server, name)
    assert series(server, "zeroscale_cold_starts_total", name) == starts
    assert series(server, "zeroscale_model_setup_seconds_count", name) == starts

    got = totals(history(server, name))
    assert got["Invocations"]["Sum"] == total
    assert got["Invocation4XXErrors"]["Sum"] == errors_4xx
    assert got["Invocation4XXErrors"]["SampleCount"] == total  # 1 or 0 for every invocation
    assert got["Invocation5XXErrors"]["Sum"] == errors_5xx
    assert got["ModelLatency"]["SampleCount"] == reached
    assert got["ModelLatency"]["Maximum"] >= 2_000_000  # microseconds: the 2 s request
    assert got["OverheadLatency"]["SampleCount"] == total
    # a throttled request waited 0.3 s (libuv times its timers from a clock cached per loop iteration, so
    # one may fire a fraction of a millisecond early)
    assert got["OverheadLatency"]["Maximum"] >= 299_000
    assert got["ModelSetupTime"]["SampleCount"] == starts
    assert got["ServerlessConcurrentExecutionsUtilization"]["Maximum"] == 1.0  # sampled during the 2 s
    assert "ServerlessProvisionedConcurrencyInvocations" not in got


def test_model_setup_time_only_for_cold_starts(server: ServerProcess, model_url: str) -> None:
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    name = "metrics-cold"
    # cold start 1: the deploy-time check (an environment of its own: a model not proven on this server yet)
    deploy(sm, name, model_url, tags=[{"Key": IDLE_TAG, "Value": "1"}], environment={"TEST_ENDPOINT": name})
    wait_for(lambda: server.workers(name) == 0, timeout_s=10)
    assert call(smr, name, {"n": 1}) == "ok"  # cold start 2
    assert call(smr, name, {"n": 2}) == "ok"  # warm
    assert worker_starts(server, name) == 2
    assert series(server, "zeroscale_model_setup_seconds_count", name) == 2
    assert series(server, "zeroscale_cold_starts_total", name) == 2
    got = totals(history(server, name))
    assert got["ModelSetupTime"]["SampleCount"] == 2
    assert got["Invocations"]["Sum"] == 2
    # The first request waited for its worker's setup, and OverheadLatency includes that wait.
    assert got["OverheadLatency"]["Maximum"] >= got["ModelSetupTime"]["Minimum"]


def test_memory_utilization_of_a_live_worker(server: ServerProcess, model_url: str) -> None:
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    name = "metrics-memory"
    deploy(sm, name, model_url, memory_mb=2048)
    assert call(smr, name, {"n": 1}) == "ok"
    labels = {"endpoint_name": name, "variant_name": "AllTraffic"}
    # the watchdog samples every 50 ms: a worker that started a moment ago may not have a sample yet
    wait_for(lambda: value(server.metrics(), "zeroscale_memory_utilization_percent", **labels) is not None, 5)
    text = server.metrics()
    percent = value(text, "zeroscale_memory_utilization_percent", **labels)
    assert percent is not None and 0 < percent < 100
    assert value(text, "zeroscale_memory_utilization_max_percent", **labels) == percent  # one worker
    wait_for(lambda: "MemoryUtilization" in totals(history(server, name)), timeout_s=5)
    mem = totals(history(server, name, metric="MemoryUtilization"))["MemoryUtilization"]
    assert 0 < mem["Minimum"] <= mem["Maximum"] < 100


def test_provisioned_concurrency_metrics(server: ServerProcess, model_url: str) -> None:
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    name = "metrics-provisioned"
    deploy(sm, name, model_url, max_concurrency=2, provisioned=1)
    assert series(server, "zeroscale_provisioned_concurrency", name) == 1
    assert series(server, "zeroscale_provisioned_concurrency_executions", name) == 0
    for i in range(3):  # one at a time: the provisioned worker serves each
        assert call(smr, name, {"n": i}) == "ok"
    outcomes: list[str] = []
    slow = in_background(lambda: outcomes.append(call(smr, name, {"sleep": 2.0})))  # provisioned
    wait_for(busy(server, name, 1), timeout_s=10, interval_s=0.02)
    assert series(server, "zeroscale_provisioned_concurrency_executions", name) == 1
    assert series(server, "zeroscale_provisioned_concurrency_utilization_ratio", name) == 1.0
    assert series(server, "zeroscale_concurrent_executions_utilization_ratio", name) == 0.5
    assert call(smr, name, {"n": 9}) == "ok"  # beyond the provisioned worker: spillover
    slow.join()
    assert outcomes == ["ok"]
    assert series(server, "zeroscale_provisioned_concurrency_invocations_total", name) == 4
    assert series(server, "zeroscale_provisioned_concurrency_spillover_invocations_total", name) == 1
    got = totals(history(server, name))
    assert got["ServerlessProvisionedConcurrencyInvocations"]["Sum"] == 4
    assert got["ServerlessProvisionedConcurrencySpilloverInvocations"]["Sum"] == 1
    assert got["ServerlessProvisionedConcurrencyExecutions"]["Maximum"] == 1
    assert got["ServerlessProvisionedConcurrencyUtilization"]["Maximum"] == 1.0


def test_history_survives_a_restart_and_the_cli_prints_it(
    server_factory: Callable[..., ServerProcess], model_url: str
) -> None:
    server = server_factory(metrics_retention_hours=2)
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    name = "metrics-restart"
    deploy(sm, name, model_url)
    outcomes = [call(smr, name, {"n": i}) for i in range(4)] + [call(smr, name, {"raise": 1})]
    assert outcomes == ["ok"] * 4 + ["ModelError"]
    before = totals(history(server, name))
    server.restart()  # SIGTERM: a clean stop writes the minutes still in memory
    after = totals(history(server, name))
    assert after["Invocations"]["Sum"] == before["Invocations"]["Sum"] == 5
    assert after["Invocation5XXErrors"]["Sum"] == 1
    assert after["ModelLatency"] == before["ModelLatency"]
    assert series(server, "zeroscale_invocations_total", name) in (None, 0)  # Prometheus starts afresh

    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    base = [sys.executable, "-m", "zeroscale.cli.main", "metrics", name, "--endpoint-url", server.url]
    out = subprocess.run([*base, "--since", "30m"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header.split()[:5] == ["TIME", "VARIANT", "INVOCATIONS", "4XX", "5XX"]
    assert sum(int(row.split()[3]) for row in rows) == 5  # TIME is two words: date and hh:mm
    assert sum(int(row.split()[5]) for row in rows) == 1
    # The other forms in process (the same click command, without another interpreter start).
    runner, args = CliRunner(), ["metrics", name, "--endpoint-url", server.url]
    result = runner.invoke(cli, [*args, "--metric", "Invocation5XXErrors"], env=env)
    assert result.exit_code == 0, result.output
    assert "Invocation5XXErrors" in result.stdout and "None" in result.stdout
    result = runner.invoke(cli, [*args, "--since", "soon"], env=env)
    assert result.exit_code == 2 and "'soon' is neither a duration" in result.stderr
    result = runner.invoke(cli, [*args, "--variant", "Nope"], env=env)  # not an empty table: said so
    assert result.exit_code == 2
    assert f"endpoint {name} has no variant Nope (it has AllTraffic)" in result.stderr
    # --since as every command takes it: an ISO time (local) and epoch seconds, the same 5 invocations
    an_hour_ago = datetime.datetime.now() - datetime.timedelta(hours=1)
    for since in (an_hour_ago.isoformat(timespec="minutes"), str(int(time.time()) - 3600)):
        result = runner.invoke(cli, [*args, "--since", since, "--json"], env=env)
        assert result.exit_code == 0, result.output
        points = json.loads(result.stdout)["Datapoints"]
        assert sum(p["Sum"] for p in points if p["MetricName"] == "Invocations") == 5, since
    result = runner.invoke(cli, [*args, "--json"], env=env)
    assert (
        sum(p["Sum"] for p in json.loads(result.stdout)["Datapoints"] if p["MetricName"] == "Invocations")
        == 5
    )
    help_text = " ".join(runner.invoke(cli, ["serve", "--help"]).stdout.split())
    assert (
        "--metrics-retention-hours" in help_text and "env var: ZEROSCALE_METRICS_RETENTION_HOURS" in help_text
    )
