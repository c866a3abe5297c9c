"""The warm-model cache as a unit: hits and misses, the cap, the host budget, eviction for workers."""

from __future__ import annotations

from zeroscale.router.budget import MemoryBudget
from zeroscale.router.warmcache import TemplateKey, WarmCache

from .fakes import FakeTemplate

MB = 1024 * 1024


def key(model: str = "m1", **env: str) -> TemplateKey:
    return TemplateKey.of("sklearn", f"/artifacts/{model}/model", env)


class Harness:
    def __init__(self, cap_mb: int = 100, total_mb: int = 1000) -> None:
        self.closed: list[FakeTemplate] = []
        self.evicted_workers: list[int] = []
        self.budget = MemoryBudget(total_mb, self._evict)
        self.cache = WarmCache(cap_mb, self.budget, self._close)

    def _close(self, template: object) -> None:
        assert isinstance(template, FakeTemplate)
        template.alive = False
        self.closed.append(template)

    def _evict(self, deficit_mb: int, requester: object) -> int:
        freed = self.cache.evict(deficit_mb)  # as the fleet does: the cache first, then idle workers
        self.evicted_workers.append(deficit_mb - freed)
        return freed


def test_a_stored_template_is_taken_once_and_counts_hits_and_misses() -> None:
    h = Harness()
    t = FakeTemplate()
    assert h.cache.put(key(), t, 30 * MB, "ep")
    assert (h.cache.stats.entries, h.cache.stats.bytes, h.budget.used_mb) == (1, 30 * MB, 30)
    assert h.cache.endpoint_bytes() == {"ep": 30 * MB}
    assert h.cache.take(key()) is t
    assert h.cache.take(key()) is None
    assert (h.cache.stats.hits, h.cache.stats.misses, h.cache.stats.entries) == (1, 1, 0)
    assert h.budget.used_mb == 0 and not h.closed  # the taker owns it now


def test_another_model_environment_or_runtime_is_a_miss() -> None:
    h = Harness()
    h.cache.put(key("m1", A="1"), FakeTemplate(), MB, "ep")
    assert h.cache.take(key("m2", A="1")) is None  # another artifact (content-addressed directory)
    assert h.cache.take(key("m1", A="2")) is None  # another environment (or requirements path)
    assert h.cache.take(TemplateKey.of("xgboost", "/artifacts/m1/model", {"A": "1"})) is None
    assert h.cache.take(key("m1", A="1")) is not None


def test_the_cap_drops_the_least_recently_stored_first() -> None:
    h = Harness(cap_mb=100)
    a, b, c = FakeTemplate(), FakeTemplate(), FakeTemplate()
    h.cache.put(key("a"), a, 40 * MB, "a")
    h.cache.put(key("b"), b, 40 * MB, "b")
    h.cache.put(key("c"), c, 40 * MB, "c")
    assert h.closed == [a] and len(h.cache) == 2
    assert h.cache.used_mb == 80 == h.budget.used_mb
    assert h.cache.stats.evictions == 1 and h.cache.stats.evicted_by == {"cap": 1}


def test_a_template_larger_than_the_cap_or_a_zero_cap_keeps_nothing() -> None:
    h = Harness(cap_mb=10)
    big = FakeTemplate()
    assert not h.cache.put(key(), big, 11 * MB, "ep")
    assert h.closed == [big] and h.budget.used_mb == 0
    off = Harness(cap_mb=0)
    t = FakeTemplate()
    assert not off.cache.put(key(), t, 1, "ep")
    assert off.closed == [t] and len(off.cache) == 0


def test_entries_never_take_memory_workers_hold() -> None:
    h = Harness(cap_mb=100, total_mb=100)
    assert h.budget.reserve(90, "a pool")  # workers hold 90 of 100 MB
    t = FakeTemplate()
    assert not h.cache.put(key(), t, 20 * MB, "ep")
    assert h.closed == [t] and h.evicted_workers == []  # no worker was asked to stop for the cache
    assert h.budget.used_mb == 90


def test_a_worker_that_needs_memory_gets_the_cache_s_at_once() -> None:
    h = Harness(cap_mb=100, total_mb=100)
    h.cache.put(key("a"), FakeTemplate(), 30 * MB, "a")
    h.cache.put(key("b"), FakeTemplate(), 30 * MB, "b")
    assert h.budget.reserve(40, "pool")
    assert h.budget.reserve(30, "pool", starting=True)  # in the same call: the oldest entry gave way
    assert len(h.cache) == 1 and key("b") in h.cache
    assert h.budget.used_mb == 40 + 30 + 30 and h.budget.starting_mb == 30
    assert h.cache.stats.evicted_by == {"memory": 1}
    assert h.evicted_workers == [0]  # the cache covered the deficit: no idle worker was stopped


def test_a_dead_template_is_a_miss_and_is_dropped() -> None:
    h = Harness()
    t = FakeTemplate()
    h.cache.put(key(), t, 5 * MB, "ep")
    t.alive = False  # its process died (the zygote went, say)
    assert h.cache.take(key()) is None
    assert h.budget.used_mb == 0 and len(h.cache) == 0


def test_a_second_template_of_the_same_model_replaces_the_first() -> None:
    h = Harness()
    first, second = FakeTemplate(), FakeTemplate()
    h.cache.put(key(), first, 5 * MB, "a")
    h.cache.put(key(), second, 6 * MB, "b")
    assert h.closed == [first] and h.cache.used_mb == 6 == h.budget.used_mb
    assert h.cache.take(key()) is second


def test_discard_and_clear_close_and_give_memory_back() -> None:
    h = Harness()
    h.cache.put(key("a"), FakeTemplate(), 5 * MB, "a")
    h.cache.put(key("b"), FakeTemplate(), 5 * MB, "b")
    h.cache.discard(key("a"))
    assert len(h.closed) == 1 and h.budget.used_mb == 5
    h.cache.clear()
    assert len(h.closed) == 2 and h.budget.used_mb == 0 and h.cache.stats.bytes == 0
