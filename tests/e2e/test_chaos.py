"""Chaos, for real: workers and the zygote SIGKILLed under load, the server SIGKILLed in the middle of
creating, updating and deleting endpoints. Only the requests in flight on a killed process fail, every
answered request is in the usage records, every transition ends in a sane state after a restart, and
everything serves again. (The server SIGKILLed under load: tests/e2e/test_metering.py and test_async.py.)"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from botocore.exceptions import ClientError

from zeroscale.testing import ServerProcess, deploy, wait_for

from .conftest import handler_model
from .test_metering import report

ECHO = """
import time


def model_fn(model_dir):
    return "echo"


def predict_fn(data, model):
    time.sleep(0.02)  # long enough that a kill finds requests in flight
    return data
"""

SLOW = """
import os, time


def model_fn(model_dir):
    time.sleep(float(os.environ.get("LOAD_S", "0")))
    return "slow"


def predict_fn(data, model):
    time.sleep(float(data.get("sleep", 0)))
    return {"ok": True}
"""


def forked(
    server: ServerProcess, spares: list[psutil.Process] | None = None
) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """(zygotes, the processes they forked: workers and templates); a zygote's spare, which waits for a
    request (``zs-spare``), goes to ``spares``."""
    assert server.proc is not None
    zygotes, children = [], []
    for proc in psutil.Process(server.proc.pid).children(recursive=True):
        try:  # a fork keeps its zygote's command line: a zygote is the one whose parent is not a zygote
            if "zeroscale.workers.forkserver" in " ".join(proc.parent().cmdline()):
                if proc.name() != "zs-spare":
                    children.append(proc)
                elif spares is not None:
                    spares.append(proc)
            elif "zeroscale.workers.forkserver" in " ".join(proc.cmdline()):
                zygotes.append(proc)
        except psutil.NoSuchProcess:
            continue
    return zygotes, children


def test_workers_and_the_zygote_killed_under_load(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory()
    sm = server.client("sagemaker")
    # Every process the zygote forks is a worker here (no template, which holds no request, among them).
    off = {"ZEROSCALE_TEMPLATES": "off"}
    url = handler_model(tmp_path, ECHO)
    assert deploy(sm, "chaos", url, max_concurrency=4, environment=off)["EndpointStatus"] == "InService"
    answered = [0] * 4
    sent = [0] * 4
    failed: list[str] = []
    stop = threading.Event()

    def client(k: int) -> None:
        smr = server.client("sagemaker-runtime")
        while not stop.is_set():
            sent[k] += 1
            try:
                smr.invoke_endpoint(EndpointName="chaos", Body=b'{"n": 1}', ContentType="application/json")
            except ClientError as err:
                failed.append(err.response["Error"]["Code"])
                continue
            answered[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    rng = random.Random(5)
    killed_workers = 0
    try:
        wait_for(lambda: sum(answered) >= 50, timeout_s=30)
        spares: list[psutil.Process] = []
        forked(server, spares)
        for spare in spares:  # one killed while it waits for a request: nothing was on it
            spare.send_signal(signal.SIGKILL)
        for _ in range(6):  # a worker at a time
            _, children = forked(server)
            if children:
                rng.choice(children).send_signal(signal.SIGKILL)
                killed_workers += 1
            time.sleep(0.4)
        zygotes, children = forked(server)
        assert len(zygotes) == 1
        zygotes[0].send_signal(signal.SIGKILL)  # its workers die with it (parent-death signal)
        lost_with_zygote = len(children)
        before = sum(answered)
        wait_for(lambda: sum(answered) >= before + 50, timeout_s=60)  # a new zygote, new workers
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    print(
        f"answered {sum(answered)}, failed {failed}, "
        f"killed {killed_workers} workers and a zygote with {lost_with_zygote}"
    )
    assert killed_workers >= 4
    # Only requests in flight on a killed process failed: at most one per killed worker, and for the zygote
    # (its workers, or one starting, die with it) at most every request there was: one per client. A spare
    # may be handed a request between the look that found it and its kill (it failed one, once in CI).
    assert lost_with_zygote <= 4
    assert len(failed) <= killed_workers + len(spares) + len(threads), failed
    assert set(failed) <= {"ModelError", "ServiceUnavailable", "InternalFailure"}, failed
    # Serving again, and every answered request is in the usage records.
    smr = server.client("sagemaker-runtime")
    for _ in range(10):
        smr.invoke_endpoint(EndpointName="chaos", Body=b'{"n": 1}', ContentType="application/json")
    total = sum(answered) + 10
    wait_for(lambda: report(server)["total"]["invocations"] >= total, timeout_s=20)
    assert report(server)["total"]["invocations"] <= sum(sent) + 10


def status(server: ServerProcess, name: str) -> str | None:
    try:
        return str(server.client("sagemaker").describe_endpoint(EndpointName=name)["EndpointStatus"])
    except ClientError as err:
        assert err.response["Error"]["Code"] == "ValidationException"
        return None


def test_endpoints_half_created_updated_or_deleted_by_a_killed_server(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory()
    sm = server.client("sagemaker")
    url = handler_model(tmp_path, SLOW)
    # Deleting: an endpoint draining a long request when the server dies.
    assert deploy(sm, "half-deleted", url)["EndpointStatus"] == "InService"
    smr = server.client("sagemaker-runtime", read_timeout=30)
    slow = threading.Thread(
        target=lambda: _quietly(
            lambda: smr.invoke_endpoint(
                EndpointName="half-deleted", Body=json.dumps({"sleep": 20}), ContentType="application/json"
            )
        )
    )
    slow.start()
    wait_for(lambda: server.workers("half-deleted") == 1, timeout_s=20)
    time.sleep(0.3)  # the request is in the worker
    sm.delete_endpoint(EndpointName="half-deleted")
    assert status(server, "half-deleted") == "Deleting"
    # Updating: to a configuration whose provisioned worker takes seconds to load.
    assert deploy(sm, "half-updated", url)["EndpointStatus"] == "InService"
    sm.create_model(
        ModelName="slow-load",
        PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url, "Environment": {"LOAD_S": "8"}},
    )
    serverless = {"MemorySizeInMB": 1024, "MaxConcurrency": 2, "ProvisionedConcurrency": 1}
    sm.create_endpoint_config(
        EndpointConfigName="slow-load",
        ProductionVariants=[
            {"VariantName": "AllTraffic", "ModelName": "slow-load", "ServerlessConfig": serverless}
        ],
    )
    sm.update_endpoint(EndpointName="half-updated", EndpointConfigName="slow-load")
    assert status(server, "half-updated") == "Updating"
    # Creating: a provisioned worker whose model takes seconds to load.
    deploy(sm, "half-created", url, provisioned=1, environment={"LOAD_S": "4"}, wait=False)
    time.sleep(0.5)  # both slow workers are loading
    assert status(server, "half-created") == "Creating"
    assert status(server, "half-updated") == "Updating"

    server.stop(signal.SIGKILL)
    slow.join(30)
    server.start()
    sm = server.client("sagemaker")
    wait_for(lambda: status(server, "half-deleted") is None, timeout_s=60)
    wait_for(lambda: status(server, "half-created") in ("InService", "Failed"), timeout_s=60)
    assert status(server, "half-created") == "InService"
    resp = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="half-created", Body=b"{}", ContentType="application/json"
    )
    assert json.loads(resp["Body"].read()) == {"ok": True}
    # The update died with the server: the previous configuration serves while it runs again, to its end
    # (as SageMaker's: an update completes or fails, it is not dropped).
    resp = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="half-updated", Body=b"{}", ContentType="application/json"
    )
    assert json.loads(resp["Body"].read()) == {"ok": True}
    wait_for(lambda: status(server, "half-updated") == "InService", timeout_s=60)
    desc = sm.describe_endpoint(EndpointName="half-updated")
    assert desc["EndpointConfigName"] == "slow-load" and "FailureReason" not in desc, desc
    assert "Updating" not in json.dumps(desc["ProductionVariants"], default=str), desc
    assert "endpoint half-updated: resuming its update to slow-load" in server.log_path.read_text()
    sm.update_endpoint(EndpointName="half-updated", EndpointConfigName="half-updated")  # it updates again
    wait_for(lambda: status(server, "half-updated") in ("InService", "Failed"), timeout_s=60)
    assert status(server, "half-updated") == "InService"
    # Nothing of the deleted endpoint is left: no route, no worker.
    assert server.workers("half-deleted") == 0
    names = sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"])
    assert names == ["half-created", "half-updated"]


def _quietly(call: Callable[[], Any]) -> None:
    with contextlib.suppress(Exception):  # the server was killed under it: that is the point
        call()


def test_a_model_that_cannot_be_fetched_after_a_restart_is_named_not_lost(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The model's artifact is gone when the server starts again (S3 down, a file moved): DescribeEndpoint
    still says InService, and an invocation says why it cannot be served (503 ServiceUnavailable naming the
    artifact), not that the endpoint does not exist; once the artifact is back, it serves again."""
    (tmp_path / "m").mkdir()
    url = handler_model(tmp_path / "m", ECHO)
    server = server_factory()
    assert deploy(server.client("sagemaker"), "moved", url)["EndpointStatus"] == "InService"
    server.stop()
    path = Path(url.removeprefix("file://"))
    path.rename(path.with_suffix(".away"))
    server.start()
    assert status(server, "moved") == "InService"
    smr = server.client("sagemaker-runtime")
    try:
        smr.invoke_endpoint(EndpointName="moved", Body=b"{}", ContentType="application/json")
        raise AssertionError("served without its model")
    except ClientError as err:
        error = err.response["Error"]
        assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 503, err.response
        assert error["Code"] == "ServiceUnavailable" and "cannot serve its deployment now" in error["Message"]
        assert str(path) in error["Message"], error
    path.with_suffix(".away").rename(path)

    def serves() -> bool:
        try:
            smr.invoke_endpoint(EndpointName="moved", Body=b"{}", ContentType="application/json")
        except ClientError:
            return False
        return True

    wait_for(serves, timeout_s=20, interval_s=1.0)
