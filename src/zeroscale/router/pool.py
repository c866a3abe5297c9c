"""One variant's workers: a queue, free workers handed out most-recently-used first, cold starts on demand.

Each worker is a ``Slot`` whose state changes only through ``Slots.move`` (see slots.py for the state
machine). The pool asks the pure scaling policy what it wants and applies it; processes are started,
stopped and spoken to only through the WorkerManager.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from zeroscale.background import Background
from zeroscale.errors import (
    DeployError,
    HostMemoryFull,
    ModelError,
    RuntimeValidationError,
    ServiceUnavailable,
    Throttling,
    WorkersUnavailable,
    ZeroscaleError,
)
from zeroscale.events import EventBus, WorkerEvent
from zeroscale.metrics.load import PoolLoad
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.invocation import Invocation
from zeroscale.router.slots import Slot, Slots, StopReason
from zeroscale.router.spec import PoolSpec, RouterSettings, Workers
from zeroscale.router.streams import PoolStream
from zeroscale.router.template import PoolTemplate
from zeroscale.router.warmcache import WarmCache
from zeroscale.runtimes.streaming import ERROR_TRAILER, parse_trailer
from zeroscale.scaler.policy import IdleWorker, PoolSnapshot, decide
from zeroscale.types import WorkerState
from zeroscale.workers.client import (
    AnswerRefused,
    AnswerTooLarge,
    FilePayload,
    NotDelivered,
    WorkerConnectionError,
    WorkerResponse,
)
from zeroscale.workers.manager import WorkerHandle, WorkerSpec
from zeroscale.workers.stream import WorkerStream

S = WorkerState
_A = TypeVar("_A")


@dataclass(frozen=True, slots=True)
class _Sent(Generic[_A]):
    """What a worker sent back (``VariantPool._send``): the answer, the slot and handle of the worker that
    sent it (another than the caller's when the first never got the request), when it was sent there, and
    the time it was given."""

    answer: _A
    slot: Slot
    handle: WorkerHandle
    started: float
    timeout_s: float


_CONTAINER = "primary"
_DRAIN_STOP_GRACE_S = 1.0
_STREAM_ERROR = ERROR_TRAILER.lower()
_UNLOADS = ("evicted", "stopped")  # the exits of a model's worker that unload it as planned
_ERROR_TEXT_CHARS = 8192  # of a model's error message, in a ModelError
TIMED_OUT = "invocation timed out"  # a timed-out invocation's ModelError.original_message


class Gate(Protocol):
    """What stands between a pool's callers and its workers when its requests are batched
    (``router.batching.Batcher``): the pool hands every invocation to it."""

    @property
    def waiting(self) -> int: ...

    async def invoke(self, inv: Invocation) -> WorkerResponse: ...

    async def close(self) -> None: ...


def _expire(fut: asyncio.Future[Slot]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


def no_capacity(spec: PoolSpec) -> Throttling:
    """An invocation of a variant with no capacity on this front end: told at once (botocore retries
    throttling, and a load balancer may send the retry to a front end that serves it)."""
    return Throttling(
        f"Endpoint {spec.endpoint} variant {spec.variant} has no capacity on this front end: its "
        "MaxConcurrency is shared by the front ends on this database, and this one's share is 0 (another "
        "serves it). Retry later; a load balancer may send the retry to another front end."
    )


class Borrower(Protocol):
    """Who holds some of a pool's workers lent (the native data plane's lender, ``lend``)."""

    def give_one_back(self, pool: VariantPool) -> None:
        """A request found no idle worker here: an idle lent one comes back, which it then gets."""

    def idle(self, pool: VariantPool) -> int:
        """Lent workers with no request on them now: they count free in ``load``."""

    def waiting(self, pool: VariantPool) -> int:
        """Requests waiting in the borrower for its lent workers: they count queued in ``load``."""


class VariantPool:
    def __init__(
        self,
        spec: PoolSpec,
        manager: Workers,
        budget: MemoryBudget,
        settings: RouterSettings,
        events: EventBus,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        cache: WarmCache | None = None,
        on_active: Callable[[VariantPool], None] | None = None,
    ) -> None:
        self.spec = spec
        # Told whenever the pool stops being quiet (a worker starting, a request waiting, a floor): the
        # fleet's reconcile loop visits only such pools, so pools at zero cost nothing however many.
        self._on_active = on_active
        self._manager = manager
        self._settings = settings
        self._events = events
        self._clock = clock
        self._wall = wall
        self._slot_mb = spec.slot_mb or spec.memory_mb  # what one worker holds of the budget
        self._slots = Slots(self._slot_mb, budget, self, clock)
        self._budget = budget
        self.memory_blocked = False  # the last scale() wanted a worker the host's memory could not give
        self._waiters: deque[asyncio.Future[Slot]] = deque()
        self._background = Background(f"pool {spec.endpoint}/{spec.variant}")
        self._template = PoolTemplate(
            spec, manager, cache, self._background, lambda: bool(self._slots) and not self.draining
        )
        self.template_key = self._template.key
        self._at_zero = True  # the next start is a cold start of the whole pool: look in the warm cache
        # A worker started: the template loads once a worker answered a request or went idle, not while the
        # cold request that started the worker is on the CPU (a second model load beside it).
        self._template_after: WorkerSpec | None = None
        # Workers started and not yet announced (their "started" event): see ``_announce_soon``.
        self._unannounced: dict[str, WorkerHandle] = {}
        self._empty = asyncio.Event()
        self._empty.set()
        self.draining = False
        self._deleted = False  # drained because its endpoint was deleted (``ended`` says so)
        self._log_dir = settings.log_dir(spec.endpoint, spec.variant)
        # Dynamic batching (router/batching.py), set by the fleet for a model that opted in: ``invoke``
        # hands its requests over. None: the ordinary path, unchanged.
        self.batcher: Gate | None = None
        # The native data plane's lender while the plane holds some of this pool's workers (``lend``).
        self.borrower: Borrower | None = None
        # Set by the native data plane's lender when it found no idle worker to lend here: the next worker
        # a request frees goes to it (when it takes it: True) rather than to a waiter, as long as another
        # worker not lent serves the waiters. Cleared once it took one.
        self.lend_wanted: Callable[[VariantPool, Slot], bool] | None = None

    # ---- views ----
    @property
    def live(self) -> int:
        """Workers holding memory: starting, idle, busy or stopping."""
        return len(self._slots)

    @property
    def queued(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    @property
    def idle(self) -> int:
        """Workers free now."""
        return self._slots.count(S.IDLE)

    @property
    def ready(self) -> int:
        """Workers up and serving or free to (idle or busy)."""
        return self._slots.count(S.IDLE) + self._slots.count(S.BUSY)

    @property
    def saturated(self) -> bool:
        """No idle worker and none it may start within its MaxConcurrency (or the host's memory): a new
        invocation would wait for a busy worker. An idle worker answers at the first check. A batched
        pool is never saturated: its batcher queues by design. (Spill-over: ``api/forward.py``.)"""
        if self._slots.idle or self.batcher is not None:
            return False
        taken = self._slots.count(S.BUSY) + self._slots.count(S.STOPPING) + self.queued
        return taken >= self.spec.max_concurrency or self.memory_blocked

    def resize(self, spec: PoolSpec) -> None:
        """Another weight, MaxConcurrency or floor for the same model and memory size
        (UpdateEndpointWeightsAndCapacities): the policy starts or stops workers to match at once."""
        same = (spec.endpoint, spec.variant, spec.model_dir, spec.memory_mb, spec.runtime, spec.command)
        if same != (
            self.spec.endpoint,
            self.spec.variant,
            self.spec.model_dir,
            self.spec.memory_mb,
            self.spec.runtime,
            self.spec.command,
        ):
            raise ValueError(f"resize of {self.spec.endpoint}/{self.spec.variant} to another model or size")
        self.spec = spec
        self.scale()

    @property
    def quiet(self) -> bool:
        """At zero with nothing waiting and no floor to keep: the policy has nothing to decide."""
        return not self._slots and not self._waiters and (self.spec.provisioned == 0 or self.draining)

    def slots(self) -> list[Slot]:
        return list(self._slots)

    def snapshot(self) -> PoolSnapshot:
        return PoolSnapshot(
            max_concurrency=self.spec.max_concurrency,
            provisioned=self.spec.provisioned,
            idle_timeout_s=self.spec.idle_timeout_s,
            busy=self._slots.count(S.BUSY),
            starting=self._slots.count(S.STARTING),
            queued=self.queued,
            idle=tuple(IdleWorker(s.worker_id, s.idle_since) for s in self._slots.idle),
            draining=self.draining,
            stopping=self._slots.count(S.STOPPING),
            max_starting=self._settings.max_starting,
        )

    def model_dirs(self) -> list[str]:
        """The directories its workers read (``PoolSpec.directories``). Safe from another thread."""
        return self.spec.directories()

    def artifacts_evicted(self, model_dirs: set[str]) -> None:
        """The artifact cache let these directories go. None of a pool's own: they are kept while it is
        routed (a multi-model pool's copies of its target models are not)."""

    def load(self) -> PoolLoad:
        """What the pool is doing now, for the gauges metrics computes when scraped or sampled."""
        return PoolLoad(
            endpoint=self.spec.endpoint,
            variant=self.spec.variant,
            max_concurrency=self.spec.max_concurrency,
            provisioned=self.spec.provisioned,
            memory_mb=self.spec.memory_mb,
            workers=len(self._slots) - self._slots.count(S.STARTING),
            busy=max(0, self._slots.count(S.BUSY) - (self.borrower.idle(self) if self.borrower else 0)),
            queued=self._queued_all(),
            rss_mb=tuple(s.handle.rss_mb for s in self._slots if s.handle is not None),
            draining=self.draining,
        )

    def _queued_all(self) -> int:
        """Requests waiting for a worker: here, in the batcher, and in the native plane for its lent ones."""
        queued = self.queued if self.batcher is None else self.queued + self.batcher.waiting
        return queued + (self.borrower.waiting(self) if self.borrower else 0)

    def evictable(self) -> list[Slot]:
        """Idle workers above the provisioned floor, longest idle first."""
        spare = len(self._slots) - self.spec.provisioned
        return list(self._slots.idle[: max(0, spare)])

    # ---- scaling ----
    def scale(self) -> None:
        decision = decide(self.snapshot(), self._clock())
        for worker_id in decision.stop:
            slot = self._slots.get(worker_id)
            if slot is not None and slot.state is S.IDLE:
                self._stop(slot, StopReason.SCALED_IN)
        self.memory_blocked = False
        for _ in range(decision.start):
            slot = self._slots.open(self._new_worker_id())
            if slot is None:
                # The fleet evicts elsewhere and calls scale() again when memory comes back; a request that
                # waits meanwhile is told why, not that the variant is at its MaxConcurrency.
                self.memory_blocked = not self._budget.settling
                break
            self._background.spawn(self._start_for_waiters(slot))
        if self._on_active is not None and not self.quiet:
            self._on_active(self)

    async def warm(self) -> None:
        """Start one worker now and keep it idle (CreateEndpoint's deploy-time check). Raises DeployError.

        With the budget full, idle workers of other pools are evicted and this waits for them to exit."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.startup_timeout_s
        while (slot := self._slots.open(self._new_worker_id())) is None:
            if self._slot_mb > self._budget.total_mb:
                raise DeployError(
                    f"A {self.spec.memory_mb} MB worker does not fit in this host's memory budget of "
                    f"{self._budget.total_mb} MB (zeroscale serve --memory-budget-mb)."
                )
            if not self._budget.settling or loop.time() >= deadline:
                raise HostMemoryFull(
                    f"Not enough memory on this host for a {self.spec.memory_mb} MB worker "
                    f"({self._budget.used_mb} of {self._budget.total_mb} MB in use by workers that are busy "
                    "or provisioned)."
                )
            await asyncio.sleep(0.02)
        if self._on_active is not None:
            self._on_active(self)
        await self._start(slot)
        self._hand_over(slot)
        self._announce_soon(slot)

    def grow(self, slot: Slot, mb: int) -> bool:
        """``slot``'s worker holds ``mb`` of the budget from now on (``Slots.grow``)."""
        return self._slots.grow(slot, mb)

    def evict(self, slot: Slot) -> int:
        """Stop an idle worker for another pool's memory; the MB that will come back."""
        if self._slots.get(slot.worker_id) is not slot or slot.state is not S.IDLE:
            return 0
        self._stop(slot, StopReason.EVICTED)
        return slot.reserved_mb

    def unload_idle(self) -> None:
        """Stop every idle worker now (a multi-model variant that does not cache its models)."""
        for slot in list(self._slots.idle):
            self._stop(slot, StopReason.SCALED_IN)

    def _new_worker_id(self) -> str:
        """A container's workers carry its hostname first, so each container has log streams of its own."""
        worker_id = self._manager.new_worker_id()
        return f"{self.spec.container}-{worker_id}" if self.spec.container else worker_id

    @property
    def _container(self) -> str:
        return self.spec.container or _CONTAINER

    async def _start_for_waiters(self, slot: Slot) -> None:
        try:
            await self._start(slot, for_waiters=True)
        except DeployError:
            return
        self._hand_over(slot)
        self._announce_soon(slot)
        if self._settings.max_starting:
            self.scale()  # a start finished: the next, held back by the starts-at-once limit, may go

    async def _start(self, slot: Slot, *, for_waiters: bool = False) -> None:
        """Bring a STARTING slot up (it stays STARTING until handed over); on failure it is GONE, after
        a waiter it was for got the error (so the memory coming back does not start another at once)."""
        spec = WorkerSpec(
            runtime=self.spec.runtime,
            model_dir=self.spec.model_dir,
            memory_mb=self.spec.memory_mb,
            log_dir=self._log_dir,
            env=dict(self.spec.env),
            command=self.spec.command,
            workdir=self.spec.workdir,
            measure_private=bool(self.spec.target_model),
        )
        self._empty.clear()
        if self._at_zero:
            self._at_zero = False
            self._template.take_cached()
        try:
            handle = await self._manager.start(
                spec, worker_id=slot.worker_id, on_exit=self._on_exit, template=self._template.current
            )
        except BaseException as exc:
            if isinstance(exc, DeployError):
                self._emit(slot.worker_id, "failed", detail=str(exc))
                if for_waiters:
                    self._fail_one_waiter(exc)
            self._slots.move(slot, S.GONE)
            self._check_empty()
            raise
        slot.handle = handle
        if slot.state is S.GONE:  # died between its ping and now: _on_exit already ended the slot
            died = DeployError(f"Worker exited right after starting: {handle.death_reason()}")
            if for_waiters:
                self._fail_one_waiter(died)
            self._check_empty()
            raise died
        self._unannounced[slot.worker_id] = handle
        self._template.note(spec)
        self._template_after = spec

    def _fail_one_waiter(self, exc: DeployError) -> None:
        what = f"The worker for variant {self.spec.variant}"
        if self.spec.container:  # a container of a model with several
            what += f" container {self.spec.container}"
        if self.spec.target_model:  # a model of a multi-model variant
            what = f"The worker loading target model {self.spec.target_model} of variant {self.spec.variant}"
        for fut in self._waiters:
            if fut.done():
                continue
            if isinstance(exc, WorkersUnavailable):  # not the model's fault: a retry may find a worker
                fut.set_exception(ServiceUnavailable(str(exc)))
            else:
                fut.set_exception(
                    ModelError(
                        f"{what} failed to start: {exc}",
                        original_status=500,
                        original_message=str(exc),
                    )
                )
            return

    def _announce_soon(self, slot: Slot) -> None:
        """The "started" event of a worker just handed over, once the loop has run what is ready: the
        request that waited for it is resumed first (the hand-over's future) and written to the worker before
        the sinks (metrics, the worker's log stream on disk) take their turn, off the cold start's path. Its
        end, if it comes first, announces it before itself (``_on_exit``)."""
        asyncio.get_running_loop().call_soon(self._announce, slot.worker_id)

    def _announce(self, worker_id: str) -> None:
        handle = self._unannounced.pop(worker_id, None)
        if handle is not None:
            self._emit(worker_id, "started", detail=handle.node, setup_s=handle.ready_s)

    def _hand_over(self, slot: Slot) -> None:
        """A worker is free (just started, or released): the next waiter gets it, or it goes idle."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                if slot.state is not S.BUSY:
                    self._slots.move(slot, S.BUSY)
                fut.set_result(slot)
                return
        self._slots.move(slot, S.IDLE)
        self._keep_template()
        if self.draining:
            self.scale()

    def _stop(self, slot: Slot, reason: StopReason, grace_s: float | None = None) -> None:
        self._slots.move(slot, S.STOPPING, reason)
        if slot.handle is not None:
            self._background.spawn(self._manager.stop(slot.handle, grace_s=grace_s))

    def _on_exit(self, handle: WorkerHandle) -> None:
        """The manager reports a worker gone (any cause). Never raises: it runs in the zygote's reader."""
        slot = self._slots.get(handle.worker_id)
        if slot is None:
            return
        slot.handle = handle
        self._slots.move(slot, S.GONE)
        self._announce(slot.worker_id)
        unload_s = None
        if self.spec.target_model and slot.stopping_since is not None and slot.exit_kind() in _UNLOADS:
            unload_s = max(0.0, self._clock() - slot.stopping_since)
        self._emit(slot.worker_id, slot.exit_kind(), detail=handle.death_reason(), unload_s=unload_s)
        if not self._slots:
            self._at_zero = True
            self._template.stash(draining=self.draining)
        self._check_empty()
        if self.queued:
            self.scale()

    def _emit(
        self,
        worker_id: str,
        kind: str,
        *,
        detail: str = "",
        setup_s: float | None = None,
        unload_s: float | None = None,
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
                model=self.spec.target_model,
                unload_s=unload_s,
            )
        )

    def _check_empty(self) -> None:
        if not self._slots and not self.queued:
            self._empty.set()

    # ---- serving ----
    async def acquire(self, prefer: Callable[[Slot], bool] | None = None, *, waited_s: float = 0.0) -> Slot:
        """A free worker (``prefer``: the most recently used idle one it accepts, if any); ``waited_s``: how
        long the request waited for one already, elsewhere (its queue wait here is what is left of it)."""
        slot = self._slots.most_recent_idle(prefer)
        if slot is not None:
            self._slots.move(slot, S.BUSY)
            return slot
        if self.borrower is not None:
            self.borrower.give_one_back(self)
        if self.spec.max_concurrency <= 0:
            raise no_capacity(self.spec)  # nothing would ever serve it here: no wait for --queue-wait-s
        if self.queued >= self._settings.max_queue:
            raise self.throttled("its queue is full")
        at_capacity = self.live >= self.spec.max_concurrency
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Slot] = loop.create_future()
        self._waiters.append(fut)
        self._empty.clear()
        self.scale()
        wait_s = max(0.0, self._settings.queue_wait_s - waited_s)
        if not at_capacity:
            # A cold start: the startup timeout too, unless the host's memory starts no worker (then the
            # queue wait alone, saying so: busy or provisioned workers hold it, and may for long).
            wait_s += 0.0 if self.memory_blocked else self._settings.startup_timeout_s
        # The future itself, with a timer: the hand-over resumes this task (``asyncio.wait_for`` would put
        # a callback and a future of its own between them).
        timer = loop.call_later(wait_s, _expire, fut)
        try:
            return await fut
        except TimeoutError:
            if not at_capacity and self.memory_blocked and not self._slots.count(S.STARTING):
                raise Throttling(
                    f"Endpoint {self.spec.endpoint} variant {self.spec.variant} could not start a "
                    f"{self.spec.memory_mb} MB worker within {wait_s:g} s: this host's memory budget "
                    f"({self._budget.used_mb} of {self._budget.total_mb} MB) is held by busy or provisioned "
                    "workers. Retry later."
                ) from None
            waited = wait_s + min(waited_s, self._settings.queue_wait_s)
            raise self.throttled(f"no worker became free within {waited:g} s") from None
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release(fut.result())  # handed over as the caller was cancelled: the next one gets it
            raise
        finally:
            timer.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(fut)
            if not self._waiters:
                self._budget.satisfied(self)  # no request of its waits: it wants no memory now
            self._check_empty()

    def release(self, slot: Slot, *, broken: bool = False) -> None:
        slot.lent = False
        if slot.state is not S.BUSY:
            return  # gone mid-request, or stopped by a drain
        handle = slot.handle
        if broken or handle is None or not handle.alive:
            if handle is not None and handle.kill_kind is None:
                handle.kill_kind = "crashed"  # the request broke it; stopping it is our doing, not a plan
            self._stop(slot, StopReason.BROKEN, grace_s=1.0)
            return
        if self._waiters and self._should_yield():
            # another endpoint waits for memory this one holds past its share: its next request waits
            self._stop(slot, StopReason.YIELDED)
            return
        if self._waiters and self.lend_wanted is not None and self._lendable_past_waiters(slot):
            wanted, self.lend_wanted = self.lend_wanted, None
            slot.lent = True
            if wanted(self, slot):
                return
            slot.lent = False
        self._hand_over(slot)
        self._keep_template()

    def _lendable_past_waiters(self, slot: Slot) -> bool:
        """Whether ``slot`` may go to the native data plane though requests wait here: it served already,
        and another worker, not lent, is up or starting for them."""
        return not slot.fresh and any(
            other is not slot and not other.lent and other.state in (S.BUSY, S.IDLE, S.STARTING)
            for other in self._slots
        )

    def _should_yield(self) -> bool:
        """Give a worker back as its request ends (``MemoryBudget.should_yield``), never below one worker
        nor the provisioned floor."""
        keeping = len(self._slots) - self._slots.count(S.STOPPING)
        return keeping > max(1, self.spec.provisioned) and self._budget.should_yield(self)

    def _keep_template(self) -> None:
        if self._template_after is not None:
            spec, self._template_after = self._template_after, None
            self._template.keep(spec)

    def _begin(self, inv: Invocation, slot: Slot) -> WorkerHandle:
        """A worker was acquired for ``inv``: note which, and the cold start it waited for."""
        handle = slot.handle
        assert handle is not None  # a BUSY slot's worker is ready
        inv.worker_id = slot.worker_id
        inv.provisioned = self._slots.count(S.BUSY) <= self.spec.provisioned
        if slot.fresh:
            slot.fresh = False
            inv.setup_s = handle.ready_s
        return handle

    async def invoke(self, inv: Invocation) -> WorkerResponse:
        if self.batcher is not None:
            return await self.batcher.invoke(inv)
        return await self.serve(await self.acquire(waited_s=inv.queued_s), inv)

    async def serve(
        self, slot: Slot, inv: Invocation, path: bytes | None = None, *, again: bool = True
    ) -> WorkerResponse:
        """Send ``inv`` to the worker of ``slot`` (acquired for it) and release it; ``path``: another route
        of the container than ``inv.path`` (a multi-model container's ``/models/{name}/invoke``); ``again``:
        see ``_send``."""
        target = path or inv.path

        def request(handle: WorkerHandle, timeout_s: float) -> Awaitable[WorkerResponse]:
            return self._manager.request(
                handle, inv.method, target, inv.headers, inv.body, timeout_s, inv.max_answer
            )

        sent = await self._send(slot, inv, request, again=again)
        resp, slot, handle = sent.answer, sent.slot, sent.handle
        inv.model_s = time.perf_counter() - sent.started
        inv.model_status = resp.status
        if inv.setup_s is not None:  # the worker's first request: its start is announced before its answer
            self._announce(slot.worker_id)  # (a no-op where the loop has turned since: ``_announce_soon``)
        self.release(slot)
        return self._checked(handle.worker_id, resp, inv)

    def _checked(self, worker_id: str, resp: WorkerResponse, inv: Invocation) -> WorkerResponse:
        """``resp`` when it is a success to answer, else the ModelError of what the worker answered."""
        if not 200 <= resp.status < 300:  # a redirect or a stray 1xx is no answer to relay as a success
            raise self.answered_error(worker_id, resp.status, resp.body.decode("utf-8", "replace"))
        if resp.headers and resp.headers[-1][0].lower() == _STREAM_ERROR:
            # a streaming model's parts, joined, and it failed after its first part (the error trailer)
            status, message = parse_trailer(resp.headers[-1][1])
            inv.model_status = status
            raise self.answered_error(worker_id, status, message)
        return resp

    # ---- workers lent to the native data plane (zeroscale/dataplane) ----
    def lend(self) -> Slot | None:
        """An idle worker taken as busy for the native data plane, which sends it requests on a connection
        of its own until it gives it back (``release``); None when none is idle, or the pool drains. A fresh
        worker is not lent: its first request here announces its start and carries its cold start."""
        if self.draining:
            return None
        slot = self._slots.most_recent_idle(lambda s: not s.fresh)
        if slot is None:
            return None
        self._slots.move(slot, S.BUSY)
        slot.lent = True
        return slot

    def provisioned_now(self) -> bool:
        """Whether the busy workers are within the variant's provisioned concurrency (``_begin``)."""
        return self._slots.count(S.BUSY) <= self.spec.provisioned

    async def lent_outcome(
        self, slot: Slot, kind: str, answer: WorkerResponse | None, inv: Invocation, timeout_s: float
    ) -> WorkerResponse:
        """What a request the native plane sent to the worker of ``slot`` (lent to it) came to, when it was
        not a plain success, as ``serve`` makes of it: ``kind`` is how it ended (answer: the worker's whole
        answer, which the plane would not relay itself; timeout; too_large; refused: not an answer the server
        takes; closed or broken: the connection ended). The answer to send, or the error raised; ``slot`` is
        released either way."""
        handle = slot.handle
        assert handle is not None  # a busy slot's worker is ready
        if kind == "answer" and answer is not None:
            self.release(slot)
            return self._checked(handle.worker_id, answer, inv)
        if kind == "timeout":
            raise self._timed_out(slot, handle, timeout_s)
        if kind == "too_large":
            self.release(slot)
            raise self.too_large(handle.worker_id, inv.max_answer or 0)
        if kind == "refused":
            raise await self._broken(slot, handle, AnswerRefused("its answer is not one the server takes"))
        raise await self._broken(slot, handle, WorkerConnectionError(f"the connection {kind}"))

    async def _send(
        self,
        slot: Slot,
        inv: Invocation,
        send: Callable[[WorkerHandle, float], Awaitable[_A]],
        *,
        again: bool = True,
    ) -> _Sent[_A]:
        """``send`` ``inv`` to the worker of ``slot`` (acquired for it), within the invocation's timeout: what
        came back, and from where. Each way it can fail ends the request with its error, its slot released.

        A request that provably never reached its worker (NotDelivered: the worker ended, or was ending,
        while idle in the pool, just as the request was sent) goes once more, to another worker
        (``_elsewhere``: a cold start if none is free), with what is left of its timeout; ``again=False`` for
        a caller whose worker was chosen for what it holds (a multi-model container's loaded models)."""
        timeout_s = self._settings.invocation_timeout_s if inv.timeout_s is None else inv.timeout_s
        while True:
            handle = self._begin(inv, slot)
            started = time.perf_counter()
            try:
                return _Sent(await send(handle, timeout_s), slot, handle, started, timeout_s)
            except TimeoutError:
                inv.model_s = time.perf_counter() - started
                raise self._timed_out(slot, handle, timeout_s) from None
            except AnswerTooLarge as exc:  # the worker is fine: only its connection was closed
                inv.model_s = time.perf_counter() - started
                self.release(slot)
                raise self.too_large(handle.worker_id, exc.limit) from None
            except NotDelivered as exc:
                inv.model_s = time.perf_counter() - started
                if not again or slot.stop_reason is StopReason.DRAINED:
                    raise await self._broken(slot, handle, exc) from exc
                again = False
                timeout_s = max(0.0, timeout_s - inv.model_s)
                slot = await self._elsewhere(slot, inv)
            except (WorkerConnectionError, OSError) as exc:
                inv.model_s = time.perf_counter() - started
                raise await self._broken(slot, handle, exc) from exc
            except BaseException:
                self.release(slot, broken=True)
                raise

    async def stream(self, inv: Invocation) -> PoolStream:
        """InvokeEndpointWithResponseStream: like ``invoke``, but returns once the answer's head is in; the
        worker stays busy until the stream's last part (``PoolStream``, which the caller must end). A
        request that never reached its worker goes once more, to another (``_send``): never once the
        answer's head is in."""
        assert isinstance(inv.body, bytes)
        body = inv.body
        loop = asyncio.get_running_loop()

        async def open_stream(handle: WorkerHandle, timeout_s: float) -> tuple[WorkerStream, str, float]:
            """The answer's head (an error's whole body, as text), and the invocation's deadline."""
            deadline = loop.time() + timeout_s
            async with asyncio.timeout_at(deadline):
                worker = await self._manager.stream(handle, b"POST", b"/invocations", inv.headers, body)
                text = (await worker.read_all()).decode("utf-8", "replace") if worker.status >= 400 else ""
            return worker, text, deadline

        sent = await self._send(await self.acquire(), inv, open_stream)
        (worker, text, deadline), slot, handle, started = sent.answer, sent.slot, sent.handle, sent.started
        inv.model_status = worker.status
        if worker.status >= 400:
            inv.model_s = time.perf_counter() - started
            self.release(slot)
            raise self.answered_error(handle.worker_id, worker.status, text)

        def kill() -> None:
            self._manager.kill(handle, "the invocation timed out", kind="timed_out")

        return PoolStream(
            worker,
            inv,
            started=started,
            deadline=deadline,
            timeout_s=sent.timeout_s,
            release=lambda broken: self.release(slot, broken=broken),
            kill=kill,
            death_reason=handle.death_reason,
            log_stream_arn=self._log_stream_arn(handle),
        )

    async def _elsewhere(self, slot: Slot, inv: Invocation) -> Slot:
        """``slot``'s worker never got ``inv`` (it is gone, or going): it is stopped, and another worker is
        acquired for ``inv``, whose records (worker, cold start) are then that one's."""
        self.release(slot, broken=True)
        inv.worker_id, inv.setup_s, inv.model_s = "", None, 0.0
        if isinstance(inv.body, FilePayload):  # its body is read from the file again (none of the answer
            inv.body.rewind()  # came, so nothing was written to its sink)
        return await self.acquire()

    def _timed_out(self, slot: Slot, handle: WorkerHandle, timeout_s: float) -> ModelError:
        self._manager.kill(handle, "the invocation timed out", kind="timed_out")
        self.release(slot, broken=True)
        arn = self._log_stream_arn(handle)
        return ModelError(  # SageMaker's words, in the shape of every other ModelError
            f'Received server error (0) from {self._container} with message "Your invocation timed out while '
            f"waiting for a response from container {self._container}. Review the latency metrics for each "
            "container in Amazon CloudWatch, resolve the issue, and try again. (The model took longer than "
            f'{timeout_s:g} s to answer.)". See {arn} for more information.',
            original_status=0,
            original_message=TIMED_OUT,
            log_stream_arn=arn,
        )

    async def _broken(self, slot: Slot, handle: WorkerHandle, exc: BaseException) -> ZeroscaleError:
        """The connection broke mid-request: the worker is stopped, and the error says why it died (or why
        it was stopped: an answer the server refused, not the signal that stopped it; a drain past its
        timeout, not the model's fault: ``ended``)."""
        if slot.stop_reason is StopReason.DRAINED:
            self.release(slot, broken=True)
            return self.ended()
        if isinstance(exc, AnswerRefused) and handle.kill_reason is None:
            handle.kill_reason = f"Worker {handle.worker_id} was stopped: {exc}"
        self.release(slot, broken=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(handle.exited.wait(), 2.0)
        reason = handle.death_reason()
        return ModelError(
            f'Received server error (0) from {self._container} with message "{reason}". '
            f"See {self._log_stream_arn(handle)} for more information.",
            original_status=0,
            original_message=reason,
            log_stream_arn=self._log_stream_arn(handle),
        )

    def answered_error(self, worker_id: str, status: int, text: str) -> ModelError:
        """The ModelError for an error the worker ``worker_id`` answered (its text cut to
        ``_ERROR_TEXT_CHARS``: it is in the answer twice; the worker's log has it whole)."""
        kind = "client" if status < 500 else "server"
        if len(text) > _ERROR_TEXT_CHARS:
            text = f"{text[:_ERROR_TEXT_CHARS]}... ({len(text) - _ERROR_TEXT_CHARS} more characters)"
        arn = self._settings.log_stream_arn(self.spec.endpoint, self.spec.variant, worker_id)
        return ModelError(
            f'Received {kind} error ({status}) from {self._container} with message "{text}". '
            f"See {arn} for more information.",
            original_status=status,
            original_message=text,
            log_stream_arn=arn,
        )

    def ended(self) -> ZeroscaleError:
        """The error of a request the drain left unserved: it waited for a worker, or its worker was
        stopped, past the drain's timeout. Not the model's fault, so no ModelError: a deleted endpoint is
        one InvokeEndpoint no longer finds (its words for that, and why); else the variant was replaced by
        an update, or the server is shutting down, and a retry is served."""
        spec = self.spec
        if self._deleted:
            return RuntimeValidationError(
                f"Endpoint {spec.endpoint} of account {self._settings.account_id} not found: it was deleted "
                "before this request was answered."
            )
        return ServiceUnavailable(
            f"Endpoint {spec.endpoint} variant {spec.variant} stopped serving before this request was "
            "answered: the endpoint was updated, or this server is shutting down. Retry the request."
        )

    def too_large(self, worker_id: str, limit: int) -> ModelError:
        """The ModelError for an answer over the invocation's limit."""
        arn = self._settings.log_stream_arn(self.spec.endpoint, self.spec.variant, worker_id)
        message = (
            f"The answer from {self._container} is larger than the {limit} bytes InvokeEndpoint returns. "
            "Return less, or invoke the endpoint with InvokeEndpointAsync (the answer goes to S3) or "
            "InvokeEndpointWithResponseStream."
        )
        return ModelError(message, original_status=500, original_message=message, log_stream_arn=arn)

    def _log_stream_arn(self, handle: WorkerHandle) -> str:
        return self._settings.log_stream_arn(self.spec.endpoint, self.spec.variant, handle.worker_id)

    @property
    def max_queue(self) -> int:
        return self._settings.max_queue

    def throttled(self, why: str) -> Throttling:
        return Throttling(
            f"Endpoint {self.spec.endpoint} variant {self.spec.variant} is at its MaxConcurrency "
            f"({self.spec.max_concurrency}) and {why}. Retry later, or raise MaxConcurrency."
        )

    # ---- shutdown ----
    async def drain(self, timeout_s: float, *, deleted: bool = False) -> None:
        """Serve what was accepted, then stop every worker. Stops what is left after ``timeout_s``: a
        request still waiting for a worker then, or still being served, gets ``ended`` (``deleted``: the
        endpoint was deleted, and the error says so).

        The variant's metric series stay: the Fleet drops them once no pool of that variant is left."""
        self.draining = True
        self._deleted = self._deleted or deleted
        self.scale()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), timeout_s)
        for fut in self._waiters:
            if not fut.done():
                fut.set_exception(self.ended())
        for slot in self._slots:
            if slot.state in (S.IDLE, S.BUSY):
                self._stop(slot, StopReason.DRAINED, grace_s=_DRAIN_STOP_GRACE_S)
        # Stopping workers are SIGKILLed after the grace; one still starting is stopped once it is up.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._empty.wait(), _DRAIN_STOP_GRACE_S + 2.0)
        await self._template.close()
        if self.batcher is not None:
            await self.batcher.close()
