"""MultiModelPool as a unit: a fake WorkerManager, a fake clock, real budgets, and model directories whose
files have the sizes a test wants (sparse files: no disk is written)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from zeroscale.artifacts.fetch import LocalLocation, parse_model_data_url, s3_object_of_https
from zeroscale.errors import DeployError, ModelError, ModelNotReady, RuntimeValidationError
from zeroscale.events import EventBus
from zeroscale.fstree import remove_tree
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.invocation import Invocation
from zeroscale.router.multimodel import (
    MULTI_MODEL_ENV,
    WORKER_OVERHEAD_MB,
    MultiModelPool,
    TargetFiles,
    target_url,
)

from .fakes import FakeClock, FakeManager, Recorder, settings, spec

MB = 1024 * 1024


class World:
    def __init__(self, tmp: Path, *, host_mb: int = 8192, memory_mb: int = 1024, **kw: object) -> None:
        self.tmp = tmp
        self.manager = FakeManager()
        self.clock = FakeClock()
        self.recorder = Recorder()
        self.fetches: list[str] = []
        self.kept: list[str] = []
        self.fetch_root = tmp / "models"  # where fetches go (content-addressed: a new version, a new root)
        self.sizes: dict[str, int] = {}
        self.host = MemoryBudget(host_mb, self._host_evict)
        self.pool = MultiModelPool(
            spec(memory_mb=memory_mb, multi_model="s3://b/p/", **kw),  # type: ignore[arg-type]
            self.manager.as_manager(),
            self.host,
            settings(tmp, model_load_wait_s=0.2),
            EventBus([self.recorder]),
            TargetFiles(self.fetch, self.keep),
            self.clock,
        )
        self.host.on_release = self.pool.scale  # the fleet's part: pools waiting for memory try again

    def _host_evict(self, deficit_mb: int, requester: object) -> int:
        """The fleet's part: the host asks the variant for its least recently used idle workers."""
        freed = 0
        for slot in self.pool.evictable():
            if freed >= deficit_mb:
                break
            freed += self.pool.evict(slot)
        return freed

    def model(self, name: str, size_mb: int) -> None:
        self.sizes[name] = size_mb

    def keep(self, model_dir: str) -> bool:  # the artifact cache's: still there?
        self.kept.append(model_dir)
        return Path(model_dir).is_dir()

    def fetch(self, url: str, creator: tuple[str, str]) -> Path:  # (as the router calls it)
        self.fetches.append(url)
        name = url.removeprefix("s3://b/p/")
        if name not in self.sizes:
            raise DeployError(f"Could not fetch model artifact {url}: S3 error NoSuchKey")
        root = self.fetch_root / name.replace("/", "_")
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "weights.bin", "wb") as f:
            f.truncate(self.sizes[name] * MB)
        return root

    async def invoke(self, target: str) -> Invocation:
        inv = Invocation(b"x", [], target_model=target)
        await self.pool.invoke(inv)
        return inv

    def loaded(self) -> dict[str, int]:
        return self.pool.loaded()

    def check(self) -> None:
        """The variant's budget holds each live worker's model size, and the host's holds the same."""
        used = sum(len(p.slots()) * p.spec.slot_mb for p in self.pool._models.values())
        assert self.pool.memory.used_mb == used <= self.pool.memory.total_mb
        assert self.host.used_mb == used


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_least_recently_used_model_is_unloaded_first(tmp_path: Path) -> None:
    w = World(tmp_path)
    for name in ("a", "b", "c"):
        w.model(name, 400)
    assert not (await w.invoke("a")).cache_hit
    w.clock.advance(1)
    assert not (await w.invoke("b")).cache_hit
    w.clock.advance(1)
    assert (await w.invoke("a")).cache_hit  # a is now the most recently used
    w.clock.advance(1)
    inv = await w.invoke("c")  # a + b + c do not fit in 1024 MB: b goes
    assert not inv.cache_hit and inv.model_wait_s is not None
    await settle()
    assert w.loaded() == {"a": 1, "c": 1}
    w.check()
    assert [e.model for e in w.recorder.workers if e.kind == "evicted"] == ["b"]
    assert all(e.unload_s is not None for e in w.recorder.workers if e.kind == "evicted")
    assert w.pool.load().loaded_models == 2


async def test_each_model_worker_is_forked_for_its_model_with_the_multi_model_variable(
    tmp_path: Path,
) -> None:
    w = World(tmp_path)
    w.model("dir/m.tar.gz", 10)
    await w.invoke("dir/m.tar.gz")
    handle = next(iter(w.manager.live.values()))
    assert handle.spec.env[MULTI_MODEL_ENV] == "true"
    assert handle.spec.model_dir.endswith("dir_m.tar.gz")
    assert handle.spec.memory_mb == 1024  # the watchdog's limit is the variant's memory
    assert w.pool._models["dir/m.tar.gz"].spec.slot_mb == 10 + WORKER_OVERHEAD_MB
    assert w.fetches == ["s3://b/p/dir/m.tar.gz"]


async def test_a_hot_model_scales_out_while_a_cold_one_keeps_one_worker(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.model("hot", 100)
    w.model("cold", 100)
    await w.invoke("cold")
    w.manager.hold_requests = True
    calls = [asyncio.ensure_future(w.invoke("hot")) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert w.loaded() == {"hot": 3, "cold": 1}
    assert len(w.fetches) == 2  # the three first requests shared one fetch
    w.manager.answer_all()
    await asyncio.gather(*calls)
    w.check()


async def test_busy_models_are_never_unloaded_and_the_request_waits_for_room(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.model("a", 600)
    w.model("b", 600)
    w.manager.hold_requests = True
    first = asyncio.ensure_future(w.invoke("a"))
    await asyncio.sleep(0.01)
    second = asyncio.ensure_future(w.invoke("b"))
    await asyncio.sleep(0.01)
    assert w.loaded() == {"a": 1}  # a is busy: b waits for its memory
    w.manager.answer_all()
    await first
    await asyncio.sleep(0.05)
    assert w.loaded() == {"b": 1}  # a went idle, b took its memory
    w.manager.answer_all()
    await second
    w.check()


async def test_a_model_larger_than_the_memory_is_refused_by_name(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.model("huge", 1020)
    with pytest.raises(RuntimeValidationError, match=r"Target model huge \(s3://b/p/huge\) needs 1028 MB"):
        await w.invoke("huge")
    assert w.loaded() == {} and not w.manager.starts


async def test_a_missing_model_is_a_validation_error_naming_it_and_its_url(tmp_path: Path) -> None:
    w = World(tmp_path)
    with pytest.raises(RuntimeValidationError, match="target model nope from s3://b/p/nope"):
        await w.invoke("nope")
    with pytest.raises(RuntimeValidationError, match="TargetModel"):
        await w.invoke("")


async def test_a_slow_load_answers_model_not_ready_and_goes_on(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.model("slow", 10)
    w.manager.start_gate.clear()
    with pytest.raises(ModelNotReady, match="slow"):
        await w.invoke("slow")
    w.manager.start_gate.set()
    await asyncio.sleep(0.01)
    assert w.loaded() == {"slow": 1}
    assert (await w.invoke("slow")).cache_hit
    w.check()


async def test_cache_disabled_unloads_after_each_request(tmp_path: Path) -> None:
    w = World(tmp_path, model_cache=False)
    w.model("a", 10)
    for _ in range(2):
        assert not (await w.invoke("a")).cache_hit
        await settle()
        assert w.loaded() == {}
    w.check()


async def test_the_host_can_unload_a_models_idle_worker(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.model("a", 100)
    w.model("b", 100)
    await w.invoke("a")
    w.clock.advance(1)
    await w.invoke("b")
    victims = w.pool.evictable()
    assert [w.pool._models["a"].slots()[0]] == victims[:1]  # least recently used first
    assert w.pool.evict(victims[0]) == 100 + WORKER_OVERHEAD_MB
    await settle()
    assert w.loaded() == {"b": 1}
    w.check()


async def test_max_concurrency_bounds_the_variant_over_all_models(tmp_path: Path) -> None:
    w = World(tmp_path, max_concurrency=2)
    for name in ("a", "b", "c"):
        w.model(name, 10)
    w.manager.hold_requests = True
    calls = [asyncio.ensure_future(w.invoke(n)) for n in ("a", "b", "c")]
    await asyncio.sleep(0.05)
    assert len(w.manager.pending) == 2
    w.manager.answer_all()
    await asyncio.sleep(0.05)
    w.manager.answer_all()
    await asyncio.gather(*calls)
    assert sorted(w.loaded()) == ["a", "b", "c"]
    w.check()


async def test_the_host_budget_bounds_the_models_too(tmp_path: Path) -> None:
    w = World(tmp_path, host_mb=300)
    for name in ("a", "b", "c"):
        w.model(name, 100)
    for name in ("a", "b", "c", "a"):
        await w.invoke(name)
        w.clock.advance(1)
        await settle()
        w.check()
    assert sorted(w.loaded()) == ["a", "c"]  # two of 108 MB fit in 300; b was the least recently used


async def test_pools_of_unloaded_models_are_forgotten_past_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("zeroscale.router.multimodel.KEPT_POOLS", 3)
    w = World(tmp_path, model_cache=False)
    for name in ("a", "b", "c", "d"):
        w.model(name, 10)
        await w.invoke(name)
        await settle()
    assert sorted(w.pool._models) == ["d"]  # a, b and c had no worker left when d came
    assert (await w.invoke("a")).download_s is not None  # fetched again


async def test_only_the_models_in_use_are_kept_from_the_artifact_cache(tmp_path: Path) -> None:
    """A model's pool outlives its workers (up to KEPT_POOLS), but not its hold on the model's files: with
    many targets invoked once each, the cache would otherwise keep every one past --artifact-cache-mb."""
    w = World(tmp_path, model_cache=False)
    for name in ("a", "b"):
        w.model(name, 10)
    await w.invoke("a")
    await settle()
    assert w.loaded() == {} and w.pool.model_dirs() == []  # a's worker went, its pool stays
    w.manager.hold_requests = True
    call = asyncio.ensure_future(w.invoke("b"))
    await asyncio.sleep(0.05)
    assert w.pool.model_dirs() == [str(tmp_path / "models" / "b")]  # a worker holds it
    w.manager.answer_all()
    await call


async def test_a_model_at_zero_is_found_again_on_disk_or_fetched_again(tmp_path: Path) -> None:
    w = World(tmp_path, model_cache=False)
    w.model("a", 10)
    await w.invoke("a")
    await settle()
    assert (await w.invoke("a")).download_s is None  # its files were still there: no request to S3
    assert w.kept == [str(tmp_path / "models" / "a")]
    assert w.fetches == ["s3://b/p/a"]
    await settle()
    remove_tree(tmp_path / "models" / "a")  # the cache let them go
    inv = await w.invoke("a")
    assert inv.download_s is not None and w.fetches == ["s3://b/p/a", "s3://b/p/a"]
    assert [spec.model_dir for spec in w.manager.started] == [str(tmp_path / "models" / "a")] * 3


async def test_a_model_at_zero_changed_at_its_source_is_loaded_as_it_is_now(tmp_path: Path) -> None:
    """Fetched again after the cache let it go, its object had been overwritten: the next workers load the
    new content (the artifact cache's directories are content-addressed)."""
    w = World(tmp_path, model_cache=False)
    w.model("a", 10)
    await w.invoke("a")
    await settle()
    remove_tree(tmp_path / "models" / "a")
    w.fetch_root = tmp_path / "models-v2"
    await w.invoke("a")
    assert [spec.model_dir for spec in w.manager.started] == [
        str(tmp_path / "models" / "a"),
        str(tmp_path / "models-v2" / "a"),
    ]


async def test_a_model_that_fails_to_load_is_a_model_error_naming_it(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.model("broken", 10)
    w.manager.start_errors.append("model_fn raised ValueError")
    with pytest.raises(ModelError, match="target model broken of variant AllTraffic failed to start"):
        await w.invoke("broken")
    w.model("fine", 10)
    await w.invoke("fine")
    w.check()


@pytest.mark.parametrize("prefix", ["file:///srv/models/tenant-a/", "file:///srv/models/tenant-a"])
@pytest.mark.parametrize(
    "target",
    [
        "%2e%2e/tenant-b/secret.tar.gz",
        "%2E%2E/%2e%2e/etc/passwd",
        "a%2f..%2f..%2fb",
        "100%.tar.gz",
        "m.tar.gz",
    ],
)
def test_a_target_model_is_a_literal_key_under_a_file_prefix(prefix: str, target: str) -> None:
    # An invoker's percent-encoded '..' was decoded after the check and loaded another tenant's model.
    location = parse_model_data_url(target_url(prefix, target))
    assert isinstance(location, LocalLocation)
    assert str(location.path) == "/srv/models/tenant-a/" + target  # the name as sent, under the prefix
    assert os.path.normpath(location.path).startswith("/srv/models/tenant-a/")


def test_a_target_model_is_a_literal_key_under_an_https_prefix() -> None:
    url = target_url("https://bucket.s3.us-east-1.amazonaws.com/models/", "%2e%2e/other/m.tar.gz")
    assert s3_object_of_https(url) == ("bucket", "models/%2e%2e/other/m.tar.gz")
    assert target_url("s3://bucket/models/", "%2e%2e/m.tar.gz") == "s3://bucket/models/%2e%2e/m.tar.gz"
