"""The last hours of every variant's metrics at 10-second resolution, in memory: CloudWatch's
high-resolution periods (10 s, 30 s) for GetMetricStatistics, GetMetricData and alarms. An event sink (add it
to the EventBus) and a sampler of the pools' gauges, holding its own ``HistoryRecorder`` cut into 10 s
periods instead of minutes, so its values are the very ones of the one-minute history.

Periods still open stay in the recorder; each ``sample`` moves those that ended into ``ClosedPeriods``, a
series per (endpoint, variant, metric) of packed arrays, and drops what is older than kept from a share of
the endpoints, each of them about once a minute. A busy variant keeps about ten series of 1,080 periods (3
hours): 40 bytes a period there, where a dict of ``Stat`` objects held ~240, and each sample scanned every
period kept (up to 93 ms a second with 100 busy endpoints; ``bench/recent.py``)."""

from __future__ import annotations

import math
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metrics.history import Key, Series, Stat
from zeroscale.metrics.load import LoadSource, by_variant
from zeroscale.metrics.recorder import HistoryRecorder

RESOLUTION_S = 10
KEEP_S = 3 * 3600  # CloudWatch keeps high-resolution datapoints for 3 hours
SWEEP_S = 60.0  # every series is pruned about once a sweep, a share of the endpoints at each sample


def _packed(stat: Stat) -> tuple[float, float, float, float]:
    return stat.sum, float(stat.count), stat.minimum, stat.maximum


class _Series:
    """One metric of one variant: its closed periods' starts, ascending, and their statistics packed four
    floats a period (sum, count, minimum, maximum)."""

    __slots__ = ("starts", "values")

    def __init__(self) -> None:
        self.starts = array("q")
        self.values = array("d")

    def add(self, start: int, stat: Stat) -> None:
        starts, values = self.starts, self.values
        if not starts or start > starts[-1]:  # the usual case: periods close in order
            starts.append(start)
            values.extend(_packed(stat))
            return
        i = bisect_left(starts, start)
        if i < len(starts) and starts[i] == start:  # a late observation of a period already closed
            merged = self.stat(i)
            merged.merge(stat)
            values[4 * i : 4 * i + 4] = array("d", _packed(merged))
            return
        starts.insert(i, start)
        values[4 * i : 4 * i] = array("d", _packed(stat))

    def stat(self, i: int) -> Stat:
        v = self.values
        return Stat(v[4 * i], int(v[4 * i + 1]), v[4 * i + 2], v[4 * i + 3])

    def between(self, low: int, high: float) -> Iterable[tuple[int, Stat]]:
        """The periods whose start is in [low, high)."""
        starts = self.starts
        for i in range(bisect_left(starts, low), bisect_left(starts, high)):
            yield starts[i], self.stat(i)

    def drop_before(self, start: int) -> None:
        """Drop the periods that start before ``start``."""
        n = bisect_left(self.starts, start)
        if n:
            del self.starts[:n]
            del self.values[: 4 * n]


class ClosedPeriods:
    """Closed periods by (lower-cased endpoint, variant, metric); pure, no clock."""

    def __init__(self) -> None:
        # lower-cased endpoint -> (variant, metric) -> series
        self._series: dict[str, dict[tuple[str, str], _Series]] = {}
        self._sweep: list[str] = []  # the endpoints this round of pruning has still to visit

    def __len__(self) -> int:
        return sum(len(s.starts) for by_name in self._series.values() for s in by_name.values())

    def add(self, stats: Mapping[Key, Stat]) -> None:
        for key, stat in stats.items():
            by_name = self._series.setdefault(key.endpoint, {})
            series = by_name.get((key.variant, key.metric))
            if series is None:
                series = by_name[(key.variant, key.metric)] = _Series()
            series.add(key.minute, stat)

    def periods(
        self, endpoint: str, variant: str, metric: str, low: int, high: float
    ) -> Iterable[tuple[int, Stat]]:
        """The closed periods of one series that start in [low, high)."""
        series = self._series.get(endpoint, {}).get((variant, metric))
        return () if series is None else series.between(low, high)

    def drop_before(self, start: int, share: float = 1.0) -> None:
        """Forget the periods that start before ``start``, and the series left empty: of every endpoint, or
        of the next ``share`` of them in turn (one endpoint at least), so that no call holds the event loop
        for all of them (10,000 endpoints with data: 26 ms at once)."""
        count = len(self._series) if share >= 1 else max(1, math.ceil(len(self._series) * share))
        for _ in range(min(count, len(self._series))):
            if not self._sweep:
                self._sweep = list(self._series)  # a new round
            endpoint = self._sweep.pop()
            by_name = self._series.get(endpoint)
            if by_name is None:
                continue
            for name in list(by_name):
                series = by_name[name]
                series.drop_before(start)
                if not series.starts:
                    del by_name[name]
            if not by_name:
                del self._series[endpoint]


class RecentMetrics:
    def __init__(
        self, loads: LoadSource, clock: Callable[[], float] = time.time, keep_s: float = KEEP_S
    ) -> None:
        self._loads = loads
        self._clock = clock
        self._keep_s = keep_s
        self._recorder = HistoryRecorder(clock, period_s=RESOLUTION_S)
        self._closed = ClosedPeriods()
        self._swept = -math.inf

    # ---- the event sink ----
    def invocation(self, record: InvocationRecord) -> None:
        self._recorder.invocation(record)

    def worker(self, event: WorkerEvent) -> None:
        self._recorder.worker(event)

    def variant(self, event: VariantEvent) -> None:
        self._recorder.variant(event)

    # ---- sampling, pruning, reading ----
    def sample(self) -> None:
        now = self._clock()
        self._recorder.sample(by_variant(self._loads()))
        # the periods that ended: their statistics move to the packed series (the open ones are few)
        self._closed.add(self._recorder.minutes.take(now))
        # a share of the endpoints each time: every series about once per SWEEP_S
        share, self._swept = (now - self._swept) / SWEEP_S, now
        self._closed.drop_before(self._kept_from(), share)

    def query_series(
        self, series: AbstractSet[Series], since: float, until: float
    ) -> dict[Series, dict[int, Stat]]:
        """Copies of the 10 s periods of each of ``series`` (lower-cased endpoints) that start in
        [since, until), by period start (the closed ones first, oldest first, then those still open): one
        pass over the open periods for them all. A series without any period is left out."""
        low = max(int(since // RESOLUTION_S) * RESOLUTION_S, self._kept_from())
        out: dict[Series, dict[int, Stat]] = {}
        for key in series:
            found = dict(self._closed.periods(*key, low, until))
            if found:
                out[key] = found
        for key, held in self._recorder.minutes.select_series(series, since, until).items():
            into = out.setdefault(key, {})
            for start, stat in held.items():
                have = into.get(start)
                if have is None:
                    into[start] = stat
                else:  # a late observation of a period that had closed
                    have.merge(stat)
        return out

    async def peer_query_series(self, args: dict[str, Any]) -> dict[str, Any]:
        """The peer operation ``cloudwatch.recent.series``: ``query_series`` for another front end, the
        periods of each series in the order asked (an empty list for one without any; periods start on the
        same 10-second boundaries on every front end, so the caller merges them by their start)."""
        wanted = [(str(e).lower(), str(v), str(m)) for e, v, m in args["series"]]
        found = self.query_series(set(wanted), float(args["since"]), float(args["until"]))
        empty: dict[int, Stat] = {}
        return {
            "periods": [
                [[start, *stat.row()] for start, stat in found.get(key, empty).items()] for key in wanted
            ]
        }

    def oldest(self) -> float:
        """The start of the oldest period still kept (data before it is gone)."""
        return self._clock() - self._keep_s

    def _kept_from(self) -> int:
        """Periods that start before this are no longer served, pruned or not yet."""
        return int(self.oldest() // RESOLUTION_S) * RESOLUTION_S

    def __len__(self) -> int:
        """Periods held (open and closed), one per series that has data in it."""
        return len(self._closed) + len(self._recorder.minutes)

    @property
    def open_periods(self) -> int:
        """Periods not yet ended (or observed late), the only ones a sample scans."""
        return len(self._recorder.minutes)
