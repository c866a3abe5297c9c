"""Finished transform jobs are deleted once their retention has passed since they ended (an injected clock),
on SQLite and PostgreSQL, by every front end sharing the database; running ones never."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest

from zeroscale.control import Arns, Models
from zeroscale.control.transform_jobs import Progress, TransformJobs
from zeroscale.errors import ResourceNotFound
from zeroscale.store import Store

from .fakes import ACCOUNT, REGION, FakeClock

DAY = 86400.0
IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


class Runner:
    """Ends a job at once: Completed, or Failed when its Environment has FAIL; a job with HOLD waits until
    ``release`` (stoppable meanwhile)."""

    def __init__(self) -> None:
        self.held = asyncio.Event()

    async def run(self, doc: Mapping[str, Any], progress: Progress, on_progress: Callable[[], None]) -> None:
        env = doc.get("Environment") or {}
        if "HOLD" in env:
            await self.held.wait()
        if "FAIL" in env:
            progress.failures.append("s3://in/a.csv: rejected")

    async def discard(self, doc: Mapping[str, Any], since: float) -> int:
        return 0

    async def close(self) -> None:
        pass


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


def _jobs(store: Store, clock: FakeClock, retention_s: float, runner: Runner | None = None) -> TransformJobs:
    arns = Arns(region=REGION, account_id=ACCOUNT)
    models = Models(store, arns, clock)
    if store.get("model", "m") is None:  # a second front end on the database finds it
        models.create(
            {"ModelName": "m", "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": "s3://b/m.tgz"}}
        )
    return TransformJobs(store, arns, models, runner or Runner(), clock, retention_s=retention_s)


def _create(jobs: TransformJobs, name: str, **env: str) -> None:
    jobs.create(
        {
            "TransformJobName": name,
            "ModelName": "m",
            "Environment": env,
            "TransformInput": {
                "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://b/in/"}}
            },
            "TransformOutput": {"S3OutputPath": f"s3://b/{name}/"},
            "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        }
    )


async def _settle(jobs: TransformJobs, *names: str) -> None:
    """Until none of ``names`` is InProgress or Stopping."""
    for _ in range(200):
        if all(jobs.describe(n)["TransformJobStatus"] not in ("InProgress", "Stopping") for n in names):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the jobs did not end")


def _listed(jobs: TransformJobs) -> list[str]:
    return sorted(s["TransformJobName"] for s in jobs.list({})["TransformJobSummaries"])


async def test_a_finished_job_goes_once_its_retention_has_passed_since_it_ended(
    store: Store, clock: FakeClock
) -> None:
    runner = Runner()
    jobs = _jobs(store, clock, 30 * DAY, runner)
    _create(jobs, "completed")
    _create(jobs, "failed", FAIL="1")
    _create(jobs, "stopped", HOLD="1")
    _create(jobs, "running", HOLD="1")
    await _settle(jobs, "completed", "failed")
    clock.advance(10 * DAY)
    jobs.stop("stopped")  # ends 10 days after the others
    await _settle(jobs, "stopped")
    assert jobs.describe("stopped")["TransformJobStatus"] == "Stopped"
    clock.advance(20 * DAY - 1)
    assert jobs.prune() == 0  # 30 days less a second since the first two ended
    assert _listed(jobs) == ["completed", "failed", "running", "stopped"]
    clock.advance(2)
    assert jobs.prune() == 0  # not due again yet (a tenth of the retention, at most an hour)
    clock.advance(jobs.prune_every_s)
    assert jobs.prune() == 2
    for name in ("completed", "failed"):
        with pytest.raises(ResourceNotFound, match=f"Could not find requested job with name {name}"):
            jobs.describe(name)
    assert _listed(jobs) == ["running", "stopped"]
    clock.advance(10 * DAY)
    assert jobs.prune() == 1  # the stopped one, 30 days after it ended; the running one never
    assert _listed(jobs) == ["running"]
    clock.advance(365 * DAY)
    assert jobs.prune() == 0
    runner.held.set()
    await _settle(jobs, "running")
    _create(jobs, "completed")  # a deleted job's name may be used again
    await _settle(jobs, "completed")
    await jobs.close()


async def test_two_front_ends_on_one_database_each_prune_without_harm(db_url: str, clock: FakeClock) -> None:
    """Each front end's retention deletes what is past it; the other then finds nothing, and a job one of
    them ended later stays for both."""
    first, second = Store(db_url), Store(db_url)
    try:
        a, b = _jobs(first, clock, 7 * DAY), _jobs(second, clock, 7 * DAY)
        for i in range(3):
            _create(a, f"a-{i}")
            _create(b, f"b-{i}")
        await _settle(a, *(f"a-{i}" for i in range(3)))
        await _settle(b, *(f"b-{i}" for i in range(3)))
        clock.advance(2 * DAY)
        _create(b, "late")
        await _settle(b, "late")
        clock.advance(5 * DAY + 1)
        results = await asyncio.gather(asyncio.to_thread(a.prune), asyncio.to_thread(b.prune))
        assert sum(results) == 6
        assert _listed(a) == _listed(b) == ["late"]
        await a.close()
        await b.close()
    finally:
        first.close()
        second.close()


async def test_a_retention_of_zero_keeps_every_job(store: Store, clock: FakeClock) -> None:
    jobs = _jobs(store, clock, 0)
    _create(jobs, "kept")
    await _settle(jobs, "kept")
    clock.advance(10_000 * DAY)
    assert jobs.prune() == 0
    await asyncio.wait_for(jobs.keep_pruned(), 1)  # nothing to do: it returns at once
    assert _listed(jobs) == ["kept"]
    await jobs.close()
