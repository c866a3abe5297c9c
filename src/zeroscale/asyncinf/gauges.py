"""The asynchronous queue's gauges on /metrics, with SageMaker's metric names in their help text, computed
when scraped from the queue table and the pools' loads.

| SageMaker (AWS/SageMaker, EndpointName) | Prometheus |
|---|---|
| ApproximateBacklogSize | zeroscale_approximate_backlog_size |
| ApproximateBacklogSizePerInstance | zeroscale_approximate_backlog_size_per_instance |
| ApproximateAgeOfOldestRequest | zeroscale_approximate_age_of_oldest_request_seconds |
| HasBacklogWithoutCapacity | zeroscale_has_backlog_without_capacity |
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from zeroscale.asyncinf.queue import Backlog
from zeroscale.metrics.load import PoolLoad

_FAMILIES = (
    (
        "zeroscale_approximate_backlog_size",
        "SageMaker ApproximateBacklogSize: async requests queued or being processed",
    ),
    (
        "zeroscale_approximate_backlog_size_per_instance",
        "SageMaker ApproximateBacklogSizePerInstance: backlog / live workers (the backlog at zero workers)",
    ),
    (
        "zeroscale_approximate_age_of_oldest_request_seconds",
        "SageMaker ApproximateAgeOfOldestRequest: age of the oldest queued async request",
    ),
    (
        "zeroscale_has_backlog_without_capacity",
        "SageMaker HasBacklogWithoutCapacity: 1 when requests wait and the endpoint has no worker",
    ),
)


class BacklogCollector:
    def __init__(
        self,
        backlog: Callable[[], list[Backlog]],
        loads: Callable[[], list[PoolLoad]],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._backlog = backlog
        self._loads = loads
        self._wall = wall

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily(name, doc, labels=("endpoint_name",)) for name, doc in _FAMILIES]

    def collect(self) -> Iterator[Metric]:
        families = [GaugeMetricFamily(name, doc, labels=("endpoint_name",)) for name, doc in _FAMILIES]
        workers: dict[str, int] = {}
        for load in self._loads():
            workers[load.endpoint.lower()] = workers.get(load.endpoint.lower(), 0) + load.workers
        now = self._wall()
        for entry in self._backlog():
            size = entry.queued + entry.running
            live = workers.get(entry.endpoint_name.lower(), 0)
            age = max(0.0, now - entry.oldest_queued_at) if entry.oldest_queued_at is not None else 0.0
            values = (float(size), size / live if live else float(size), age, float(size > 0 and live == 0))
            for family, value in zip(families, values, strict=True):
                family.add_metric([entry.endpoint_name], value)
        yield from families
