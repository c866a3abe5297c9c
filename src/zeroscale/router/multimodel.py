"""A multi-model variant (``Mode=MultiModel``): one pool per target model loaded, inside the variant's memory.

```
invoke(TargetModel=m) -> m's pool has a worker?  yes: a cache hit, its free worker (most recently used)
                                                   no: fetch s3://prefix/m (once, shared by the requests
                                                       that wait for it), size it, fork + load a worker
                                                       (ModelNotReadyException after model_load_wait_s;
                                                       the load goes on)
```

- Each target model gets an ordinary ``VariantPool`` whose workers are forks of the runtime's zygote that
  load that model only; its queue, cold starts, timeouts and scale-in are the pool's. Hot models scale out
  to several workers under concurrent load; a cold one keeps at most the one it was loaded into.
- The variant's memory (``NestedBudget``: MemorySizeInMB, or the instances' memory) is shared by the loaded
  models, each worker holding its model's size (the extracted artifact, plus the private memory of a
  forked worker) when it starts, and then what it really holds privately once the manager measured it
  (``_settle_memory``, once a second: a model whose load allocates far more than its files takes its real
  share). A model that needs room unloads the least recently used idle workers of other models first (the
  budget's eviction, longest idle first); a worker whose model grew past what the others leave, with none
  of them idle to unload, is stopped, saying so. The host's budget holds the same reservations, so the
  host can unload them too when other endpoints need memory.
- ``ModelCacheSetting=Disabled``: a model's worker is stopped once it has answered.
- The router never reads a worker's files: the artifact is fetched here and handed to the worker as a
  directory, as for a single model.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import re
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from zeroscale.errors import DeployError, ModelNotReady, RuntimeValidationError, Throttling
from zeroscale.events import EventBus
from zeroscale.metrics.load import PoolLoad
from zeroscale.router.budget import MemoryBudget, NestedBudget
from zeroscale.router.invocation import Invocation
from zeroscale.router.pool import VariantPool, no_capacity
from zeroscale.router.slots import S, Slot
from zeroscale.router.spec import PoolSpec, RouterSettings, Workers
from zeroscale.workers.client import WorkerResponse

_DECODED_FORMS = re.compile(r"(?i)(file|https)://")

MULTI_MODEL_ENV = "SAGEMAKER_MULTI_MODEL"
# What a forked worker holds privately beyond its model's files (its heap, the pages it touches after the
# fork): measured for the scikit-learn runtime, see bench/multimodel.py.
WORKER_OVERHEAD_MB = 8
# Pools of models with no worker are kept (their figures, and their fetched directory while the artifact
# cache keeps it) up to this many; past it the idle ones are forgotten (a later request fetches again, from
# the artifact cache when unchanged).
KEPT_POOLS = 1024


@dataclasses.dataclass(frozen=True)
class TargetFiles:
    """Where a multi-model variant's target models come from (the server's artifact cache). Both blocking."""

    # (artifact URL, the model's creator as PoolSpec.read_as) -> extracted model directory (DeployError)
    fetch: Callable[[str, tuple[str, str]], Path]
    # a directory ``fetch`` returned -> whether it is still there (then kept a while): the cache may let a
    # target go once no worker holds it, and it is fetched again
    keep: Callable[[str], bool]


@dataclasses.dataclass(frozen=True)
class Fetched:
    model_dir: str
    size_mb: int
    download_s: float


def model_size_mb(model_dir: str) -> int:
    """The extracted model's files, in MB (rounded up)."""
    total = 0
    for root, _, files in os.walk(model_dir):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return math.ceil(total / (1024 * 1024))


def target_url(prefix: str, target: str) -> str:
    """The URL of ``target`` under ``prefix``. A TargetModel is a key taken literally (as S3 takes it): where
    the prefix is a URL whose path is percent-decoded (``file://``, ``https://``), the target is encoded, so
    a ``%2e%2e`` in it stays a name and never becomes a ``..`` out of the prefix (``api/invoke.py`` refuses
    the literal ones)."""
    if _DECODED_FORMS.match(prefix):
        target = urllib.parse.quote(target, safe="/")
    return prefix + target if prefix.endswith("/") else f"{prefix}/{target}"


class TargetFetcher:
    """Target models fetched from the variant's prefix and sized, once for all the requests waiting."""

    def __init__(
        self, files: TargetFiles, spec: PoolSpec, clock: Callable[[], float], overhead_mb: int
    ) -> None:
        self._files = files
        self._spec = spec
        self._clock = clock
        self._overhead_mb = overhead_mb
        self._opening: dict[str, asyncio.Task[Fetched]] = {}

    @property
    def opening(self) -> bool:
        return bool(self._opening)

    async def get(self, target: str, inv: Invocation) -> Fetched:
        """``target`` fetched (the request that started the fetch gets its ``download_s``)."""
        task = self._opening.get(target)
        owner = task is None
        if task is None:
            task = asyncio.ensure_future(self._download(target))
            self._opening[target] = task
            task.add_done_callback(lambda _: self._opening.pop(target, None))
        fetched = await asyncio.shield(task)
        if owner:
            inv.download_s = fetched.download_s
        return fetched

    async def kept(self, model_dir: str) -> bool:
        """Whether ``model_dir`` (fetched before) is still on disk; then it stays a while."""
        return await asyncio.to_thread(self._files.keep, model_dir)

    def cancel(self) -> None:
        for task in list(self._opening.values()):
            task.cancel()

    async def _download(self, target: str) -> Fetched:
        spec = self._spec
        url = target_url(spec.multi_model, target)
        started = self._clock()
        try:
            model_dir = await asyncio.to_thread(self._files.fetch, url, spec.read_as)
        except DeployError as exc:
            raise RuntimeValidationError(
                f"Failed to download model data for target model {target} from {url}: {exc}. Please ensure "
                "that there is an object located at the URL."
            ) from exc
        download_s = self._clock() - started
        size_mb = await asyncio.to_thread(model_size_mb, str(model_dir))
        need_mb = size_mb + self._overhead_mb
        if need_mb > spec.memory_mb:
            raise RuntimeValidationError(
                f"Target model {target} ({url}) needs {need_mb} MB ({size_mb} MB of model data), more than "
                f"the {spec.memory_mb} MB of memory of variant {spec.variant}: it can never be "
                "loaded. Use a larger memory size, or a smaller model."
            )
        return Fetched(str(model_dir), need_mb, download_s)


def require_target(inv: Invocation, spec: PoolSpec) -> str:
    if not inv.target_model:
        raise RuntimeValidationError(
            f"Endpoint {spec.endpoint} is a multi-model endpoint: name the model to invoke with "
            "the TargetModel parameter (header X-Amzn-SageMaker-Target-Model)."
        )
    return inv.target_model


class MultiModelPool(VariantPool):
    """The variant's pool as the fleet and the invoke path see it (a ``VariantPool``): invocations, the
    load gauges, evictions and drain are delegated to the pools of its target models."""

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
        self._models: dict[str, VariantPool] = {}
        self._targets = TargetFetcher(files, spec, clock, WORKER_OVERHEAD_MB)
        self._memory = NestedBudget(spec.memory_mb, self._unload, budget, self)
        self._memory.on_release = self._serve_waiting
        self._in_flight = 0
        self._room = asyncio.Condition()
        self._pinned: dict[str, int] = {}  # target -> invocations using its pool now
        self._acquiring = 0  # invocations waiting for a worker (for their model's memory, maybe)

    # ---- views ----
    @property
    def live(self) -> int:
        return sum(p.live for p in self._models.values())

    @property
    def queued(self) -> int:
        return sum(p.queued for p in self._models.values())

    @property
    def ready(self) -> int:
        """A real-time variant's instances are up with no model loaded; a serverless one's workers."""
        if self.spec.real_time and not self.draining:
            return self.spec.provisioned
        return sum(p.ready for p in self._models.values())

    @property
    def quiet(self) -> bool:
        return all(p.quiet for p in self._models.values()) and not self._targets.opening

    @property
    def saturated(self) -> bool:
        """MaxConcurrency invocations in flight over the variant's models: a new one would wait."""
        return self._in_flight >= self.spec.max_concurrency

    @property
    def memory(self) -> NestedBudget:
        return self._memory

    def loaded(self) -> dict[str, int]:
        """Target model -> its live workers (starting ones included), for the models that have any."""
        return {t: p.live for t, p in self._models.items() if p.live}

    def slots(self) -> list[Slot]:
        return [s for p in self._models.values() for s in p.slots()]

    def model_dirs(self) -> list[str]:
        """The directories of its target models that a worker holds or a request is about to use: what the
        artifact cache must keep. A model no worker holds is the cache's to let go, like any unused artifact
        (it is fetched again when next invoked): with many targets, the pools kept for their figures would
        otherwise keep every model ever invoked on disk, past ``--artifact-cache-mb``. Safe from another
        thread (the dictionaries are copied first)."""
        models, pinned = dict(self._models), set(self._pinned)
        return [
            d
            for target, pool in models.items()
            if target in pinned or not pool.quiet
            for d in pool.model_dirs()
        ]

    def load(self) -> PoolLoad:
        loads = [p.load() for p in self._models.values()]
        return PoolLoad(
            endpoint=self.spec.endpoint,
            variant=self.spec.variant,
            max_concurrency=self.spec.max_concurrency,
            provisioned=self.spec.provisioned,
            memory_mb=self.spec.memory_mb,
            workers=sum(x.workers for x in loads),
            busy=sum(x.busy for x in loads),
            queued=sum(x.queued for x in loads),
            rss_mb=tuple(r for x in loads for r in x.rss_mb),
            draining=self.draining,
            loaded_models=sum(1 for x in loads if x.workers),
        )

    def evictable(self) -> list[Slot]:
        """The host asks: idle workers of every loaded model, least recently used first."""
        return sorted((s for p in self._models.values() for s in p.evictable()), key=lambda s: s.idle_since)

    def evict(self, slot: Slot) -> int:
        for pool in self._models.values():
            mb = pool.evict(slot)
            if mb:
                return mb
        return 0

    # ---- scaling ----
    def scale(self) -> None:
        self._settle_memory()
        for pool in list(self._models.values()):
            if not pool.quiet:
                pool.scale()

    def _settle_memory(self) -> None:
        """Each live worker holds at least its measured private memory of the variant's budget (growing its
        reservation evicts other models' idle workers when it does not fit); one that cannot, while no
        eviction is on its way back and the variant's memory is what refuses, is stopped."""
        for target, pool in list(self._models.items()):
            for slot in pool.slots():
                handle = slot.handle
                if handle is None or not handle.alive or slot.state not in (S.IDLE, S.BUSY):
                    continue
                used = math.ceil(handle.private_mb)
                if used <= slot.reserved_mb or pool.grow(slot, used):
                    continue
                memory = self._memory
                over = memory.used_mb + used - slot.reserved_mb > memory.total_mb
                if over and memory.evicting_mb == 0:
                    self._manager.kill(
                        handle,
                        f"Model {target} holds {used} MB of memory; with the other models loaded on endpoint "
                        f"{self.spec.endpoint} variant {self.spec.variant} (and none of them idle to unload) "
                        f"it does not fit the variant's {memory.total_mb} MB, and its worker was stopped",
                        kind="memory_killed",
                    )

    def resize(self, spec: PoolSpec) -> None:
        if (spec.multi_model, spec.memory_mb, spec.runtime) != (
            self.spec.multi_model,
            self.spec.memory_mb,
            self.spec.runtime,
        ):
            raise ValueError(f"resize of {self.spec.endpoint}/{self.spec.variant} to another model or size")
        self.spec = spec
        for pool in self._models.values():
            pool.resize(dataclasses.replace(pool.spec, max_concurrency=spec.max_concurrency))

    async def warm(self) -> None:
        """No model is loaded at deployment (SageMaker loads on the first request); the runtime's zygote
        is started so that the first load is a fork."""
        if not self.spec.command:
            await self._manager.prewarm((self.spec.runtime,))

    def _unload(self, deficit_mb: int, requester: object) -> int:
        """Room for ``requester`` (a model's pool) in the variant's memory: stop idle workers of the other
        models, least recently used first; the MB on their way back."""
        freed = 0
        candidates = sorted(
            ((s, p) for p in self._models.values() if p is not requester for s in p.evictable()),
            key=lambda item: item[0].idle_since,
        )
        for slot, pool in candidates:
            if freed >= deficit_mb:
                break
            freed += pool.evict(slot)
        return freed

    def _serve_waiting(self) -> None:
        for pool in list(self._models.values()):
            if pool.queued:
                pool.scale()

    # ---- serving ----
    async def invoke(self, inv: Invocation) -> WorkerResponse:
        target = require_target(inv, self.spec)
        await self._enter()
        try:
            return await self._invoke(target, inv)
        finally:
            self._in_flight -= 1
            async with self._room:
                self._room.notify()

    async def _enter(self) -> None:
        """At most MaxConcurrency invocations in flight over all the variant's models."""
        if self.spec.max_concurrency <= 0:
            raise no_capacity(self.spec)
        if self._in_flight >= self.spec.max_concurrency:
            try:
                async with asyncio.timeout(self._settings.queue_wait_s):
                    async with self._room:
                        await self._room.wait_for(lambda: self._in_flight < self.spec.max_concurrency)
            except TimeoutError:
                raise Throttling(
                    f"Endpoint {self.spec.endpoint} variant {self.spec.variant} is at its MaxConcurrency "
                    f"({self.spec.max_concurrency}) and no invocation finished within "
                    f"{self._settings.queue_wait_s:g} s. Retry later, or raise MaxConcurrency."
                ) from None
        self._in_flight += 1

    async def _invoke(self, target: str, inv: Invocation) -> WorkerResponse:
        self._pinned[target] = self._pinned.get(target, 0) + 1
        try:
            return await self._invoke_pinned(target, inv)
        finally:
            left = self._pinned.pop(target) - 1
            if left:
                self._pinned[target] = left

    async def _invoke_pinned(self, target: str, inv: Invocation) -> WorkerResponse:
        started = self._clock()
        pool = self._models.get(target)
        self._acquiring += 1
        try:
            if pool is not None and pool.ready:
                inv.cache_hit = True
                slot = await pool.acquire()
            else:
                inv.cache_hit = False
                if pool is None or not (pool.live or await self._targets.kept(pool.spec.model_dir)):
                    pool = await self._open(target, inv)
                slot = await self._wait_loaded(pool, target, started)
                inv.model_wait_s = self._clock() - started
        finally:
            self._acquiring -= 1
        try:
            # again=False: a target model's workers start through ``_open`` and ``_wait_loaded`` (memory,
            # evictions, the model's wait), not through the target pool's own ``acquire``
            return await pool.serve(slot, inv, again=False)
        finally:
            if not self.spec.model_cache:
                pool.unload_idle()
            elif self._acquiring:
                self._serve_waiting()  # a model waiting for memory may unload the one that went idle

    async def _open(self, target: str, inv: Invocation) -> VariantPool:
        """The pool of ``target``, after fetching it (one fetch however many requests wait for it)."""
        fetched = await self._targets.get(target, inv)
        pool = self._models.get(target)
        if pool is None and len(self._models) >= KEPT_POOLS:
            self._forget_unused()
        # A pool at zero whose model the cache let go may find it changed at its source (an object
        # overwritten under the same key): its next workers load what was fetched now.
        if pool is None or (pool.quiet and pool.spec.model_dir != fetched.model_dir):
            pool = self._models[target] = self._model_pool(target, fetched)
        return pool

    def _forget_unused(self) -> None:
        for target, pool in list(self._models.items()):
            if pool.quiet and not pool.live and target not in self._pinned:
                del self._models[target]

    def _model_pool(self, target: str, fetched: Fetched) -> VariantPool:
        env = dict(self.spec.env)
        env[MULTI_MODEL_ENV] = "true"
        spec = dataclasses.replace(
            self.spec,
            model_dir=fetched.model_dir,
            env=env,
            multi_model="",
            target_model=target,
            slot_mb=fetched.size_mb,
            provisioned=0,
            # a real-time variant's models stay loaded until memory is needed
            idle_timeout_s=math.inf if self.spec.real_time else self.spec.idle_timeout_s,
            instance_count=0,
            workers_per_instance=0,
        )
        return VariantPool(
            spec,
            self._manager,
            self._memory,
            self._settings,
            self._events,
            self._clock,
            self._wall,
            None,
            self._model_active,
        )

    def _model_active(self, _pool: VariantPool) -> None:
        """A target model's pool is no longer quiet: so this variant is not (the fleet's reconcile loop
        visits it, and it scales its models' pools)."""
        if self._on_active is not None:
            self._on_active(self)

    async def _wait_loaded(self, pool: VariantPool, target: str, started: float) -> Slot:
        """A worker of ``target``'s pool, waiting for its load at most ``model_load_wait_s`` (since the
        request came): past that, ModelNotReadyException, and the load goes on for the next requests."""
        waiter = asyncio.ensure_future(pool.acquire())
        remaining = self._settings.model_load_wait_s - (self._clock() - started)
        done, _ = await asyncio.wait({waiter}, timeout=max(0.0, remaining))
        if waiter in done:
            return waiter.result()

        def give_back(task: asyncio.Future[Slot]) -> None:
            if not task.cancelled() and task.exception() is None:
                pool.release(task.result())

        waiter.add_done_callback(give_back)
        raise ModelNotReady(
            f"Model {target} is still loading on endpoint {self.spec.endpoint} variant "
            f"{self.spec.variant} after {self._settings.model_load_wait_s:g} s; retry the request."
        )

    # ---- shutdown ----
    async def drain(self, timeout_s: float, *, deleted: bool = False) -> None:
        self.draining = True
        self._targets.cancel()
        await asyncio.gather(*(p.drain(timeout_s, deleted=deleted) for p in list(self._models.values())))
