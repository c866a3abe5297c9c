"""Model data in a real S3 (SeaweedFS): ``ModelDataUrl=s3://bucket/key`` deploys and serves the model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from s3server import SeaweedS3
from zeroscale.testing import ServerProcess, deploy

BUCKET = "zeroscale-models"
KEY = "sklearn/v1/model.tar.gz"


@pytest.fixture(scope="module")
def bucket(s3_server: SeaweedS3, sklearn_model: Any) -> str:
    s3 = s3_server.client()
    s3.create_bucket(Bucket=BUCKET)
    s3.upload_file(str(sklearn_model.tar), BUCKET, KEY)
    return BUCKET


@pytest.fixture(scope="module")
def s3_zeroscale(s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose s3:// model data comes from SeaweedFS, with SeaweedFS's keys in the standard chain."""
    server = ServerProcess(
        tmp_path_factory.mktemp("s3-zeroscale") / "data",
        flags={"s3_endpoint_url": s3_server.endpoint_url},
        env=s3_server.env(),
    )
    server.start()
    yield server
    server.stop()


def test_deploy_from_s3_and_invoke(s3_zeroscale: ServerProcess, bucket: str, sklearn_model: Any) -> None:
    sm = s3_zeroscale.client("sagemaker")
    url = f"s3://{bucket}/{KEY}"
    desc = deploy(sm, "from-s3", url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert sm.describe_model(ModelName="from-s3")["PrimaryContainer"]["ModelDataUrl"] == url
    rows = sklearn_model.X[:20]
    smr = s3_zeroscale.client("sagemaker-runtime")
    resp = smr.invoke_endpoint(
        EndpointName="from-s3", Body=sklearn_model.json_body(rows), ContentType="application/json"
    )
    assert json.loads(resp["Body"].read()) == sklearn_model.expected(rows)


def test_deploy_from_an_s3_https_url(s3_zeroscale: ServerProcess, bucket: str, sklearn_model: Any) -> None:
    """ModelDataUrl may be an S3 object's https:// URL, as SageMaker allows: its bucket and key are read
    through the configured S3 endpoint (here SeaweedFS)."""
    sm = s3_zeroscale.client("sagemaker")
    url = f"https://{bucket}.s3.us-east-1.amazonaws.com/{KEY}"
    desc = deploy(sm, "from-https", url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    rows = sklearn_model.X[:5]
    resp = s3_zeroscale.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="from-https", Body=sklearn_model.json_body(rows), ContentType="application/json"
    )
    assert json.loads(resp["Body"].read()) == sklearn_model.expected(rows)


def test_missing_key_fails_naming_the_url(s3_zeroscale: ServerProcess, bucket: str) -> None:
    sm = s3_zeroscale.client("sagemaker")
    url = f"s3://{bucket}/sklearn/v2/model.tar.gz"
    desc = deploy(sm, "missing-key", url)
    assert desc["EndpointStatus"] == "Failed"
    reason = desc["FailureReason"]
    assert url in reason
    assert "NoSuchKey" in reason
    assert f"object 'sklearn/v2/model.tar.gz' does not exist in bucket '{bucket}'" in reason


def test_missing_bucket_fails_naming_the_url(s3_zeroscale: ServerProcess) -> None:
    sm = s3_zeroscale.client("sagemaker")
    url = "s3://no-such-bucket-here/model.tar.gz"
    desc = deploy(sm, "missing-bucket", url)
    assert desc["EndpointStatus"] == "Failed"
    assert url in desc["FailureReason"]
    assert "NoSuchBucket" in desc["FailureReason"]


def test_wrong_s3_credentials_fail_naming_the_url(
    s3_server: SeaweedS3, bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    server = ServerProcess(
        tmp_path_factory.mktemp("s3-wrong-keys") / "data",
        flags={"s3_endpoint_url": s3_server.endpoint_url},
        env={**s3_server.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"},
    )
    server.start()
    try:
        url = f"s3://{bucket}/{KEY}"
        desc = deploy(server.client("sagemaker"), "wrong-keys", url)
        assert desc["EndpointStatus"] == "Failed"
        assert url in desc["FailureReason"]
        assert (
            "S3 error SignatureDoesNotMatch" in desc["FailureReason"]
            or "AccessDenied" in desc["FailureReason"]
        )
    finally:
        server.stop()
