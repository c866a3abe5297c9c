"""One variant's workers: a queue, free workers handed out most-recently-used first, cold starts on demand.

The pool asks the pure scaling policy what it wants and applies it; processes are started and stopped only
through the WorkerManager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from zeroscale.errors import DeployError, ModelError, Throttling
from zeroscale.events import EventBus, WorkerEvent
from zeroscale.metrics.load import PoolLoad
from zeroscale.metrics.registry import Metrics
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.spec import PoolSpec, RouterSettings
from zeroscale.scaler.policy import IdleWorker, PoolSnapshot, decide
from zeroscale.workers.client import WorkerConnectionError, WorkerResponse
from zeroscale.workers.manager import WorkerHandle, WorkerManager, WorkerSpec
from zeroscale.workers.zygotes import Zygote, ZygoteError

_CONTAINER = "primary"
# Runtimes whose loaded models are safe to fork (no threads, no connections): templates serve scale-out.
TEMPLATE_RUNTIMES = frozenset({"sklearn", "xgboost"})


def has_user_code(model_dir: str, env: Mapping[str, str]) -> bool:
    return bool(env.get("SAGEMAKER_PROGRAM") or env.get("SAGEMAKER_SUBMIT_DIRECTORY")) or os.path.exists(
        os.path.join(model_dir, "code", "inference.py")
    )


@dataclass
class Invocation:
    body: bytes
    headers: list[tuple[bytes, bytes]]  # forwarded to the worker as they are (Content-Type, Accept, ...)
    # Filled in by the pool as the request goes, for metering and metrics (also when it fails):
    worker_id: str = ""
    model_s: float = 0.0
    setup_s: float | None = None  # the cold start this request waited for
    provisioned: bool = False
    model_status: int = 0  # the status the worker answered, once it did


class VariantPool:
    def __init__(
        self,
        spec: PoolSpec,
        manager: WorkerManager,
        budget: MemoryBudget,
        settings: RouterSettings,
        metrics: Metrics,
        events: EventBus,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self._events = events
        self._wall = wall
        self._manager = manager
        self._budget = budget
        self._settings = settings
        self._clock = clock
        self._workers: dict[str, WorkerHandle] = {}  # every live worker that holds a memory reservation
        self._idle: list[WorkerHandle] = []  # a stack: the most recently used worker is reused first
        self._idle_since: dict[str, float] = {}
        self._busy: set[WorkerHandle] = set()
        self._starting = 0
        self._waiters: deque[asyncio.Future[WorkerHandle]] = deque()
        self._evicted: set[str] = set()
        self._stopped: set[str] = set()  # workers this pool asked to stop
        self._template: Zygote | None = None
        self._template_task: asyncio.Future[None] | None = None
        self._templated = (
            not spec.command
            and spec.runtime in TEMPLATE_RUNTIMES
            and not has_user_code(spec.model_dir, spec.env)
        )
        self._fresh: set[str] = set()  # started, not yet served: whoever gets one waited for a cold start
        self._tasks: set[asyncio.Task[None]] = set()
        self._empty = asyncio.Event()
        self._empty.set()
        self.draining = False
        # Shared with any other pool of the same endpoint and variant (an update's old and new pools): each
        # pool adds only its own changes, so the series is the sum over them.
        self._gauge = metrics.workers.labels(spec.endpoint, spec.variant)
        self._counted = 0
        self._log_dir = settings.log_dir(spec.endpoint, spec.variant)

    # ---- views ----
    @property
    def live(self) -> int:
        return len(self._workers) + self._starting

    @property
    def queued(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    def snapshot(self, now: float) -> PoolSnapshot:
        return PoolSnapshot(
            stopping=len(self._workers) - len(self._busy) - len(self._idle),
            max_concurrency=self.spec.max_concurrency,
            provisioned=self.spec.provisioned,
            idle_timeout_s=self.spec.idle_timeout_s,
            busy=len(self._busy),
            starting=self._starting,
            queued=self.queued,
            idle=tuple(IdleWorker(w.worker_id, self._idle_since[w.worker_id]) for w in self._idle),
            draining=self.draining,
        )

    def load(self) -> PoolLoad:
        """What the pool is doing now, for the gauges metrics computes when scraped or sampled."""
        return PoolLoad(
            endpoint=self.spec.endpoint,
            variant=self.spec.variant,
            max_concurrency=self.spec.max_concurrency,
            provisioned=self.spec.provisioned,
            memory_mb=self.spec.memory_mb,
            workers=len(self._workers),
            busy=len(self._busy),
            queued=self.queued,
            rss_mb=tuple(w.rss_mb for w in self._workers.values()),
            draining=self.draining,
        )

    def idle_workers(self) -> list[tuple[float, WorkerHandle]]:
        """Idle workers above the provisioned floor with the time they went idle (for eviction)."""
        spare = len(self._workers) - self.spec.provisioned
        oldest_first = sorted(self._idle, key=lambda w: self._idle_since[w.worker_id])
        return [(self._idle_since[w.worker_id], w) for w in oldest_first[: max(0, spare)]]

    # ---- scaling ----
    def scale(self) -> None:
        now = self._clock()
        decision = decide(self.snapshot(now), now)
        for worker_id in decision.stop:
            self._stop_idle(worker_id)
        for _ in range(decision.start):
            if not self._budget.reserve(self.spec.memory_mb, self):
                break  # the fleet evicts elsewhere and calls scale() again when memory comes back
            self._starting += 1
            self._budget.starting_mb += self.spec.memory_mb
            self._spawn(self._start_worker())

    async def warm(self) -> WorkerHandle:
        """Start one worker now and keep it idle (CreateEndpoint's deploy-time check). Raises DeployError.

        With the budget full, idle workers of other pools are evicted and this waits for them to exit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.startup_timeout_s
        while not self._budget.reserve(self.spec.memory_mb, self):
            settling = self._budget.evicting_mb > 0 or self._budget.starting_mb > 0
            if not settling or loop.time() >= deadline:
                raise DeployError(
                    f"Not enough memory on this host for a {self.spec.memory_mb} MB worker "
                    f"({self._budget.used_mb} of {self._budget.total_mb} MB in use by workers that are busy "
                    "or provisioned)."
                )
            await asyncio.sleep(0.02)
        self._starting += 1
        self._budget.starting_mb += self.spec.memory_mb
        handle = await self._launch()
        self._handoff(handle)
        return handle

    def evict(self, handle: WorkerHandle) -> int:
        if handle not in self._idle:
            return 0
        self._evicted.add(handle.worker_id)
        self._stop_idle(handle.worker_id)
        return self.spec.memory_mb

    async def _start_worker(self) -> None:
        try:
            handle = await self._launch()
        except DeployError as exc:
            self._emit_worker("", "failed", detail=str(exc))
            for fut in self._waiters:
                if not fut.done():
                    fut.set_exception(
                        ModelError(
                            f"The worker for variant {self.spec.variant} failed to start: {exc}",
                            original_status=500,
                            original_message=str(exc),
                        )
                    )
                    break
            return
        self._handoff(handle)

    async def _launch(self) -> WorkerHandle:
        spec = WorkerSpec(
            runtime=self.spec.runtime,
            model_dir=self.spec.model_dir,
            memory_mb=self.spec.memory_mb,
            log_dir=self._log_dir,
            env=dict(self.spec.env),
            command=self.spec.command,
            workdir=self.spec.workdir,
        )
        self._empty.clear()
        try:
            handle = await self._manager.start(spec, on_exit=self._on_exit, template=self._template)
        except BaseException:
            self._starting -= 1
            self._budget.starting_mb -= self.spec.memory_mb
            self._budget.release(self.spec.memory_mb)
            self._check_empty()
            raise
        self._starting -= 1
        self._budget.starting_mb -= self.spec.memory_mb
        if not handle.alive:  # died between its ping and now; _on_exit already ran without our record
            self._budget.release(self.spec.memory_mb)
            raise DeployError(f"Worker exited right after starting: {handle.death_reason()}")
        self._workers[handle.worker_id] = handle
        self._fresh.add(handle.worker_id)
        self._count_workers()
        self._keep_template(spec)
        self._emit_worker(handle.worker_id, "started", setup_s=handle.ready_s)
        return handle

    def _handoff(self, handle: WorkerHandle) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                self._busy.add(handle)
                fut.set_result(handle)
                return
        self._idle.append(handle)
        self._idle_since[handle.worker_id] = self._clock()
        if self.draining:
            self.scale()

    def _stop_idle(self, worker_id: str) -> None:
        for i, handle in enumerate(self._idle):
            if handle.worker_id == worker_id:
                del self._idle[i]
                self._idle_since.pop(worker_id, None)
                self._stopped.add(worker_id)
                self._spawn(self._manager.stop(handle))
                return

    def _on_exit(self, handle: WorkerHandle) -> None:
        if self._workers.pop(handle.worker_id, None) is None:
            return
        wid = handle.worker_id
        evicted = wid in self._evicted
        stopped = wid in self._stopped
        self._evicted.discard(wid)
        self._stopped.discard(wid)
        self._fresh.discard(wid)
        self._busy.discard(handle)
        if handle in self._idle:
            self._idle.remove(handle)
            self._idle_since.pop(wid, None)
        kind = "evicted" if evicted else handle.kill_kind or ("stopped" if stopped else "crashed")
        self._emit_worker(wid, kind, detail=handle.death_reason())
        self._budget.release(self.spec.memory_mb, evicted=evicted)
        self._count_workers()
        if not self._workers and not self._starting:
            self._drop_template()
        self._check_empty()
        if self.queued:
            self.scale()

    def _emit_worker(
        self, worker_id: str, kind: str, *, detail: str = "", setup_s: float | None = None
    ) -> None:
        self._events.worker(
            WorkerEvent(
                self.spec.endpoint,
                self.spec.variant,
                worker_id,
                kind,
                self._wall(),
                detail=detail,
                memory_mb=self.spec.memory_mb,
                setup_s=setup_s,
            )
        )

    # ---- the template: scale-out without loading the model again ----
    def _keep_template(self, spec: WorkerSpec) -> None:
        """While the pool has workers, keep a template of its model so further workers are forks of a
        loaded model. Only where forking a loaded model is safe: a built-in runtime with no user code
        (user code may start threads or open connections in model_fn). Gone when the pool is at zero."""
        if self._template is not None or self._template_task is not None or not self._templated:
            return
        task = asyncio.ensure_future(self._start_template(spec))
        self._template_task = task

    async def _start_template(self, spec: WorkerSpec) -> None:
        try:
            template = await self._manager.start_template(spec)
        except (ZygoteError, DeployError):
            return  # scale-out keeps forking the zygote
        finally:
            self._template_task = None
        if self.draining or not self._workers:
            await template.close()
            return
        self._template = template

    def _drop_template(self) -> None:
        template, self._template = self._template, None
        if template is not None:
            self._spawn(template.close())

    def _count_workers(self) -> None:
        delta = len(self._workers) - self._counted
        if delta:
            self._gauge.inc(delta)
            self._counted += delta

    def _check_empty(self) -> None:
        if not self._workers and not self._starting and not self.queued:
            self._empty.set()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- serving ----
    async def acquire(self) -> WorkerHandle:
        if self._idle:
            handle = self._idle.pop()
            self._idle_since.pop(handle.worker_id, None)
            self._busy.add(handle)
            return handle
        if self.queued >= self._settings.max_queue:
            raise self._throttled("its queue is full")
        at_capacity = self.live >= self.spec.max_concurrency
        fut: asyncio.Future[WorkerHandle] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        self._empty.clear()
        self.scale()
        wait_s = self._settings.queue_wait_s
        if not at_capacity:
            wait_s += self._settings.startup_timeout_s
        try:
            return await asyncio.wait_for(fut, wait_s)
        except TimeoutError:
            raise self._throttled(f"no worker became free within {wait_s:g} s") from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            self._check_empty()

    def release(self, handle: WorkerHandle, *, broken: bool = False) -> None:
        self._busy.discard(handle)
        if broken or not handle.alive:
            if handle.worker_id in self._workers:
                if handle.kill_kind is None:
                    handle.kill_kind = "crashed"  # the request broke it; stopping it is our doing, not a plan
                self._spawn(self._manager.stop(handle, grace_s=1.0))
            return
        if handle.worker_id in self._workers:
            self._handoff(handle)

    async def invoke(self, inv: Invocation) -> WorkerResponse:
        handle = await self.acquire()
        inv.worker_id = handle.worker_id
        inv.provisioned = len(self._busy) <= self.spec.provisioned
        if handle.worker_id in self._fresh:
            self._fresh.discard(handle.worker_id)
            inv.setup_s = handle.ready_s
        started = time.perf_counter()
        try:
            conn = handle.conn
            if conn is None or conn.closed:
                conn = handle.conn = await handle.connect()
            # asyncio.timeout, not wait_for: no extra task per invocation.
            async with asyncio.timeout(self._settings.invocation_timeout_s):
                resp = await conn.request(b"POST", b"/invocations", inv.headers, inv.body)
        except TimeoutError:
            inv.model_s = time.perf_counter() - started
            self._manager.kill(handle, "the invocation timed out", kind="timed_out")
            self.release(handle, broken=True)
            raise ModelError(
                "Your invocation timed out while waiting for a response from container primary. "
                f"The model took longer than {self._settings.invocation_timeout_s:g} s to answer.",
                original_status=0,
                original_message="invocation timed out",
                log_stream_arn=self._log_stream_arn(handle),
            ) from None
        except (WorkerConnectionError, OSError) as exc:
            inv.model_s = time.perf_counter() - started
            self.release(handle, broken=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(handle.exited.wait(), 2.0)
            reason = handle.death_reason()
            raise ModelError(
                f'Received server error (0) from {_CONTAINER} with message "{reason}". '
                f"See {self._log_stream_arn(handle)} for more information.",
                original_status=0,
                original_message=reason,
                log_stream_arn=self._log_stream_arn(handle),
            ) from exc
        except BaseException:
            self.release(handle, broken=True)
            raise
        inv.model_s = time.perf_counter() - started
        inv.model_status = resp.status
        self.release(handle)
        if resp.status >= 400:
            text = resp.body.decode("utf-8", "replace")
            kind = "client" if resp.status < 500 else "server"
            arn = self._log_stream_arn(handle)
            raise ModelError(
                f'Received {kind} error ({resp.status}) from {_CONTAINER} with message "{text}". '
                f"See {arn} for more information.",
                original_status=resp.status,
                original_message=text,
                log_stream_arn=arn,
            )
        return resp

    def _log_stream_arn(self, handle: WorkerHandle) -> str:
        return self._settings.log_stream_arn(self.spec.endpoint, self.spec.variant, handle.worker_id)

    def _throttled(self, why: str) -> Throttling:
        return Throttling(
            f"Endpoint {self.spec.endpoint} variant {self.spec.variant} is at its MaxConcurrency "
            f"({self.spec.max_concurrency}) and {why}. Retry later, or raise MaxConcurrency."
        )

    # ---- shutdown ----
    async def drain(self, timeout_s: float) -> None:
        """Serve what was accepted, then stop every worker. Kills what is left after ``timeout_s``.

        The variant's metric series stay: the Fleet drops them once no pool of that variant is left."""
        self.draining = True
        self.scale()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), timeout_s)
        for handle in list(self._workers.values()):
            await self._manager.stop(handle, grace_s=1.0)
        self._drop_template()
        for fut in self._waiters:
            if not fut.done():
                fut.cancel()
