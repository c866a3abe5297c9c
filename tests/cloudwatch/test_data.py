"""Reading many metrics at once (GetMetricData's queries, GetMetricStatistics and alarms one at a time):
``MetricData.read_many`` answers, metric by metric, what a recorder that saw every front end's events and
never closes a period answers, merged into the periods asked, from stored minutes, minutes still in memory,
10-second periods closed and open, and another front end's periods, with one database query and one peer
call for them all."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest

from zeroscale.cloudwatch.data import RECENT_SERIES_OP, Metric, MetricData
from zeroscale.cloudwatch.recent import KEEP_S, RESOLUTION_S, RecentMetrics
from zeroscale.events import InvocationRecord
from zeroscale.metrics import store as store_module
from zeroscale.metrics.history import Stat
from zeroscale.metrics.recorder import HistoryRecorder
from zeroscale.metrics.service import MetricsHistory
from zeroscale.metrics.store import MinuteStore
from zeroscale.peers import Gathered

METRICS = ("Invocations", "ModelLatency", "Invocation5XXErrors", "OverheadLatency", "Workers")


def record(endpoint: str, variant: str, at: float, model_s: float, status: int) -> InvocationRecord:
    code = "" if status == 200 else "ModelError"
    return InvocationRecord(
        endpoint, variant, "w", at, model_s, model_s + 0.001, 1, 1, status, code, 1, None, False
    )


def metric(name: str, endpoint: str, variant: str | None = "A") -> Metric:
    dims = [{"Name": "EndpointName", "Value": endpoint}]
    if variant is not None:
        dims.append({"Name": "VariantName", "Value": variant})
    return Metric.of("AWS/SageMaker", name, dims)


def expected(
    reference: HistoryRecorder, asked: tuple[str, str, str | None, int], start: float, end: float
) -> list[tuple[int, Stat]]:
    """The periods of the metric ``asked`` (name, endpoint, variant, period in seconds) that have data in
    [start, end), from ``reference``'s own periods (10 s or a minute) that start there, merged into periods
    counted from ``start`` rounded down to the reference's period, oldest first."""
    name, endpoint, variant, period = asked
    if variant is None:  # none of METRICS is endpoint-wide: without VariantName, a metric nobody published
        return []
    resolution = reference.minutes.period_s
    origin = int(start // resolution) * resolution
    merged: dict[int, Stat] = {}
    for key, stat in reference.minutes.select(endpoint, start, end, (name,), variant).items():
        at = origin + (key.minute - origin) // period * period
        if at in merged:
            merged[at].merge(stat)
        else:
            merged[at] = stat
    return sorted(merged.items())


def same(got: list[tuple[int, Stat]], want: list[tuple[int, Stat]]) -> bool:
    """The same periods with the same statistics (sums added up in another order)."""
    return [at for at, _ in got] == [at for at, _ in want] and all(
        (a.count, a.minimum, a.maximum) == (b.count, b.minimum, b.maximum) and math.isclose(a.sum, b.sum)
        for (_, a), (_, b) in zip(got, want, strict=True)
    )


async def test_many_metrics_read_at_once_answer_what_one_recorder_of_every_event_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "_IN_CHUNK", 2)  # the database asked for 2 endpoints at a time
    rng = random.Random(11)
    now = [100_000.0]
    clock = lambda: now[0]  # noqa: E731
    recent = RecentMetrics(lambda: [], clock)
    store = MinuteStore("sqlite://")
    history = MetricsHistory(HistoryRecorder(clock), store, lambda: [], retention_s=0, clock=clock)
    other = RecentMetrics(lambda: [], clock)  # another front end's 10-second periods
    # every event of both front ends, every period kept open: 10-second periods and minutes
    tens, minutes = HistoryRecorder(clock, period_s=RESOLUTION_S), HistoryRecorder(clock)
    asked: list[str] = []

    async def others(op: str, args: dict[str, Any]) -> Gathered:
        asked.append(op)
        answer = json.loads(json.dumps(await other.peer_query_series(json.loads(json.dumps(args)))))
        return Gathered((("fe-b", answer),))  # as the wire has it

    data = MetricData(history, recent, others=others)
    endpoints = ("a", "B", "c")

    def observe(at: float) -> None:
        """An invocation at ``at`` on one front end or the other, seen by the history and the references."""
        event = record(rng.choice(endpoints), rng.choice("AB"), at, rng.random(), rng.choice((200, 500)))
        (other if rng.random() < 0.3 else recent).invocation(event)
        for recorder in (history.recorder, tens, minutes):
            recorder.invocation(event)

    for _ in range(int(4.2 * 3600)):  # hours of traffic, a part of it late, some of it on the other front end
        now[0] += 1.0
        for _ in range(rng.randrange(3)):
            observe(now[0] - rng.choice((0.0, 0.3, 25.0, 70.0)))
        recent.sample()
        other.sample()
        if now[0] % 600 == 0:
            await history.flush()  # the finished minutes stored, the others still in memory
    for back in (25.0, 45.0) * 10:  # since the last sample: periods that closed, observed again
        observe(now[0] - back)
    queries = [
        (name, endpoint, variant, period)
        for name in METRICS
        for endpoint in (*endpoints, "C", "none")
        for variant in ("A", "B", None)
        for period in (10, 30, 60, 120)
    ]
    wanted = [(metric(name, endpoint, variant), period) for name, endpoint, variant, period in queries]
    wanted.append((Metric.of("AWS/EC2", "CPUUtilization", []), 60))  # not zeroscale's: no data
    # the last hour (10-second periods kept), and an hour whose 10-second periods are gone (minutes only);
    # neither starts on a period's boundary
    for start, end in ((now[0] - 3597, now[0] + 5), (now[0] - 4 * 3600 + 3, now[0] - KEEP_S - 30)):
        kept = end > now[0] - KEEP_S
        asked.clear()
        many, missing = await data.read_many(wanted, start, end)
        assert asked == ([RECENT_SERIES_OP] if kept else []) and missing == ()  # one call for them all
        assert len(many) == len(wanted) and many[-1] == []
        assert any(got for (_, period), got in zip(wanted, many, strict=True) if period < 60) == kept
        assert any(got for (_, period), got in zip(wanted, many, strict=True) if period >= 60)
        for query, got in zip(queries, many[:-1], strict=True):
            period = query[3]
            if period < 60:
                want = expected(tens, query, start, end) if kept else []
            else:
                want = expected(minutes, query, start, end)
            assert same(got, want), (query, got, want)
