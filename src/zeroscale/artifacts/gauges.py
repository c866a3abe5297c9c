"""The artifact cache's figures on /metrics: what it holds on disk now, its capacity, and what it evicted."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import Metric

from zeroscale.artifacts.cache import ArtifactCacheLoad
from zeroscale.metrics.registry import scalar_families

_GAUGES = (
    ("zeroscale_artifact_cache_entries", "Extracted model artifacts kept on disk", "entries"),
    ("zeroscale_artifact_cache_bytes", "Bytes of their files", "bytes"),
    (
        "zeroscale_artifact_cache_capacity_bytes",
        "Bytes past which unused artifacts are evicted (--artifact-cache-mb)",
        "capacity_bytes",
    ),
)
_COUNTERS = (
    ("zeroscale_artifact_cache_evictions", "Unused artifacts deleted to fit the capacity", "evictions"),
    (
        "zeroscale_artifact_cache_evicted_bytes",
        "Bytes of the artifacts deleted to fit the capacity",
        "evicted_bytes",
    ),
)


class ArtifactCacheCollector:
    """Computed at scrape time from ``load()`` (``ArtifactCache.load``)."""

    def __init__(self, load: Callable[[], ArtifactCacheLoad]) -> None:
        self._load = load

    def describe(self) -> Iterable[Metric]:
        return list(self._families(None))

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self._load())

    @staticmethod
    def _families(load: ArtifactCacheLoad | None) -> Iterator[Metric]:
        return scalar_families(load, _GAUGES, _COUNTERS)
