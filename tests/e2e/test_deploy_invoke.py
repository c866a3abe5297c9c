"""Deploy a scikit-learn model with unmodified boto3 and invoke it: the heart of zeroscale."""

from __future__ import annotations

import io
import json
import tempfile
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from zeroscale.testing import ServerProcess, deploy

# Every test here runs on SQLite and on PostgreSQL (the control plane, restarts, metering, metrics).
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="module")
def endpoint(sm: Any, sklearn_model: Any) -> str:
    desc = deploy(sm, "iris-like", sklearn_model.url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return "iris-like"


def test_waiter_and_describe(sm: Any, endpoint: str) -> None:
    sm.get_waiter("endpoint_in_service").wait(EndpointName=endpoint, WaiterConfig={"Delay": 1})
    desc = sm.describe_endpoint(EndpointName=endpoint)
    assert desc["EndpointArn"] == f"arn:aws:sagemaker:us-east-1:000000000000:endpoint/{endpoint}"
    variant = desc["ProductionVariants"][0]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["CurrentServerlessConfig"] == {"MemorySizeInMB": 1024, "MaxConcurrency": 2}
    assert "sagemaker-scikit-learn" in variant["DeployedImages"][0]["SpecifiedImage"]
    assert desc["CreationTime"] <= desc["LastModifiedTime"]


@pytest.mark.parametrize("content_type", ["text/csv", "application/json", "application/x-npy"])
def test_predictions_equal_the_models_own(
    smr: Any, endpoint: str, sklearn_model: Any, content_type: str
) -> None:
    rows = sklearn_model.X[:25]
    if content_type == "text/csv":
        body = "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()
    elif content_type == "application/json":
        body = sklearn_model.json_body(rows)
    else:
        buf = io.BytesIO()
        np.save(buf, rows)
        body = buf.getvalue()
    resp = smr.invoke_endpoint(
        EndpointName=endpoint, Body=body, ContentType=content_type, Accept="application/json"
    )
    assert resp["ContentType"] == "application/json"
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    assert json.loads(resp["Body"].read()) == sklearn_model.expected(rows)


def test_custom_attributes_and_accept_csv(smr: Any, endpoint: str, sklearn_model: Any) -> None:
    rows = sklearn_model.X[:3]
    resp = smr.invoke_endpoint(
        EndpointName=endpoint,
        Body=sklearn_model.json_body(rows),
        ContentType="application/json",
        Accept="text/csv",
        CustomAttributes="trace=abc",
    )
    assert resp["ContentType"] == "text/csv"
    got = [int(float(x)) for x in resp["Body"].read().decode().split()]
    assert got == sklearn_model.expected(rows)


def test_non_ascii_custom_attributes_are_a_validation_error_not_a_bad_signature(
    smr: Any, endpoint: str
) -> None:
    """botocore sends and signs a header's str as UTF-8: the signature holds, and the value is refused for
    what it is (the model's pattern is ASCII)."""
    with pytest.raises(ClientError) as err:
        smr.invoke_endpoint(
            EndpointName=endpoint, Body=b"[[1,2,3,4]]", ContentType="application/json", CustomAttributes="ä"
        )
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert "customAttributes" in err.value.response["Error"]["Message"]


def test_unknown_endpoint_is_a_validation_error(smr: Any) -> None:
    with pytest.raises(ClientError) as err:
        smr.invoke_endpoint(EndpointName="nope", Body=b"[[1,2,3,4]]", ContentType="application/json")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert err.value.response["Error"]["Message"] == "Endpoint nope of account 000000000000 not found."
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_oversize_body_is_rejected(server: ServerProcess, smr: Any, endpoint: str) -> None:
    with pytest.raises(ClientError) as err:
        smr.invoke_endpoint(EndpointName=endpoint, Body=b"0" * (6 * 1024 * 1024 + 1), ContentType="text/csv")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert "has oversize body" in err.value.response["Error"]["Message"]


def test_a_serverless_variant_takes_at_most_4_mb(server: ServerProcess, smr: Any, endpoint: str) -> None:
    limit = (
        4 * 1024 * 1024
    )  # SageMaker's for serverless endpoints (real-time: 6 MB, tests/e2e/test_realtime.py)
    with pytest.raises(ClientError) as err:
        smr.invoke_endpoint(EndpointName=endpoint, Body=b"0" * (limit + 1), ContentType="text/csv")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert f"is serverless, which takes at most {limit} bytes" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:  # taken: the model refuses one number for its four features
        smr.invoke_endpoint(EndpointName=endpoint, Body=b"0" * limit, ContentType="text/csv")
    assert err.value.response["Error"]["Code"] == "ModelError"


def test_list_and_delete_with_waiter(sm: Any, sklearn_model: Any) -> None:
    deploy(sm, "to-delete", sklearn_model.url)
    names = [e["EndpointName"] for e in sm.list_endpoints(NameContains="to-del")["Endpoints"]]
    assert names == ["to-delete"]
    sm.delete_endpoint(EndpointName="to-delete")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="to-delete", WaiterConfig={"Delay": 1})
    with pytest.raises(ClientError) as err:
        sm.describe_endpoint(EndpointName="to-delete")
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert err.value.response["Error"]["Message"] == (
        'Could not find endpoint "arn:aws:sagemaker:us-east-1:000000000000:endpoint/to-delete".'
    )


def test_worker_gauge_on_metrics(server: ServerProcess, smr: Any, endpoint: str, sklearn_model: Any) -> None:
    smr.invoke_endpoint(
        EndpointName=endpoint,
        Body=sklearn_model.json_body(sklearn_model.X[:1]),
        ContentType="application/json",
    )
    assert server.workers(endpoint) >= 1
    assert "# TYPE zeroscale_workers gauge" in server.metrics()


ENV_HANDLER = """
import json, os

def model_fn(model_dir):
    return {"greeting": os.environ.get("GREETING"), "threads": os.environ.get("OMP_NUM_THREADS")}

def transform_fn(model, body, content_type, accept):
    return json.dumps({**model, "content_type": content_type, "echo": body.decode()}), "application/json"
"""


def test_model_environment_reaches_the_worker(sm: Any, smr: Any, tmp_path: Any) -> None:
    from e2e.conftest import handler_model

    url = handler_model(tmp_path, ENV_HANDLER)
    desc = deploy(sm, "env-model", url, environment={"GREETING": "hello from CreateModel"})
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resp = smr.invoke_endpoint(EndpointName="env-model", Body=b"ping", ContentType="text/plain")
    answer = json.loads(resp["Body"].read())
    assert answer == {
        "greeting": "hello from CreateModel",
        "threads": "1",
        "content_type": "text/plain",
        "echo": "ping",
    }


def test_a_data_dir_too_deep_for_socket_paths_serves(tmp_path: Any, sklearn_model: Any) -> None:
    """A Unix socket's path holds 107 bytes: under a data directory this deep the workers' sockets go to a
    short private directory of the server's in the temporary directory, gone when the server stops."""
    from pathlib import Path

    from zeroscale.workers.sockdir import SUN_PATH_MAX, socket_dir

    data_dir = tmp_path / ("deep-" * 12) / "data"
    data_dir.parent.mkdir()
    assert len(str(data_dir / "workers")) > SUN_PATH_MAX
    short = socket_dir(data_dir.absolute() / "workers")
    assert short.parent == Path(tempfile.gettempdir())
    server = ServerProcess(data_dir).start()
    try:
        desc = deploy(server.client("sagemaker"), "deep", sklearn_model.url)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        for _ in range(2):  # the second from a template's replica, whose control socket is there too
            resp = server.client("sagemaker-runtime").invoke_endpoint(
                EndpointName="deep",
                Body=sklearn_model.json_body(sklearn_model.X[:2]),
                ContentType="application/json",
            )
            assert json.loads(resp["Body"].read()) == sklearn_model.expected(sklearn_model.X[:2])
        assert list(short.glob("*.sock")), "the worker's socket is in the short directory"
        assert (short.stat().st_mode & 0o777) == 0o700
    finally:
        server.stop()
    assert not short.exists()


def test_relative_data_dir_serves(tmp_path: Any, sklearn_model: Any) -> None:
    """`make run` uses the relative default `.zeroscale`; workers run in their model directory."""
    from pathlib import Path

    server = ServerProcess(Path(".zeroscale"), cwd=tmp_path).start()
    try:
        desc = deploy(server.client("sagemaker"), "relative", sklearn_model.url)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        resp = server.client("sagemaker-runtime").invoke_endpoint(
            EndpointName="relative",
            Body=sklearn_model.json_body(sklearn_model.X[:2]),
            ContentType="application/json",
        )
        assert json.loads(resp["Body"].read()) == sklearn_model.expected(sklearn_model.X[:2])
    finally:
        server.stop()
