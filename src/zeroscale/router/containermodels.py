"""A multi-model variant of a bring-your-own image that implements SageMaker's multi-model container API:
the image's servers (the variant's workers, started with ``SAGEMAKER_MULTI_MODEL=true``) load and unload
the target models themselves, several per process.

```
invoke(TargetModel=m) -> fetch prefix/m once, link it into the variant's models directory (the workers'
                         $SM_MODEL_DIR) under m's name
  -> a free worker, preferring one that has m loaded (ModelCacheHit) ; else any free worker, and on it:
       unload its least recently used models until m fits in MemorySizeInMB (DELETE /models/{name})
       POST /models {"model_name", "url"}: 2xx or 409 (already loaded) -> loaded;
                                           507 (out of memory) -> unload the LRU model and retry
  -> POST /models/{name}/invoke with the request's body and headers
```

The worker is held for the load, so a load never races a request on the same server. With
``ModelCacheSetting=Disabled`` a worker unloads what it holds before its next load (nothing is reused).
A load still going after ``model_load_wait_s`` answers ModelNotReadyException; it goes on and hands the
worker back when done.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from zeroscale.artifacts.staging import stage, unstage
from zeroscale.errors import ModelError, ModelNotReady
from zeroscale.events import EventBus
from zeroscale.fstree import remove_tree_quietly
from zeroscale.metrics.load import PoolLoad
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.invocation import Invocation
from zeroscale.router.multimodel import Fetched, TargetFetcher, TargetFiles, require_target
from zeroscale.router.pool import VariantPool
from zeroscale.router.slots import Slot
from zeroscale.router.spec import PoolSpec, RouterSettings, Workers
from zeroscale.workers.client import WorkerResponse
from zeroscale.workers.manager import WorkerHandle

_JSON = [(b"content-type", b"application/json")]
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def model_name(target: str) -> str:
    """A name for the container's API and the models directory: readable, unique per target."""
    digest = hashlib.sha256(target.encode()).hexdigest()[:32]  # 128 bits: no two targets share a name
    return f"{_UNSAFE.sub('_', target)[:80]}-{digest}"


class ContainerModelsPool(VariantPool):
    def __init__(
        self,
        spec: PoolSpec,
        manager: Workers,
        budget: MemoryBudget,
        settings: RouterSettings,
        events: EventBus,
        files: TargetFiles,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        on_active: Callable[[VariantPool], None] | None = None,
    ) -> None:
        super().__init__(spec, manager, budget, settings, events, clock, wall, None, on_active)
        self._targets = TargetFetcher(files, spec, clock, 0)
        # Targets fetched for the models directory (name -> what it was fetched as): staged there, or about
        # to be. A staged model stays when no worker holds it (as SageMaker keeps unloaded models on the
        # instance's disk): a later invocation needs neither the source nor a download again. It goes when
        # the artifact cache lets its files go (``artifacts_evicted``): its hard links would keep them on
        # disk, uncounted, past ``--artifact-cache-mb``.
        self._staged: dict[str, Fetched] = {}
        # name -> its invocations in flight and the workers holding it: its files are in use while any is
        self._users: dict[str, int] = {}
        # worker id -> its loaded models (name -> MB), least recently used first
        self._loaded: dict[str, OrderedDict[str, int]] = {}

    async def drain(self, timeout_s: float, *, deleted: bool = False) -> None:
        """Then its models directory goes: it is this pool's alone (deploy makes one per deployment), and the
        staged models in it are hard links that would keep their files on disk after the artifact cache let
        them go."""
        await super().drain(timeout_s, deleted=deleted)
        await asyncio.to_thread(remove_tree_quietly, Path(self.spec.model_dir))

    def loaded(self) -> dict[str, int]:
        """Target model name -> the workers holding it."""
        out: dict[str, int] = {}
        for models in self._loaded.values():
            for name in models:
                out[name] = out.get(name, 0) + 1
        return out

    def load(self) -> PoolLoad:
        names = {name for models in self._loaded.values() for name in models}
        return dataclasses.replace(super().load(), loaded_models=len(names))

    def model_dirs(self) -> list[str]:
        """The models directory, and the artifact cache's copies of the models in use (their staged links are
        the same files), which the cache must keep. Safe from another thread (dictionaries copied first)."""
        users, staged = dict(self._users), dict(self._staged)
        in_use = [staged[name].model_dir for name in users if name in staged]
        return [*super().model_dirs(), *in_use]

    def artifacts_evicted(self, model_dirs: set[str]) -> None:
        """The artifact cache let these go: the models staged from them that nothing uses go too."""
        for name, fetched in list(self._staged.items()):
            if fetched.model_dir in model_dirs and name not in self._users:
                self._unstage(name)

    def _unstage(self, name: str) -> None:
        del self._staged[name]
        gone = unstage(Path(self.spec.model_dir), name)
        if gone is not None:
            self._background.spawn(asyncio.to_thread(remove_tree_quietly, gone))

    def _use(self, name: str) -> None:
        self._users[name] = self._users.get(name, 0) + 1

    def _done_with(self, name: str) -> None:
        left = self._users.pop(name) - 1
        if left:
            self._users[name] = left

    def _on_exit(self, handle: WorkerHandle) -> None:
        for name in self._loaded.pop(handle.worker_id, {}):
            self._done_with(name)
        super()._on_exit(handle)

    # ---- serving ----
    async def invoke(self, inv: Invocation) -> WorkerResponse:
        target = require_target(inv, self.spec)
        name = model_name(target)
        self._use(name)
        try:
            return await self._invoke_used(target, name, inv)
        finally:
            self._done_with(name)

    async def _fetched(self, target: str, name: str, inv: Invocation) -> Fetched:
        """``target``'s files: staged already, and still the artifact cache's (held by a worker, or found in
        place), or fetched (again)."""
        fetched = self._staged.get(name)
        if fetched is not None:
            if self._users[name] > 1 or await self._targets.kept(fetched.model_dir):
                return fetched
            if self._users[name] == 1 and self._staged.get(name) is fetched:  # nobody else uses the copy
                self._unstage(name)
        fetched = await self._targets.get(target, inv)
        self._staged[name] = fetched
        return fetched

    async def _invoke_used(self, target: str, name: str, inv: Invocation) -> WorkerResponse:
        started = self._clock()
        fetched = await self._fetched(target, name, inv)
        slot = await self.acquire(prefer=lambda s: name in self._loaded.get(s.worker_id, ()))
        models = self._loaded.setdefault(slot.worker_id, OrderedDict())
        if not self.spec.model_cache and models:  # ModelCacheSetting Disabled: nothing is reused
            try:
                while models:
                    assert slot.handle is not None
                    await self._unload(slot.handle, models)
            except BaseException:
                self.release(slot, broken=True)
                raise
        if name in models:
            inv.cache_hit = True
            models.move_to_end(name)
        else:
            inv.cache_hit = False
            await self._load_within_wait(slot, target, name, fetched, started)
            inv.model_wait_s = self._clock() - started
        # again=False: the worker was chosen for the model it holds, another would have to load it first
        return await self.serve(slot, inv, path=f"/models/{name}/invoke".encode(), again=False)

    async def _load_within_wait(
        self, slot: Slot, target: str, name: str, fetched: Fetched, started: float
    ) -> None:
        task = asyncio.ensure_future(self._load(slot, target, name, fetched))

        def give_back(t: asyncio.Future[None]) -> None:
            exc = None if t.cancelled() else t.exception()
            self.release(slot, broken=t.cancelled() or (exc is not None and not isinstance(exc, ModelError)))

        remaining = self._settings.model_load_wait_s - (self._clock() - started)
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, remaining))
        except asyncio.CancelledError:
            task.add_done_callback(give_back)  # the load goes on, then the worker is free again
            raise
        if task in done:
            if task.exception() is not None:
                give_back(task)
            task.result()
            return
        task.add_done_callback(give_back)
        raise ModelNotReady(
            f"Model {target} is still loading on endpoint {self.spec.endpoint} variant {self.spec.variant} "
            f"after {self._settings.model_load_wait_s:g} s; retry the request."
        )

    async def _load(self, slot: Slot, target: str, name: str, fetched: Fetched) -> None:
        """Its files are in use until it is loaded (or not): the load may go on after its request answered."""
        self._use(name)
        try:
            await self._load_used(slot, target, name, fetched)
        finally:
            self._done_with(name)

    async def _load_used(self, slot: Slot, target: str, name: str, fetched: Fetched) -> None:
        handle = slot.handle
        assert handle is not None
        await asyncio.to_thread(stage, Path(fetched.model_dir), Path(self.spec.model_dir), name)
        models = self._loaded.setdefault(slot.worker_id, OrderedDict())
        while models and sum(models.values()) + fetched.size_mb > self.spec.memory_mb:
            await self._unload(handle, models)
        seen = handle.model_dir_seen or self.spec.model_dir
        body = json.dumps({"model_name": name, "url": f"{seen}/{name}"}).encode()
        async with asyncio.timeout(self._settings.startup_timeout_s):
            while True:
                resp = await self._manager.request(handle, b"POST", b"/models", list(_JSON), body)
                if 200 <= resp.status < 300 or resp.status == 409:  # 409: it was loaded already
                    if name not in models:
                        self._use(name)
                    models[name] = fetched.size_mb
                    return
                if resp.status == 507 and models:  # out of memory: make room and try again
                    await self._unload(handle, models)
                    continue
                text = resp.body.decode("utf-8", "replace")
                raise ModelError(
                    f"The container of variant {self.spec.variant} could not load target model {target} "
                    f"({resp.status}): {text}",
                    original_status=resp.status,
                    original_message=text,
                    log_stream_arn=self._settings.log_stream_arn(
                        self.spec.endpoint, self.spec.variant, handle.worker_id
                    ),
                )

    async def _unload(self, handle: WorkerHandle, models: OrderedDict[str, int]) -> None:
        """Unload the worker's least recently used model (gone from the books whatever it answers)."""
        name, _ = models.popitem(last=False)
        self._done_with(name)
        await self._manager.request(handle, b"DELETE", f"/models/{name}".encode(), [], b"")
