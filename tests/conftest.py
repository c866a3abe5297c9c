from __future__ import annotations

from collections.abc import Iterator

import pytest

from s3server import SeaweedS3


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 (SeaweedFS) on free local ports for the whole test session."""
    with SeaweedS3(tmp_path_factory.mktemp("s3server")) as server:
        yield server
