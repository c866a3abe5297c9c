"""Events and samples into SageMaker's metrics, in SageMaker's units, per minute."""

from __future__ import annotations

import math

import pytest

from metrics.builders import T0, Clock, activated, model_error, pool, record, started, throttled
from zeroscale.events import WorkerEvent
from zeroscale.metrics.history import Key, Stat
from zeroscale.metrics.load import by_variant
from zeroscale.metrics.recorder import HistoryRecorder


def minute(rec: HistoryRecorder, at: float = T0) -> dict[str, Stat]:
    return {k.metric: s for k, s in rec.minutes.take(math.inf).items() if k.minute == int(at // 60 * 60)}


def test_invocations_errors_and_latencies() -> None:
    rec = HistoryRecorder()
    for _ in range(3):
        rec.invocation(record(model_s=0.002, total_s=0.003))
    rec.invocation(model_error(500, model_s=0.010, total_s=0.012))
    rec.invocation(model_error(415, model_s=0.001, total_s=0.002))
    rec.invocation(throttled(total_s=0.5))
    stats = minute(rec)
    assert stats["Invocations"].sum == 6
    assert stats["Invocation4XXErrors"] == Stat(2.0, 6, 0.0, 1.0)  # 1 or 0 for every invocation
    assert stats["Invocation5XXErrors"] == Stat(1.0, 6, 0.0, 1.0)
    assert stats["ModelLatency"].count == 5  # the throttled request never reached the model
    assert stats["ModelLatency"].maximum == pytest.approx(10_000)  # microseconds
    assert stats["OverheadLatency"].count == 6
    assert stats["OverheadLatency"].maximum == pytest.approx(500_000)
    assert stats["OverheadLatency"].minimum == pytest.approx(1_000)
    assert "ModelSetupTime" not in stats
    assert "ServerlessProvisionedConcurrencyInvocations" not in stats  # not a provisioned variant


def test_overhead_includes_the_cold_start_the_request_waited_for() -> None:
    rec = HistoryRecorder()
    rec.invocation(record(model_s=0.004, total_s=0.104, setup_s=0.09))
    assert minute(rec)["OverheadLatency"].sum == pytest.approx(100_000)


def test_model_setup_time_once_per_worker_start() -> None:
    rec = HistoryRecorder()
    rec.worker(started(0.05))
    rec.worker(started(0.07, worker_id="w2"))
    rec.worker(WorkerEvent("ep", "AllTraffic", "w1", "stopped", T0 + 2))
    rec.worker(WorkerEvent("ep", "AllTraffic", "", "failed", T0 + 3, detail="boom"))
    setup = minute(rec)["ModelSetupTime"]
    assert setup.count == 2
    assert (setup.minimum, setup.maximum) == (pytest.approx(50_000), pytest.approx(70_000))


def test_provisioned_and_spillover_invocations() -> None:
    rec = HistoryRecorder()
    rec.variant(activated(provisioned=1))
    rec.invocation(record(provisioned=True))
    rec.invocation(record(provisioned=True))
    rec.invocation(record(provisioned=False))
    rec.invocation(throttled())  # served by neither
    stats = minute(rec)
    assert stats["ServerlessProvisionedConcurrencyInvocations"].sum == 2
    assert stats["ServerlessProvisionedConcurrencySpilloverInvocations"].sum == 1


def test_samples_at_the_clock_time_and_only_for_active_variants() -> None:
    clock = Clock(T0 + 5)
    rec = HistoryRecorder(clock)
    loads = by_variant(
        [
            pool(busy=2, max_concurrency=4, workers=2, queued=1, rss_mb=(100.0, 300.0), provisioned=1),
            pool(endpoint="idle", workers=0, busy=0, queued=0, rss_mb=()),
        ]
    )
    rec.sample(loads)
    clock.now = T0 + 65
    rec.sample(loads)
    stats = rec.minutes.take(math.inf)
    assert {k.endpoint for k in stats} == {"ep"}
    first = {k.metric: s for k, s in stats.items() if k.minute == T0}
    assert first["ServerlessConcurrentExecutionsUtilization"] == Stat.of(0.5)
    assert first["MemoryUtilization"] == Stat.of(10.0, 30.0)
    assert first["Workers"] == Stat.of(2.0)
    assert first["QueueDepth"] == Stat.of(1.0)
    assert first["ServerlessProvisionedConcurrencyExecutions"] == Stat.of(1.0)
    assert first["ServerlessProvisionedConcurrencyUtilization"] == Stat.of(1.0)
    assert Key("ep", int(T0) + 60, "AllTraffic", "Workers") in stats
