"""ContainerModelsPool as a unit: a fake manager whose workers implement SageMaker's multi-model container
API in memory (at most ``max_models`` loaded, 507 past it), a fake clock, real model directories."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from zeroscale.artifacts import ArtifactCache
from zeroscale.errors import ModelError, ModelNotReady
from zeroscale.events import EventBus
from zeroscale.fstree import remove_tree
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.containermodels import ContainerModelsPool, model_name
from zeroscale.router.invocation import Invocation
from zeroscale.router.multimodel import TargetFiles
from zeroscale.testing import make_tar
from zeroscale.workers.client import WorkerResponse
from zeroscale.workers.manager import WorkerHandle

from .fakes import FakeClock, FakeManager, Recorder, settings, spec

MB = 1024 * 1024


class ModelServers(FakeManager):
    def __init__(self, max_models: int) -> None:
        super().__init__()
        self.max_models = max_models
        self.models: dict[str, dict[str, str]] = {}  # worker id -> name -> url
        self.calls: list[tuple[str, str, str]] = []  # (worker, method, path)
        self.load_status = 0  # answer POST /models with this instead (0: behave)
        self.load_gate = asyncio.Event()
        self.load_gate.set()

    async def request(
        self,
        handle: WorkerHandle,
        method: bytes,
        path: bytes,
        headers: Any,
        body: Any,
        timeout_s: float | None = None,
        max_answer: int | None = None,
    ) -> WorkerResponse:
        wid, p = handle.worker_id, path.decode()
        self.calls.append((wid, method.decode(), p))
        loaded = self.models.setdefault(wid, {})
        if method == b"POST" and p == "/models":
            await self.load_gate.wait()
            doc = json.loads(body)
            if self.load_status:
                return WorkerResponse(self.load_status, [], b"cannot")
            if doc["model_name"] in loaded:
                return WorkerResponse(409, [], b"")
            if len(loaded) >= self.max_models:
                return WorkerResponse(507, [], b"")
            assert Path(doc["url"]).is_dir()
            loaded[doc["model_name"]] = doc["url"]
            return WorkerResponse(200, [], b"")
        if method == b"DELETE":
            loaded.pop(p.removeprefix("/models/"), None)
            return WorkerResponse(200, [], b"")
        name = p.removeprefix("/models/").removesuffix("/invoke")
        if name not in loaded:
            return WorkerResponse(404, [], b"not loaded")
        return WorkerResponse(200, [], name.encode())


class World:
    def __init__(
        self,
        tmp: Path,
        max_models: int = 2,
        memory_mb: int = 1024,
        files: TargetFiles | None = None,
        prefix: str = "s3://b/p/",
        **kw: Any,
    ) -> None:
        self.tmp = tmp
        self.manager = ModelServers(max_models)
        self.sizes: dict[str, int] = {}
        self.fetches: list[str] = []
        self.kept: list[str] = []
        staging = tmp / "staging"
        staging.mkdir()
        self.pool = ContainerModelsPool(
            spec(
                memory_mb=memory_mb,
                multi_model=prefix,
                command=("./serve",),
                model_dir=str(staging),
                **kw,
            ),
            self.manager.as_manager(),
            MemoryBudget(8192, lambda deficit, requester: 0),
            settings(tmp, model_load_wait_s=0.2),
            EventBus([Recorder()]),
            files or TargetFiles(self.fetch, self.keep),
            FakeClock(),
        )

    def keep(self, model_dir: str) -> bool:  # the artifact cache's: still there?
        self.kept.append(model_dir)
        return Path(model_dir).is_dir()

    def fetch(self, url: str, creator: tuple[str, str]) -> Path:  # (as the router calls it)
        self.fetches.append(url)
        name = url.removeprefix("s3://b/p/")
        root = self.tmp / "models" / name
        root.mkdir(parents=True, exist_ok=True)
        with open(root / "weights.bin", "wb") as f:
            f.truncate(self.sizes.get(name, 1) * MB)
        return root

    async def invoke(self, target: str) -> tuple[Invocation, bytes]:
        inv = Invocation(b"{}", [], target_model=target)
        resp = await self.pool.invoke(inv)
        return inv, resp.body


async def test_507_unloads_the_least_recently_used_model_and_retries(tmp_path: Path) -> None:
    w = World(tmp_path, max_concurrency=1)
    for target in ("a", "b", "a", "c"):
        inv, body = await w.invoke(target)
        assert body == model_name(target).encode()
    assert inv.cache_hit is False
    assert sorted(w.pool.loaded()) == sorted([model_name("a"), model_name("c")])  # b was least recent
    deletes = [p for _, m, p in w.manager.calls if m == "DELETE"]
    assert deletes == [f"/models/{model_name('b')}"]
    assert w.pool.load().loaded_models == 2
    staged = sorted(p.name for p in (tmp_path / "staging").iterdir())
    assert staged == sorted(model_name(t) for t in "abc")


async def test_a_target_is_fetched_once_and_its_download_counted_once(tmp_path: Path) -> None:
    """Like SageMaker's: a model's artifact is downloaded on its first invocation; the later ones, loaded or
    unloaded since, use the copy staged in the models directory (no S3 request, no second download)."""
    w = World(tmp_path, max_concurrency=1, max_models=1)
    downloads = []
    for target in ("a", "a", "b", "a", "b"):
        inv, body = await w.invoke(target)
        assert body == model_name(target).encode()
        downloads.append(inv.download_s is not None)
    assert w.fetches == ["s3://b/p/a", "s3://b/p/b"]
    assert downloads == [True, False, True, False, False]
    assert w.kept == [str(tmp_path / "models" / "a"), str(tmp_path / "models" / "b")]  # the unloaded ones
    # the models directory, and the artifact cache's copy of b, which its worker holds (a is the cache's to
    # let go)
    assert w.pool.model_dirs() == [str(tmp_path / "staging"), str(tmp_path / "models" / "b")]


async def test_a_staged_model_goes_when_the_artifact_cache_lets_its_files_go_unless_it_is_used(
    tmp_path: Path,
) -> None:
    """Its staged copy is hard links to the cache's files: kept after the cache evicted them, the files would
    stay on disk, uncounted, past --artifact-cache-mb (one tenant invoking many targets would fill the
    disk). The model a worker holds is in use: the cache keeps it, and its staged copy stays."""
    w = World(tmp_path, max_concurrency=1, max_models=1)
    for target in ("a", "b"):
        await w.invoke(target)
    staging, models = tmp_path / "staging", tmp_path / "models"
    assert sorted(p.name for p in staging.iterdir()) == sorted(model_name(t) for t in "ab")
    for target in "ab":  # the cache evicts both (b cannot be: it is in use; the pool must not care)
        remove_tree(models / target)
    w.pool.artifacts_evicted({str(models / "a"), str(models / "b")})
    await w.pool._background.join()
    assert [p.name for p in staging.iterdir()] == [model_name("b")]  # nothing left of a, not even hidden
    _, body = await w.invoke("a")  # fetched again, staged again, loaded
    assert body == model_name("a").encode()
    assert w.fetches == ["s3://b/p/a", "s3://b/p/b", "s3://b/p/a"]


async def test_a_staged_model_whose_files_the_cache_let_go_is_fetched_again(tmp_path: Path) -> None:
    """Without being told (an eviction while the pool was being built): the staged copy is not used, as
    the cache no longer counts its files; it is replaced by a fresh one."""
    w = World(tmp_path, max_concurrency=1, max_models=1)
    for target in ("a", "b"):
        await w.invoke(target)
    remove_tree(tmp_path / "models" / "a")
    inv, body = await w.invoke("a")
    assert body == model_name("a").encode() and inv.download_s is not None
    assert w.fetches == ["s3://b/p/a", "s3://b/p/b", "s3://b/p/a"]
    await w.pool._background.join()  # the old copy, renamed aside at once, is removed off the event loop
    assert sorted(p.name for p in (tmp_path / "staging").iterdir()) == sorted(model_name(t) for t in "ab")
    await w.invoke("a")  # loaded: its files are in use, and not asked for
    assert w.kept.count(str(tmp_path / "models" / "a")) == 1


def disk_bytes(*roots: Path) -> int:
    """The bytes of the files under ``roots``, each file once however many links it has."""
    seen: dict[tuple[int, int], int] = {}
    for root in roots:
        for path in root.rglob("*"):
            st = path.lstat()
            if path.is_file():
                seen[(st.st_dev, st.st_ino)] = st.st_size
    return sum(seen.values())


async def test_many_targets_hold_no_more_disk_than_the_artifact_cache_keeps(tmp_path: Path) -> None:
    """A real artifact cache (capacity 0: only what is in use, no grace), real archives, real hard links:
    one tenant invoking eight targets in turn leaves on disk what its loaded model takes, not all eight."""
    size = 256 * 1024
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    for i in range(8):
        make_tar(prefix / f"m{i}.tar.gz", {"weights.bin": os.urandom(size)})
    cache = ArtifactCache(tmp_path / "cache", capacity_bytes=0, grace_s=0)
    files = TargetFiles(lambda url, _: cache.prepare(url, archive_only=True), cache.keep)
    w = World(tmp_path, max_concurrency=1, max_models=1, files=files, prefix=f"file://{prefix}/")
    loop = asyncio.get_running_loop()
    cache.in_use = w.pool.model_dirs
    cache.on_evicted = lambda dirs: loop.call_soon_threadsafe(w.pool.artifacts_evicted, set(dirs))
    for i in range(8):
        _, body = await w.invoke(f"m{i}.tar.gz")
        assert body == model_name(f"m{i}.tar.gz").encode()
    await asyncio.to_thread(cache.trim)  # the server's once-a-minute pass
    await asyncio.sleep(0.01)
    await w.pool._background.join()
    staging = tmp_path / "staging"
    assert [p.name for p in staging.iterdir()] == [model_name("m7.tar.gz")]  # the loaded one
    assert cache.load().entries == 1
    assert size <= disk_bytes(staging, cache.root) < size + 64 * 1024  # and the cache's own small records
    assert (await w.invoke("m0.tar.gz"))[1] == model_name("m0.tar.gz").encode()  # fetched again


async def test_its_models_directory_goes_with_the_pool(tmp_path: Path) -> None:
    """Deploy makes the directory for this pool alone; its staged models are hard links to the artifact
    cache's files, which would stay on disk as long as it does."""
    w = World(tmp_path, max_concurrency=1)
    await w.invoke("a")
    staging = tmp_path / "staging"
    assert [p.name for p in staging.iterdir()] == [model_name("a")]
    await w.pool.drain(1.0)
    assert not staging.exists()
    assert (tmp_path / "models" / "a" / "weights.bin").is_file()  # the fetched copy is not the pool's


async def test_the_worker_that_holds_the_model_is_preferred(tmp_path: Path) -> None:
    w = World(tmp_path, max_concurrency=2)
    # two workers: load a on one while the other is busy loading b
    w.manager.load_gate.clear()
    first = asyncio.ensure_future(w.invoke("a"))
    second = asyncio.ensure_future(w.invoke("b"))
    await asyncio.sleep(0.05)
    w.manager.load_gate.set()
    await asyncio.gather(first, second)
    holders = {name: wid for wid, models in w.manager.models.items() for name in models}
    for target in ("a", "b", "a", "b"):
        inv, _ = await w.invoke(target)
        assert inv.cache_hit
        last_invoke = [c for c in w.manager.calls if c[2].endswith("/invoke")][-1]
        assert last_invoke[0] == holders[model_name(target)]


async def test_409_counts_as_loaded(tmp_path: Path) -> None:
    w = World(tmp_path, max_concurrency=1)
    await w.invoke("a")
    w.pool._loaded.clear()  # the books lost it; the container still has it
    inv, body = await w.invoke("a")
    assert body == model_name("a").encode() and inv.cache_hit is False


async def test_models_are_unloaded_to_fit_the_memory_before_loading(tmp_path: Path) -> None:
    w = World(tmp_path, max_models=10, memory_mb=1024, max_concurrency=1)
    w.sizes = {"a": 400, "b": 400, "c": 400}
    for target in ("a", "b", "c"):
        await w.invoke(target)
    assert sorted(w.pool.loaded()) == sorted([model_name("b"), model_name("c")])


async def test_a_load_the_container_refuses_is_a_model_error_naming_the_model(tmp_path: Path) -> None:
    w = World(tmp_path, max_concurrency=1)
    w.manager.load_status = 500
    with pytest.raises(ModelError, match="could not load target model a"):
        await w.invoke("a")
    w.manager.load_status = 0
    _, body = await w.invoke("a")  # the same worker serves on: a refused load does not break it
    assert body == model_name("a").encode()
    assert len(w.manager.starts) == 1


async def test_a_slow_load_answers_not_ready_and_goes_on(tmp_path: Path) -> None:
    w = World(tmp_path, max_concurrency=1)
    await w.invoke("warm")
    w.manager.load_gate.clear()
    with pytest.raises(ModelNotReady, match="slow"):
        await w.invoke("slow")
    w.manager.load_gate.set()
    await asyncio.sleep(0.01)
    inv, _ = await w.invoke("slow")
    assert inv.cache_hit


async def test_a_load_that_goes_on_past_its_request_keeps_its_files_in_use(tmp_path: Path) -> None:
    w = World(tmp_path, max_concurrency=1)
    w.manager.load_gate.clear()
    with pytest.raises(ModelNotReady):
        await w.invoke("slow")
    source = str(tmp_path / "models" / "slow")
    assert source in w.pool.model_dirs()  # the load still uses it: the cache keeps it
    w.pool.artifacts_evicted({source})  # (told anyway: the pool does not let it go)
    assert [p.name for p in (tmp_path / "staging").iterdir()] == [model_name("slow")]
    w.manager.load_gate.set()
    await asyncio.sleep(0.01)
    assert source in w.pool.model_dirs()  # now its worker holds it
    inv, _ = await w.invoke("slow")
    assert inv.cache_hit


async def test_cache_disabled_loads_every_time(tmp_path: Path) -> None:
    w = World(tmp_path, max_concurrency=1, model_cache=False)
    for _ in range(3):
        inv, body = await w.invoke("a")
        assert inv.cache_hit is False and body == model_name("a").encode()
    loads = [c for c in w.manager.calls if c[1] == "POST" and c[2] == "/models"]
    deletes = [c for c in w.manager.calls if c[1] == "DELETE"]
    assert (len(loads), len(deletes)) == (3, 2)


def test_a_targets_name_is_its_own_past_any_collision_a_caller_could_search_for() -> None:
    """The name keeps 80 readable characters; what tells two targets apart is 128 bits of their SHA-256
    (48 bits, as before, were an offline search away from one tenant's target taking another's staged
    directory)."""
    long_a, long_b = "m" * 80 + "/a.tar.gz", "m" * 80 + "/b.tar.gz"  # the same readable part
    assert model_name(long_a) != model_name(long_b)
    assert len(model_name(long_a).rsplit("-", 1)[1]) == 32
