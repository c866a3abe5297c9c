"""CloudWatch's 10-second periods of the last 3 hours (``cloudwatch/recent.py``) on busy endpoints: what
they hold and what a sample costs the event loop, against the same data in one dict of ``Stat`` objects
scanned by every sample (``metrics.history.MinuteAggregator`` at 10 s, as ``RecentMetrics`` kept it before
2026-12-03), in the same run.

Both are fed the same events from a simulated clock: ``ENDPOINTS`` busy endpoints, each with two requests
and one gauge sample of four metrics every 10 s, for ``HOURS`` hours (the data kept reaches its 3 hours),
and sampled every 10 s as the server samples every second. Each store runs in a fresh process of its own.
Reported: the memory held at the end (the process's resident set, the end less the start), the p50 and the
last of the samples' times, and a 1-hour query of one metric.

    .venv/bin/python -m bench.recent [--endpoints 30] [--hours 3.2]
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Protocol

from zeroscale.cloudwatch.recent import KEEP_S, RESOLUTION_S, RecentMetrics
from zeroscale.events import InvocationRecord
from zeroscale.metrics.history import Series, Stat
from zeroscale.metrics.load import PoolLoad, by_variant
from zeroscale.metrics.recorder import HistoryRecorder

ENDPOINTS = 30
HOURS = 3.2


class _Store(Protocol):
    def invocation(self, record: InvocationRecord) -> None: ...

    def sample(self) -> None: ...

    def query_series(
        self, series: AbstractSet[Series], since: float, until: float
    ) -> dict[Series, dict[int, Stat]]: ...


class _OneDict:
    """The design before: one aggregator of 10-s periods, every sample dropping what aged out by a scan."""

    def __init__(self, loads: Callable[[], list[PoolLoad]], clock: Callable[[], float]) -> None:
        self._loads, self._clock = loads, clock
        self._recorder = HistoryRecorder(clock, period_s=RESOLUTION_S)

    def invocation(self, record: InvocationRecord) -> None:
        self._recorder.invocation(record)

    def sample(self) -> None:
        self._recorder.sample(by_variant(self._loads()))
        self._recorder.minutes.take(self._clock() - KEEP_S)

    def query_series(
        self, series: AbstractSet[Series], since: float, until: float
    ) -> dict[Series, dict[int, Stat]]:
        return self._recorder.minutes.select_series(series, since, until)


@dataclass
class StoreResult:
    memory_mb: float = 0.0
    sample_s: list[float] = field(default_factory=list)
    query_s: float = 0.0


@dataclass
class RecentResult:
    endpoints: int
    hours: float
    stores: dict[str, StoreResult] = field(default_factory=dict)


def _loads(endpoints: int) -> list[PoolLoad]:
    return [
        PoolLoad(f"busy-{i}", "AllTraffic", 2, 0, 2048, 2, 1, 0, (800.0,), False) for i in range(endpoints)
    ]


def _run(kind: str, endpoints: int, hours: float) -> StoreResult:
    now = [1_700_000_000.0]
    clock = lambda: now[0]  # noqa: E731
    loads = _loads(endpoints)
    store: _Store = (
        RecentMetrics(lambda: loads, clock) if kind == "packed" else _OneDict(lambda: loads, clock)
    )
    out = StoreResult()
    gc.collect()
    start = _rss()
    for _ in range(int(hours * 3600 / RESOLUTION_S)):
        now[0] += RESOLUTION_S
        for i in range(endpoints):
            for back in (1.0, 6.0):
                store.invocation(
                    InvocationRecord(
                        f"busy-{i}",
                        "AllTraffic",
                        "w",
                        now[0] - back,
                        0.003,
                        0.0035,
                        80,
                        40,
                        200,
                        "",
                        2048,
                        None,
                        False,
                    )
                )
        t = time.perf_counter()
        store.sample()
        out.sample_s.append(time.perf_counter() - t)
    out.memory_mb = (_rss() - start) / 2**20
    t = time.perf_counter()
    for _ in range(20):
        store.query_series({("busy-0", "AllTraffic", "ModelLatency")}, now[0] - 3600, now[0])
    out.query_s = (time.perf_counter() - t) / 20
    return out


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(endpoints: int = ENDPOINTS, hours: float = HOURS) -> RecentResult:
    res = RecentResult(endpoints, hours)
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for kind in ("one dict", "packed"):
            res.stores[kind] = pool.apply(_run, (kind, endpoints, hours))
    return res


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--endpoints", type=int, default=ENDPOINTS)
    parser.add_argument("--hours", type=float, default=HOURS)
    args = parser.parse_args()
    res = run(args.endpoints, args.hours)
    for kind, s in res.stores.items():
        print(
            f"{kind:9s} memory {s.memory_mb:6.1f} MB, "
            f"sample p50 {statistics.median(s.sample_s) * 1e3:7.3f} ms, "
            f"last {s.sample_s[-1] * 1e3:7.3f} ms, 1-hour query {s.query_s * 1e3:6.2f} ms"
        )


if __name__ == "__main__":
    main()
