"""Batch transform end to end: boto3's CreateTransformJob / Describe / List / Stop and its waiter, inputs and
outputs in real S3 (SeaweedFS), the model's real workers started for the job; a job that survives SIGKILL."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from botocore.exceptions import ClientError

from e2e.conftest import SklearnModel, handler_model, s3_tenant
from s3server import SeaweedS3
from zeroscale.batch.runner import MAX_INPUT_FILES
from zeroscale.store.db import Store
from zeroscale.testing import ACCESS_KEY, SECRET_KEY, ServerProcess, make_tar, wait_for

BUCKET = "zeroscale-batch"
INSTANCE = {"InstanceType": "ml.c5.2xlarge", "InstanceCount": 1}

# Echoes each CSV line, after sleeping its first value in seconds.
SLOW_ECHO = """
import time

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    text = body.decode() if isinstance(body, bytes) else body
    time.sleep(float(text.split(",")[0]))
    return text, "text/csv"
"""


@pytest.fixture(scope="module")
def s3(s3_server: SeaweedS3) -> Any:
    client = s3_server.client()
    client.create_bucket(Bucket=BUCKET)
    return client


def _server(s3_server: SeaweedS3, data_dir: Path, **flags: Any) -> ServerProcess:
    return ServerProcess(
        data_dir, flags={"s3_endpoint_url": s3_server.endpoint_url, **flags}, env=s3_server.env()
    )


def _slow(server: ServerProcess, tmp_path: Path) -> Any:
    """The server's SageMaker client, with model "slow" (SLOW_ECHO) made."""
    sm = server.client("sagemaker")
    url = handler_model(tmp_path, SLOW_ECHO)
    sm.create_model(ModelName="slow", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url})
    return sm


@pytest.fixture(scope="module")
def server(s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = _server(s3_server, tmp_path_factory.mktemp("transform") / "data").start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def sm(server: ServerProcess, sklearn_model: SklearnModel) -> Any:
    client = server.client("sagemaker")
    client.create_model(
        ModelName="rf", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": sklearn_model.url}
    )
    return client


def _csv(rows: np.ndarray) -> bytes:
    return "".join(",".join(repr(float(v)) for v in row) + "\n" for row in rows).encode()


def _job(sm: Any, name: str, model: str, prefix: str, **extra: Any) -> None:
    transform_input: dict[str, Any] = {
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/{prefix}"}},
        "ContentType": "text/csv",
        "SplitType": "Line",
        **extra.pop("TransformInput", {}),
    }
    sm.create_transform_job(
        TransformJobName=name,
        ModelName=model,
        TransformInput=transform_input,
        TransformOutput={
            "S3OutputPath": f"s3://{BUCKET}/{name}/out",
            "Accept": "text/csv",
            "AssembleWith": "Line",
        },
        TransformResources=extra.pop("TransformResources", INSTANCE),
        **extra,
    )


def _wait(sm: Any, name: str) -> dict[str, Any]:
    sm.get_waiter("transform_job_completed_or_stopped").wait(
        TransformJobName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120}
    )
    desc: dict[str, Any] = sm.describe_transform_job(TransformJobName=name)
    return desc


def _read(s3: Any, key: str) -> str:
    return str(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode())


def test_multi_record_lines_keep_input_order_per_file(
    server: ServerProcess, sm: Any, s3: Any, sklearn_model: SklearnModel
) -> None:
    """Two files under a prefix (one in a sub-folder), MultiRecord mini-batches of at most 1 MB: each file
    gets <relative path>.out with one prediction per input line, in order; the workers go afterwards."""
    a, b = sklearn_model.X[:120], sklearn_model.X[120:200]
    s3.put_object(Bucket=BUCKET, Key="multi/in/a.csv", Body=_csv(a))
    s3.put_object(Bucket=BUCKET, Key="multi/in/sub/b.csv", Body=_csv(b))
    _job(
        sm,
        "multi",
        "rf",
        "multi/in/",
        BatchStrategy="MultiRecord",
        MaxPayloadInMB=1,
        MaxConcurrentTransforms=2,
    )
    desc = _wait(sm, "multi")
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["TransformStartTime"] <= desc["TransformEndTime"]
    assert desc["BatchStrategy"] == "MultiRecord" and desc["MaxConcurrentTransforms"] == 2
    for key, rows in (("multi/out/a.csv.out", a), ("multi/out/sub/b.csv.out", b)):
        lines = _read(s3, key).splitlines()
        assert [int(float(v)) for v in lines] == sklearn_model.expected(rows)
    done = _wait_cli(server, "multi")
    assert done.returncode == 0, done.stderr
    assert "multi: Completed (2 of 2 files, 200 records)" in done.stdout
    summaries = sm.list_transform_jobs(StatusEquals="Completed")["TransformJobSummaries"]
    assert "multi" in {s["TransformJobName"] for s in summaries}
    # a finished job keeps no copy of its model (only a job that runs reads it; one of a 15-container model
    # made each finished job's record 0.5 MB, kept for ever)
    store = Store(server.db_url)
    record = store.get("transform-job", "multi")
    store.close()
    assert record is not None and "ZeroscaleModel" not in record.doc
    wait_for(lambda: server.workers("transform-job:multi", "multi") == 0, timeout_s=10)

    # The job's workers logged where SageMaker puts them (and the sagemaker SDK's Transformer.wait(logs=True)
    # reads them): the one group /aws/sagemaker/TransformJobs, one stream per worker named <job>/<worker>,
    # each with its lifecycle; no endpoint group appears for the job.
    logs = server.client("logs")
    groups = [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]
    assert "/aws/sagemaker/TransformJobs" in groups
    assert not [g for g in groups if "transform-job" in g or g.startswith("/aws/sagemaker/TransformJobs/")]
    streams = logs.describe_log_streams(
        logGroupName="/aws/sagemaker/TransformJobs", logStreamNamePrefix="multi/"
    )["logStreams"]
    workers = [s["logStreamName"] for s in streams if s["logStreamName"].split("/")[1][:1].isdigit()]
    assert len(workers) == 2 and all(name.startswith("multi/") for name in workers)
    every = logs.describe_log_streams(logGroupName="/aws/sagemaker/TransformJobs")["logStreams"]
    assert {s["logStreamName"] for s in streams} <= {s["logStreamName"] for s in every}  # and the others'
    events = logs.get_log_events(
        logGroupName="/aws/sagemaker/TransformJobs", logStreamName=workers[0], startFromHead=True
    )["events"]
    assert any("started" in e["message"] for e in events)
    with pytest.raises(ClientError) as err:  # a job's router key is no endpoint's group
        logs.describe_log_streams(logGroupName="/aws/sagemaker/Endpoints/transform-job:multi")
    assert err.value.response["Error"]["Code"] == "ValidationException"  # not a log group name


def test_gzip_single_record_and_a_rejected_file(
    server: ServerProcess, sm: Any, s3: Any, sklearn_model: SklearnModel
) -> None:
    """Gzip input, one record per request; a file the model rejects gets no .out, the others do, and the job
    ends Failed naming the file."""
    rows = sklearn_model.X[:10]
    s3.put_object(Bucket=BUCKET, Key="gz/in/good.csv", Body=gzip.compress(_csv(rows)))
    s3.put_object(Bucket=BUCKET, Key="gz/in/bad.csv", Body=gzip.compress(b"not,a,number,row\n"))
    _job(
        sm,
        "gz",
        "rf",
        "gz/in/",
        BatchStrategy="SingleRecord",
        ModelClientConfig={"InvocationsTimeoutInSeconds": 30, "InvocationsMaxRetries": 0},
        TransformInput={"CompressionType": "Gzip"},
    )
    desc = _wait_failed(sm, "gz")
    assert desc["TransformJobStatus"] == "Failed"
    assert "gz/in/bad.csv" in desc["FailureReason"]
    failed = _wait_cli(server, "gz")
    assert failed.returncode == 1 and "gz: Failed (1 of 2 files, 10 records)" in failed.stdout
    assert [int(float(v)) for v in _read(s3, "gz/out/good.csv.out").splitlines()] == sklearn_model.expected(
        rows
    )
    with pytest.raises(ClientError):
        s3.head_object(Bucket=BUCKET, Key="gz/out/bad.csv.out")


def _wait_failed(sm: Any, name: str) -> dict[str, Any]:
    wait_for(
        lambda: sm.describe_transform_job(TransformJobName=name)["TransformJobStatus"] != "InProgress", 60
    )
    desc: dict[str, Any] = sm.describe_transform_job(TransformJobName=name)
    return desc


def test_data_processing_filters_and_join(
    server: ServerProcess, sm: Any, s3: Any, sklearn_model: SklearnModel
) -> None:
    """An id column dropped by InputFilter ($[1:4], inclusive: the four features), the prediction joined to
    the input row (JoinSource Input) and OutputFilter keeping the id and the prediction."""
    rows = sklearn_model.X[:25]
    body = "".join(f"id{i}," + ",".join(repr(float(v)) for v in row) + "\n" for i, row in enumerate(rows))
    s3.put_object(Bucket=BUCKET, Key="join/in/rows.csv", Body=body.encode())
    _job(
        sm,
        "join",
        "rf",
        "join/in/",
        BatchStrategy="MultiRecord",
        DataProcessing={"InputFilter": "$[1:4]", "JoinSource": "Input", "OutputFilter": "$[0,-1]"},
    )
    desc = _wait(sm, "join")
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    assert desc["DataProcessing"]["JoinSource"] == "Input"
    expected = [f"id{i},{p}" for i, p in enumerate(sklearn_model.expected(rows))]
    got = [
        line.split(",")[0] + "," + str(int(float(line.split(",")[1])))
        for line in _read(s3, "join/out/rows.csv.out").splitlines()
    ]
    assert got == expected


def test_a_prefix_with_nothing_under_it_fails_the_job(sm: Any) -> None:
    """As SageMaker: no input is a failed job, not a Completed one that wrote nothing."""
    _job(sm, "nothing-here", "rf", "nothing-here/in/")
    desc = _wait_failed(sm, "nothing-here")
    assert desc["TransformJobStatus"] == "Failed"
    assert f"No S3 objects found under S3 URL 's3://{BUCKET}/nothing-here/in/'" in desc["FailureReason"]


ENV_ECHO = """
import json, os

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    names = ("SAGEMAKER_BATCH", "SAGEMAKER_BATCH_STRATEGY", "SAGEMAKER_MAX_PAYLOAD_IN_MB",
             "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", "JOB_SETTING")
    seen = {n: os.environ.get(n) for n in names}
    text = body.decode() if isinstance(body, bytes) else body
    return json.dumps({"body": text, "env": seen}), "application/json"
"""


def test_manifest_file_and_the_batch_environment(
    server: ServerProcess, sm: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A ManifestFile names the inputs (not every object under the prefix); the worker sees the job's
    Environment and SAGEMAKER_BATCH, _BATCH_STRATEGY, _MAX_PAYLOAD_IN_MB, _MAX_CONCURRENT_TRANSFORMS."""
    url = handler_model(tmp_path_factory.mktemp("env-echo"), ENV_ECHO)
    sm.create_model(ModelName="env-echo", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url})
    for name in ("one", "two", "skipped"):
        s3.put_object(Bucket=BUCKET, Key=f"manifest/data/{name}.txt", Body=name.encode())
    manifest = json.dumps([{"prefix": f"s3://{BUCKET}/manifest/data/"}, "one.txt", "two.txt"])
    s3.put_object(Bucket=BUCKET, Key="manifest/list.manifest", Body=manifest.encode())
    sm.create_transform_job(
        TransformJobName="manifest",
        ModelName="env-echo",
        MaxPayloadInMB=2,
        BatchStrategy="SingleRecord",
        Environment={"JOB_SETTING": "from-the-job"},
        TransformInput={
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "ManifestFile",
                    "S3Uri": f"s3://{BUCKET}/manifest/list.manifest",
                }
            },
            "ContentType": "text/plain",
        },
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/manifest/out"},
        TransformResources=INSTANCE,
    )
    assert _wait(sm, "manifest")["TransformJobStatus"] == "Completed"
    for name in ("one", "two"):
        doc = json.loads(_read(s3, f"manifest/out/{name}.txt.out"))
        assert doc["body"] == name
        assert doc["env"] == {
            "SAGEMAKER_BATCH": "true",
            "SAGEMAKER_BATCH_STRATEGY": "SINGLE_RECORD",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2",
            "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "1",
            "JOB_SETTING": "from-the-job",
        }
    assert not _has(s3, "manifest/out/skipped.txt.out")


def test_a_manifest_past_the_input_limit_fails_the_job_saying_so(
    server: ServerProcess, sm: Any, s3: Any
) -> None:
    """Every input is listed before a job starts: past MAX_INPUT_FILES the job fails, naming the limit,
    rather than holding millions of entries (the model is never started)."""
    names = [f"f{i}.txt" for i in range(MAX_INPUT_FILES + 1)]
    manifest = json.dumps([{"prefix": f"s3://{BUCKET}/huge/data/"}, *names])
    s3.put_object(Bucket=BUCKET, Key="huge/list.manifest", Body=manifest.encode())
    sm.create_model(
        ModelName="huge", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": "s3://bucket/model.tar.gz"}
    )
    sm.create_transform_job(
        TransformJobName="huge",
        ModelName="huge",
        TransformInput={
            "DataSource": {
                "S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": f"s3://{BUCKET}/huge/list.manifest"}
            },
        },
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/huge/out"},
        TransformResources=INSTANCE,
    )
    desc = _wait_failed(sm, "huge")
    assert desc["TransformJobStatus"] == "Failed"
    assert f"the manifest names {MAX_INPUT_FILES + 1} files" in desc["FailureReason"]
    assert "Split it over several jobs" in desc["FailureReason"]


def test_a_tenants_manifest_reads_only_the_objects_its_policy_allows(
    server: ServerProcess, s3: Any, tmp_path: Path
) -> None:
    """A manifest names its objects, under any prefix, and is read after CreateTransformJob: each object is
    checked then, with the job's creator's s3:GetObject (not a blanket ``arn:aws:s3:::*`` at the call).
    One the tenant may not read fails the job, naming it, before the model reads anything."""
    sm = server.client("sagemaker", key=s3_tenant(server, "batch-tenant", f"{BUCKET}/batch-tenant"))
    url = handler_model(tmp_path, ENV_ECHO)
    sm.create_model(ModelName="tenant-echo", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url})
    s3.put_object(Bucket=BUCKET, Key="batch-tenant/data/one.txt", Body=b"one")
    s3.put_object(Bucket=BUCKET, Key="elsewhere/secret.txt", Body=b"another tenant's")

    def job(name: str, prefix: str, *entries: str) -> dict[str, Any]:
        listed = json.dumps([{"prefix": f"s3://{BUCKET}/{prefix}"}, *entries]).encode()
        s3.put_object(Bucket=BUCKET, Key=f"batch-tenant/{name}.manifest", Body=listed)
        manifest = {"S3DataType": "ManifestFile", "S3Uri": f"s3://{BUCKET}/batch-tenant/{name}.manifest"}
        sm.create_transform_job(
            TransformJobName=name,
            ModelName="tenant-echo",
            TransformInput={"DataSource": {"S3DataSource": manifest}, "ContentType": "text/plain"},
            TransformOutput={"S3OutputPath": f"s3://{BUCKET}/batch-tenant/{name}"},
            TransformResources=INSTANCE,
        )
        return _wait_failed(sm, name)

    failed = job("reach", "", "batch-tenant/data/one.txt", "elsewhere/secret.txt")
    assert failed["TransformJobStatus"] == "Failed"
    assert failed["FailureReason"] == (
        f"ClientError: the manifest s3://{BUCKET}/batch-tenant/reach.manifest names "
        f"s3://{BUCKET}/elsewhere/secret.txt, which it may not read: User: "
        "arn:aws:iam::000000000000:user/batch-tenant is not authorized to perform: s3:GetObject on "
        f"resource: arn:aws:s3:::{BUCKET}/elsewhere/secret.txt because no identity-based policy allows the "
        "s3:GetObject action"
    )
    assert not _has(s3, "batch-tenant/reach/batch-tenant/data/one.txt.out")  # nothing was run
    assert job("own", "batch-tenant/data/", "one.txt")["TransformJobStatus"] == "Completed"
    assert json.loads(_read(s3, "batch-tenant/own/one.txt.out"))["body"] == "one"


def test_validation_and_not_found(sm: Any) -> None:
    cases = [
        ({"MaxPayloadInMB": 60, "MaxConcurrentTransforms": 2}, "at most 100 MB"),
        ({"TransformInput": {"SplitType": "TFRecord"}}, "TFRecord"),
        ({"DataProcessing": {"InputFilter": "$[1:x]"}}, "DataProcessing"),
        (
            {"DataProcessing": {"JoinSource": "Input"}, "TransformInput": {"SplitType": "None"}},
            "JoinSource Input",
        ),
        ({"Environment": {"LABEL": "a\0b"}}, "Environment.LABEL: the value holds a NUL character"),
        (
            {
                "TransformInput": {
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}//x/"}}
                }
            },
            'an S3 key here has no empty, "." or ".." part',
        ),
    ]
    for extra, text in cases:
        with pytest.raises(ClientError) as err:
            _job(sm, "invalid", "rf", "none/", **extra)
        assert err.value.response["Error"]["Code"] == "ValidationException"
        assert text in err.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as err:
        sm.describe_transform_job(TransformJobName="no-such-job")
    assert err.value.response["Error"]["Code"] == "ResourceNotFound"
    _job(sm, "twice", "rf", "none/")
    with pytest.raises(sm.exceptions.ResourceInUse) as in_use:  # botocore's modeled error for a used name
        _job(sm, "twice", "rf", "none/")
    assert "a job with this name already exists" in in_use.value.response["Error"]["Message"]


def test_stop_and_resume_after_sigkill(s3_server: SeaweedS3, s3: Any, tmp_path: Path) -> None:
    """A stopped job ends Stopped (the waiter succeeds) with none of its outputs stored, as SageMaker's (the
    one it had written is removed; what else is under its output path stays). A job whose server is
    SIGKILLed midway resumes after the restart: files done before the kill are not done again, and the job
    completes, also when its model was deleted meanwhile (as SageMaker's: a running job keeps its model)."""
    server = _server(s3_server, tmp_path / "data").start()
    try:
        sm = _slow(server, tmp_path)
        s3.put_object(Bucket=BUCKET, Key="stop/in/a.csv", Body=b"0,1\n")
        s3.put_object(Bucket=BUCKET, Key="stop/in/b.csv", Body=b"30,1\n30,2\n")
        s3.put_object(Bucket=BUCKET, Key="stopped/out/notes.txt", Body=b"the user's, not the job's")
        _job(sm, "stopped", "slow", "stop/in/", MaxConcurrentTransforms=2)  # b's sleep never delays a
        wait_for(lambda: _has(s3, "stopped/out/a.csv.out"), timeout_s=30)
        sm.stop_transform_job(TransformJobName="stopped")
        assert _wait(sm, "stopped")["TransformJobStatus"] == "Stopped"
        assert not _has(s3, "stopped/out/a.csv.out") and not _has(s3, "stopped/out/b.csv.out")
        assert _read(s3, "stopped/out/notes.txt") == "the user's, not the job's"

        for n in range(3):
            s3.put_object(Bucket=BUCKET, Key=f"resume/in/{n}.csv", Body=b"0.6,%d\n0.6,%d\n" % (n, n))
        _job(sm, "resumed", "slow", "resume/in/")
        wait_for(lambda: _has(s3, "resumed/out/0.csv.out"), timeout_s=30)
        first = s3.head_object(Bucket=BUCKET, Key="resumed/out/0.csv.out")["ETag"]
        sm.delete_model(ModelName="slow")  # a job goes on with the model it was created with
        server.stop(signal.SIGKILL)
        assert not _has(s3, "resumed/out/2.csv.out")
        server.start()
        desc = _wait(server.client("sagemaker"), "resumed")
        assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
        assert [_read(s3, f"resumed/out/{n}.csv.out") for n in range(3)] == [
            f"0.6,{n}\n0.6,{n}\n" for n in range(3)
        ]
        assert s3.head_object(Bucket=BUCKET, Key="resumed/out/0.csv.out")["ETag"] == first
    finally:
        server.stop()


def test_jobs_in_progress_are_held_to_their_quota(s3_server: SeaweedS3, s3: Any, tmp_path: Path) -> None:
    """--max-transform-jobs 1: a second job while one runs is refused with SageMaker's ResourceLimitExceeded
    (nothing of it stored), and accepted once the first has stopped; finished jobs do not count."""
    server = _server(s3_server, tmp_path / "data", max_transform_jobs=1).start()
    try:
        sm = _slow(server, tmp_path)
        s3.put_object(Bucket=BUCKET, Key="quota/in/a.csv", Body=b"30,1\n")
        _job(sm, "quota-held", "slow", "quota/in/")
        with pytest.raises(sm.exceptions.ResourceLimitExceeded) as refused:
            _job(sm, "quota-second", "slow", "quota/in/")
        message = refused.value.response["Error"]["Message"]
        assert "'Number of concurrent transform jobs' is 1" in message
        assert "stop one or wait for one to end" in message and "--max-transform-jobs" in message
        with pytest.raises(ClientError) as missing:
            sm.describe_transform_job(TransformJobName="quota-second")
        assert missing.value.response["Error"]["Code"] == "ResourceNotFound"
        sm.stop_transform_job(TransformJobName="quota-held")
        assert _wait(sm, "quota-held")["TransformJobStatus"] == "Stopped"
        s3.put_object(Bucket=BUCKET, Key="quota/fast/a.csv", Body=b"0,1\n")
        _job(sm, "quota-second", "slow", "quota/fast/")
        assert _wait(sm, "quota-second")["TransformJobStatus"] == "Completed"
        _job(sm, "quota-third", "slow", "quota/fast/")  # the stopped and the completed jobs hold nothing
        assert _wait(sm, "quota-third")["TransformJobStatus"] == "Completed"
    finally:
        server.stop()


def test_finished_jobs_go_after_the_retention_and_running_ones_stay(
    s3_server: SeaweedS3, s3: Any, tmp_path: Path
) -> None:
    """--transform-retention-days (6 s here): a Completed and a Failed job are described and listed while it
    lasts, then answer SageMaker's ResourceNotFound and are no longer listed; a job still running stays."""
    server = _server(s3_server, tmp_path / "data", transform_retention_days=6 / 86400).start()
    try:
        sm = _slow(server, tmp_path)
        s3.put_object(Bucket=BUCKET, Key="keep/held/a.csv", Body=b"30,1\n")
        s3.put_object(Bucket=BUCKET, Key="keep/fast/a.csv", Body=b"0,1\n")
        _job(sm, "keep-running", "slow", "keep/held/")
        _job(sm, "keep-failed", "slow", "keep/nothing/")  # no input: Failed at once
        _job(sm, "keep-done", "slow", "keep/fast/")
        assert _wait(sm, "keep-done")["TransformJobStatus"] == "Completed"
        assert _wait_failed(sm, "keep-failed")["TransformJobStatus"] == "Failed"

        def listed() -> set[str]:
            pages = sm.get_paginator("list_transform_jobs").paginate(NameContains="keep-")
            return {s["TransformJobName"] for page in pages for s in page["TransformJobSummaries"]}

        assert listed() == {"keep-running", "keep-failed", "keep-done"}

        def gone(name: str) -> bool:
            try:
                sm.describe_transform_job(TransformJobName=name)
            except ClientError as err:
                assert err.response["Error"]["Code"] == "ResourceNotFound"
                assert f"Could not find requested job with name {name}" in err.response["Error"]["Message"]
                return True
            return False

        wait_for(lambda: gone("keep-done") and gone("keep-failed"), 30)
        assert listed() == {"keep-running"}
        desc = sm.describe_transform_job(TransformJobName="keep-running")
        assert desc["TransformJobStatus"] == "InProgress"
        sm.stop_transform_job(TransformJobName="keep-running")
        assert _wait(sm, "keep-running")["TransformJobStatus"] == "Stopped"
    finally:
        server.stop()


def _has(s3: Any, key: str) -> bool:
    try:
        s3.head_object(Bucket=BUCKET, Key=key)
    except ClientError:
        return False
    return True


def _wait_cli(server: ServerProcess, name: str) -> subprocess.CompletedProcess[str]:
    """``zeroscale transform wait NAME``."""
    return subprocess.run(
        [sys.executable, "-m", "zeroscale.cli.main", "transform", "wait", name, "--endpoint-url", server.url],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY},
    )


DIGEST = """
import hashlib

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    data = bytes(body)
    return f"{len(data)} {hashlib.sha256(data).hexdigest()}", "text/plain"
"""


def test_split_none_streams_whole_objects_and_enforces_max_payload(
    server: ServerProcess, sm: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SplitType None: each object is one request, streamed through scratch files (the server's peak
    resident set grows by far less than the 48 MB object); with MaxPayloadInMB 0 there is no limit, and with
    a limit an object past it fails its file by name while the others complete."""
    url = handler_model(tmp_path_factory.mktemp("digest"), DIGEST)
    sm.create_model(ModelName="digest", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url})
    big, small = os.urandom(48 * 2**20), b"tiny\n"
    s3.put_object(Bucket=BUCKET, Key="whole/in/big.bin", Body=big)
    s3.put_object(Bucket=BUCKET, Key="whole/in/small.bin", Body=small)
    assert server.proc is not None
    before = _peak_rss_mb(server.proc.pid)
    _job(
        sm,
        "whole",
        "digest",
        "whole/in/",
        MaxPayloadInMB=0,
        TransformInput={"SplitType": "None", "ContentType": "application/octet-stream"},
    )
    desc = _wait_failed(sm, "whole")  # waits for any end (the waiter raises at Failed)
    assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
    for key, data in (("big.bin", big), ("small.bin", small)):
        expected = f"{len(data)} {hashlib.sha256(data).hexdigest()}\n"  # AssembleWith Line: one newline
        assert _read(s3, f"whole/out/{key}.out") == expected
    grown = _peak_rss_mb(server.proc.pid) - before
    assert grown < 24, f"server peak RSS grew {grown:.1f} MB for a 48 MB object"

    _job(
        sm,
        "whole-limited",
        "digest",
        "whole/in/",
        MaxPayloadInMB=1,
        TransformInput={"SplitType": "None", "ContentType": "application/octet-stream"},
    )
    desc = _wait_failed(sm, "whole-limited")
    assert desc["TransformJobStatus"] == "Failed"
    assert "big.bin" in desc["FailureReason"] and "MaxPayloadInMB (1 MB)" in desc["FailureReason"]
    assert "small.bin" not in desc["FailureReason"]
    assert _read(s3, "whole-limited/out/small.bin.out").startswith(f"{len(small)} ")


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


EXAMPLE_IMAGE = Path(__file__).resolve().parents[2] / "examples" / "byo-image"


def test_the_containers_execution_parameters_fill_what_the_job_left_out(
    server: ServerProcess, sm: Any, s3: Any, tmp_path: Path
) -> None:
    """A bring-your-own image that answers GET /execution-parameters (the example image: MULTI_RECORD,
    MaxPayloadInMB 1, MaxConcurrentTransforms 2) sets what a job leaves out: ten lines go as one
    MultiRecord request, where a job that says SingleRecord sends ten."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZEROSCALE_"))}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION="us-east-1")
    push = subprocess.run(
        [
            str(Path(sys.executable).parent / "zeroscale"),
            "images",
            "push",
            "byo-linear:1.0",
            str(EXAMPLE_IMAGE),
            "--endpoint-url",
            server.url,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert push.returncode == 0, push.stderr
    (tmp_path / "model.json").write_text(json.dumps({"weights": [1.0, 2.0, 3.0], "bias": 0.5}))
    tar = make_tar(tmp_path / "linear.tar.gz", {"model.json": tmp_path / "model.json"})
    sm.create_model(
        ModelName="linear", PrimaryContainer={"Image": "byo-linear:1.0", "ModelDataUrl": f"file://{tar}"}
    )
    rows = [[i, 0, 1] for i in range(10)]
    s3.put_object(
        Bucket=BUCKET, Key="params/in/rows.csv", Body="".join(f"{a},{b},{c}\n" for a, b, c in rows).encode()
    )
    expected = [f"{a + 2 * b + 3 * c + 0.5}" for a, b, c in rows]

    def requests(job: str) -> tuple[int, str]:
        text = "\n".join(
            p.read_text(errors="replace")
            for p in (server.data_dir / "logs" / f"transform-job:{job}").rglob("*.log")
        )
        return text.count("POST /invocations"), text

    for job, extra, posts in (("params", {}, 1), ("params-single", {"BatchStrategy": "SingleRecord"}, 10)):
        _job(sm, job, "linear", "params/in/", **extra)
        desc = _wait_failed(sm, job)
        assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
        assert _read(s3, f"{job}/out/rows.csv.out").split() == expected
        wait_for(lambda job=job, posts=posts: requests(job)[0] == posts, timeout_s=10)  # type: ignore[misc]
        assert "GET /execution-parameters" in requests(job)[1]
    assert sm.describe_transform_job(TransformJobName="params")["MaxPayloadInMB"] == 6  # as given: unset


def test_workers_that_cannot_start_fail_the_job_while_its_files_are_read(
    server: ServerProcess, sm: Any, s3: Any, tmp_path: Path, sklearn_model: SklearnModel
) -> None:
    """The inputs are opened and read while the workers start: a model whose workers never come up fails
    the job with the workers' error, writes no output, and leaves no reader behind (the next job runs)."""
    broken = handler_model(tmp_path, "def model_fn(model_dir):\n    raise RuntimeError('no model here')\n")
    sm.create_model(ModelName="broken", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": broken})
    for i in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"broken/in/part-{i}.csv", Body=b"1,2,3\n" * 50_000)
    _job(sm, "broken", "broken", "broken/in/", BatchStrategy="MultiRecord", MaxPayloadInMB=1)
    desc = _wait_failed(sm, "broken")
    assert desc["TransformJobStatus"] == "Failed"
    assert "no model here" in desc["FailureReason"], desc["FailureReason"]
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="broken/out/")
    assert listed.get("KeyCount", 0) == 0
    rows = np.random.RandomState(7).rand(20, 4)
    s3.put_object(Bucket=BUCKET, Key="after-broken/in/rows.csv", Body=_csv(rows))
    _job(sm, "after-broken", "rf", "after-broken/in/", BatchStrategy="MultiRecord", MaxPayloadInMB=1)
    after = _wait_failed(sm, "after-broken")
    assert after["TransformJobStatus"] == "Completed", after.get("FailureReason")
    answers = _read(s3, "after-broken/out/rows.csv.out").splitlines()
    assert [int(float(v)) for v in answers] == sklearn_model.expected(rows)


def test_a_job_whose_workers_do_not_fit_now_waits_for_memory(
    s3_server: SeaweedS3, s3: Any, tmp_path: Path
) -> None:
    """Room for one job's worker (2048 MB of a 3000 MB budget): the second job, made while the first runs,
    waits, InProgress, until the first one's worker is gone, then runs (it failed at once for host memory).
    A job whose worker can never fit fails, saying so."""
    server = _server(s3_server, tmp_path / "data", memory_budget_mb=3000).start()
    try:
        sm = _slow(server, tmp_path)
        for name, seconds in (("first", 4), ("second", 2)):
            s3.put_object(
                Bucket=BUCKET, Key=f"turns/{name}/a.csv", Body=b"%d,%s\n" % (seconds, name.encode())
            )
        _job(sm, "first", "slow", "turns/first/")
        wait_for(lambda: server.workers("transform-job:first", "first") == 1, timeout_s=30)
        _job(sm, "second", "slow", "turns/second/")
        assert sm.describe_transform_job(TransformJobName="first")["TransformJobStatus"] == "InProgress"
        first = _wait(sm, "first")
        assert first["TransformJobStatus"] == "Completed"
        desc = _wait(sm, "second")
        assert desc["TransformJobStatus"] == "Completed", desc.get("FailureReason")
        assert _read(s3, "second/out/a.csv.out") == "2,second\n"
        # its 2-s record ran after the first job's end (when both ran at once, it would have ended first):
        # read from the jobs' own times, not from a timed look at a status, which a loaded machine delays
        assert (desc["TransformEndTime"] - first["TransformEndTime"]).total_seconds() >= 1.9
        big = {"InstanceType": "ml.m5.4xlarge", "InstanceCount": 1}  # 4096 MB a worker
        _job(sm, "too-big", "slow", "turns/first/", TransformResources=big)
        desc = _wait_failed(sm, "too-big")
        assert desc["TransformJobStatus"] == "Failed" and "memory budget of 3000 MB" in desc["FailureReason"]
    finally:
        server.stop()
