"""What the pools are doing right now, as plain values: the router hands these over when metrics asks
(a scrape, or the history's sampler), and metrics turns them into gauges. Pure: no clock, no I/O."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PoolLoad:
    """One pool of a variant (an update briefly has two: the new one and the draining old one)."""

    endpoint: str
    variant: str
    max_concurrency: int
    provisioned: int
    memory_mb: int
    workers: int  # live worker processes
    busy: int  # workers serving a request now
    queued: int  # requests waiting for a worker
    rss_mb: tuple[float, ...]  # each live worker's last sampled resident set (0.0: not sampled yet)
    draining: bool
    loaded_models: int | None = None  # a multi-model variant: target models with a live worker

    def load(self) -> PoolLoad:
        """Itself (a ``Loaded``: a list of loads is a ``PoolSource`` too)."""
        return self


LoadSource = Callable[[], list[PoolLoad]]


class Loaded(Protocol):
    """Something that tells its load when asked: a pool (router.pool.VariantPool), or a PoolLoad."""

    def load(self) -> PoolLoad: ...


# The pools, whose loads a /metrics scrape reads a chunk at a time (so a big fleet does not hold the loop).
PoolSource = Callable[[], Sequence[Loaded]]


@dataclass(frozen=True, slots=True)
class VariantLoad:
    """The sum over one endpoint variant's pools; configuration from the pool that serves new requests."""

    endpoint: str
    variant: str
    max_concurrency: int
    provisioned: int
    workers: int
    busy: int
    queued: int
    memory_utilization: tuple[float, ...]  # percent of MemorySizeInMB, one per sampled worker
    loaded_models: int | None = None  # a multi-model variant's LoadedModelCount, else None

    @property
    def active(self) -> bool:
        """Anything running or waiting (an idle variant at zero workers has nothing to sample)."""
        return bool(self.workers or self.busy or self.queued)

    @property
    def concurrency_utilization(self) -> float:
        return self.busy / self.max_concurrency if self.max_concurrency else 0.0

    @property
    def provisioned_executions(self) -> int:
        return min(self.busy, self.provisioned)

    @property
    def provisioned_utilization(self) -> float:
        return self.provisioned_executions / self.provisioned if self.provisioned else 0.0


def by_variant(pools: Iterable[PoolLoad]) -> list[VariantLoad]:
    """Combine the pools of each (endpoint, variant), in first-seen order."""
    groups: dict[tuple[str, str], list[PoolLoad]] = {}
    for pool in pools:
        groups.setdefault((pool.endpoint, pool.variant), []).append(pool)
    out: list[VariantLoad] = []
    for (endpoint, variant), group in groups.items():
        serving = next((p for p in group if not p.draining), group[0])
        out.append(
            VariantLoad(
                endpoint=endpoint,
                variant=variant,
                max_concurrency=serving.max_concurrency,
                provisioned=serving.provisioned,
                workers=sum(p.workers for p in group),
                busy=sum(p.busy for p in group),
                queued=sum(p.queued for p in group),
                memory_utilization=tuple(
                    100.0 * rss / p.memory_mb for p in group for rss in p.rss_mb if rss > 0 and p.memory_mb
                ),
                loaded_models=_loaded(group),
            )
        )
    return out


def _loaded(group: list[PoolLoad]) -> int | None:
    counts = [p.loaded_models for p in group if p.loaded_models is not None]
    return sum(counts) if counts else None


@dataclass(frozen=True, slots=True)
class CacheLoad:
    """The warm-model cache now: templates kept for pools at zero, and what happened to lookups."""

    cap_bytes: int
    entries: int
    bytes: int
    hits: int
    misses: int
    evictions: int
    by_endpoint: tuple[tuple[str, int], ...]  # (endpoint, bytes its cached templates hold)
