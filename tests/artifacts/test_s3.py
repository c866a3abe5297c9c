"""s3:// artifacts against a real S3 server (SeaweedFS, see tests/s3server.py)."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from s3server import SeaweedS3
from zeroscale.artifacts import ArtifactCache
from zeroscale.artifacts.fetch import S3Fetcher
from zeroscale.errors import DeployError

from .tarballs import cached_entries, file_member, model_tarball, write_tar


@pytest.fixture
def aws_env(s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> SeaweedS3:
    """Credentials through the standard chain (environment), isolated from any real AWS config."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    return s3_server


@pytest.fixture
def bucket(aws_env: SeaweedS3) -> str:
    name = f"models-{uuid.uuid4().hex[:12]}"
    aws_env.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Counts real downloads (the real method still runs)."""
    calls: list[str] = []
    real: Callable[..., Any] = S3Fetcher.download

    def counting(self: S3Fetcher, loc: Any, dst: Any) -> Any:
        calls.append(loc.url)
        return real(self, loc, dst)

    monkeypatch.setattr(S3Fetcher, "download", counting)
    return calls


def upload(server: SeaweedS3, bucket: str, key: str, path: Path) -> None:
    server.client().put_object(Bucket=bucket, Key=key, Body=path.read_bytes())


def test_prepare_from_s3_and_reuse(
    aws_env: SeaweedS3, bucket: str, tmp_path: Path, downloads: list[str]
) -> None:
    archive = model_tarball(tmp_path / "model.tar.gz", {"model.bin": b"s3 weights", "code/x.py": b"x = 1\n"})
    upload(aws_env, bucket, "jobs/1/output/model.tar.gz", archive)
    url = f"s3://{bucket}/jobs/1/output/model.tar.gz"
    cache = ArtifactCache(tmp_path / "cache", s3_endpoint_url=aws_env.endpoint_url)

    model = cache.prepare(url)
    assert (model / "model.bin").read_bytes() == b"s3 weights"
    assert (model / "code" / "x.py").read_bytes() == b"x = 1\n"
    assert downloads == [url]

    assert cache.prepare(url) == model
    assert downloads == [url]  # unchanged object (same ETag and size): not downloaded again
    restarted = ArtifactCache(tmp_path / "cache", s3_endpoint_url=aws_env.endpoint_url)
    assert restarted.prepare(url) == model
    assert downloads == [url]
    assert list((cache.root / "tmp").iterdir()) == []

    # The same bytes through a local path land in the same entry (content-addressed).
    assert cache.prepare(str(archive)) == model


def test_overwritten_object_is_downloaded_again(
    aws_env: SeaweedS3, bucket: str, tmp_path: Path, downloads: list[str]
) -> None:
    key = "model.tar.gz"
    cache = ArtifactCache(tmp_path / "cache", s3_endpoint_url=aws_env.endpoint_url)
    upload(aws_env, bucket, key, model_tarball(tmp_path / "v1.tar.gz", {"v": b"1"}))
    first = cache.prepare(f"s3://{bucket}/{key}")
    upload(aws_env, bucket, key, model_tarball(tmp_path / "v2.tar.gz", {"v": b"2"}))
    second = cache.prepare(f"s3://{bucket}/{key}")
    assert len(downloads) == 2
    assert first != second
    assert (second / "v").read_bytes() == b"2"


def test_missing_key(aws_env: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", s3_endpoint_url=aws_env.endpoint_url)
    url = f"s3://{bucket}/does/not/exist.tar.gz"
    with pytest.raises(DeployError) as info:
        cache.prepare(url)
    message = str(info.value)
    assert message == (
        f"Could not fetch model artifact {url}: S3 error NoSuchKey: "
        f"object 'does/not/exist.tar.gz' does not exist in bucket '{bucket}'"
    )
    assert cached_entries(cache.root) == []


def test_missing_bucket(aws_env: SeaweedS3, tmp_path: Path) -> None:
    cache = ArtifactCache(tmp_path / "cache", s3_endpoint_url=aws_env.endpoint_url)
    url = "s3://no-such-bucket-zeroscale/model.tar.gz"
    with pytest.raises(DeployError) as info:
        cache.prepare(url)
    assert str(info.value) == (
        f"Could not fetch model artifact {url}: S3 error NoSuchBucket: "
        "bucket 'no-such-bucket-zeroscale' does not exist"
    )


def test_wrong_credentials(
    aws_env: SeaweedS3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload(aws_env, bucket, "m.tar.gz", model_tarball(tmp_path / "m.tar.gz"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-key")
    cache = ArtifactCache(tmp_path / "cache", s3_endpoint_url=aws_env.endpoint_url)
    with pytest.raises(DeployError) as info:
        cache.prepare(f"s3://{bucket}/m.tar.gz")
    message = str(info.value)
    assert message.startswith(f"Could not fetch model artifact s3://{bucket}/m.tar.gz: S3 error ")
    assert "InvalidAccessKeyId" in message or "AccessDenied" in message


def test_hostile_archive_from_s3_leaves_nothing(aws_env: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    evil = write_tar(tmp_path / "evil.tar.gz", [file_member("ok", b"x"), file_member("../evil", b"x")])
    upload(aws_env, bucket, "evil.tar.gz", evil)
    cache = ArtifactCache(tmp_path / "cache", s3_endpoint_url=aws_env.endpoint_url)
    with pytest.raises(DeployError, match=r"Model archive member '\.\./evil' escapes the model directory"):
        cache.prepare(f"s3://{bucket}/evil.tar.gz")
    assert cached_entries(cache.root) == []


def test_not_an_archive_in_s3(aws_env: SeaweedS3, bucket: str, tmp_path: Path) -> None:
    aws_env.client().put_object(Bucket=bucket, Key="model.tar.gz", Body=b"<html>not a tarball</html>")
    cache = ArtifactCache(tmp_path / "cache", s3_endpoint_url=aws_env.endpoint_url)
    url = f"s3://{bucket}/model.tar.gz"
    with pytest.raises(DeployError, match=f"Model artifact {url} is not a valid tar.gz archive: "):
        cache.prepare(url)
    assert cached_entries(cache.root) == []


def test_unreachable_endpoint(aws_env: SeaweedS3, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    cache = ArtifactCache(tmp_path / "cache", s3_endpoint_url=endpoint)
    with pytest.raises(DeployError) as info:
        cache.prepare("s3://bucket/model.tar.gz")
    message = str(info.value)
    assert message.startswith("Could not fetch model artifact s3://bucket/model.tar.gz: ")
    assert f"could not connect to {endpoint} (S3 error ConnectionError)" in message
