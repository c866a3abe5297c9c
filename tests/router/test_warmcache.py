"""The warm-model cache as a unit: hits and misses, the cap, the host budget, eviction for workers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zeroscale.events import EventBus
from zeroscale.metrics.registry import Metrics
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.fleet import Fleet
from zeroscale.router.invocation import Invocation
from zeroscale.router.warmcache import TemplateKey, WarmCache

from .fakes import FakeClock, FakeManager, FakeTemplate, Recorder, settings, spec

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


# ---- the cache in the fleet: pools at zero, cold starts, updates, deletes ----
class FleetHarness:
    def __init__(self, tmp: Path, cap_mb: int = 512, budget_mb: int = 8192) -> None:
        self.manager = FakeManager()
        self.clock = FakeClock()
        self.recorder = Recorder()
        self.fleet = Fleet(
            self.manager.as_manager(),
            settings(tmp, memory_budget_mb=budget_mb, warm_cache_mb=cap_mb),
            Metrics(),
            EventBus([self.recorder]),
            self.clock,
        )

    async def invoke(self, endpoint: str) -> Invocation:
        route = self.fleet.route(endpoint)
        assert route is not None
        inv = Invocation(b"{}", [])
        await route.choose().invoke(inv)
        return inv

    async def to_zero(self) -> None:
        self.clock.advance(1_000.0)
        for pool in self.fleet.pools():
            pool.scale()
        for _ in range(10):
            await asyncio.sleep(0)
        assert all(p.live == 0 for p in self.fleet.pools())


@pytest.fixture
async def fh(tmp_path: Path) -> AsyncIterator[FleetHarness]:
    h = FleetHarness(tmp_path)
    yield h
    await h.fleet.close()


async def test_a_pool_at_zero_keeps_its_template_and_the_next_cold_start_forks_it(fh: FleetHarness) -> None:
    await fh.fleet.activate("ep", [spec()])
    await asyncio.sleep(0)
    template = fh.manager.templates[0]
    await fh.to_zero()
    assert not fh.manager.live and not template.closed  # no worker, no billing: only the cached model
    assert fh.fleet.cache.stats.entries == 1 and fh.fleet.budget.used_mb == 40
    served = await fh.invoke("ep")
    assert served.setup_s is not None  # still a cold start, but a fork of the loaded model
    assert fh.manager.starts[-1] == (served.worker_id, template)
    assert (fh.fleet.cache.stats.hits, fh.fleet.cache.stats.entries) == (1, 0)


async def test_the_cache_keeps_a_replica_parked_with_the_pool_s_worker_spec_and_counts_it(
    fh: FleetHarness,
) -> None:
    fh.manager.parked_size = 3 * MB
    await fh.fleet.activate("ep", [spec()])
    await asyncio.sleep(0)
    template = fh.manager.templates[0]
    worker_spec = fh.manager.live[fh.manager.starts[0][0]].spec
    await fh.to_zero()
    assert fh.manager.parked == [(worker_spec, template)]  # what the next cold start will ask for
    assert fh.fleet.cache.stats.bytes == 43 * MB and fh.fleet.budget.used_mb == 43


async def test_a_cold_start_while_the_replica_is_parked_takes_the_template_back(fh: FleetHarness) -> None:
    await fh.fleet.activate("ep", [spec()])
    await asyncio.sleep(0)
    template = fh.manager.templates[0]
    fh.manager.park_gate.clear()
    await fh.to_zero()
    assert fh.manager.parked and fh.fleet.cache.stats.entries == 0  # on its way: not in the cache yet
    served = await fh.invoke("ep")
    assert fh.manager.starts[-1] == (served.worker_id, template)  # no miss, no second model load
    assert fh.fleet.cache.stats.misses == 1 and len(fh.manager.templates) == 1  # the deploy's only
    assert fh.fleet.cache.stats.hits == 1  # taken back on its way in: a hit all the same
    fh.manager.park_gate.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert fh.fleet.cache.stats.entries == 0 and not template.closed  # the pool's again, not the cache's


async def test_a_delete_while_the_replica_is_parked_closes_the_template(fh: FleetHarness) -> None:
    await fh.fleet.activate("ep", [spec()])
    await asyncio.sleep(0)
    template = fh.manager.templates[0]
    fh.manager.park_gate.clear()
    await fh.to_zero()
    await fh.fleet.deactivate("ep")
    fh.manager.park_gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    assert template.closed and fh.fleet.cache.stats.entries == 0 and fh.fleet.budget.used_mb == 0


async def test_a_delete_while_the_template_loads_closes_it_once_loaded(fh: FleetHarness) -> None:
    """The endpoint is gone before its template finished loading: it is closed, never cached (it would hold
    the cache's memory, and its artifact on disk, for an endpoint that no longer exists)."""
    fh.manager.template_gate.clear()
    await fh.fleet.activate("ep", [spec()])
    await asyncio.sleep(0)
    await fh.fleet.deactivate("ep")
    fh.manager.template_gate.set()
    for _ in range(5):
        await asyncio.sleep(0)
    [template] = fh.manager.templates
    assert template.closed and fh.fleet.cache.stats.entries == 0 and fh.fleet.budget.used_mb == 0
    assert fh.fleet.model_dirs() == set()


async def test_cap_zero_means_strict_zero(tmp_path: Path) -> None:
    h = FleetHarness(tmp_path, cap_mb=0)
    try:
        await h.fleet.activate("ep", [spec()])
        await asyncio.sleep(0)
        await h.to_zero()
        await asyncio.sleep(0)
        assert h.manager.templates[0].closed and h.fleet.budget.used_mb == 0
        await h.invoke("ep")
        assert h.manager.starts[-1][1] is None and h.fleet.cache.stats.misses == 2  # deploy, then this
    finally:
        await h.fleet.close()


async def test_an_update_to_another_model_or_a_delete_drops_the_entry(fh: FleetHarness) -> None:
    await fh.fleet.activate("ep", [spec(model_dir="/artifacts/v1/model")])
    await asyncio.sleep(0)
    await fh.to_zero()
    assert fh.fleet.cache.stats.entries == 1
    await fh.fleet.activate("ep", [spec(model_dir="/artifacts/v1/model", max_concurrency=9)])
    assert fh.manager.starts[-1][1] is fh.manager.templates[0]  # same model: the update's warm start hit
    await fh.to_zero()
    await fh.fleet.activate("ep", [spec(model_dir="/artifacts/v2/model")])  # a redeploy of another artifact
    await asyncio.sleep(0)
    assert fh.fleet.cache.stats.entries == 0 and fh.manager.templates[0].closed
    await fh.to_zero()
    assert fh.fleet.cache.stats.entries == 1
    await fh.fleet.deactivate("ep")
    assert fh.fleet.cache.stats.entries == 0 and fh.fleet.budget.used_mb == 0


async def test_idle_memory_of_many_endpoints_at_zero_stays_within_the_cap(tmp_path: Path) -> None:
    h = FleetHarness(tmp_path, cap_mb=200)
    try:
        for i in range(12):
            await h.fleet.activate(f"ep{i}", [spec(endpoint=f"ep{i}", model_dir=f"/artifacts/{i}/model")])
            await asyncio.sleep(0)
            await h.to_zero()
        assert h.fleet.cache.used_mb <= 200 and h.fleet.cache.stats.entries == 5
        assert h.fleet.budget.used_mb == h.fleet.cache.used_mb
        assert sum(t.closed for t in h.manager.templates) == 7  # least recently stored first
        assert h.fleet.cache.stats.evicted_by == {"cap": 7}
    finally:
        await h.fleet.close()


async def test_a_cold_start_takes_the_cache_s_memory_before_any_idle_worker(tmp_path: Path) -> None:
    h = FleetHarness(tmp_path, cap_mb=512, budget_mb=2048 + 20)
    try:
        await h.fleet.activate("cached", [spec(endpoint="cached", model_dir="/artifacts/c/model")])
        await asyncio.sleep(0)
        await h.to_zero()
        await h.fleet.activate("idle", [spec(endpoint="idle", model_dir="/artifacts/i/model")])
        await h.fleet.activate("new", [spec(endpoint="new", model_dir="/artifacts/n/model")])
        assert h.fleet.cache.stats.evicted_by == {"memory": 1}
        assert "evicted" not in [k for _, k in h.recorder.kinds()]  # the idle worker stayed
    finally:
        await h.fleet.close()
