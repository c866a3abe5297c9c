"""The warm-model cache: templates of pools that went back to zero, kept to make the next cold start a fork
of an already loaded model.

A template is the fork of a runtime's zygote that loaded one model (``Workers.start_template``). While a
pool has workers it owns its template; when the pool goes back to zero it hands the template here instead
of closing it. An entry serves nothing and uses no CPU, only memory, and that memory is accounted for:

- the cache holds at most ``cap_mb`` (0: no cache, scale to zero leaves no process behind);
- each entry reserves its private memory in the host ``MemoryBudget``, and is the first thing evicted
  when a worker needs memory (before any idle worker), so the cache never costs a request a cold start;
- entries go least recently used first when a new one would pass the cap.

An entry is found by what determines the loaded model: the runtime, the model directory (content-addressed
by the artifact cache, so a changed artifact is another directory), and the worker environment (which
carries the model's Environment and the path of its installed requirements). So a template whose model,
environment or requirements changed is never used: its key no longer matches, and it ages out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from zeroscale.metrics.load import CacheLoad
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.spec import DIRECTORY_ENV

_MB = 1024 * 1024


@dataclass(frozen=True)
class TemplateKey:
    runtime: str
    model_dir: str
    env: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, runtime: str, model_dir: str, env: Mapping[str, str]) -> TemplateKey:
        return cls(runtime, model_dir, tuple(sorted(env.items())))


class Template(Protocol):
    """What the cache needs of a template (``workers.zygotes.Zygote``): whether it runs, how to end it."""

    @property
    def alive(self) -> bool: ...

    async def close(self) -> None: ...


@dataclass
class CacheStats:
    entries: int = 0
    bytes: int = 0
    hits: int = 0
    misses: int = 0
    evictions: int = 0  # entries dropped for the cap or for a worker's memory
    evicted_by: dict[str, int] = field(default_factory=dict)  # reason -> count


@dataclass
class _Entry:
    template: Template
    size_bytes: int
    size_mb: int  # what it holds in the host budget: size_bytes rounded up
    endpoint: str


class WarmCache:
    def __init__(
        self,
        cap_mb: int,
        budget: MemoryBudget,
        close: Callable[[Template], None],
    ) -> None:
        """``close(template)`` ends a template in the background (the cache never awaits)."""
        self.cap_mb = max(0, cap_mb)
        self._budget = budget
        self._close = close
        self._entries: OrderedDict[TemplateKey, _Entry] = OrderedDict()  # least recently stored first
        self._used_mb = 0
        self._bytes = 0
        self.stats = CacheStats()

    @property
    def used_mb(self) -> int:
        return self._used_mb

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: TemplateKey) -> bool:
        return key in self._entries

    def load(self) -> CacheLoad:
        """The cache's figures for the gauges and counters on /metrics."""
        return CacheLoad(
            cap_bytes=self.cap_mb * _MB,
            entries=self.stats.entries,
            bytes=self.stats.bytes,
            hits=self.stats.hits,
            misses=self.stats.misses,
            evictions=self.stats.evictions,
            by_endpoint=tuple(sorted(self.endpoint_bytes().items())),
        )

    def model_dirs(self) -> list[str]:
        """The model directories of the cached templates (their replicas read them). Safe from another
        thread: the keys are copied first."""
        keys = list(self._entries)
        named = [value for key in keys for name, value in key.env if name in DIRECTORY_ENV]
        return [key.model_dir for key in keys] + named

    def endpoint_bytes(self) -> dict[str, int]:
        """Bytes held per endpoint that stored an entry (an entry shared by endpoints counts for each)."""
        out: dict[str, int] = {}
        for entry in self._entries.values():
            out[entry.endpoint] = out.get(entry.endpoint, 0) + entry.size_bytes
        return out

    def take(self, key: TemplateKey) -> Template | None:
        """The cached template for ``key``, now owned by the caller (a hit), or None (a miss)."""
        entry = self._entries.pop(key, None)
        if entry is None or not entry.template.alive:
            if entry is not None:
                self._drop(entry, "dead")
            self.stats.misses += 1
            self._update()
            return None
        self._forget(entry, notify=False)  # the caller's worker takes the memory over
        self.stats.hits += 1
        self._update()
        return entry.template

    def hit_in_flight(self) -> None:
        """A cold start took back a template on its way here (its replica was being parked): a hit too."""
        self.stats.hits += 1

    def put(self, key: TemplateKey, template: Template, size_bytes: int, endpoint: str) -> bool:
        """Keep ``template`` (``size_bytes`` of private memory) for the next cold start of ``key``, stored by
        ``endpoint``; False when it does not fit (it is closed)."""
        size_mb = max(1, -(-size_bytes // _MB))
        old = self._entries.pop(key, None)
        if old is not None:  # a second pool of the same model went to zero: keep the newer one
            self._drop(old, "replaced")
        if not template.alive or size_mb > self.cap_mb:
            self._close(template)
            self._update()
            return False
        while self._entries and self._used_mb + size_mb > self.cap_mb:
            _, victim = self._entries.popitem(last=False)
            self._drop(victim, "cap")
        if not self._budget.reserve_if_free(size_mb):
            self._close(template)  # the memory belongs to workers: never evict one for the cache
            self._update()
            return False
        self._entries[key] = _Entry(template, size_bytes, size_mb, endpoint)
        self._used_mb += size_mb
        self._bytes += size_bytes
        self._update()
        return True

    def evict(self, deficit_mb: int) -> int:
        """Drop entries, least recently stored first, until ``deficit_mb`` is back in the budget; the MB
        given back (at once: an entry serves nothing)."""
        freed = 0
        while self._entries and freed < deficit_mb:
            _, victim = self._entries.popitem(last=False)
            freed += victim.size_mb
            self._drop(victim, "memory")
        self._update()
        return freed

    def discard(self, key: TemplateKey) -> None:
        """Forget ``key`` (its endpoint was deleted, or its model redeployed)."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._drop(entry, "discarded")
        self._update()

    def clear(self) -> None:
        while self._entries:
            _, entry = self._entries.popitem(last=False)
            self._drop(entry, "discarded")
        self._update()

    def _drop(self, entry: _Entry, reason: str) -> None:
        self._forget(entry, notify=reason != "memory")  # "memory": inside MemoryBudget.reserve
        self._close(entry.template)
        if reason in ("cap", "memory"):
            self.stats.evictions += 1
        self.stats.evicted_by[reason] = self.stats.evicted_by.get(reason, 0) + 1

    def _forget(self, entry: _Entry, *, notify: bool = True) -> None:
        self._used_mb -= entry.size_mb
        self._bytes -= entry.size_bytes
        self._budget.release(entry.size_mb, notify=notify)

    def _update(self) -> None:
        self.stats.entries = len(self._entries)
        self.stats.bytes = self._bytes
