"""The last hours of every variant's metrics at 10-second resolution, in memory: CloudWatch's
high-resolution periods (10 s, 30 s) for GetMetricStatistics, GetMetricData and alarms. An event sink (add it
to the EventBus) and a sampler of the pools' gauges, holding its own ``HistoryRecorder`` cut into 10 s
periods instead of minutes, so its values are the very ones of the one-minute history."""

from __future__ import annotations

import time
from collections.abc import Callable

from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metrics.history import Key, Stat
from zeroscale.metrics.load import LoadSource, by_variant
from zeroscale.metrics.recorder import HistoryRecorder

RESOLUTION_S = 10
KEEP_S = 3 * 3600  # CloudWatch keeps high-resolution datapoints for 3 hours


class RecentMetrics:
    def __init__(
        self, loads: LoadSource, clock: Callable[[], float] = time.time, keep_s: float = KEEP_S
    ) -> None:
        self._loads = loads
        self._clock = clock
        self._keep_s = keep_s
        self._recorder = HistoryRecorder(clock, period_s=RESOLUTION_S)

    # ---- the event sink ----
    def invocation(self, record: InvocationRecord) -> None:
        self._recorder.invocation(record)

    def worker(self, event: WorkerEvent) -> None:
        self._recorder.worker(event)

    def variant(self, event: VariantEvent) -> None:
        self._recorder.variant(event)

    # ---- sampling, pruning, reading ----
    def sample(self) -> None:
        self._recorder.sample(by_variant(self._loads()))
        self._recorder.minutes.take(self._clock() - self._keep_s)  # drop what is older than kept

    def query(
        self, endpoint: str, variant: str | None, metric: str, since: float, until: float
    ) -> dict[Key, Stat]:
        """Copies of the 10 s periods of one metric that start in [since, until)."""
        return self._recorder.minutes.select(endpoint, since, until, (metric,), variant)

    def oldest(self) -> float:
        """The start of the oldest period still kept (data before it is gone)."""
        return self._clock() - self._keep_s
