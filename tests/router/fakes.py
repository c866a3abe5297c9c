"""A fake WorkerManager and a fake clock for the router's unit tests.

Workers are ``WorkerHandle`` records without processes. The test decides when starts finish, when requests
answer, and when workers die; exits are reported the way the real manager reports them (``on_exit`` after
``exit_code`` is set, and for stops and kills on a later turn of the event loop, as a process would).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

from zeroscale.errors import DeployError
from zeroscale.events import EventBus, InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.router.spec import PoolSpec, RouterSettings, Workers
from zeroscale.workers.client import AnswerTooLarge, NotDelivered, WorkerConnectionError, WorkerResponse
from zeroscale.workers.manager import WorkerHandle, WorkerSpec


class FakeClock:
    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTemplate:
    def __init__(self) -> None:
        self.alive = True
        self.closed = False

    async def close(self) -> None:
        self.alive = False
        self.closed = True


class FakeManager:
    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pids = itertools.count(100)
        self.live: dict[str, WorkerHandle] = {}
        self.start_gate = asyncio.Event()
        self.start_gate.set()
        self.start_errors: list[str] = []  # each start pops one and fails with it
        self.starts: list[tuple[str, Any]] = []  # (worker id, the template it was forked from)
        self.started: list[WorkerSpec] = []  # what each started worker was asked to run
        self.stops: list[str] = []
        self.kills: list[tuple[str, str]] = []
        self.templates: list[FakeTemplate] = []
        self.template_error: Exception | None = None
        self.template_gate = asyncio.Event()  # a template finishes loading once it is set
        self.template_gate.set()
        self.template_tries = 0
        self.hold_requests = False
        self.pending: list[tuple[str, asyncio.Future[WorkerResponse]]] = []
        self.requests: list[str] = []  # worker id per request, in order
        self.status = 200
        self.prewarmed: list[tuple[str, ...]] = []
        self.template_size = 40 * 1024 * 1024
        self.parked: list[tuple[WorkerSpec, Any]] = []  # (spec, template) per park
        self.park_gate = asyncio.Event()  # a park finishes once it is set
        self.park_gate.set()
        self.parked_size = 0  # what a parked replica adds to its template's keep
        self.streams: list[FakeStream] = []
        # Workers that went while idle, their exit not yet reported: a request to one never reaches it.
        self.leaving: set[str] = set()

    def as_manager(self) -> Workers:
        return cast(Workers, self)

    # ---- the WorkerManager surface the router uses ----
    def new_worker_id(self) -> str:
        return f"w{next(self._ids)}"

    async def prewarm(self, runtimes: tuple[str, ...]) -> None:
        self.prewarmed.append(runtimes)

    async def start(
        self,
        spec: WorkerSpec,
        *,
        worker_id: str | None = None,
        on_exit: Callable[[WorkerHandle], None] | None = None,
        template: Any = None,
    ) -> WorkerHandle:
        wid = worker_id or self.new_worker_id()
        await self.start_gate.wait()
        if self.start_errors:
            raise DeployError(self.start_errors.pop(0))
        handle = WorkerHandle(wid, spec, "", Path("/nonexistent") / f"{wid}.log", started_at=0.0)
        handle.pid = next(self._pids)
        handle.ready_s = 0.025
        handle.on_exit = on_exit
        self.live[wid] = handle
        self.starts.append((wid, template))
        self.started.append(spec)
        return handle

    async def start_template(self, spec: WorkerSpec) -> FakeTemplate:
        await asyncio.sleep(0)
        await self.template_gate.wait()
        self.template_tries += 1
        if self.template_error is not None:
            raise self.template_error
        template = FakeTemplate()
        self.templates.append(template)
        return template

    def template_bytes(self, template: Any) -> int:
        return self.template_size

    async def park(self, spec: WorkerSpec, template: Any) -> int:
        self.parked.append((spec, template))
        await self.park_gate.wait()
        return self.template_size + self.parked_size

    async def stop(self, handle: WorkerHandle, *, grace_s: float | None = None) -> None:
        self.stops.append(handle.worker_id)
        if handle.alive:
            await asyncio.sleep(0)  # the process takes a moment to go
            self.exit(handle, 0)

    def kill(self, handle: WorkerHandle, reason: str, kind: str = "killed") -> None:
        if handle.kill_reason is None:
            handle.kill_reason, handle.kill_kind = reason, kind
        self.kills.append((handle.worker_id, kind))
        asyncio.get_running_loop().call_soon(self.exit, handle, -9)

    async def request(
        self,
        handle: WorkerHandle,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout_s: float | None = None,
        max_answer: int | None = None,
    ) -> WorkerResponse:
        if not handle.alive:
            raise WorkerConnectionError("the worker closed its connection")
        self.requests.append(handle.worker_id)
        if handle.worker_id in self.leaving:
            raise NotDelivered("Connection reset by peer")
        if self.hold_requests:
            fut: asyncio.Future[WorkerResponse] = asyncio.get_running_loop().create_future()
            self.pending.append((handle.worker_id, fut))
            async with asyncio.timeout(timeout_s):  # the contract: TimeoutError past timeout_s
                return await fut
        if max_answer is not None and len(body) > max_answer:  # an echo: its answer is the body
            raise AnswerTooLarge(max_answer)
        return WorkerResponse(self.status, [], body)

    async def stream(
        self,
        handle: WorkerHandle,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> FakeStream:
        if not handle.alive:
            raise WorkerConnectionError("the worker closed its connection")
        self.requests.append(handle.worker_id)
        if handle.worker_id in self.leaving:
            raise NotDelivered("Connection reset by peer")
        stream = FakeStream(self.status)
        self.streams.append(stream)
        return stream

    # ---- what the test does to workers ----
    def exit(self, handle: WorkerHandle, code: int = -11) -> None:
        """The process is gone (a crash when nobody asked it to stop)."""
        if not handle.alive:
            return
        handle.exit_code = code
        handle.exited.set()
        self.live.pop(handle.worker_id, None)
        if handle.on_exit is not None:
            handle.on_exit(handle)

    def crash(self, worker_id: str) -> None:
        """Kill a worker from outside; a request it was serving fails as its connection closes."""
        handle = self.live[worker_id]
        self.exit(handle, -11)
        for wid, fut in list(self.pending):
            if wid == worker_id and not fut.done():
                fut.set_exception(WorkerConnectionError("the worker closed its connection"))
        self.pending = [(w, f) for w, f in self.pending if not f.done()]

    def answer(self, index: int = 0, status: int = 200, body: bytes = b"ok") -> str:
        """Let one held request answer; returns the worker id that served it."""
        wid, fut = self.pending.pop(index)
        fut.set_result(WorkerResponse(status, [], body))
        return wid

    def answer_all(self) -> None:
        while self.pending:
            self.answer()


class FakeStream:
    """A worker's streamed answer that the test feeds: ``send`` parts, then ``end`` (optionally with the
    worker's error trailer) or ``broken``."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.error: tuple[int, str] | None = None
        self.aborted = False
        self._parts: asyncio.Queue[bytes | Exception | None] = asyncio.Queue()

    def header(self, name: bytes) -> bytes | None:
        return b"text/plain" if name.lower() == b"content-type" else None

    def send(self, *parts: bytes) -> None:
        for part in parts:
            self._parts.put_nowait(part)

    def end(self, error: tuple[int, str] | None = None) -> None:
        self.error = error
        self._parts.put_nowait(None)

    def broken(self) -> None:
        self._parts.put_nowait(WorkerConnectionError("worker closed the connection"))

    async def next_parts(self) -> list[bytes]:
        item = await self._parts.get()
        if isinstance(item, Exception):
            raise item
        return [] if item is None else [item]

    async def read_all(self) -> bytes:
        return b"boom"

    def abort(self) -> None:
        self.aborted = True


class Recorder:
    """An event sink that keeps everything."""

    def __init__(self) -> None:
        self.invocations: list[InvocationRecord] = []
        self.workers: list[WorkerEvent] = []
        self.variants: list[VariantEvent] = []

    def invocation(self, record: InvocationRecord) -> None:
        self.invocations.append(record)

    def worker(self, event: WorkerEvent) -> None:
        self.workers.append(event)

    def variant(self, event: VariantEvent) -> None:
        self.variants.append(event)

    def kinds(self) -> list[tuple[str, str]]:
        return [(e.worker_id, e.kind) for e in self.workers]


class RaisingSink:
    """A sink with a bug: every call raises."""

    def invocation(self, record: InvocationRecord) -> None:
        raise RuntimeError("sink bug")

    def worker(self, event: WorkerEvent) -> None:
        raise RuntimeError("sink bug")

    def variant(self, event: VariantEvent) -> None:
        raise RuntimeError("sink bug")


def settings(tmp: Path, **kw: Any) -> RouterSettings:
    values: dict[str, Any] = {
        "logs_dir": tmp,
        "region": "us-east-1",
        "account_id": "123456789012",
        "queue_wait_s": 5.0,
        "max_queue": 100,
        "invocation_timeout_s": 5.0,
        "startup_timeout_s": 5.0,
        "memory_budget_mb": 8192,
    }
    values.update(kw)
    return RouterSettings(**values)


def spec(**kw: Any) -> PoolSpec:
    values: dict[str, Any] = {
        "endpoint": "ep",
        "variant": "AllTraffic",
        "runtime": "sklearn",
        "image": "sklearn",
        "model_dir": "/nonexistent/model",
        "memory_mb": 1024,
        "max_concurrency": 4,
        "provisioned": 0,
        "idle_timeout_s": 60.0,
    }
    values.update(kw)
    return PoolSpec(**values)


def bus(*sinks: Any) -> EventBus:
    return EventBus(list(sinks))
