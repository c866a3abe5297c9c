"""Several containers in one model, through the real server and real boto3: an inference pipeline (Serial)
whose stages each record what they received, a failing stage named by its ContainerHostname, Direct mode
with X-Amzn-SageMaker-Target-Container-Hostname, one log stream per container, and a model whose data is
an uncompressed S3 prefix (ModelDataSource) in SeaweedFS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from e2e.conftest import handler_model
from metrics.promtext import value
from s3server import SeaweedS3
from zeroscale.testing import SKLEARN_IMAGE, ServerProcess, make_tar, wait_final, wait_for

BUCKET = "pipelines"
TRAIL = "application/x-trail+json"

# One stage: STAGE names it. The first stage starts a trail from the client's body; every stage appends
# what it received (its Content-Type and Accept) and answers with a content type of its own, which the
# next stage must receive. FAIL_AT names a stage that fails.
STAGE = """
import json
import os


def model_fn(model_dir):
    scale = os.path.join(model_dir, "scale.txt")
    return {"stage": os.environ["STAGE"], "scale": open(scale).read() if os.path.exists(scale) else None}


def transform_fn(model, body, content_type, accept):
    if model["stage"] == os.environ.get("ALLOC_AT") and body == b"alloc":
        import numpy as np

        big = np.ones(250_000_000)  # ~2 GB, every page touched: past this container's memory
        return str(big.sum()), "text/plain"
    if model["stage"] == os.environ.get("FAIL_AT"):
        raise ValueError("stage " + model["stage"] + " cannot go on")
    if content_type.startswith("application/x-after-"):
        trail = json.loads(body)
    else:
        trail = {"input": body.decode(), "stages": []}
    trail["stages"].append(
        {
            "stage": model["stage"],
            "content_type": content_type,
            "accept": accept,
            "scale": model["scale"],
            "batch": os.environ.get("SAGEMAKER_BATCH"),
        }
    )
    return json.dumps(trail), "application/x-after-" + model["stage"]
"""


@pytest.fixture(scope="module")
def s3(s3_server: SeaweedS3) -> Any:
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def server(s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data_dir = tmp_path_factory.mktemp("pipelines") / "data"
    proc = ServerProcess(data_dir, flags={"s3_endpoint_url": s3_server.endpoint_url}, env=s3_server.env())
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def sm(server: ServerProcess) -> Any:
    return server.client("sagemaker")


@pytest.fixture(scope="module")
def smr(server: ServerProcess) -> Any:
    return server.client("sagemaker-runtime")


@pytest.fixture(scope="module")
def stage_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return handler_model(tmp_path_factory.mktemp("stage"), STAGE)


def container(url: str, hostname: str, **env: str) -> dict[str, Any]:
    return {
        "Image": SKLEARN_IMAGE,
        "ModelDataUrl": url,
        "ContainerHostname": hostname,
        "Environment": {"STAGE": hostname, **env},
    }


def endpoint(sm: Any, name: str, containers: list[dict[str, Any]], mode: str | None = None) -> dict[str, Any]:
    extra = {"InferenceExecutionConfig": {"Mode": mode}} if mode else {}
    sm.create_model(ModelName=name, Containers=containers, **extra)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    desc: dict[str, Any] = wait_final(sm, name)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return desc


def error(smr: Any, **kw: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as err:
        smr.invoke_endpoint(**kw)
    response: dict[str, Any] = err.value.response
    return response


def test_serial_pipeline_runs_every_stage_in_order(
    sm: Any, smr: Any, server: ServerProcess, stage_url: str
) -> None:
    desc = endpoint(
        sm, "three-stages", [container(stage_url, h) for h in ("one", "two", "three")], mode="Serial"
    )
    images = desc["ProductionVariants"][0]["DeployedImages"]
    assert [i["SpecifiedImage"] for i in images] == [SKLEARN_IMAGE] * 3
    model = sm.describe_model(ModelName="three-stages")
    assert model["InferenceExecutionConfig"] == {"Mode": "Serial"}
    assert [c["ContainerHostname"] for c in model["Containers"]] == ["one", "two", "three"]

    resp = smr.invoke_endpoint(
        EndpointName="three-stages", Body=b"hello", ContentType="text/csv", Accept="application/x-final"
    )
    assert resp["ContentType"] == "application/x-after-three"  # the last container's answer
    trail = json.loads(resp["Body"].read())
    assert trail["input"] == "hello"
    assert [(s["stage"], s["content_type"]) for s in trail["stages"]] == [
        ("one", "text/csv"),
        ("two", "application/x-after-one"),
        ("three", "application/x-after-two"),
    ]
    # the client's Accept goes to the last container; the others answer in their own default
    assert trail["stages"][2]["accept"] == "application/x-final"
    assert trail["stages"][0]["accept"] != "application/x-final"

    # one request is one invocation of the variant (metrics, and metering from the same record)
    metrics = server.metrics()
    labels = {"endpoint_name": "three-stages", "variant_name": "AllTraffic"}
    assert value(metrics, "zeroscale_invocations_total", **labels) == 1
    assert value(metrics, "zeroscale_model_latency_seconds_count", **labels) == 1
    assert value(metrics, "zeroscale_cold_starts_total", **labels) == 3  # a worker per container

    # one log stream per container: each container's workers carry its hostname
    logs = server.client("logs")
    streams = logs.describe_log_streams(logGroupName="/aws/sagemaker/Endpoints/three-stages")["logStreams"]
    names = [s["logStreamName"] for s in streams]
    for hostname in ("one", "two", "three"):
        assert any(n.startswith(f"AllTraffic/{hostname}-") for n in names), names

    # a request to a pipeline cannot target one of its containers
    refused = error(smr, EndpointName="three-stages", Body=b"x", TargetContainerHostname="two")
    assert refused["Error"]["Code"] == "ValidationError"
    assert "TargetContainerHostname" in refused["Error"]["Message"]


def test_a_failing_stage_is_named_by_its_hostname(sm: Any, smr: Any, stage_url: str) -> None:
    stages = [container(stage_url, h, FAIL_AT="scorer") for h in ("prep", "scorer", "post")]
    endpoint(sm, "failing-stage", stages)  # Serial by default
    response = error(smr, EndpointName="failing-stage", Body=b"x", ContentType="text/csv")
    assert response["Error"]["Code"] == "ModelError"
    assert "from scorer" in response["Error"]["Message"], response["Error"]["Message"]
    assert "stage scorer cannot go on" in response["OriginalMessage"]
    assert ":log-stream:AllTraffic/scorer-" in response["LogStreamArn"]


def test_a_container_past_its_memory_is_named_and_the_pipeline_recovers(
    sm: Any, smr: Any, stage_url: str
) -> None:
    endpoint(sm, "memory-stage", [container(stage_url, h, ALLOC_AT="hog") for h in ("hog", "post")])
    response = error(smr, EndpointName="memory-stage", Body=b"alloc", ContentType="text/plain")
    assert response["Error"]["Code"] == "ModelError"
    assert "from hog" in response["Error"]["Message"]
    assert "MemorySizeInMB" in response["OriginalMessage"]
    resp = smr.invoke_endpoint(EndpointName="memory-stage", Body=b"fine", ContentType="text/plain")
    assert [s["stage"] for s in json.loads(resp["Body"].read())["stages"]] == ["hog", "post"]

    # new capacities reach every container's pool; the pipeline keeps serving
    sm.update_endpoint_weights_and_capacities(
        EndpointName="memory-stage",
        DesiredWeightsAndCapacities=[
            {
                "VariantName": "AllTraffic",
                "ServerlessUpdateConfig": {"MaxConcurrency": 3, "ProvisionedConcurrency": 1},
            }
        ],
    )
    desc = wait_final(sm, "memory-stage")
    assert desc["ProductionVariants"][0]["CurrentServerlessConfig"]["MaxConcurrency"] == 3
    resp = smr.invoke_endpoint(EndpointName="memory-stage", Body=b"again", ContentType="text/plain")
    assert [s["stage"] for s in json.loads(resp["Body"].read())["stages"]] == ["hog", "post"]


def test_a_transform_job_runs_the_pipeline(sm: Any, s3: Any, stage_url: str) -> None:
    sm.create_model(
        ModelName="batch-pipeline", Containers=[container(stage_url, h) for h in ("first", "second")]
    )
    s3.put_object(Bucket=BUCKET, Key="batch/in/data.txt", Body=b"record")
    sm.create_transform_job(
        TransformJobName="batch-pipeline",
        ModelName="batch-pipeline",
        TransformInput={
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/batch/in/"}},
            "ContentType": "text/csv",
        },
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/batch/out"},
        TransformResources={"InstanceType": "ml.m5.large", "InstanceCount": 1},
    )
    wait_for(
        lambda: (
            sm.describe_transform_job(TransformJobName="batch-pipeline")["TransformJobStatus"]
            in ("Completed", "Failed", "Stopped")
        ),
        timeout_s=120,
    )
    desc = sm.describe_transform_job(TransformJobName="batch-pipeline")
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    out = json.loads(s3.get_object(Bucket=BUCKET, Key="batch/out/data.txt.out")["Body"].read())
    assert out["input"] == "record"
    assert [(s["stage"], s["batch"]) for s in out["stages"]] == [("first", "true"), ("second", "true")]


def test_direct_mode_serves_the_container_named(sm: Any, smr: Any, stage_url: str) -> None:
    endpoint(sm, "direct", [container(stage_url, h) for h in ("alpha", "beta")], mode="Direct")
    for hostname in ("beta", "alpha"):
        resp = smr.invoke_endpoint(
            EndpointName="direct", Body=b"hi", ContentType="text/plain", TargetContainerHostname=hostname
        )
        assert resp["ContentType"] == f"application/x-after-{hostname}"
        assert [s["stage"] for s in json.loads(resp["Body"].read())["stages"]] == [hostname]

    missing = error(smr, EndpointName="direct", Body=b"hi", ContentType="text/plain")
    assert missing["Error"]["Code"] == "ValidationError"
    assert "X-Amzn-SageMaker-Target-Container-Hostname" in missing["Error"]["Message"]
    unknown = error(smr, EndpointName="direct", Body=b"hi", TargetContainerHostname="gamma")
    assert unknown["Error"]["Code"] == "ValidationError"
    assert "gamma" in unknown["Error"]["Message"] and "alpha, beta" in unknown["Error"]["Message"]

    # a model of several containers does not stream: refused by name, not served by one container
    with pytest.raises(ClientError) as streamed:
        smr.invoke_endpoint_with_response_stream(EndpointName="direct", Body=b"hi", ContentType="text/plain")
    assert streamed.value.response["Error"]["Code"] == "ValidationError"
    assert "several containers (alpha, beta)" in streamed.value.response["Error"]["Message"]


def test_target_container_on_a_single_container_endpoint(sm: Any, smr: Any, stage_url: str) -> None:
    endpoint(sm, "single", [container(stage_url, "only")])
    resp = smr.invoke_endpoint(EndpointName="single", Body=b"x", ContentType="text/plain")
    assert json.loads(resp["Body"].read())["stages"][0]["stage"] == "only"
    refused = error(smr, EndpointName="single", Body=b"x", TargetContainerHostname="only")
    assert refused["Error"]["Code"] == "ValidationError"


def test_bad_containers_are_refused_by_name(sm: Any, stage_url: str) -> None:
    def refused(**kw: Any) -> str:
        with pytest.raises(ClientError) as err:
            sm.create_model(ModelName="bad", **kw)
        assert err.value.response["Error"]["Code"] == "ValidationException", err.value.response
        message: str = err.value.response["Error"]["Message"]
        return message

    twice = [container(stage_url, "same"), container(stage_url, "same")]
    assert "ContainerHostname same" in refused(Containers=twice)
    bogus = refused(Containers=[container(stage_url, "a")], InferenceExecutionConfig={"Mode": "Bogus"})
    assert "'Bogus' at 'inferenceExecutionConfig.mode'" in bogus  # botocore's enum, in AWS's words
    assert "InferenceExecutionConfig" in refused(
        PrimaryContainer=container(stage_url, "a"), InferenceExecutionConfig={"Mode": "Serial"}
    )
    sixteen = [container(stage_url, f"c{i}") for i in range(16)]
    assert "'containers' failed to satisfy constraint" in refused(Containers=sixteen)  # at most 15


def test_model_data_from_an_s3_prefix(sm: Any, smr: Any, s3: Any) -> None:
    s3.put_object(Bucket=BUCKET, Key="big-model/code/inference.py", Body=STAGE.encode())
    s3.put_object(Bucket=BUCKET, Key="big-model/scale.txt", Body=b"42")
    s3.put_object(Bucket=BUCKET, Key="big-model/nested/dir/weights.bin", Body=b"\0" * 1000)
    source = {
        "S3DataSource": {
            "S3Uri": f"s3://{BUCKET}/big-model/",
            "S3DataType": "S3Prefix",
            "CompressionType": "None",
        }
    }
    uncompressed = {"Image": SKLEARN_IMAGE, "ModelDataSource": source, "Environment": {"STAGE": "prefix"}}
    sm.create_model(ModelName="from-prefix", PrimaryContainer=uncompressed)
    assert sm.describe_model(ModelName="from-prefix")["PrimaryContainer"]["ModelDataSource"] == source
    sm.create_endpoint_config(
        EndpointConfigName="from-prefix",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "from-prefix",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="from-prefix", EndpointConfigName="from-prefix")
    desc = wait_final(sm, "from-prefix")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resp = smr.invoke_endpoint(EndpointName="from-prefix", Body=b"x", ContentType="text/plain")
    assert json.loads(resp["Body"].read())["stages"][0]["scale"] == "42"  # read from the prefix

    def refused(s3_source: dict[str, Any], **extra: Any) -> str:
        bad = {"Image": SKLEARN_IMAGE, "ModelDataSource": {"S3DataSource": s3_source}, **extra}
        with pytest.raises(ClientError) as err:
            sm.create_model(ModelName="bad-source", PrimaryContainer=bad)
        assert err.value.response["Error"]["Code"] == "ValidationException"
        message: str = err.value.response["Error"]["Message"]
        return message

    good = source["S3DataSource"]
    assert "one object (S3DataType S3Object" in refused({**good, "CompressionType": "Gzip"})
    assert "ETag names one object" in refused({**good, "ETag": '"abc"'})
    assert "ending with '/'" in refused({**good, "S3Uri": f"s3://{BUCKET}/big-model"})
    one = {"S3DataType": "S3Object", "CompressionType": "Gzip"}
    assert "must name one S3 object" in refused({**one, "S3Uri": f"s3://{BUCKET}/big-model/"})
    uncompressed_object = {**one, "CompressionType": "None", "S3Uri": f"s3://{BUCKET}/m.bin"}
    assert "is not served by zeroscale yet" in refused(uncompressed_object)
    assert "ModelDataUrl or ModelDataSource" in refused(good, ModelDataUrl=f"s3://{BUCKET}/m.tar.gz")


def test_model_data_from_one_archive_with_its_etag(sm: Any, smr: Any, s3: Any, tmp_path: Path) -> None:
    """ModelDataSource naming one tar.gz (S3Object, Gzip), as the sagemaker SDK's dict model_data does: its
    ETag, when given, must be the object's when the endpoint deploys (another one fails it, by name)."""
    archive = make_tar(tmp_path / "model.tar.gz", {"code/inference.py": STAGE.encode(), "scale.txt": b"7"})
    put = s3.put_object(Bucket=BUCKET, Key="archives/model.tar.gz", Body=archive.read_bytes())
    source = {
        "S3Uri": f"s3://{BUCKET}/archives/model.tar.gz",
        "S3DataType": "S3Object",
        "CompressionType": "Gzip",
        "ETag": put["ETag"],
    }

    def deploy_source(name: str, data: dict[str, Any]) -> dict[str, Any]:
        container = {
            "Image": SKLEARN_IMAGE,
            "ModelDataSource": {"S3DataSource": data},
            "Environment": {"STAGE": "o"},
        }
        sm.create_model(ModelName=name, PrimaryContainer=container)
        variant = {
            "VariantName": "AllTraffic",
            "ModelName": name,
            "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
        }
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        return wait_final(sm, name)

    desc = deploy_source("from-object", source)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resp = smr.invoke_endpoint(EndpointName="from-object", Body=b"x", ContentType="text/plain")
    assert json.loads(resp["Body"].read())["stages"][0]["scale"] == "7"
    stale = deploy_source("stale-object", {**source, "ETag": '"0123456789abcdef0123456789abcdef"'})
    assert stale["EndpointStatus"] == "Failed"
    assert "the object changed since the model was made" in stale["FailureReason"]
    assert put["ETag"] in stale["FailureReason"]


def test_an_empty_prefix_fails_the_endpoint_by_name(sm: Any, s3: Any) -> None:
    source = {
        "S3DataSource": {
            "S3Uri": f"s3://{BUCKET}/nothing/",
            "S3DataType": "S3Prefix",
            "CompressionType": "None",
        }
    }
    sm.create_model(
        ModelName="empty-prefix", PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataSource": source}
    )
    sm.create_endpoint_config(
        EndpointConfigName="empty-prefix",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "empty-prefix",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="empty-prefix", EndpointConfigName="empty-prefix")
    desc = wait_final(sm, "empty-prefix")
    assert desc["EndpointStatus"] == "Failed"
    assert f"s3://{BUCKET}/nothing/" in desc["FailureReason"]


def test_a_pipeline_serves_again_after_a_restart(server: ServerProcess, stage_url: str) -> None:
    sm = server.client("sagemaker")
    endpoint(sm, "restarted", [container(stage_url, h) for h in ("left", "right")], mode="Serial")
    server.restart()
    smr = server.client("sagemaker-runtime")
    resp = smr.invoke_endpoint(EndpointName="restarted", Body=b"again", ContentType="text/csv")
    assert resp["ContentType"] == "application/x-after-right"
    assert [s["stage"] for s in json.loads(resp["Body"].read())["stages"]] == ["left", "right"]
