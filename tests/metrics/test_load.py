"""Combining a variant's pools into the values its gauges show."""

from __future__ import annotations

import pytest

from metrics.builders import pool
from zeroscale.metrics.load import by_variant


def test_one_pool() -> None:
    (v,) = by_variant([pool(busy=3, max_concurrency=4, rss_mb=(100.0, 0.0, 250.0), workers=3)])
    assert (v.workers, v.busy, v.queued) == (3, 3, 0)
    assert v.concurrency_utilization == 0.75
    assert v.memory_utilization == (10.0, 25.0)  # a worker not sampled yet (0 MB) is left out
    assert v.provisioned_executions == 0 and v.provisioned_utilization == 0.0
    assert v.active


def test_an_update_sums_old_and_new_pools_and_takes_the_new_configuration() -> None:
    old = pool(max_concurrency=2, provisioned=0, workers=1, busy=1, rss_mb=(500.0,), draining=True)
    new = pool(
        max_concurrency=10, provisioned=2, workers=3, busy=3, queued=1, memory_mb=2000, rss_mb=(200.0,)
    )
    other = pool(endpoint="other", workers=0, busy=0, rss_mb=())
    v, o = by_variant([old, new, other])
    assert (v.max_concurrency, v.provisioned) == (10, 2)
    assert (v.workers, v.busy, v.queued) == (4, 4, 1)
    assert v.memory_utilization == (50.0, 10.0)  # each worker against its own pool's MemorySizeInMB
    assert v.concurrency_utilization == pytest.approx(0.4)
    assert v.provisioned_executions == 2 and v.provisioned_utilization == 1.0
    assert not o.active


def test_provisioned_executions_are_the_busy_workers_within_the_provisioned_count() -> None:
    (v,) = by_variant([pool(provisioned=4, busy=1)])
    assert v.provisioned_executions == 1 and v.provisioned_utilization == 0.25
