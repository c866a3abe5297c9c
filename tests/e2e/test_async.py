"""Asynchronous inference end to end: real boto3 (``invoke_endpoint_async``), real S3 (SeaweedFS), real
workers; and a server SIGKILLed with requests queued that finishes every one after a restart."""

from __future__ import annotations

import base64
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from e2e.conftest import SklearnModel, handler_model, s3_tenant
from e2e.test_metrics import history
from s3server import SeaweedS3
from zeroscale.testing import ACCESS_KEY, SECRET_KEY, ServerProcess, wait_final, wait_for

BUCKET = "zeroscale-async"

# Echoes its JSON input; {"sleep": s} sleeps first, {"fail": true} raises (a ModelError).
ECHO = """
import json, time

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    data = json.loads(body)
    if data.get("fail"):
        raise ValueError("asked to fail")
    time.sleep(data.get("sleep", 0))
    return json.dumps({"echo": data}), "application/json"
"""


@pytest.fixture(scope="module")
def s3(s3_server: SeaweedS3) -> Any:
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def echo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return handler_model(tmp_path_factory.mktemp("echo"), ECHO)


def _server(s3_server: SeaweedS3, data_dir: Path) -> ServerProcess:
    return ServerProcess(data_dir, flags={"s3_endpoint_url": s3_server.endpoint_url}, env=s3_server.env())


@pytest.fixture(scope="module")
def server(s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = _server(s3_server, tmp_path_factory.mktemp("async") / "data").start()
    yield proc
    proc.stop()


def _deploy_async(
    sm: Any,
    name: str,
    model_url: str,
    *,
    max_concurrency: int = 2,
    failure: bool = True,
    tags: list[dict[str, str]] | None = None,
    OutputConfig: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": "sklearn", "ModelDataUrl": model_url},
    )
    output: dict[str, Any] = {"S3OutputPath": f"s3://{BUCKET}/{name}/out"}
    if failure:
        output["S3FailurePath"] = f"s3://{BUCKET}/{name}/failed/"
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": max_concurrency},
            }
        ],
        AsyncInferenceConfig={"OutputConfig": OutputConfig or output, **extra},
        Tags=tags or [],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return wait_final(sm, name)


def _put(s3: Any, key: str, body: bytes) -> str:
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    return f"s3://{BUCKET}/{key}"


def _get(s3: Any, url: str, timeout_s: float = 30.0) -> bytes:
    bucket, _, key = url[len("s3://") :].partition("/")
    s3.get_waiter("object_exists").wait(
        Bucket=bucket, Key=key, WaiterConfig={"Delay": 0.2, "MaxAttempts": int(timeout_s / 0.2)}
    )
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def _exists(s3: Any, url: str) -> bool:
    bucket, _, key = url[len("s3://") :].partition("/")
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError:
        return False
    return True


def _status(server: ServerProcess, inference_id: str, endpoint: str | None = None) -> dict[str, Any]:
    out = subprocess.run(
        [
            *(sys.executable, "-m", "zeroscale.cli.main", "async", "status", inference_id, "--json"),
            *("--endpoint-url", server.url, "--data-dir", str(server.data_dir)),
            *(("--endpoint", endpoint) if endpoint else ()),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def test_sklearn_round_trip_and_scale_to_zero(
    server: ServerProcess, s3: Any, sklearn_model: SklearnModel
) -> None:
    """A serverless async endpoint: the config is described back, InvokeEndpointAsync answers 202 with the
    locations, the prediction appears at the OutputLocation, the status CLI says Completed, the sync route is
    refused, the queue gauges are on /metrics, and the variant goes back to zero workers afterwards."""
    sm = server.client("sagemaker")
    smr = server.client("sagemaker-runtime")
    desc = _deploy_async(
        sm,
        "rf-async",
        sklearn_model.url,
        tags=[{"Key": "zeroscale:idle-timeout-s", "Value": "1"}],
        ClientConfig={"MaxConcurrentInvocationsPerInstance": 2},
    )
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    config = sm.describe_endpoint_config(EndpointConfigName="rf-async")["AsyncInferenceConfig"]
    assert config["OutputConfig"]["S3OutputPath"] == f"s3://{BUCKET}/rf-async/out"
    assert config["ClientConfig"]["MaxConcurrentInvocationsPerInstance"] == 2
    assert sm.describe_endpoint(EndpointName="rf-async")["AsyncInferenceConfig"] == config

    rows = sklearn_model.X[:5]
    location = _put(s3, "inputs/rows.json", sklearn_model.json_body(rows))
    resp = smr.invoke_endpoint_async(
        EndpointName="rf-async",
        InputLocation=location,
        ContentType="application/json",
        InferenceId="rf-1",
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert resp["InferenceId"] == "rf-1"
    assert resp["OutputLocation"] == f"s3://{BUCKET}/rf-async/out/rf-1.out"
    assert resp["FailureLocation"] == f"s3://{BUCKET}/rf-async/failed/rf-1-error.out"
    assert json.loads(_get(s3, resp["OutputLocation"])) == sklearn_model.expected(rows)
    wait_for(lambda: _status(server, "rf-1")["Status"] == "Completed", timeout_s=10)
    doc = _status(server, "rf-1")
    assert doc["EndpointName"] == "rf-async" and doc["Attempts"] == 1
    assert doc["CreationTime"] <= doc["StartTime"] <= doc["EndTime"]

    # An S3 object's https:// URL works as the InputLocation too (path-style on the configured endpoint).
    https_location = f"https://{s3.meta.endpoint_url.split('://', 1)[1]}/{BUCKET}/inputs/rows.json"
    resp = smr.invoke_endpoint_async(
        EndpointName="rf-async", InputLocation=https_location, ContentType="application/json"
    )
    assert json.loads(_get(s3, resp["OutputLocation"])) == sklearn_model.expected(rows)

    wait_for(lambda: server.workers("rf-async") == 0, timeout_s=15)  # an empty queue: back to zero
    generated = smr.invoke_endpoint_async(
        EndpointName="rf-async", InputLocation=location, ContentType="application/json"
    )
    assert len(generated["InferenceId"]) == 36  # a UUID when the caller gives none
    assert json.loads(_get(s3, generated["OutputLocation"])) == sklearn_model.expected(rows)  # woke

    with pytest.raises(ClientError) as err:
        smr.invoke_endpoint(EndpointName="rf-async", Body=b"[[1,2,3,4]]", ContentType="application/json")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert "InvokeEndpointAsync" in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as streamed:  # an asynchronous endpoint cannot stream either
        smr.invoke_endpoint_with_response_stream(
            EndpointName="rf-async", Body=b"[[1,2,3,4]]", ContentType="application/json"
        )
    assert streamed.value.response["Error"]["Code"] == "ValidationError"
    assert (
        "is an asynchronous endpoint and cannot stream a response"
        in streamed.value.response["Error"]["Message"]
    )

    metrics = server.metrics()
    assert 'zeroscale_approximate_backlog_size{endpoint_name="rf-async"}' in metrics
    assert 'zeroscale_has_backlog_without_capacity{endpoint_name="rf-async"} 0.0' in metrics
    wait_for(lambda: 'zeroscale_approximate_backlog_size{endpoint_name="rf-async"} 0.0' in server.metrics())
    # ... and in the one-minute history, under the endpoint alone (SageMaker's only dimension for them).
    backlog = [p for p in history(server, "rf-async") if p["MetricName"] == "ApproximateBacklogSize"]
    assert backlog and {p["VariantName"] for p in backlog} == {""}
    assert sum(p["SampleCount"] for p in backlog) >= 1 and backlog[-1]["Minimum"] == 0.0
    names = {p["MetricName"] for p in history(server, "rf-async", variant="")}
    assert {"ApproximateAgeOfOldestRequest", "HasBacklogWithoutCapacity"} <= names
    # Through CloudWatch, named as SageMaker names them (EndpointName alone), as its async scaling guide
    # reads them and alarms on them.
    cw = server.client("cloudwatch")
    endpoint_only = [{"Name": "EndpointName", "Value": "rf-async"}]
    stats = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="ApproximateBacklogSize",
        Dimensions=endpoint_only,
        StartTime=time.time() - 600,
        EndTime=time.time() + 60,
        Period=60,
        Statistics=["Maximum"],
    )
    assert stats["Datapoints"], stats
    listed = cw.list_metrics(Namespace="AWS/SageMaker", MetricName="HasBacklogWithoutCapacity")["Metrics"]
    assert {
        "Namespace": "AWS/SageMaker",
        "MetricName": "HasBacklogWithoutCapacity",
        "Dimensions": endpoint_only,
    } in listed
    cw.put_metric_alarm(
        AlarmName="rf-async-no-capacity",
        Namespace="AWS/SageMaker",
        MetricName="HasBacklogWithoutCapacity",
        Dimensions=endpoint_only,
        Statistic="Average",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    with pytest.raises(ClientError) as refused:
        cw.put_metric_alarm(
            AlarmName="rf-async-variant",
            Namespace="AWS/SageMaker",
            MetricName="HasBacklogWithoutCapacity",
            Dimensions=[*endpoint_only, {"Name": "VariantName", "Value": "AllTraffic"}],
            Statistic="Average",
            Period=60,
            EvaluationPeriods=1,
            Threshold=1,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
        )
    assert "Dimensions must be exactly EndpointName" in refused.value.response["Error"]["Message"]


def test_an_instance_variant_scales_to_zero_and_wakes_for_queued_work(
    server: ServerProcess, s3: Any, sklearn_model: SklearnModel
) -> None:
    """An asynchronous real-time variant taken to 0 instances through Application Auto Scaling's
    MinCapacity 0 (SageMaker's way for async endpoints): no worker while the queue is empty, and a request
    queued then is answered (one instance's workers start on demand)."""
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    aas = server.client("application-autoscaling")
    sm.create_model(
        ModelName="rt-async", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": sklearn_model.url}
    )
    sm.create_endpoint_config(
        EndpointConfigName="rt-async",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "rt-async",
                "InstanceType": "ml.t2.medium",
                "InitialInstanceCount": 1,
            }
        ],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/rt-async/out"}},
        Tags=[{"Key": "zeroscale:idle-timeout-s", "Value": "1"}],  # at 0 instances, idle workers go in 1 s
    )
    sm.create_endpoint(EndpointName="rt-async", EndpointConfigName="rt-async")
    assert wait_final(sm, "rt-async")["EndpointStatus"] == "InService"
    wait_for(lambda: server.workers("rt-async") == 2, timeout_s=15)  # one ml.t2.medium: two workers
    aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId="endpoint/rt-async/variant/AllTraffic",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=0,
        MaxCapacity=1,
    )
    sm.update_endpoint_weights_and_capacities(
        EndpointName="rt-async",
        DesiredWeightsAndCapacities=[{"VariantName": "AllTraffic", "DesiredInstanceCount": 0}],
    )
    assert wait_final(sm, "rt-async")["ProductionVariants"][0]["CurrentInstanceCount"] == 0
    wait_for(lambda: server.workers("rt-async") == 0, timeout_s=15)

    rows = sklearn_model.X[:3]  # queued with no worker: the variant wakes for it
    location = _put(s3, "inputs/rt-rows.json", sklearn_model.json_body(rows))
    resp = smr.invoke_endpoint_async(
        EndpointName="rt-async", InputLocation=location, ContentType="application/json"
    )
    assert json.loads(_get(s3, resp["OutputLocation"])) == sklearn_model.expected(rows)
    wait_for(lambda: server.workers("rt-async") == 0, timeout_s=15)  # and back to zero


def test_failures_go_to_the_failure_location(server: ServerProcess, s3: Any, echo_url: str) -> None:
    """A model error, an unreadable input and an invocation timeout each end Failed, with the reason at the
    FailureLocation; a long invocation within InvocationTimeoutSeconds (past nothing else) succeeds."""
    sm = server.client("sagemaker")
    smr = server.client("sagemaker-runtime")
    assert _deploy_async(sm, "echo-async", echo_url)["EndpointStatus"] == "InService"

    failing = _put(s3, "inputs/fail.json", b'{"fail": true}')
    resp = smr.invoke_endpoint_async(
        EndpointName="echo-async", InputLocation=failing, ContentType="application/json"
    )
    assert b"asked to fail" in _get(s3, resp["FailureLocation"])
    assert not _exists(s3, resp["OutputLocation"])
    wait_for(lambda: _status(server, resp["InferenceId"])["Status"] == "Failed", timeout_s=10)
    assert "ModelError" in _status(server, resp["InferenceId"])["FailureReason"]

    # A key that is not ASCII: botocore sends the header as UTF-8, and the input is found.
    accented = _put(s3, "inputs/ünï.json", b'{"a": 1}')
    resp = smr.invoke_endpoint_async(
        EndpointName="echo-async", InputLocation=accented, ContentType="application/json"
    )
    assert json.loads(_get(s3, resp["OutputLocation"])) == {"echo": {"a": 1}}

    missing = smr.invoke_endpoint_async(
        EndpointName="echo-async", InputLocation=f"s3://{BUCKET}/inputs/no-such-key.json"
    )
    text = _get(s3, missing["FailureLocation"]).decode()
    assert "Could not read the input" in text and "NoSuchKey" in text

    slow = _put(s3, "inputs/slow.json", b'{"sleep": 3}')
    timed = smr.invoke_endpoint_async(
        EndpointName="echo-async",
        InputLocation=slow,
        ContentType="application/json",
        InvocationTimeoutSeconds=1,
    )
    assert b"InvocationTimeout" in _get(s3, timed["FailureLocation"])
    ok = smr.invoke_endpoint_async(
        EndpointName="echo-async",
        InputLocation=slow,
        ContentType="application/json",
        InvocationTimeoutSeconds=120,
        CustomAttributes="trace=1",
    )
    assert json.loads(_get(s3, ok["OutputLocation"])) == {"echo": {"sleep": 3}}


CONTENT_TYPE_ECHO = """
def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    return content_type or "none", "text/plain"
"""


def test_a_request_without_content_type_takes_its_input_objects(
    server: ServerProcess, s3: Any, tmp_path: Path
) -> None:
    """The sagemaker SDK's AsyncPredictor puts the content type on the object it uploads, not on the
    request: a request without ContentType takes the input object's; the request's own wins; an object
    stored without one (S3 answers binary/octet-stream) passes none."""
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    url = handler_model(tmp_path, CONTENT_TYPE_ECHO)
    assert _deploy_async(sm, "ct-async", url)["EndpointStatus"] == "InService"
    s3.put_object(Bucket=BUCKET, Key="inputs/row.csv", Body=b"1,2", ContentType="text/csv")
    row = f"s3://{BUCKET}/inputs/row.csv"
    resp = smr.invoke_endpoint_async(EndpointName="ct-async", InputLocation=row)
    assert _get(s3, resp["OutputLocation"]) == b"text/csv"
    resp = smr.invoke_endpoint_async(EndpointName="ct-async", InputLocation=row, ContentType="text/plain")
    assert _get(s3, resp["OutputLocation"]) == b"text/plain"
    bare = _put(s3, "inputs/bare", b"1,2")
    resp = smr.invoke_endpoint_async(EndpointName="ct-async", InputLocation=bare)
    assert _get(s3, resp["OutputLocation"]) != b"binary/octet-stream"


def test_deleting_an_endpoint_fails_what_it_left_queued(
    server: ServerProcess, s3: Any, echo_url: str
) -> None:
    """The request running when DeleteEndpoint comes finishes (the pool drains); the queued ones fail with
    EndpointDeleted at their FailureLocation."""
    sm = server.client("sagemaker")
    smr = server.client("sagemaker-runtime")
    assert _deploy_async(sm, "doomed", echo_url, max_concurrency=1)["EndpointStatus"] == "InService"
    location = _put(s3, "inputs/three-seconds.json", b'{"sleep": 3}')
    sent = [
        smr.invoke_endpoint_async(
            EndpointName="doomed", InputLocation=location, ContentType="application/json"
        )
        for _ in range(3)
    ]
    wait_for(lambda: _status(server, sent[0]["InferenceId"])["Status"] == "Running", timeout_s=10)
    sm.delete_endpoint(EndpointName="doomed")
    assert json.loads(_get(s3, sent[0]["OutputLocation"])) == {"echo": {"sleep": 3}}
    for resp in sent[1:]:
        assert b"EndpointDeleted" in _get(s3, resp["FailureLocation"])


NO_AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_SESSION_TOKEN": "",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def test_a_server_without_s3_credentials_refuses_asynchronous_requests_saying_why(
    s3_server: SeaweedS3, echo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Without any credentials for S3, no request could read its input or write its result: refused at
    once, saying what to give the server, not taken (202) to fail later where no one looks."""
    data_dir = tmp_path_factory.mktemp("no-s3-creds") / "data"
    flags = {"s3_endpoint_url": s3_server.endpoint_url}
    bare = ServerProcess(data_dir, flags=flags, env=NO_AWS_CREDENTIALS).start()
    try:
        _deploy_async(bare.client("sagemaker"), "nocreds", echo_url)
        smr = bare.client("sagemaker-runtime")
        with pytest.raises(ClientError) as err:
            smr.invoke_endpoint_async(EndpointName="nocreds", InputLocation=f"s3://{BUCKET}/in/rows.json")
        assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
        message = err.value.response["Error"]["Message"]
        assert "no credentials for S3" in message and "AWS_ACCESS_KEY_ID" in message, message
    finally:
        bare.stop()


def test_request_validation(server: ServerProcess) -> None:
    """Header ranges and required members (sent unchecked by the client); a sync endpoint refuses async."""
    smr = server.client("sagemaker-runtime", parameter_validation=False)
    sm = server.client("sagemaker")
    cases = [
        ({"RequestTTLSeconds": 59}, "greater than or equal to 60"),
        ({"RequestTTLSeconds": 21601}, "less than or equal to 21600"),
        ({"InvocationTimeoutSeconds": 0}, "greater than or equal to 1"),
        ({"InvocationTimeoutSeconds": 3601}, "less than or equal to 3600"),
        ({"InferenceId": "x" * 65}, "inferenceId"),
        ({"InferenceId": "idé"}, "be printable ASCII"),  # sent as UTF-8, refused (not mangled)
        ({"Body": b"[[1, 2]]"}, "Body and InputLocation are mutually exclusive"),
        ({"InputLocation": None, "Body": b"x" * 128_001}, "less than or equal to 128000"),
        ({"InputLocation": None}, "Give the request's input"),
        ({"InputLocation": "ftp://bucket/key"}, "inputLocation"),
        ({"InputLocation": "https://example.com/key"}, "is not an S3 object URL"),
        ({"S3OutputPathExtension": "s3://elsewhere"}, "s3OutputPathExtension"),
        ({"Filename": "two.dots.out"}, "filename"),
        ({"Filename": "x" * 33}, "filename"),
        # keys an S3-compatible store would read as others (IAM checks them as written)
        ({"InputLocation": f"s3://{BUCKET}//inputs/rows.json"}, 'no empty, "." or ".." part'),
        ({"InputLocation": f"s3://{BUCKET}/inputs\\rows.json"}, "no backslash"),
        ({"S3OutputPathExtension": "../../elsewhere"}, 'no empty, "." or ".." part'),
        ({"S3OutputPathExtension": "a//b"}, 'no empty, "." or ".." part'),
        # a bucket alone is no input; an InferenceId names the output object, so it is held as its key is
        ({"InputLocation": f"s3://{BUCKET}"}, "names a bucket, not an object"),
        ({"InputLocation": f"s3://{BUCKET}/"}, "names a bucket, not an object"),
        ({"InferenceId": "../elsewhere"}, "InferenceId '../elsewhere' names this request's output object"),
        ({"InferenceId": "/lead"}, 'no empty, "." or ".." part'),
        ({"InferenceId": "a\\b"}, "no backslash"),
    ]
    for extra, text in cases:
        kwargs = {"EndpointName": "rf-async", "InputLocation": f"s3://{BUCKET}/inputs/rows.json", **extra}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        with pytest.raises(ClientError) as err:
            smr.invoke_endpoint_async(**kwargs)
        assert err.value.response["Error"]["Code"] == "ValidationError", extra
        assert text in err.value.response["Error"]["Message"], (extra, err.value.response["Error"])
    variants = [
        {
            "VariantName": "AllTraffic",
            "ModelName": "rf-async",
            "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
        }
    ]
    for output, text in [
        ({"S3FailurePath": f"s3://{BUCKET}/f"}, "S3OutputPath is required"),
        ({"S3OutputPath": f"s3://{BUCKET}//other/out"}, "an S3 key here"),
        ({"S3OutputPath": f"s3://{BUCKET}/a/./out"}, "an S3 key here"),
        ({"S3OutputPath": f"s3://{BUCKET}/a\\out"}, "an S3 key here"),
    ]:
        with pytest.raises(ClientError) as err:
            sm.create_endpoint_config(
                EndpointConfigName="no-output",
                ProductionVariants=variants,
                AsyncInferenceConfig={"OutputConfig": output},
            )
        assert text in err.value.response["Error"]["Message"], output
    for url in (f"s3://{BUCKET}//m/model.tar.gz", f"s3://{BUCKET}/m\\model.tar.gz"):
        with pytest.raises(ClientError) as err:
            sm.create_model(ModelName="odd-key", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url})
        assert "an S3 key here" in err.value.response["Error"]["Message"], url
    with pytest.raises(ClientError) as err:
        smr.invoke_endpoint_async(EndpointName="nope", InputLocation=f"s3://{BUCKET}/k")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert err.value.response["Error"]["Message"] == "Endpoint nope of account 000000000000 not found."


def test_sigkill_with_requests_queued_finishes_all_after_restart(
    s3_server: SeaweedS3, s3: Any, echo_url: str, tmp_path: Path
) -> None:
    """Requests accepted (202) are in the store: a server SIGKILLed with some running and the rest queued
    runs every one of them after it restarts (at least once), also when the endpoint's configuration and
    model were deleted meanwhile (SageMaker lets them be: the endpoint serves what it was deployed from)."""
    server = _server(s3_server, tmp_path / "data").start()
    try:
        sm = server.client("sagemaker")
        smr = server.client("sagemaker-runtime")
        assert _deploy_async(sm, "durable", echo_url, max_concurrency=1)["EndpointStatus"] == "InService"
        location = _put(s3, "inputs/half-second.json", b'{"sleep": 0.5}')
        outputs = [
            smr.invoke_endpoint_async(
                EndpointName="durable",
                InputLocation=location,
                ContentType="application/json",
                InferenceId=f"durable-{i}",
            )["OutputLocation"]
            for i in range(6)
        ]
        time.sleep(0.3)  # the first is running, the others wait in the queue
        sm.delete_endpoint_config(EndpointConfigName="durable")
        sm.delete_model(ModelName="durable")
        server.stop(signal.SIGKILL)
        assert sum(_exists(s3, url) for url in outputs) < len(outputs)
        server.start()
        for url in outputs:
            assert json.loads(_get(s3, url, timeout_s=60)) == {"echo": {"sleep": 0.5}}
        first = _status(server, "durable-0")
        assert first["Status"] == "Completed"
        assert first["Attempts"] >= 1
        again = server.client("sagemaker-runtime").invoke_endpoint_async(
            EndpointName="durable", InputLocation=location, ContentType="application/json"
        )
        assert json.loads(_get(s3, again["OutputLocation"], timeout_s=30)) == {"echo": {"sleep": 0.5}}
    finally:
        server.stop()


class Subscriber:
    """An HTTP subscriber like a real one: confirms by visiting the SubscribeURL; with ``flaky`` it answers
    500 to the first delivery of each notification (so every one arrives through a retry)."""

    def __init__(self, *, flaky: bool = False) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.attempts: dict[str, int] = {}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                kind = body["Type"]
                outer.attempts[body["MessageId"]] = outer.attempts.get(body["MessageId"], 0) + 1
                if kind == "SubscriptionConfirmation":
                    with urllib.request.urlopen(body["SubscribeURL"], timeout=5) as resp:
                        assert resp.status == 200
                elif flaky and outer.attempts[body["MessageId"]] == 1:
                    self.send_response(500)
                    self.end_headers()
                    return
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def notifications(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        return [(h, b) for h, b in self.received if b["Type"] == "Notification"]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_topics_and_async_notifications(server: ServerProcess, s3: Any, echo_url: str) -> None:
    """The sns client against zeroscale: topics, http subscriptions confirmed through the SubscribeURL,
    Publish; async results notify SuccessTopic/ErrorTopic with SageMaker's fields; a delivery answered 500
    arrives through a retry; a subscriber that is down does not hold up the queue or the other subscriber."""
    sns = server.client("sns")
    good, flaky = Subscriber(), Subscriber(flaky=True)
    down = Subscriber()
    try:
        ok_topic = sns.create_topic(Name="async-ok")["TopicArn"]
        err_topic = sns.create_topic(Name="async-err")["TopicArn"]
        assert ok_topic == "arn:aws:sns:us-east-1:000000000000:async-ok"
        assert sns.create_topic(Name="async-ok")["TopicArn"] == ok_topic  # idempotent
        assert {ok_topic, err_topic} <= {t["TopicArn"] for t in sns.list_topics()["Topics"]}
        for topic in (ok_topic, err_topic):
            for sub in (good, down):
                assert sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=sub.url)[
                    "SubscriptionArn"
                ] == ("pending confirmation")
        sns.subscribe(TopicArn=ok_topic, Protocol="http", Endpoint=flaky.url)

        def confirmed(topic: str) -> int:
            subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
            return sum(s["SubscriptionArn"] != "PendingConfirmation" for s in subs)

        wait_for(lambda: confirmed(ok_topic) == 3 and confirmed(err_topic) == 2, timeout_s=10)
        down.stop()  # confirmed, then gone: its deliveries fail and are retried in the background

        sm = server.client("sagemaker")
        smr = server.client("sagemaker-runtime")
        desc = _deploy_async(
            sm,
            "notify-async",
            echo_url,
            OutputConfig={
                "S3OutputPath": f"s3://{BUCKET}/notify-async/out",
                "NotificationConfig": {
                    "SuccessTopic": ok_topic,
                    "ErrorTopic": err_topic,
                    "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
                },
            },
        )
        assert desc["EndpointStatus"] == "InService"
        good_in = _put(s3, "inputs/notify.json", b'{"n": 1}')
        ok = smr.invoke_endpoint_async(
            EndpointName="notify-async", InputLocation=good_in, ContentType="application/json"
        )
        bad = smr.invoke_endpoint_async(
            EndpointName="notify-async",
            InputLocation=_put(s3, "inputs/notify-fail.json", b'{"fail": true}'),
            ContentType="application/json",
        )
        wait_for(lambda: len(good.notifications()) == 2, timeout_s=15)
        assert _exists(s3, ok["OutputLocation"])
        messages = {json.loads(b["Message"])["inferenceId"]: (h, b) for h, b in good.notifications()}
        headers, envelope = messages[ok["InferenceId"]]
        assert headers["x-amz-sns-message-type"] == "Notification"
        assert envelope["TopicArn"] == ok_topic
        success = json.loads(envelope["Message"])
        assert success["invocationStatus"] == "Completed"
        assert success["eventName"] == "InferenceResult"
        assert success["requestParameters"]["inputLocation"] == good_in
        assert success["responseParameters"]["outputLocation"] == ok["OutputLocation"]
        assert json.loads(base64.b64decode(success["responseBody"]["content"])) == {"echo": {"n": 1}}
        failure = json.loads(messages[bad["InferenceId"]][1]["Message"])
        assert failure["invocationStatus"] == "Failed"
        assert "asked to fail" in failure["failureReason"]
        assert failure["responseParameters"]["failureLocation"] == bad["FailureLocation"]
        assert "responseBody" not in failure

        wait_for(lambda: len(flaky.notifications()) == 1, timeout_s=15)  # after one 500 and a retry
        assert max(flaky.attempts.values()) == 2

        sns.publish(TopicArn=ok_topic, Message="hello", Subject="greeting")
        wait_for(lambda: any(b["Message"] == "hello" for _, b in good.notifications()), timeout_s=10)
        hello = next(b for _, b in good.notifications() if b["Message"] == "hello")
        assert hello["Subject"] == "greeting"

        sub_arn = next(
            s["SubscriptionArn"]
            for s in sns.list_subscriptions_by_topic(TopicArn=ok_topic)["Subscriptions"]
            if s["Endpoint"] == good.url
        )
        sns.unsubscribe(SubscriptionArn=sub_arn)
        assert good.url not in {
            s["Endpoint"] for s in sns.list_subscriptions_by_topic(TopicArn=ok_topic)["Subscriptions"]
        }
        with pytest.raises(ClientError) as err:
            sns.create_topic(Name="tagged", Tags=[{"Key": "a", "Value": "b"}])
        assert err.value.response["Error"]["Code"] == "InvalidParameter"
        assert "Tags is not served" in err.value.response["Error"]["Message"]
        sns.delete_topic(TopicArn=err_topic)
        with pytest.raises(ClientError) as err:
            sns.publish(TopicArn=err_topic, Message="gone")
        assert err.value.response["Error"]["Code"] == "NotFound"
    finally:
        good.stop()
        flaky.stop()


RAW_ECHO = """
def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    return bytes(body), "application/octet-stream"
"""


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_large_payload_streams_through_the_server(
    server: ServerProcess, s3: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A 64 MB input and its 64 MB result pass S3 -> worker -> S3 (a multipart upload) while the server's
    peak resident set grows by far less than either: the front end streams them through scratch files."""
    sm = server.client("sagemaker")
    smr = server.client("sagemaker-runtime")
    url = handler_model(tmp_path_factory.mktemp("raw-echo"), RAW_ECHO)
    assert _deploy_async(sm, "big-async", url, max_concurrency=1)["EndpointStatus"] == "InService"
    warm = smr.invoke_endpoint_async(
        EndpointName="big-async", InputLocation=_put(s3, "inputs/warm.bin", os.urandom(9 * 2**20))
    )
    assert len(_get(s3, warm["OutputLocation"])) == 9 * 2**20  # multipart path warmed up
    assert server.proc is not None
    before = _peak_rss_mb(server.proc.pid)
    payload = os.urandom(64 * 2**20)
    resp = smr.invoke_endpoint_async(
        EndpointName="big-async", InputLocation=_put(s3, "inputs/big.bin", payload)
    )
    assert _get(s3, resp["OutputLocation"], timeout_s=120) == payload
    grown = _peak_rss_mb(server.proc.pid) - before
    print(f"server peak RSS grew {grown:.1f} MB for a 64 MB input and 64 MB output")
    assert grown < 16, grown


def test_a_full_queue_answers_service_unavailable_until_it_drains(
    s3_server: SeaweedS3, s3: Any, echo_url: str, tmp_path: Path
) -> None:
    """--async-max-queued requests waiting for one endpoint: the next is refused by name (503), none is
    lost, and once they have run the endpoint takes requests again."""
    server = ServerProcess(
        tmp_path / "data",
        flags={"s3_endpoint_url": s3_server.endpoint_url, "async_max_queued": 2},
        env=s3_server.env(),
    ).start()
    try:
        sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
        desc = _deploy_async(
            sm, "fullq", echo_url, max_concurrency=1, ClientConfig={"MaxConcurrentInvocationsPerInstance": 1}
        )
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        location = _put(s3, "fullq/in/slow.json", b'{"sleep": 2}')
        accepted = []
        with pytest.raises(ClientError) as err:
            for _ in range(5):  # one may be Running already: two wait, then the next is refused
                accepted.append(smr.invoke_endpoint_async(EndpointName="fullq", InputLocation=location))
        assert 2 <= len(accepted) <= 3
        assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert "has 2 asynchronous requests waiting" in err.value.response["Error"]["Message"]
        for answer in accepted:
            assert json.loads(_get(s3, answer["OutputLocation"], timeout_s=60)) == {"echo": {"sleep": 2}}
        again = smr.invoke_endpoint_async(EndpointName="fullq", InputLocation=location)
        assert json.loads(_get(s3, again["OutputLocation"], timeout_s=60)) == {"echo": {"sleep": 2}}
    finally:
        server.stop()


@contextmanager
def _one_at_a_time(
    s3_server: SeaweedS3, echo_url: str, tmp_path: Path, flags: dict[str, Any], prefix: str
) -> Iterator[ServerProcess]:
    """A server with these queue bounds and two asynchronous endpoints, ``<prefix>-a`` and ``<prefix>-b``,
    each running one request at a time (the others wait in the queue)."""
    server = ServerProcess(
        tmp_path / "data", flags={"s3_endpoint_url": s3_server.endpoint_url, **flags}, env=s3_server.env()
    ).start()
    try:
        sm = server.client("sagemaker")
        for name in (f"{prefix}-a", f"{prefix}-b"):
            desc = _deploy_async(
                sm, name, echo_url, max_concurrency=1, ClientConfig={"MaxConcurrentInvocationsPerInstance": 1}
            )
            assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        yield server
    finally:
        server.stop()


def test_one_iam_user_cannot_fill_every_queue(
    s3_server: SeaweedS3, s3: Any, echo_url: str, tmp_path: Path
) -> None:
    """--async-max-queued-per-user counts one IAM user's waiting requests over all endpoints (each holds a
    row, and an inline input, in the database): past it that user is refused by name (503) while the admin
    is not, and nothing accepted is lost."""
    with _one_at_a_time(s3_server, echo_url, tmp_path, {"async_max_queued_per_user": 2}, "userq") as server:
        key = s3_tenant(server, "queuer", f"{BUCKET}/queuer")
        smr = server.client("sagemaker-runtime", key=key)
        slow = json.dumps({"sleep": 2}).encode()
        accepted = []
        with pytest.raises(ClientError) as err:
            for n in range(8):  # one running on each endpoint at most: two wait, then the next is refused
                endpoint = ("userq-a", "userq-b")[n % 2]
                accepted.append(smr.invoke_endpoint_async(EndpointName=endpoint, Body=slow))
        assert 2 <= len(accepted) <= 4
        assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        assert "as many as one IAM user may (zeroscale serve --async-max-queued-per-user)" in str(err.value)
        admin = server.client("sagemaker-runtime").invoke_endpoint_async(EndpointName="userq-a", Body=slow)
        for answer in [*accepted, admin]:
            assert json.loads(_get(s3, answer["OutputLocation"], timeout_s=60)) == {"echo": {"sleep": 2}}


def test_users_together_cannot_grow_the_queue_past_the_servers_bound(
    s3_server: SeaweedS3, s3: Any, echo_url: str, tmp_path: Path
) -> None:
    """--async-max-queued-total counts every waiting request, each user's and the admin's, over all
    endpoints: an IAM user and the admin, each far under its own bounds, fill it together; the next request
    of either is refused by name (503), none accepted is lost, and once they have run requests are taken
    again."""
    with _one_at_a_time(s3_server, echo_url, tmp_path, {"async_max_queued_total": 3}, "totalq") as server:
        tenant = server.client("sagemaker-runtime", key=s3_tenant(server, "totaler", f"{BUCKET}/totaler"))
        admin = server.client("sagemaker-runtime")
        slow = json.dumps({"sleep": 2}).encode()
        accepted = []
        with pytest.raises(ClientError) as err:
            for n in range(10):  # one running on each endpoint at most: three wait, then the next is refused
                client, endpoint = ((tenant, "totalq-a"), (admin, "totalq-b"))[n % 2]
                accepted.append(client.invoke_endpoint_async(EndpointName=endpoint, Body=slow))
        assert 3 <= len(accepted) <= 5
        assert err.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
        message = err.value.response["Error"]["Message"]
        assert "The server has 3 asynchronous requests waiting" in message
        assert "(zeroscale serve --async-max-queued-total)" in message
        with pytest.raises(ClientError, match="--async-max-queued-total"):  # whoever sends it, wherever
            (admin, tenant)[len(accepted) % 2].invoke_endpoint_async(EndpointName="totalq-a", Body=slow)
        for answer in accepted:
            assert json.loads(_get(s3, answer["OutputLocation"], timeout_s=60)) == {"echo": {"sleep": 2}}
        again = tenant.invoke_endpoint_async(EndpointName="totalq-b", Body=slow)
        assert json.loads(_get(s3, again["OutputLocation"], timeout_s=60)) == {"echo": {"sleep": 2}}


@pytest.mark.parametrize("endpoint", ["http://169.254.169.254/latest/meta-data/", "https://[fe80::1]:443/x"])
def test_a_subscription_to_a_link_local_address_is_refused(server: ServerProcess, endpoint: str) -> None:
    """The server makes the request a subscriber names: never to the cloud's metadata service."""
    sns = server.client("sns")
    topic = sns.create_topic(Name="ssrf")["TopicArn"]
    with pytest.raises(ClientError) as err:
        sns.subscribe(TopicArn=topic, Protocol=endpoint.split(":", 1)[0], Endpoint=endpoint)
    assert err.value.response["Error"]["Code"] == "InvalidParameter"
    assert "is a link-local address; zeroscale sends nothing there" in err.value.response["Error"]["Message"]


def test_a_tenant_reads_and_writes_only_the_s3_objects_its_policy_allows(
    server: ServerProcess, s3: Any, echo_url: str
) -> None:
    """The server reads and writes S3 with its own credentials, for whoever calls: a tenant allowed every
    SageMaker action still gets another tenant's model, input or output prefix only where its policy allows
    s3:GetObject / s3:PutObject on them, as an execution role would bound it on AWS."""
    key = s3_tenant(server, "tenant-a", f"{BUCKET}/tenant-a")
    sm, smr = server.client("sagemaker", key=key), server.client("sagemaker-runtime", key=key)

    def denied(call: Any, **kwargs: Any) -> str:
        with pytest.raises(ClientError) as err:
            call(**kwargs)
        assert err.value.response["Error"]["Code"] == "AccessDeniedException"
        message: str = err.value.response["Error"]["Message"]
        return message

    theirs = _put(s3, "tenant-b/model.tar.gz", Path(echo_url.removeprefix("file://")).read_bytes())
    container = {"Image": "sklearn", "ModelDataUrl": theirs}
    assert denied(sm.create_model, ModelName="stolen", PrimaryContainer=container).startswith(
        "User: arn:aws:iam::000000000000:user/tenant-a is not authorized to perform: s3:GetObject on "
        f"resource: arn:aws:s3:::{BUCKET}/tenant-b/model.tar.gz because"
    )
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": "any",
        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
    }
    into_theirs = {"OutputConfig": {"S3OutputPath": f"s3://{BUCKET}/tenant-b/out"}}
    message = denied(
        sm.create_endpoint_config,
        EndpointConfigName="spill",
        ProductionVariants=[variant],
        AsyncInferenceConfig=into_theirs,
    )
    assert f"s3:PutObject on resource: arn:aws:s3:::{BUCKET}/tenant-b/out/*" in message

    own = _put(s3, "tenant-a/model.tar.gz", Path(echo_url.removeprefix("file://")).read_bytes())
    output = {"S3OutputPath": f"s3://{BUCKET}/tenant-a/out"}
    assert _deploy_async(sm, "tenant-a-echo", own, OutputConfig=output)["EndpointStatus"] == "InService"
    secret = _put(s3, "tenant-b/secret.json", b'{"secret": 1}')
    message = denied(smr.invoke_endpoint_async, EndpointName="tenant-a-echo", InputLocation=secret)
    assert f"s3:GetObject on resource: arn:aws:s3:::{BUCKET}/tenant-b/secret.json" in message
    request = _put(s3, "tenant-a/in.json", b'{"n": 7}')
    answer = smr.invoke_endpoint_async(
        EndpointName="tenant-a-echo", InputLocation=request, ContentType="application/json"
    )
    assert json.loads(_get(s3, answer["OutputLocation"])) == {"echo": {"n": 7}}

    # Rights as they are when the server acts, hours after the call maybe: with a Deny on its own output
    # prefix added since, the configuration's creator has the server write nothing there (it wrote before)
    deny = {
        "Statement": [
            {"Effect": "Deny", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{BUCKET}/tenant-a/out/*"}
        ]
    }
    server.client("iam").put_user_policy(
        UserName="tenant-a", PolicyName="revoked", PolicyDocument=json.dumps(deny)
    )
    late = smr.invoke_endpoint_async(EndpointName="tenant-a-echo", InputLocation=request, InferenceId="late")
    wait_for(lambda: _status(server, "late")["Status"] == "Failed", timeout_s=30)
    reason = _status(server, "late")["FailureReason"]
    assert reason.startswith(
        "AccessDenied: the output was not written: User: arn:aws:iam::000000000000:user/"
        "tenant-a is not authorized to perform: s3:PutObject"
    ), reason
    assert "and the failure was not written" in reason
    assert not _exists(s3, late["OutputLocation"]) and not _exists(s3, late["FailureLocation"])
    sm.delete_endpoint(EndpointName="tenant-a-echo")


def test_an_inline_input_and_a_chosen_output_name(server: ServerProcess, s3: Any, echo_url: str) -> None:
    """InvokeEndpointAsync's Body (up to 128,000 bytes) in place of an InputLocation; S3OutputPathExtension
    and Filename name where the answer goes, and the failure goes to <Filename>-error.out beside it."""
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    output = {"S3OutputPath": f"s3://{BUCKET}/named/out", "S3FailurePath": f"s3://{BUCKET}/named/failed"}
    assert _deploy_async(sm, "named", echo_url, OutputConfig=output)["EndpointStatus"] == "InService"
    answer = smr.invoke_endpoint_async(
        EndpointName="named",
        Body=json.dumps({"inline": True}).encode(),
        ContentType="application/json",
        S3OutputPathExtension="2026/12/04",
        Filename="result.json",
    )
    assert answer["OutputLocation"] == f"s3://{BUCKET}/named/out/2026/12/04/result.json"
    assert answer["FailureLocation"] == f"s3://{BUCKET}/named/failed/2026/12/04/result.json-error.out"
    assert json.loads(_get(s3, answer["OutputLocation"])) == {"echo": {"inline": True}}
    status = _status(server, answer["InferenceId"])
    assert status["Status"] == "Completed" and "InputLocation" not in status
    failed = smr.invoke_endpoint_async(
        EndpointName="named", Body=b'{"fail": true}', ContentType="application/json", Filename="bad"
    )
    assert failed["FailureLocation"] == f"s3://{BUCKET}/named/failed/bad-error.out"
    assert b"asked to fail" in _get(s3, failed["FailureLocation"])
    default = smr.invoke_endpoint_async(EndpointName="named", Body=b"{}", ContentType="application/json")
    assert default["OutputLocation"] == f"s3://{BUCKET}/named/out/{default['InferenceId']}.out"
    assert json.loads(_get(s3, default["OutputLocation"])) == {"echo": {}}
    sm.delete_endpoint(EndpointName="named")


def test_a_deny_on_an_endpoint_holds_for_its_requests_looked_up_by_id(
    server: ServerProcess, s3: Any, echo_url: str
) -> None:
    """A security review's findings: an asynchronous request looked up by its InferenceId was authorized on
    "*" and never checked against its endpoint, and metrics/<anything>?endpoint= and workers/<anything>?
    endpoint= were authorized on "*" while their handlers read the endpoint: an explicit Deny on the
    endpoint did not hold."""
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    assert _deploy_async(sm, "private-echo", echo_url)["EndpointStatus"] == "InService"
    request = _put(s3, "private/in.json", b'{"n": 1}')
    inference_id = smr.invoke_endpoint_async(
        EndpointName="private-echo", InputLocation=request, ContentType="application/json"
    )["InferenceId"]
    iam = server.client("iam")
    iam.create_user(UserName="peeker")
    reads = ["zeroscale:GetAsyncRequests", "zeroscale:GetMetrics", "zeroscale:ListWorkers"]
    policy = {
        "Statement": [
            {"Effect": "Allow", "Action": reads, "Resource": "*"},
            {"Effect": "Deny", "Action": "*", "Resource": "arn:aws:sagemaker:*:*:endpoint/private-*"},
        ]
    }
    iam.put_user_policy(UserName="peeker", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="peeker")["AccessKey"]

    def get(route: str) -> tuple[int, bytes]:
        url = f"{server.url}/zeroscale/v1/{route}"
        req = AWSRequest("GET", url)
        SigV4Auth(Credentials(key["AccessKeyId"], key["SecretAccessKey"]), "sagemaker", "us-east-1").add_auth(
            req
        )
        try:
            with urllib.request.urlopen(
                urllib.request.Request(url, headers=dict(req.headers)), timeout=30
            ) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    status, body = get(f"async/{inference_id}")
    assert status == 400 and b"AccessDeniedException" in body and b"endpoint/private-echo" in body, body
    for route in ("metrics", "workers"):
        status, body = get(f"{route}/x?endpoint=private-echo")
        assert status == 400 and b"No zeroscale API at" in body, (route, body)
        assert b"explicit deny" in get(f"{route}?endpoint=private-echo")[1], route

    # An InferenceId is the caller's to choose: another tenant's newer request under the same one hides
    # none of the peeker's own (the lookup was the newest of any endpoint's), and ?endpoint= names whose.
    assert _deploy_async(sm, "peeker-echo", echo_url)["EndpointStatus"] == "InService"
    mine = smr.invoke_endpoint_async(
        EndpointName="peeker-echo",
        InputLocation=request,
        InferenceId="shared-id",
        ContentType="application/json",
    )
    theirs = smr.invoke_endpoint_async(
        EndpointName="private-echo",
        InputLocation=request,
        InferenceId="shared-id",
        ContentType="application/json",
    )
    assert mine["InferenceId"] == theirs["InferenceId"] == "shared-id"
    status, body = get("async/shared-id")
    assert status == 200 and json.loads(body)["EndpointName"] == "peeker-echo", body
    status, body = get("async/shared-id?endpoint=peeker-echo")
    assert status == 200 and json.loads(body)["OutputLocation"] == mine["OutputLocation"], body
    status, body = get("async/shared-id?endpoint=private-echo")
    assert status == 400 and b"explicit deny" in body, body
    assert _status(server, "shared-id", endpoint="private-echo")["EndpointName"] == "private-echo"  # admin
    assert _status(server, "shared-id", endpoint="peeker-echo")["EndpointName"] == "peeker-echo"
    sm.delete_endpoint(EndpointName="private-echo")
    sm.delete_endpoint(EndpointName="peeker-echo")
