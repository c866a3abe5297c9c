"""The asynchronous queue's figures with SageMaker's metric names, computed from the queue table and the
pools' loads: as gauges on /metrics when scraped, and as samples for the one-minute history.

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
from zeroscale.metrics import catalog as m
from zeroscale.metrics.load import PoolLoad
from zeroscale.metrics.service import Gauge

_METRICS = (
    m.BACKLOG_SIZE,
    m.BACKLOG_SIZE_PER_INSTANCE,
    m.AGE_OF_OLDEST_REQUEST,
    m.HAS_BACKLOG_WITHOUT_CAPACITY,
)


def backlog_figures(
    backlog: Iterable[Backlog], loads: Iterable[PoolLoad], now: float
) -> Iterator[tuple[str, tuple[float, float, float, float]]]:
    """Per endpoint: its four figures, in ``_METRICS`` order."""
    workers: dict[str, int] = {}
    for load in loads:
        workers[load.endpoint.lower()] = workers.get(load.endpoint.lower(), 0) + load.workers
    for entry in backlog:
        size = entry.queued + entry.running
        live = workers.get(entry.endpoint_name.lower(), 0)
        age = max(0.0, now - entry.oldest_queued_at) if entry.oldest_queued_at is not None else 0.0
        yield (
            entry.endpoint_name,
            (float(size), size / live if live else float(size), age, float(size > 0 and live == 0)),
        )


class _BacklogSource:
    def __init__(
        self,
        backlog: Callable[[], list[Backlog]],
        loads: Callable[[], list[PoolLoad]],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._backlog = backlog
        self._loads = loads
        self._wall = wall

    def figures(self) -> list[tuple[str, tuple[float, float, float, float]]]:
        """Per endpoint with a backlog record, its figures; the pools' loads read only when there is one (a
        big fleet's cost)."""
        backlog = self._backlog()
        return list(backlog_figures(backlog, self._loads(), self._wall())) if backlog else []


class BacklogCollector(_BacklogSource):
    """The figures as Prometheus gauges, computed at scrape time."""

    def _families(self) -> list[GaugeMetricFamily]:
        return [
            GaugeMetricFamily(
                m.BY_NAME[name].prometheus,
                f"SageMaker {name}: {m.BY_NAME[name].description}",
                labels=("endpoint_name",),
            )
            for name in _METRICS
        ]

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterator[Metric]:
        families = self._families()
        for endpoint, values in self.figures():
            for family, value in zip(families, values, strict=True):
                family.add_metric([endpoint], value)
        yield from families


class BacklogSampler(_BacklogSource):
    """The figures as samples for the one-minute history (read from the database: call it off the loop)."""

    def __call__(self) -> list[Gauge]:
        return [
            Gauge(endpoint, m.ENDPOINT_WIDE, name, value)
            for endpoint, values in self.figures()
            for name, value in zip(_METRICS, values, strict=True)
        ]
