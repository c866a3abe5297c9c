"""The history at run time: sampling, writing finished minutes, shutdown, retention, queries."""

from __future__ import annotations

import asyncio
from pathlib import Path

from metrics.builders import T0, Clock, pool, record
from zeroscale.metrics.history import Key, Stat
from zeroscale.metrics.load import PoolLoad
from zeroscale.metrics.recorder import HistoryRecorder
from zeroscale.metrics.service import Datapoint, MetricsHistory
from zeroscale.metrics.store import MinuteStore

M0 = int(T0)
INF = float("inf")


def db(tmp_path: Path) -> MinuteStore:
    return MinuteStore(f"sqlite:///{tmp_path / 'z.db'}")


def history(
    tmp_path: Path,
    clock: Clock,
    loads: list[PoolLoad] | None = None,
    *,
    retention_s: float = 3600,
    sample_interval_s: float = 1.0,
) -> MetricsHistory:
    return MetricsHistory(
        HistoryRecorder(clock),
        db(tmp_path),
        lambda: list(loads or []),
        retention_s=retention_s,
        sample_interval_s=sample_interval_s,
        clock=clock,
    )


def invocations(points: list[Datapoint]) -> dict[int, float]:
    return {p.minute - M0: p.stat.sum for p in points if p.metric == "Invocations"}


def stored_invocations(tmp_path: Path) -> dict[int, float]:
    store = db(tmp_path)
    try:
        got = store.query("ep", 0, INF, metrics=["Invocations"])
    finally:
        store.close()
    return {k.minute - M0: s.sum for k, s in got.items()}


async def test_flush_writes_a_minute_once_it_ended_and_close_writes_the_rest(tmp_path: Path) -> None:
    clock = Clock(T0 + 61)
    h = history(tmp_path, clock)
    for at in (T0 + 1, T0 + 2, T0 + 60.5):
        h.recorder.invocation(record(at=at))
    assert await h.flush() == 0  # minute 0 ended 1 s ago: within the grace, an event may still come
    clock.now = T0 + 62
    assert await h.flush() == 5  # Invocations, 4XX, 5XX, ModelLatency, OverheadLatency of minute 0
    assert stored_invocations(tmp_path) == {0: 2}
    await h.close()  # minute 1 has not ended, and is written anyway
    assert stored_invocations(tmp_path) == {0: 2, 60: 1}


async def test_query_combines_stored_and_open_minutes_without_counting_twice(tmp_path: Path) -> None:
    clock = Clock(T0 + 65)
    h = history(tmp_path, clock)
    for at in (T0 + 1, T0 + 2, T0 + 64):
        h.recorder.invocation(record(at=at))
    assert invocations(await h.query("ep", since=T0)) == {0: 2, 60: 1}
    await h.flush()
    assert stored_invocations(tmp_path) == {0: 2}
    assert invocations(await h.query("EP", since=T0)) == {0: 2, 60: 1}
    assert invocations(await h.query("ep", since=T0 + 60)) == {60: 1}
    assert invocations(await h.query("ep", since=T0, until=T0 + 60)) == {0: 2}
    points = await h.query("ep", since=T0, metrics=("ModelLatency",))
    assert {p.metric for p in points} == {"ModelLatency"}
    doc = points[0].document()
    assert doc["Unit"] == "Microseconds" and doc["Timestamp"] == "2027-01-15T08:00:00Z"
    assert doc["SampleCount"] == 2 and doc["Average"] == 4000.0
    await h.close()


async def test_retention_prunes_at_start_and_on_flush(tmp_path: Path) -> None:
    old = db(tmp_path)
    old.write(
        {Key("ep", M0, "v", "Invocations"): Stat.of(1), Key("ep", M0 + 3660, "v", "Invocations"): Stat.of(1)}
    )
    old.close()
    clock = Clock(T0 + 7200)
    h = history(tmp_path, clock, retention_s=3600, sample_interval_s=60)
    await h.start()
    assert invocations(await h.query("ep", since=0)) == {3660: 1}
    clock.now = T0 + 3660 + 3600 + 60
    await h.close()
    assert stored_invocations(tmp_path) == {}


async def test_the_loop_samples_and_writes_each_minute(tmp_path: Path) -> None:
    clock = Clock(T0 + 50)
    loads = [pool(workers=1, busy=1, rss_mb=(512.0,), memory_mb=1024)]
    h = history(tmp_path, clock, loads, sample_interval_s=0.005)
    await h.start()
    await asyncio.sleep(0.05)
    clock.now = T0 + 62.5  # past minute 0 and its grace: the loop writes it
    store = db(tmp_path)
    for _ in range(200):
        await asyncio.sleep(0.01)
        if store.query("ep", T0, INF):
            break
    stored = store.query("ep", T0, INF)
    mem = stored[Key("ep", M0, "AllTraffic", "MemoryUtilization")]
    assert mem.count >= 2 and mem.minimum == mem.maximum == 50.0
    assert stored[Key("ep", M0, "AllTraffic", "Workers")].maximum == 1
    assert Key("ep", M0 + 60, "AllTraffic", "Workers") not in stored
    await h.close()
    assert Key("ep", M0 + 60, "AllTraffic", "Workers") in store.query("ep", T0, INF)
    store.close()


async def test_retention_zero_keeps_everything(tmp_path: Path) -> None:
    clock = Clock(T0 + 30)
    h = history(tmp_path, clock, retention_s=0)
    h.recorder.invocation(record(at=T0 + 1))
    clock.now = T0 + 10 * 86400
    await h.close()
    assert stored_invocations(tmp_path) == {0: 1}
