"""A disk cache's figures on /metrics (the artifact cache, the requirements environments): what it holds
now, its capacity, and what it evicted."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import Metric

from zeroscale.artifacts.shelf import ShelfLoad
from zeroscale.metrics.registry import Scalars, scalar_families


class ShelfCollector:
    """Computed at scrape time from ``load()``: ``<prefix>_{entries,bytes,capacity_bytes}`` and
    ``<prefix>_{evictions,evicted_bytes}_total``."""

    def __init__(self, prefix: str, what: str, flag: str, load: Callable[[], ShelfLoad]) -> None:
        self._load = load
        self._gauges: Scalars = (
            (f"{prefix}_entries", f"{what} kept on disk", "entries"),
            (f"{prefix}_bytes", "Bytes of their files", "bytes"),
            (
                f"{prefix}_capacity_bytes",
                f"Bytes past which unused ones are evicted ({flag})",
                "capacity_bytes",
            ),
        )
        self._counters: Scalars = (
            (f"{prefix}_evictions", "Unused entries deleted to fit the capacity", "evictions"),
            (f"{prefix}_evicted_bytes", "Bytes of the entries deleted to fit the capacity", "evicted_bytes"),
        )

    def describe(self) -> Iterable[Metric]:
        return list(scalar_families(None, self._gauges, self._counters))

    def collect(self) -> Iterator[Metric]:
        yield from scalar_families(self._load(), self._gauges, self._counters)
