"""The one-minute history at run time: sample the pools' gauges (and any other gauge source) every second,
write finished minutes to the database once a minute (and everything on shutdown), drop minutes past the
retention, and answer queries from the database plus the minutes still in memory."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import NamedTuple

from zeroscale.metrics.catalog import BY_NAME
from zeroscale.metrics.history import PERIOD_S, Key, Series, Stat, merge_into
from zeroscale.metrics.load import LoadSource, by_variant
from zeroscale.metrics.recorder import HistoryRecorder
from zeroscale.metrics.store import MinuteStore

log = logging.getLogger("zeroscale.metrics")
# A minute is written this long after it ended, so observations stamped just before its end are in.
FLUSH_GRACE_S = 2.0


class Gauge(NamedTuple):
    """One sampled value of a gauge that is not a pool's (the asynchronous backlog, for one)."""

    endpoint: str
    variant: str
    metric: str
    value: float


# Called off the event loop (a source may read the database) at each sample.
GaugeSource = Callable[[], Sequence[Gauge]]


@dataclass(frozen=True)
class Datapoint:
    variant: str
    metric: str
    minute: int
    stat: Stat

    def document(self) -> dict[str, object]:
        """CloudWatch's Datapoint members (Timestamp as epoch seconds and ISO 8601)."""
        info = BY_NAME.get(self.metric)
        s = self.stat
        return {
            "VariantName": self.variant,
            "MetricName": self.metric,
            "Timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.minute)),
            "Minute": self.minute,
            "Unit": info.unit if info else "None",
            "Sum": s.sum,
            "SampleCount": s.count,
            "Average": s.average,
            "Minimum": s.minimum,
            "Maximum": s.maximum,
        }


class MetricsHistory:
    def __init__(
        self,
        recorder: HistoryRecorder,
        store: MinuteStore,
        loads: LoadSource,
        *,
        retention_s: float,
        sample_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.recorder = recorder
        self.gauges: list[GaugeSource] = []
        self._store = store
        self._loads = loads
        self._retention_s = retention_s
        self._sample_s = sample_interval_s
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._writing = asyncio.Lock()

    async def start(self) -> None:
        await self._prune(self._clock())
        self._task = asyncio.create_task(self._run())

    async def _prune(self, now: float) -> None:
        if self._retention_s > 0:  # 0 keeps the history forever
            await asyncio.to_thread(self._store.prune, now - self._retention_s)

    async def close(self) -> None:
        """Stop sampling and write every minute held in memory, the current one included."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush(everything=True)
        await asyncio.to_thread(self._store.close)

    def sample(self) -> None:
        self.recorder.sample(by_variant(self._loads()))

    async def sample_gauges(self) -> None:
        """One sample of every other gauge source, read off the loop and recorded on it."""
        for source in self.gauges:
            at = self._clock()
            for g in await asyncio.to_thread(source):
                self.recorder.minutes.observe(g.endpoint, g.variant, g.metric, g.value, at)

    async def _run(self) -> None:
        next_flush = _next_flush(self._clock())
        while True:
            await asyncio.sleep(self._sample_s)
            try:
                self.sample()
                await self.sample_gauges()
                if self._clock() >= next_flush:
                    next_flush = _next_flush(self._clock())
                    await self.flush()
            except Exception:  # the database may be away for a while: keep sampling, retry next minute
                log.exception("metrics history: sampling or writing failed")

    async def flush(self, *, everything: bool = False) -> int:
        """Write the finished minutes (or all of them); returns how many statistics were written."""
        async with self._writing:
            now = self._clock()
            stats = self.recorder.minutes.take(math.inf if everything else now - FLUSH_GRACE_S)
            try:
                await asyncio.to_thread(self._store.write, stats)
            except Exception:
                self.recorder.minutes.restore(stats)
                raise
            await self._prune(now)
            return len(stats)

    async def query(
        self,
        endpoint: str,
        since: float,
        until: float | None = None,
        metrics: tuple[str, ...] = (),
        variant: str | None = None,
    ) -> list[Datapoint]:
        """Every minute of ``endpoint`` from the minute of ``since`` to ``until`` (default: now), oldest
        first, stored and in memory combined."""
        end = math.inf if until is None else until
        async with self._writing:  # a minute is either stored or in memory, never counted twice
            stored = await asyncio.to_thread(self._store.query, endpoint, since, end, metrics, variant)
            merge_into(stored, self.recorder.minutes.select(endpoint, since, end, metrics, variant))
        return [Datapoint(k.variant, k.metric, k.minute, s) for k, s in sorted(stored.items(), key=_order)]

    async def query_series(
        self, series: AbstractSet[Series], since: float, until: float
    ) -> dict[Series, list[tuple[int, Stat]]]:
        """``query`` of each of ``series`` (lower-cased endpoints) at once: the minutes of each, oldest first,
        stored and in memory combined, with one database query and one pass over the minutes in memory for
        them all. A series without any minute is left out."""
        async with self._writing:  # a minute is either stored or in memory, never counted twice
            stored = await asyncio.to_thread(self._store.query_series, series, since, until)
            held = self.recorder.minutes.select_series(series, since, until)
        for key, minutes in held.items():
            into = stored.setdefault(key, {})
            for minute, stat in minutes.items():
                have = into.get(minute)
                if have is None:
                    into[minute] = stat
                else:
                    have.merge(stat)
        return {key: sorted(minutes.items()) for key, minutes in stored.items()}

    async def series(self, since: float) -> set[tuple[str, str, str]]:
        """Every (lower-cased endpoint, variant, metric) observed since ``since``, stored or in memory."""
        async with self._writing:
            found = await asyncio.to_thread(self._store.series, since)
            found.update((k.endpoint, k.variant, k.metric) for k in self.recorder.minutes.open_keys())
        return found


def _order(item: tuple[Key, Stat]) -> tuple[int, str, str]:
    key = item[0]
    return key.minute, key.variant, key.metric


def _next_flush(now: float) -> float:
    return (now // PERIOD_S + 1) * PERIOD_S + FLUSH_GRACE_S
