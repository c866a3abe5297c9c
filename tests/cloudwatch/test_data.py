"""Reading many metrics at once (GetMetricData's queries): ``MetricData.read_many`` answers, metric by metric,
what ``read`` answers for each alone, from stored minutes, minutes still in memory, 10-second periods closed
and open, and another front end's periods, with one database query and one peer call for them all."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from zeroscale.cloudwatch.data import RECENT_SERIES_OP, Metric, MetricData
from zeroscale.cloudwatch.recent import RecentMetrics
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


def rows(periods: list[tuple[int, Stat]]) -> list[tuple[int, list[float | int | None]]]:
    return [(at, stat.row()) for at, stat in periods]


async def test_many_metrics_read_at_once_answer_what_each_read_alone_answers(
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
    asked: list[str] = []

    async def others(op: str, args: dict[str, Any]) -> Gathered:
        asked.append(op)
        handler = other.peer_query_series if op == RECENT_SERIES_OP else other.peer_query
        answer = json.loads(json.dumps(await handler(json.loads(json.dumps(args)))))  # as the wire has it
        return Gathered((("fe-b", answer),))

    data = MetricData(history, recent, others=others)
    endpoints = ("a", "B", "c")
    for _ in range(int(4.2 * 3600)):  # hours of traffic, a part of it late, some of it on the other front end
        now[0] += 1.0
        for _ in range(rng.randrange(3)):
            at = now[0] - rng.choice((0.0, 0.3, 25.0, 70.0))
            event = record(rng.choice(endpoints), rng.choice("AB"), at, rng.random(), rng.choice((200, 500)))
            (other if rng.random() < 0.3 else recent).invocation(event)
            history.recorder.invocation(event)
        recent.sample()
        other.sample()
        if now[0] % 600 == 0:
            await history.flush()  # the finished minutes stored, the others still in memory
    wanted = [
        (metric(name, endpoint, variant), period)
        for name in METRICS
        for endpoint in (*endpoints, "C", "none")
        for variant in ("A", "B", None)
        for period in (10, 30, 60, 120)
    ]
    wanted.append((Metric.of("AWS/EC2", "CPUUtilization", []), 60))
    # the last hour (10-second periods kept), and an hour whose 10-second periods are gone (minutes only)
    for start, end, kept in (
        (now[0] - 3600, now[0] + 5, True),
        (now[0] - 4 * 3600, now[0] - 3 * 3600 - 30, False),
    ):
        asked.clear()
        many, missing = await data.read_many(wanted, start, end)
        assert asked == ([RECENT_SERIES_OP] if kept else []) and missing == ()  # one call for them all
        assert len(many) == len(wanted)
        assert any(got for (_, period), got in zip(wanted, many, strict=True) if period < 60) == kept
        assert any(got for (_, period), got in zip(wanted, many, strict=True) if period >= 60)
        for (m, period), got in zip(wanted, many, strict=True):
            alone, _ = await data.read(m, start, end, period)
            assert rows(got) == rows(alone), (m, period)
