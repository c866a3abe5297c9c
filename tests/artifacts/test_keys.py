"""S3 keys that an S3-compatible store would read as other keys are refused before IAM checks them as
written (SeaweedFS, measured: a leading "/" dropped, "//" folded, "\\" read as "/")."""

from __future__ import annotations

import pytest

from zeroscale.artifacts.fetch import parse_model_data_url, s3_key_problem
from zeroscale.asyncinf.s3io import S3Url
from zeroscale.errors import DeployError


@pytest.mark.parametrize("key", ["a", "a/b.tar.gz", "prefix/", "", "a/b/", "a.b/c..d", "..a/b.."])
def test_keys_as_written_are_served(key: str) -> None:
    assert s3_key_problem(key) is None
    assert S3Url.parse(f"s3://bucket/{key}") == S3Url("bucket", key)


@pytest.mark.parametrize(
    "key", ["/a", "a//b", "a/./b", "a/../b", "..", ".", "a/..", "team-a\\x", "a//", "//"]
)
def test_keys_a_store_would_rewrite_are_refused(key: str) -> None:
    assert s3_key_problem(key) is not None
    with pytest.raises(ValueError, match="an S3 key here"):
        S3Url.parse(f"s3://bucket/{key}")
    with pytest.raises(DeployError, match="an S3 key here"):
        parse_model_data_url(f"s3://bucket/{key}x" if key.endswith("/") else f"s3://bucket/{key}")
