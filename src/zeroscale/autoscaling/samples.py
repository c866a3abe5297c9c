"""The metrics a scaling policy reads: the same values as the one-minute history (the same
``HistoryRecorder``: invocations and worker starts as they happen, the pools' gauges sampled), but only for
the variants that autoscaling watches, and cut into evaluation periods of ``period_s`` (60 s, as
CloudWatch's; shorter in tests). The last ``keep`` periods of each variant are kept in memory.

Several front ends on one database each see their own share of an endpoint's traffic: the one that
evaluates the policies (the leader) reads the others' periods (``export``, over ``zeroscale.peers``) and
merges each with its own of the same age (``values(..., others=...)``), as CloudWatch pools the datapoints
of every instance that publishes a metric: sums and counts add, averages are over every sample. Each front
end closes its periods on its own clock, so periods of the same age are at most one period apart."""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metrics import catalog
from zeroscale.metrics.catalog import ENDPOINT_WIDE
from zeroscale.metrics.history import Stat
from zeroscale.metrics.load import LoadSource, by_variant
from zeroscale.metrics.recorder import HistoryRecorder
from zeroscale.metrics.service import Gauge

Pair = tuple[str, str]  # (lower-cased endpoint name, variant name)
Period = dict[str, Stat]  # metric name -> its statistics over one period
# What export() answers: "<endpoint>\t<variant>" -> its periods, oldest first, each [its length in s,
# {metric: [sum, count, minimum, maximum]}] (JSON: an empty statistic's bounds are None)
Exported = Mapping[str, list[list[Any]]]

STATISTICS = ("Average", "Minimum", "Maximum", "SampleCount", "Sum")
# Counts: a period without an observation counted nothing (0), it is not missing data.
_COUNTS = frozenset(
    {
        catalog.INVOCATIONS,
        catalog.INVOCATION_4XX_ERRORS,
        catalog.INVOCATION_5XX_ERRORS,
        catalog.PROVISIONED_INVOCATIONS,
        catalog.SPILLOVER_INVOCATIONS,
    }
)
MINUTE_S = 60.0


class Samples:
    """An event sink (add it to the EventBus) and a sampler of the pools' gauges."""

    def __init__(self, loads: LoadSource, period_s: float, keep: int, clock: Callable[[], float]) -> None:
        self.period_s = period_s
        self._loads = loads
        self._recorder = HistoryRecorder(clock)
        self._clock = clock
        self._keep = keep
        self._watched: frozenset[Pair] = frozenset()
        self._periods: dict[Pair, collections.deque[tuple[float, Period]]] = {}  # (its length in s, ...)
        # Other gauges (the asynchronous backlog's, per endpoint: variant ENDPOINT_WIDE), read when a policy
        # watches one of them: each source may read the database, so the caller reads it off the loop.
        self.gauges: list[Callable[[], Sequence[Gauge]]] = []

    def wants_gauges(self) -> bool:
        return any(variant == ENDPOINT_WIDE for _, variant in self._watched)

    def observe(self, gauges: Sequence[Gauge]) -> None:
        """Record what the gauge sources read (on the loop, like the events)."""
        at = self._clock()
        for g in gauges:
            if (g.endpoint.lower(), g.variant) in self._watched:
                self._recorder.minutes.observe(g.endpoint.lower(), g.variant, g.metric, g.value, at)

    def watch(self, pairs: frozenset[Pair]) -> None:
        self._watched = pairs
        for pair in set(self._periods) - pairs:
            del self._periods[pair]

    # ---- the event sink: one set lookup for a variant nobody watches ----
    def invocation(self, record: InvocationRecord) -> None:
        if (record.endpoint.lower(), record.variant) in self._watched:
            self._recorder.invocation(record)

    def worker(self, event: WorkerEvent) -> None:
        if (event.endpoint.lower(), event.variant) in self._watched:
            self._recorder.worker(event)

    def variant(self, event: VariantEvent) -> None:
        self._recorder.variant(event)

    # ---- sampling and periods ----
    def sample(self) -> None:
        watched = self._watched
        if watched:
            loads = [v for v in by_variant(self._loads()) if (v.endpoint.lower(), v.variant) in watched]
            self._recorder.sample(loads)

    def close_period(self, length_s: float | None = None) -> None:
        """End the current period (``length_s`` long: ``period_s`` unless the loop was held up): what was
        observed since the last call becomes each watched variant's newest period (an empty one where nothing
        was)."""
        length = self.period_s if length_s is None or length_s <= 0 else length_s
        taken = self._recorder.minutes.take()
        current: dict[Pair, Period] = {pair: {} for pair in self._watched}
        for key, stat in taken.items():
            period = current.get((key.endpoint, key.variant))
            if period is None:
                continue
            have = period.get(key.metric)
            if have is None:
                period[key.metric] = stat
            else:
                have.merge(stat)
        for pair, period in current.items():
            self._periods.setdefault(pair, collections.deque(maxlen=self._keep)).append((length, period))

    def export(self) -> dict[str, list[list[Any]]]:
        """Every watched variant's kept periods, JSON-ready, for the front end that evaluates the policies."""
        return {
            f"{endpoint}\t{variant}": [
                [length, {metric: stat.row() for metric, stat in period.items()}]
                for length, period in periods
            ]
            for (endpoint, variant), periods in self._periods.items()
        }

    def values(
        self, endpoint: str, variant: str, metric: str, statistic: str, others: Sequence[Exported] = ()
    ) -> list[float | None]:
        """The metric's statistic over each kept period, oldest first (None: no data in that period), with
        the other front ends' periods of the same age merged in (``others``: what their ``export`` answered).
        Sum and SampleCount are per minute, whatever the period, so a target keeps CloudWatch's meaning."""
        pair = (endpoint.lower(), variant)
        theirs = [o.get(f"{pair[0]}\t{variant}") or [] for o in others]
        own = self._periods.get(pair, ())
        out: list[float | None] = []
        for age, (length, period) in zip(range(len(own), 0, -1), own, strict=True):
            stat = period.get(metric)
            for periods in theirs:
                row = periods[-age][1].get(metric) if len(periods) >= age else None
                if row is not None:
                    stat = Stat.of_row(row) if stat is None else _merged(stat, Stat.of_row(row))
            if stat is None and metric in _COUNTS:
                stat = Stat()
            out.append(None if stat is None else _value(stat, statistic, length))
        return out


def _merged(a: Stat, b: Stat) -> Stat:
    out = a.copy()
    out.merge(b)
    return out


def _value(stat: Stat, statistic: str, length_s: float) -> float | None:
    per_minute = MINUTE_S / length_s
    if statistic == "Sum":
        return stat.sum * per_minute
    if statistic == "SampleCount":
        return stat.count * per_minute
    if stat.count == 0:
        return None
    if statistic == "Minimum":
        return stat.minimum
    if statistic == "Maximum":
        return stat.maximum
    return stat.average
