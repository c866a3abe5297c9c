"""A newcomer's first minute: the README's boto3 flow with botocore's default ``endpoint_in_service`` waiter
(30 s between polls) returns at its first DescribeEndpoint, because CreateEndpoint waits a bounded moment
(2 s) for a quick deployment. A slower deployment still answers Creating and goes InService later; a
failing one is Failed at the waiter's first poll."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from botocore.exceptions import WaiterError
from sklearn.linear_model import LogisticRegression

from e2e.conftest import handler_model
from zeroscale.testing import SKLEARN_IMAGE, ServerProcess, deploy, make_tar, wait_final

SERVERLESS = {"MemorySizeInMB": 1024, "MaxConcurrency": 5}
SLOW_MODEL = """
import time

def model_fn(model_dir):
    time.sleep(4.0)
    return "slow"

def transform_fn(model, body, content_type, accept):
    return b"[]", "application/json"
"""


@pytest.fixture(scope="module")
def warm(server: ServerProcess, sklearn_model: Any) -> None:
    """What a newcomer's server is by the time they have typed the README's code: its scikit-learn runtime
    started (the server starts it at launch; here one deployment waits for it)."""
    desc = deploy(server.client("sagemaker"), "warm-up", sklearn_model.url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")


def _describes(client: Any) -> list[float]:
    """The times of every DescribeEndpoint ``client`` sends from now on."""
    calls: list[float] = []
    client.meta.events.register(
        "before-call.sagemaker.DescribeEndpoint", lambda **_: calls.append(time.time())
    )
    return calls


def _create(sm: Any, name: str, model_url: str) -> None:
    sm.create_model(ModelName=name, PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": model_url})
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, "ServerlessConfig": SERVERLESS}],
    )


def test_readme_flow_is_in_service_at_the_default_waiters_first_poll(
    server: ServerProcess, warm: None, tmp_path: Path
) -> None:
    # the README's model, as the README builds it
    X = np.random.rand(200, 4)
    y = (X[:, 0] > 0.5).astype(int)
    joblib.dump(LogisticRegression().fit(X, y), tmp_path / "model.joblib")
    tar = make_tar(tmp_path / "model.tar.gz", {"model.joblib": tmp_path / "model.joblib"})
    sm = server.client("sagemaker")
    runtime = server.client("sagemaker-runtime")
    _create(sm, "demo", f"file://{os.path.abspath(tar)}")
    describes = _describes(sm)

    started = time.time()
    sm.create_endpoint(EndpointName="demo", EndpointConfigName="demo")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="demo")  # botocore's defaults: 30 s, 120 tries
    elapsed = time.time() - started

    assert len(describes) == 1, "the waiter had to poll again, 30 s later"
    assert elapsed < 10.0
    resp = runtime.invoke_endpoint(EndpointName="demo", ContentType="text/csv", Body=b"0.9,0.1,0.2,0.3")
    assert json.loads(resp["Body"].read()) == [1]

    # UpdateEndpoint waits the same way: the update is done at the first DescribeEndpoint
    sm.update_endpoint(EndpointName="demo", EndpointConfigName="demo")
    assert sm.describe_endpoint(EndpointName="demo")["EndpointStatus"] == "InService"


def test_a_slow_deployment_answers_creating_then_goes_in_service(
    server: ServerProcess, warm: None, tmp_path: Path
) -> None:
    sm = server.client("sagemaker")
    _create(sm, "slow-start", handler_model(tmp_path, SLOW_MODEL))
    started = time.monotonic()
    sm.create_endpoint(EndpointName="slow-start", EndpointConfigName="slow-start")
    answered = time.monotonic() - started
    assert 1.9 <= answered < 3.9, answered  # waited its 2 s, not for the whole 4 s model load
    assert sm.describe_endpoint(EndpointName="slow-start")["EndpointStatus"] == "Creating"
    desc = wait_final(sm, "slow-start")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert server.client("sagemaker-runtime").invoke_endpoint(EndpointName="slow-start", Body=b"{}")[
        "Body"
    ].read() == (b"[]")


def test_a_deployment_cut_short_by_delete(server: ServerProcess, warm: None, tmp_path: Path) -> None:
    sm = server.client("sagemaker")
    _create(sm, "slow-gone", handler_model(tmp_path, SLOW_MODEL))
    sm.create_endpoint(EndpointName="slow-gone", EndpointConfigName="slow-gone")
    assert sm.describe_endpoint(EndpointName="slow-gone")["EndpointStatus"] == "Creating"
    sm.delete_endpoint(EndpointName="slow-gone")
    sm.get_waiter("endpoint_deleted").wait(
        EndpointName="slow-gone", WaiterConfig={"Delay": 1, "MaxAttempts": 20}
    )
    time.sleep(4.5)  # past the model load the deployment would have finished
    assert [e["EndpointName"] for e in sm.list_endpoints(NameContains="slow-gone")["Endpoints"]] == []
    assert server.workers("slow-gone") == 0


def test_a_failing_deployment_is_failed_at_the_default_waiters_first_poll(
    server: ServerProcess, warm: None, tmp_path: Path
) -> None:
    sm = server.client("sagemaker")
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar.gz archive\n")  # fails its deployment
    _create(sm, "broken", f"file://{tmp_path}/broken.tar.gz")
    describes = _describes(sm)
    started = time.time()
    sm.create_endpoint(EndpointName="broken", EndpointConfigName="broken")
    with pytest.raises(WaiterError) as err:
        sm.get_waiter("endpoint_in_service").wait(EndpointName="broken")
    assert time.time() - started < 10.0
    assert len(describes) == 1
    assert "Failed" in str(err.value)
    desc = sm.describe_endpoint(EndpointName="broken")
    assert desc["EndpointStatus"] == "Failed"
    assert f"{tmp_path}/broken.tar.gz" in desc["FailureReason"]
