"""An event sink that turns events and load samples into SageMaker's metric values (in SageMaker's units)
and aggregates them per minute. What happened (invocations, worker starts) is observed as it is emitted, at
the time the event carries; what is happening (utilization, workers, queue) is sampled by whoever calls
``sample``, at the injected clock's time."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metrics import catalog as m
from zeroscale.metrics.catalog import MICROSECONDS, error_family
from zeroscale.metrics.history import PERIOD_S, MinuteAggregator
from zeroscale.metrics.load import VariantLoad


class HistoryRecorder:
    def __init__(self, clock: Callable[[], float] = time.time, period_s: int = PERIOD_S) -> None:
        self.minutes = MinuteAggregator(period_s)
        self._clock = clock
        self._provisioned: dict[tuple[str, str], int] = {}

    # ---- the event sink ----
    def invocation(self, record: InvocationRecord) -> None:
        family = error_family(record)
        values = [
            (m.INVOCATIONS, 1.0),
            (m.INVOCATION_4XX_ERRORS, 1.0 if family == 4 else 0.0),
            (m.INVOCATION_5XX_ERRORS, 1.0 if family == 5 else 0.0),
            (m.OVERHEAD_LATENCY, max(0.0, record.total_s - record.model_s) * MICROSECONDS),
        ]
        if record.worker_id:
            values.append((m.MODEL_LATENCY, record.model_s * MICROSECONDS))
            if self._provisioned.get((record.endpoint, record.variant), 0) > 0:
                name = m.PROVISIONED_INVOCATIONS if record.provisioned else m.SPILLOVER_INVOCATIONS
                values.append((name, 1.0))
        if record.cache_hit is not None:
            values.append((m.MODEL_CACHE_HIT, 1.0 if record.cache_hit else 0.0))
        if record.model_wait_s is not None:
            values.append((m.MODEL_LOADING_WAIT_TIME, record.model_wait_s * MICROSECONDS))
        if record.download_s is not None:
            values.append((m.MODEL_DOWNLOADING_TIME, record.download_s * MICROSECONDS))
        self.minutes.observe_many(record.endpoint, record.variant, record.at, values)

    def worker(self, event: WorkerEvent) -> None:
        if event.kind == "started" and event.setup_s is not None:
            self.minutes.observe(
                event.endpoint, event.variant, m.MODEL_SETUP_TIME, event.setup_s * MICROSECONDS, event.at
            )
            if event.model:
                self.minutes.observe(
                    event.endpoint,
                    event.variant,
                    m.MODEL_LOADING_TIME,
                    event.setup_s * MICROSECONDS,
                    event.at,
                )
        if event.unload_s is not None:
            self.minutes.observe(
                event.endpoint, event.variant, m.MODEL_UNLOADING_TIME, event.unload_s * MICROSECONDS, event.at
            )

    def variant(self, event: VariantEvent) -> None:
        if event.kind == "activated":
            self._provisioned[(event.endpoint, event.variant)] = event.provisioned

    # ---- sampling ----
    def sample(self, loads: Iterable[VariantLoad]) -> None:
        """One sample of every busy, warm or queued variant's gauges (idle variants at zero: none)."""
        at = self._clock()
        observe = self.minutes.observe
        for v in loads:
            if not v.active:
                continue
            ep, var = v.endpoint, v.variant
            observe(ep, var, m.CONCURRENT_EXECUTIONS_UTILIZATION, v.concurrency_utilization, at)
            observe(ep, var, m.WORKERS, float(v.workers), at)
            observe(ep, var, m.QUEUE_DEPTH, float(v.queued), at)
            if v.loaded_models is not None:
                observe(ep, var, m.LOADED_MODEL_COUNT, float(v.loaded_models), at)
            for percent in v.memory_utilization:
                observe(ep, var, m.MEMORY_UTILIZATION, percent, at)
            if v.provisioned > 0:
                observe(ep, var, m.PROVISIONED_EXECUTIONS, float(v.provisioned_executions), at)
                observe(ep, var, m.PROVISIONED_UTILIZATION, v.provisioned_utilization, at)
