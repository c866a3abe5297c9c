"""The 10-second metrics of the last hours: the same statistics as an aggregator that keeps every period
open, late observations included; what is older than kept is gone (and its memory with it); a sample's work
does not grow with the hours kept."""

from __future__ import annotations

import random

from zeroscale.cloudwatch.recent import RESOLUTION_S, ClosedPeriods, RecentMetrics
from zeroscale.events import InvocationRecord, WorkerEvent
from zeroscale.metrics.history import Key, Stat
from zeroscale.metrics.recorder import HistoryRecorder

METRICS = ("Invocations", "ModelLatency", "OverheadLatency", "Invocation5XXErrors", "ModelSetupTime")


def invocation(endpoint: str, at: float, model_s: float, status: int = 200) -> InvocationRecord:
    code = "" if status == 200 else "ModelError"
    return InvocationRecord(
        endpoint, "A", "w", at, model_s, model_s + 0.001, 1, 1, status, code, 1024, None, False
    )


def test_every_period_and_statistic_is_the_one_an_open_aggregator_holds() -> None:
    """Two hours of traffic on three endpoints in random order within a few periods (late observations of
    periods already closed, some since the last sample), with samples between: each query answers what a
    recorder that never closes a period answers, statistic for statistic."""
    rng = random.Random(7)
    now = [10_000.0]
    recent = RecentMetrics(lambda: [], lambda: now[0])
    reference = HistoryRecorder(lambda: now[0], period_s=RESOLUTION_S)
    for _ in range(2 * 3600):
        now[0] += 1.0
        for _ in range(rng.randrange(3)):
            at = now[0] - rng.choice((0.0, 0.2, 5.0, 25.0, 70.0))  # some land in periods that closed
            record = invocation(
                rng.choice(("a", "b", "C")), at, rng.random() / 10, rng.choice((200, 200, 500))
            )
            recent.invocation(record)
            reference.invocation(record)
        if rng.random() < 0.02:
            event = WorkerEvent("a", "A", "w", "started", now[0] - 3.0, setup_s=rng.random())
            recent.worker(event)
            reference.worker(event)
        recent.sample()
    for endpoint in ("a", "b", "C"):  # since the last sample: periods that closed, observed again
        for back in (5.0, 25.0):
            record = invocation(endpoint, now[0] - back, rng.random() / 10)
            recent.invocation(record)
            reference.invocation(record)
    series = {(endpoint, "A", metric) for endpoint in ("a", "b", "c") for metric in METRICS}
    for since, until in ((now[0] - 3600, now[0]), (now[0] - 95, now[0] - 35), (now[0] - 7, now[0] + 10)):
        found = recent.query_series(series, since, until)
        for endpoint, variant, metric in series:
            got = found.get((endpoint, variant, metric), {})
            want = reference.minutes.select(endpoint, since, until, (metric,), variant)
            assert sorted(got) == sorted(key.minute for key in want)
            for key, stat in want.items():
                assert _same(got[key.minute], stat), (key, got[key.minute], stat)
    assert recent.query_series({("a", "B", "Invocations")}, 0, now[0]) == {}


def _invocations(recent: RecentMetrics, endpoint: str, since: float, until: float) -> dict[int, Stat]:
    """The 10 s periods of variant A's Invocations of ``endpoint``, by start."""
    series = (endpoint, "A", "Invocations")
    return recent.query_series({series}, since, until).get(series, {})


def _same(a: Stat, b: Stat) -> bool:
    return (
        a.count == b.count and abs(a.sum - b.sum) < 1e-9 and a.minimum == b.minimum and a.maximum == b.maximum
    )


def test_what_is_older_than_kept_is_gone_with_its_series() -> None:
    now = [100_000.0]
    recent = RecentMetrics(lambda: [], lambda: now[0], keep_s=600)
    for _ in range(120):  # 20 minutes, one request a 10 s
        now[0] += RESOLUTION_S
        recent.invocation(invocation("a", now[0] - 1, 0.01))
        recent.sample()
    assert len(recent) <= 5 * (600 // RESOLUTION_S + 7)  # five metrics, kept periods and a minute's slack
    found = _invocations(recent, "a", 0, now[0])
    assert min(found) >= now[0] - 600 - RESOLUTION_S
    assert len(found) == 600 // RESOLUTION_S
    now[0] += 700  # no traffic since: everything ends
    recent.sample()
    assert _invocations(recent, "a", 0, now[0]) == {}
    assert len(recent) == 0


def test_a_sample_moves_what_ended_out_of_the_open_periods() -> None:
    """An hour of traffic on 20 endpoints leaves only the periods not yet ended open (each sample scans
    those: before, every period of the last 3 hours, 145 ms a sample with 100 busy endpoints)."""
    now = [50_000.0]
    recent = RecentMetrics(lambda: [], lambda: now[0])
    for _ in range(360):
        now[0] += RESOLUTION_S
        for i in range(20):
            recent.invocation(invocation(f"e{i}", now[0] - 0.5, 0.01))
        recent.sample()
    assert recent.open_periods <= 20 * len(METRICS)
    assert len(recent) >= 20 * 4 * 359


def test_closed_periods_merge_a_late_one_and_keep_order() -> None:
    closed = ClosedPeriods()
    closed.add({Key("a", 20, "A", "m"): Stat.of(1.0), Key("a", 40, "A", "m"): Stat.of(3.0)})
    closed.add({Key("a", 30, "A", "m"): Stat.of(2.0), Key("a", 20, "A", "m"): Stat.of(5.0, -1.0)})
    got = list(closed.periods("a", "A", "m", 0, 100))
    assert [start for start, _ in got] == [20, 30, 40]
    first = got[0][1]
    assert (first.sum, first.count, first.minimum, first.maximum) == (5.0, 3, -1.0, 5.0)
    assert list(closed.periods("a", "A", "m", 25, 40)) == [(30, Stat.of(2.0))]
    assert list(closed.periods("a", "B", "m", 0, 100)) == []
    closed.drop_before(35)
    assert [start for start, _ in closed.periods("a", "A", "m", 0, 100)] == [40]
    closed.drop_before(1000)
    assert len(closed) == 0


def test_pruning_visits_a_share_of_the_endpoints_at_a_time() -> None:
    """A sample prunes the share of the endpoints its time since the last one is of a minute, so no sample
    holds the loop for all of them; a round visits each one."""
    closed = ClosedPeriods()
    closed.add({Key(f"e{i}", start, "A", "m"): Stat.of(1.0) for i in range(120) for start in (10, 20)})
    closed.drop_before(15, share=1 / 60)  # two endpoints
    assert len(closed) == 2 * 120 - 2
    for _ in range(59):
        closed.drop_before(15, share=1 / 60)
    assert len(closed) == 120
    assert all([start for start, _ in closed.periods(f"e{i}", "A", "m", 0, 100)] == [20] for i in range(120))
    closed.drop_before(1000, share=1.0)
    assert len(closed) == 0


def test_what_aged_out_is_not_served_before_it_is_pruned() -> None:
    now = [100_000.0]
    recent = RecentMetrics(lambda: [], lambda: now[0], keep_s=600)
    for i in range(200):
        recent.invocation(invocation(f"e{i}", now[0] - 1, 0.01))
    now[0] += RESOLUTION_S
    recent.sample()
    now[0] += 570
    recent.sample()  # a share of the endpoints pruned: the periods are still inside the 600 s kept
    assert len(_invocations(recent, "e7", 0, now[0])) == 1
    now[0] += 30
    assert _invocations(recent, "e7", 0, now[0]) == {}  # aged out, pruned or not
