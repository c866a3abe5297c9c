"""The metrics a policy reads: watched variants only, cut into periods, Sum and SampleCount per minute."""

from __future__ import annotations

from zeroscale.autoscaling.samples import Samples
from zeroscale.events import InvocationRecord
from zeroscale.metrics.load import PoolLoad


def record(endpoint: str, variant: str, at: float, model_s: float = 0.01) -> InvocationRecord:
    return InvocationRecord(endpoint, variant, "w1", at, model_s, model_s, 10, 10, 200, "", 1024, None, False)


def pool(endpoint: str, variant: str, queued: int) -> PoolLoad:
    return PoolLoad(endpoint, variant, 4, 4, 1024, 4, 2, queued, (), False)


def test_periods_of_watched_variants() -> None:
    now = [1000.0]
    queued = [3]
    samples = Samples(lambda: [pool("Demo", "A", queued[0])], period_s=2.0, keep=3, clock=lambda: now[0])
    samples.invocation(record("demo", "A", 1000.0))  # not watched yet: dropped
    samples.watch(frozenset({("demo", "A")}))
    for i in range(4):
        samples.invocation(record("Demo", "A", 1000.0 + i * 0.5, model_s=0.002 * (i + 1)))
    samples.invocation(record("other", "A", 1000.0))
    samples.sample()
    queued[0] = 5
    samples.sample()
    samples.close_period()
    samples.close_period()  # a quiet period: no invocations (0), no gauge samples (no data)
    assert samples.values("DEMO", "A", "Invocations", "Sum") == [4 * 30.0, 0.0]  # per minute: x 60 / 2
    assert samples.values("demo", "A", "Invocations", "SampleCount") == [120.0, 0.0]
    assert samples.values("demo", "A", "ModelLatency", "Maximum") == [8000.0, None]  # microseconds
    assert samples.values("demo", "A", "QueueDepth", "Average") == [4.0, None]
    assert samples.values("demo", "A", "QueueDepth", "Minimum") == [3.0, None]
    assert samples.values("other", "A", "Invocations", "Sum") == []
    for _ in range(3):
        samples.close_period()
    assert len(samples.values("demo", "A", "Invocations", "Sum")) == 3  # keep
    samples.invocation(record("demo", "A", 1010.0))
    samples.close_period(4.0)  # the loop was held up: a period twice as long counts at half the rate
    assert samples.values("demo", "A", "Invocations", "Sum")[-1] == 15.0
    samples.watch(frozenset())
    assert samples.values("demo", "A", "Invocations", "Sum") == []
