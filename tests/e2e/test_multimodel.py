"""Multi-model endpoints end to end: real boto3, real S3 (SeaweedFS), real workers forked per target model.

The models under the prefix are each 500 MB of data plus a constant regressor that answers its own index,
so a 1024 MB serverless variant holds two of them at a time and the six together are three times its
memory: round-robin requests unload the least recently used model before each load.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import tarfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from sklearn.dummy import DummyRegressor

from s3server import SeaweedS3
from zeroscale.metering.ledger import Ledger
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, wait_final, wait_for

BUCKET = "zeroscale-mme"
PREFIX = "models/"
MODELS = 6
PAD_MB = 500  # each model's data: two fit in 1024 MB, three do not
MEMORY_MB = 1024

SLOW_LOAD = """
import time
def model_fn(model_dir):
    time.sleep(2.0)
    return "slow"
def predict_fn(data, model):
    return [model]
"""

# Tiny files, a load that allocates (and touches) 400 MB: two fit in 1024 MB, three do not.
HUNGRY = """
import numpy as np
N = 0
def model_fn(model_dir):
    return np.ones(50_000_000)
def predict_fn(data, model):
    return [N]
"""

ENV_ECHO = """
import os
def model_fn(model_dir):
    return None
def predict_fn(data, model):
    return [os.environ.get("SAGEMAKER_MULTI_MODEL", "unset")]
"""


class _Zeros(io.RawIOBase):
    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        self.left -= n
        return bytes(n)


def model_tar(path: Path, files: dict[str, bytes], pad_mb: int = 0) -> Path:
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        if pad_mb:
            info = tarfile.TarInfo("weights.bin")
            info.size = pad_mb * 1024 * 1024
            tar.addfile(info, _Zeros(info.size))
    return path


def constant_model(value: int) -> bytes:
    buf = io.BytesIO()
    joblib.dump(DummyRegressor(strategy="constant", constant=value).fit([[0.0]], [value]), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def bucket(s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("mme-models")
    s3 = s3_server.client()
    s3.create_bucket(Bucket=BUCKET)
    uploads = {f"m{i}.tar.gz": ({"model.joblib": constant_model(i)}, PAD_MB) for i in range(MODELS)}
    uploads["huge.tar.gz"] = ({"model.joblib": constant_model(99)}, MEMORY_MB + 10)
    uploads["small/a.tar.gz"] = ({"model.joblib": constant_model(7)}, 0)
    uploads["slow.tar.gz"] = ({"code/inference.py": SLOW_LOAD.encode()}, 0)
    uploads["env.tar.gz"] = ({"code/inference.py": ENV_ECHO.encode()}, 0)
    for i in range(3):
        code = HUNGRY.replace("N = 0", f"N = {i}").encode()
        uploads[f"hungry{i}.tar.gz"] = ({"code/inference.py": code}, 0)
    for key, (files, pad) in uploads.items():
        path = model_tar(root / key.replace("/", "_"), files, pad)
        s3.upload_file(str(path), BUCKET, PREFIX + key)
        path.unlink()
    return BUCKET


@pytest.fixture(scope="module")
def mme_server(s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path_factory.mktemp("mme") / "data",
        flags={"s3_endpoint_url": s3_server.endpoint_url, "idle_timeout_s": 5},
        env=s3_server.env(),
    )
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.data_dir, ignore_errors=True)  # gigabytes of extracted padding


def deploy_mme(sm: Any, name: str, *, cache: str | None = None, max_concurrency: int = 4) -> dict[str, Any]:
    container: dict[str, Any] = {
        "Image": "sklearn",
        "ModelDataUrl": f"s3://{BUCKET}/{PREFIX}",
        "Mode": "MultiModel",
    }
    if cache is not None:
        container["MultiModelConfig"] = {"ModelCacheSetting": cache}
    sm.create_model(ModelName=name, PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "ServerlessConfig": {"MemorySizeInMB": MEMORY_MB, "MaxConcurrency": max_concurrency},
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    return wait_final(sm, name)


def invoke(smr: Any, endpoint: str, target: str) -> Any:
    resp = smr.invoke_endpoint(
        EndpointName=endpoint, TargetModel=target, Body=b"[[0.0]]", ContentType="application/json"
    )
    return json.loads(resp["Body"].read())


def gauge(server: ServerProcess, name: str, endpoint: str) -> float | None:
    pattern = re.compile(rf'^{name}\{{endpoint_name="{endpoint}",variant_name="AllTraffic"\}} (\S+)$')
    for line in server.metrics().splitlines():
        match = pattern.match(line)
        if match:
            return float(match.group(1))
    return None


def history(server: ServerProcess, endpoint: str) -> dict[str, dict[str, float]]:
    params = urllib.parse.urlencode({"endpoint": endpoint, "since": "1h"})
    url = f"{server.url}/zeroscale/v1/metrics?{params}"
    request = AWSRequest("GET", url)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(request)
    with urllib.request.urlopen(urllib.request.Request(url, headers=dict(request.headers)), timeout=10) as r:
        points = json.loads(r.read())["Datapoints"]
    out: dict[str, dict[str, float]] = {}
    for p in points:
        t = out.setdefault(p["MetricName"], {"Sum": 0.0, "SampleCount": 0.0, "Maximum": -math.inf})
        t["Sum"] += p["Sum"]
        t["SampleCount"] += p["SampleCount"]
        t["Maximum"] = max(t["Maximum"], p["Maximum"])
    return out


def validation_error(call: Any) -> str:
    with pytest.raises(ClientError) as info:
        call()
    assert info.value.response["Error"]["Code"] == "ValidationError", info.value.response
    return str(info.value.response["Error"]["Message"])


def test_models_three_times_the_memory_round_robin_twice(mme_server: ServerProcess, bucket: str) -> None:
    sm, smr = mme_server.client("sagemaker"), mme_server.client("sagemaker-runtime")
    desc = deploy_mme(sm, "mme-lru")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert sm.describe_model(ModelName="mme-lru")["PrimaryContainer"]["Mode"] == "MultiModel"
    for _ in range(2):
        for i in range(MODELS):
            assert invoke(smr, "mme-lru", f"m{i}.tar.gz") == [float(i)]
            loaded = gauge(mme_server, "zeroscale_loaded_models", "mme-lru")
            assert loaded is not None and 1 <= loaded <= 2
    # the last two models are loaded: asking for them again is a cache hit, whatever the order
    assert invoke(smr, "mme-lru", f"m{MODELS - 1}.tar.gz") == [float(MODELS - 1)]
    assert invoke(smr, "mme-lru", f"m{MODELS - 2}.tar.gz") == [float(MODELS - 2)]
    # a model in a folder under the prefix
    assert invoke(smr, "mme-lru", "small/a.tar.gz") == [7.0]
    metrics = mme_server.metrics()
    labels = '{endpoint_name="mme-lru",variant_name="AllTraffic"}'
    assert f"zeroscale_model_cache_lookups_total{labels} 15.0" in metrics
    assert f"zeroscale_model_cache_hits_total{labels} 2.0" in metrics
    # 13 loads into at most two places: 11 unloads, most of them for memory (a few may be idle timeouts)
    exits = re.findall(
        r'zeroscale_worker_exits_total\{endpoint_name="mme-lru",reason="(\w+)",[^}]*\} (\S+)', metrics
    )
    unloads = {reason: float(n) for reason, n in exits}
    assert unloads.get("evicted", 0) >= 4 and sum(unloads.values()) == 11, unloads
    assert f"zeroscale_model_loading_seconds_count{labels} 13.0" in metrics
    assert f"zeroscale_model_unloading_seconds_count{labels} 11.0" in metrics
    # each model is downloaded once: an unloaded model stays in the artifact cache, on disk
    assert f"zeroscale_model_downloading_seconds_count{labels} 7.0" in metrics
    # the history has SageMaker's names
    stats = history(mme_server, "mme-lru")
    assert stats["ModelCacheHit"]["SampleCount"] == 15 and stats["ModelCacheHit"]["Sum"] == 2
    assert stats["ModelLoadingWaitTime"]["SampleCount"] == 13
    assert stats["ModelLoadingTime"]["SampleCount"] == 13
    assert stats["ModelDownloadingTime"]["SampleCount"] == 7
    assert stats["ModelUnloadingTime"]["SampleCount"] == 11
    assert 1 <= stats["LoadedModelCount"]["Maximum"] <= 2
    # metering: one record per request, each the variant's memory size
    ledger = Ledger(mme_server.db_url)
    try:
        deadline = time.monotonic() + 10
        while len(records := [r for r in ledger.invocations() if r.endpoint == "mme-lru"]) < 15:
            assert time.monotonic() < deadline, len(records)
            time.sleep(0.2)
    finally:
        ledger.close()
    assert len(records) == 15
    assert {(r.status, r.memory_mb, r.variant) for r in records} == {(200, MEMORY_MB, "AllTraffic")}
    # serverless: back to zero workers once idle
    deadline = time.monotonic() + 20
    while gauge(mme_server, "zeroscale_workers", "mme-lru") != 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert gauge(mme_server, "zeroscale_loaded_models", "mme-lru") == 0
    assert invoke(smr, "mme-lru", "m0.tar.gz") == [0.0]


def test_error_cases_name_the_model(mme_server: ServerProcess, bucket: str) -> None:
    sm, smr = mme_server.client("sagemaker"), mme_server.client("sagemaker-runtime")
    assert deploy_mme(sm, "mme-errors")["EndpointStatus"] == "InService"
    message = validation_error(lambda: invoke(smr, "mme-errors", "nope.tar.gz"))
    assert "nope.tar.gz" in message and f"s3://{BUCKET}/{PREFIX}nope.tar.gz" in message
    message = validation_error(lambda: invoke(smr, "mme-errors", "né.tar.gz"))  # botocore sends UTF-8
    assert "'né.tar.gz'" in message or "né.tar.gz " in message, message
    message = validation_error(lambda: invoke(smr, "mme-errors", "huge.tar.gz"))
    assert "huge.tar.gz" in message and f"{MEMORY_MB} MB" in message
    message = validation_error(
        lambda: smr.invoke_endpoint(EndpointName="mme-errors", Body=b"[[0]]", ContentType="application/json")
    )
    assert "TargetModel" in message
    message = validation_error(lambda: invoke(smr, "mme-errors", "../m0.tar.gz"))
    assert "relative" in message
    # the endpoint still serves after the errors
    assert invoke(smr, "mme-errors", "small/a.tar.gz") == [7.0]
    # TargetModel on a single-model endpoint
    sm.create_model(
        ModelName="single",
        PrimaryContainer={"Image": "sklearn", "ModelDataUrl": f"s3://{BUCKET}/{PREFIX}m0.tar.gz"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="single",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "single",
                "ServerlessConfig": {"MemorySizeInMB": MEMORY_MB, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="single", EndpointConfigName="single")
    assert wait_final(sm, "single")["EndpointStatus"] == "InService"
    message = validation_error(lambda: invoke(smr, "single", "m0.tar.gz"))
    assert "not a multi-model endpoint" in message
    # a bad Mode combination is refused by name at CreateModel
    with pytest.raises(ClientError) as info:
        sm.create_model(
            ModelName="bad-mme",
            PrimaryContainer={"Image": "sklearn", "Mode": "MultiModel"},
        )
    assert "ModelDataUrl" in info.value.response["Error"]["Message"]
    # nor as one of several containers
    mme = {"Image": "sklearn", "Mode": "MultiModel", "ModelDataUrl": f"s3://{BUCKET}/{PREFIX}"}
    with pytest.raises(ClientError) as info:
        sm.create_model(
            ModelName="bad-mme",
            Containers=[{**mme, "ContainerHostname": "a"}, {**mme, "ContainerHostname": "b"}],
        )
    assert "one container" in info.value.response["Error"]["Message"]
    # a multi-model endpoint does not stream: refused by name
    with pytest.raises(ClientError) as info:
        smr.invoke_endpoint_with_response_stream(
            EndpointName="mme-errors", Body=b"[[0]]", ContentType="application/json"
        )
    assert "multi-model endpoint" in info.value.response["Error"]["Message"]


def _own_server(s3_server: SeaweedS3, tmp_path: Path, **flags: Any) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path / "data", flags={"s3_endpoint_url": s3_server.endpoint_url, **flags}, env=s3_server.env()
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def impatient(s3_server: SeaweedS3, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose multi-model invocations wait at most a second for a load."""
    yield from _own_server(s3_server, tmp_path, model_load_wait_s=1.0)


def test_slow_load_answers_model_not_ready_and_goes_on(impatient: ServerProcess, bucket: str) -> None:
    mme_server = impatient
    sm = mme_server.client("sagemaker")
    assert deploy_mme(sm, "mme-slow")["EndpointStatus"] == "InService"
    once = mme_server.client("sagemaker-runtime")  # no retries: see the first answer
    with pytest.raises(ClientError) as info:
        invoke(once, "mme-slow", "slow.tar.gz")
    assert info.value.response["Error"]["Code"] == "ModelNotReadyException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert "slow.tar.gz" in info.value.response["Error"]["Message"]
    # the load went on: a little later the model answers at once
    time.sleep(2.5)
    started = time.monotonic()
    assert invoke(once, "mme-slow", "slow.tar.gz") == ["slow"]
    assert time.monotonic() - started < 1.0
    # the toolkit's variable
    smr = mme_server.client("sagemaker-runtime")
    assert invoke(smr, "mme-slow", "env.tar.gz") == ["true"]


@pytest.fixture()
def patient(s3_server: SeaweedS3, tmp_path: Path) -> Iterator[ServerProcess]:
    """A server whose idle workers stay: nothing is unloaded for time, only for memory."""
    yield from _own_server(s3_server, tmp_path, idle_timeout_s=600)


def test_models_whose_load_allocates_more_than_their_files_share_the_variants_memory(
    patient: ServerProcess, bucket: str
) -> None:
    """A model is first counted at its files' size; once its worker's private memory is measured (400 MB
    here, from a few KB of files), it holds that of the variant's 1024 MB, and the least recently used idle
    model is unloaded to make room: two such models stay loaded, not three (3 x 400 MB in 1024)."""
    sm, smr = patient.client("sagemaker"), patient.client("sagemaker-runtime")
    assert deploy_mme(sm, "mme-hungry")["EndpointStatus"] == "InService"
    for i in range(3):
        assert invoke(smr, "mme-hungry", f"hungry{i}.tar.gz") == [i]
        time.sleep(1.5)  # measured (once a second) and settled (every half second)
    wait_for(lambda: gauge(patient, "zeroscale_loaded_models", "mme-hungry") == 2, timeout_s=15)
    metrics = patient.metrics()
    assert re.search(r'zeroscale_worker_exits_total\{endpoint_name="mme-hungry",reason="evicted"', metrics)
    assert invoke(smr, "mme-hungry", "hungry2.tar.gz") == [2]  # the most recent ones are still loaded
    assert invoke(smr, "mme-hungry", "hungry1.tar.gz") == [1]


def test_cache_disabled_unloads_after_each_request(mme_server: ServerProcess, bucket: str) -> None:
    sm, smr = mme_server.client("sagemaker"), mme_server.client("sagemaker-runtime")
    assert deploy_mme(sm, "mme-nocache", cache="Disabled")["EndpointStatus"] == "InService"
    assert sm.describe_model(ModelName="mme-nocache")["PrimaryContainer"]["MultiModelConfig"] == {
        "ModelCacheSetting": "Disabled"
    }
    for _ in range(3):
        assert invoke(smr, "mme-nocache", "small/a.tar.gz") == [7.0]
    labels = '{endpoint_name="mme-nocache",variant_name="AllTraffic"}'
    metrics = mme_server.metrics()
    assert f"zeroscale_model_cache_lookups_total{labels} 3.0" in metrics
    assert not re.search(rf"zeroscale_model_cache_hits_total{re.escape(labels)} [1-9]", metrics)
    assert f"zeroscale_model_loading_seconds_count{labels} 3.0" in metrics


def test_real_time_variant_shares_the_instances_memory(mme_server: ServerProcess, bucket: str) -> None:
    sm, smr = mme_server.client("sagemaker"), mme_server.client("sagemaker-runtime")
    sm.create_model(
        ModelName="mme-rt",
        PrimaryContainer={
            "Image": "sklearn",
            "ModelDataUrl": f"s3://{BUCKET}/{PREFIX}",
            "Mode": "MultiModel",
        },
    )
    sm.create_endpoint_config(
        EndpointConfigName="mme-rt",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "mme-rt",
                "InstanceType": "ml.t2.medium",  # 4 GiB: all six models fit at once
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName="mme-rt", EndpointConfigName="mme-rt")
    assert wait_final(sm, "mme-rt")["EndpointStatus"] == "InService"
    for _ in range(2):
        for i in range(MODELS):
            assert invoke(smr, "mme-rt", f"m{i}.tar.gz") == [float(i)]
    assert gauge(mme_server, "zeroscale_loaded_models", "mme-rt") == MODELS
    labels = '{endpoint_name="mme-rt",variant_name="AllTraffic"}'
    assert f"zeroscale_model_cache_hits_total{labels} {float(MODELS)}" in mme_server.metrics()
