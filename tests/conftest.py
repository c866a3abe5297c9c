from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgserver import PostgresServer
from s3server import SeaweedS3

# The tests that import onnxruntime here (to compute expected answers) start no telemetry uploader: the same
# setting as every zeroscale process (workers.forkserver.THREAD_ENV). test_onnx.py turns it on where it must.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """A real S3 (SeaweedFS) on free local ports for the whole test session."""
    with SeaweedS3(tmp_path_factory.mktemp("s3server")) as server:
        yield server


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A real PostgreSQL (Debian's binaries) on a free local port for the whole test session."""
    # Not under pytest's tmp dir: that is private to root, and the cluster belongs to the postgres user.
    workdir = Path(tempfile.mkdtemp(prefix="zeroscale-pg-"))
    workdir.chmod(0o755)
    with PostgresServer(workdir) as server:
        yield server
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new, empty database of each kind the store runs on: SQLite in the test's directory, and one of
    the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'zeroscale.db'}"
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return postgres.create_database()
