"""Transform jobs and asynchronous requests with two front ends on one PostgreSQL database and one S3
(SeaweedFS): a job runs on the front end that accepted it and nowhere else (the other one, restarting, does
not run it again), StopTransformJob sent to the other one stops it, and what a front end killed with SIGKILL
was running (a job, an asynchronous request) is finished by the survivor."""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import create_engine, text

from e2e.conftest import handler_model
from e2e.test_async import BUCKET as ASYNC_BUCKET
from e2e.test_async import ECHO, _deploy_async, _get, _put
from e2e.test_transform import BUCKET, SLOW_ECHO, _has, _job
from pgserver import PostgresServer
from s3server import SeaweedS3
from zeroscale.testing import ServerProcess, wait_for

TTL_S = 2.0


@pytest.fixture
def pair(
    postgres: PostgresServer, s3_server: SeaweedS3, tmp_path: Path
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    flags = {
        "database_url": postgres.create_database(f"jobs{time.monotonic_ns()}"),
        "frontend_ttl_s": TTL_S,
        "s3_endpoint_url": s3_server.endpoint_url,
    }
    a = ServerProcess(tmp_path / "a", flags, env=s3_server.env()).start()
    b = ServerProcess(tmp_path / "b", flags, env=s3_server.env()).start()
    yield a, b
    a.stop()
    b.stop()


@pytest.fixture
def s3(s3_server: SeaweedS3) -> Any:
    client = s3_server.client()
    for bucket in (BUCKET, ASYNC_BUCKET):
        with contextlib.suppress(ClientError):  # made by another test of the session
            client.create_bucket(Bucket=bucket)
    return client


def _frontend(server: ServerProcess) -> str:
    """The identity a front end keeps in its data directory (what it writes on the rows it claims)."""
    return (server.data_dir / "frontend-id").read_text().strip()


def _status(sm: Any, name: str) -> str:
    return str(sm.describe_transform_job(TransformJobName=name)["TransformJobStatus"])


def test_a_transform_job_runs_on_one_front_end_stops_through_the_other_and_outlives_its_own(
    pair: tuple[ServerProcess, ServerProcess], s3: Any, tmp_path: Path
) -> None:
    a, b = pair
    sm_a, sm_b = a.client("sagemaker"), b.client("sagemaker")
    url = handler_model(tmp_path, SLOW_ECHO)
    sm_a.create_model(ModelName="slow", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url})

    s3.put_object(Bucket=BUCKET, Key="one/in/a.csv", Body=b"0,1\n")
    s3.put_object(Bucket=BUCKET, Key="one/in/b.csv", Body=b"30,1\n")
    _job(sm_a, "one", "slow", "one/in/", MaxConcurrentTransforms=2)
    wait_for(lambda: _has(s3, "one/out/a.csv.out"), timeout_s=30)
    b.restart()  # a front end that starts again resumes its own jobs and dead ones', not a live one's
    time.sleep(1.0)
    assert b.workers("transform-job:one", "one") == 0 and a.workers("transform-job:one", "one") == 2
    b.client("sagemaker").stop_transform_job(TransformJobName="one")  # A runs it: A stops it
    wait_for(lambda: _status(sm_b, "one") == "Stopped", timeout_s=20)
    assert not _has(s3, "one/out/a.csv.out")  # a stopped job stores no output
    wait_for(lambda: a.workers("transform-job:one", "one") == 0, timeout_s=10)

    for n in range(3):
        s3.put_object(Bucket=BUCKET, Key=f"two/in/{n}.csv", Body=b"2,%d\n" % n)
    _job(sm_a, "two", "slow", "two/in/")
    wait_for(lambda: _has(s3, "two/out/0.csv.out"), timeout_s=30)
    a.stop(signal.SIGKILL)
    sm_b = b.client("sagemaker")
    wait_for(lambda: _status(sm_b, "two") != "InProgress", timeout_s=TTL_S + 60)
    assert _status(sm_b, "two") == "Completed", sm_b.describe_transform_job(TransformJobName="two")
    for n in range(3):
        assert s3.get_object(Bucket=BUCKET, Key=f"two/out/{n}.csv.out")["Body"].read() == b"2,%d\n" % n
    assert "transform job two: taking over from front end" in b.log_path.read_text()


def test_an_async_request_runs_once_and_outlives_its_front_end(
    pair: tuple[ServerProcess, ServerProcess], s3: Any, tmp_path: Path
) -> None:
    a, b = pair
    _deploy_async(a.client("sagemaker"), "frontasync", handler_model(tmp_path, ECHO))
    smr_a = a.client("sagemaker-runtime")
    first = smr_a.invoke_endpoint_async(
        EndpointName="frontasync",
        InputLocation=_put(s3, "frontasync/in/first.json", b'{"sleep": 4}'),
        ContentType="application/json",
    )
    engine = create_engine(str(a.flags["database_url"]))
    ident = {_frontend(s): s for s in (a, b)}

    def row(inference_id: str) -> tuple[str, int, str | None]:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT status, attempts, frontend FROM async_requests WHERE inference_id = :i"),
                {"i": inference_id},
            ).one()
        return str(found[0]), int(found[1]), found[2]

    def running(inference_id: str) -> tuple[ServerProcess, ServerProcess]:
        """The front end whose dispatcher claimed it (either may), and the other one."""
        wait_for(lambda: row(inference_id)[0] == "Running", timeout_s=30)
        runner = ident[str(row(inference_id)[2])]
        return runner, (b if runner is a else a)

    try:
        runner, other = running(first["InferenceId"])
        other.restart()  # the request is the runner's: the other starting again does not run it a second time
        answer = json.loads(_get(s3, first["OutputLocation"]))
        assert answer == {"echo": {"sleep": 4}}
        # its output is written, then its row marked Completed: a moment apart on a loaded machine
        wait_for(lambda: row(first["InferenceId"])[:2] == ("Completed", 1), timeout_s=10)

        second = smr_a.invoke_endpoint_async(
            EndpointName="frontasync",
            InputLocation=_put(s3, "frontasync/in/second.json", b'{"sleep": 3}'),
            ContentType="application/json",
        )
        runner, other = running(second["InferenceId"])
        runner.stop(signal.SIGKILL)  # with it Running: the other runs it again once the runner is no member
        assert json.loads(_get(s3, second["OutputLocation"], timeout_s=TTL_S + 60)) == {"echo": {"sleep": 3}}
        wait_for(lambda: row(second["InferenceId"]) == ("Completed", 2, _frontend(other)), timeout_s=10)
        assert "of a front end that died run again here" in other.log_path.read_text()
    finally:
        engine.dispose()
