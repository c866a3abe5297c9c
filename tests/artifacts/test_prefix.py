"""Uncompressed models under an S3 prefix (ModelDataSource) against a real S3 server (SeaweedFS): the
directory they become, the cache that fetches them once, and keys that would leave the directory."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from s3server import SeaweedS3
from zeroscale.artifacts import ArtifactCache
from zeroscale.artifacts.fetch import S3Location
from zeroscale.artifacts.prefix import relative_path
from zeroscale.errors import DeployError

from .test_s3 import aws_env, bucket, downloads  # noqa: F401 - fixtures


def test_objects_become_files_and_are_fetched_once(
    aws_env: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
    tmp_path: Path,
    downloads: list[str],  # noqa: F811
) -> None:
    client = aws_env.client()
    client.put_object(Bucket=bucket, Key="llm/config.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key="llm/weights/part-1.bin", Body=b"\x01" * 100)
    client.put_object(Bucket=bucket, Key="llm-other/ignored.bin", Body=b"not under the prefix")
    cache = ArtifactCache(tmp_path / "cache", s3_endpoint_url=aws_env.endpoint_url)
    uri = f"s3://{bucket}/llm/"
    model = cache.prepare_prefix(uri)
    assert sorted(str(p.relative_to(model)) for p in model.rglob("*") if p.is_file()) == [
        "config.json",
        "weights/part-1.bin",
    ]
    assert (model / "weights" / "part-1.bin").read_bytes() == b"\x01" * 100
    assert len(downloads) == 2
    assert cache.prepare_prefix(uri) == model  # unchanged: listed, not fetched again
    assert len(downloads) == 2
    client.put_object(Bucket=bucket, Key="llm/config.json", Body=b'{"changed": true}')
    changed = cache.prepare_prefix(uri)
    assert changed != model and (changed / "config.json").read_bytes() == b'{"changed": true}'


def test_an_empty_prefix_and_a_missing_bucket_are_named(
    aws_env: SeaweedS3,  # noqa: F811
    bucket: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    cache = ArtifactCache(tmp_path / "cache", s3_endpoint_url=aws_env.endpoint_url)
    with pytest.raises(DeployError, match=f"s3://{bucket}/nothing/: no object found"):
        cache.prepare_prefix(f"s3://{bucket}/nothing/")
    missing = f"no-such-{uuid.uuid4().hex[:8]}"
    with pytest.raises(DeployError, match=missing):
        cache.prepare_prefix(f"s3://{missing}/llm/")
    with pytest.raises(DeployError, match="expected an S3 prefix"):
        cache.prepare_prefix(f"s3://{bucket}/llm")


@pytest.mark.parametrize("key", ["llm/../escape", "llm/./x", "llm/a//b", "llm/a/..", "llm/nul\0byte"])
def test_keys_that_would_leave_the_directory_are_refused(key: str) -> None:
    loc = S3Location("s3://b/llm/", "b", "llm/")
    with pytest.raises(DeployError, match="not a safe relative path"):
        relative_path(loc, key)


def test_safe_keys_keep_their_path() -> None:
    loc = S3Location("s3://b/llm/", "b", "llm/")
    assert relative_path(loc, "llm/weights/part-1.bin") == "weights/part-1.bin"
