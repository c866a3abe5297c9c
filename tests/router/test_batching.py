"""The router's dynamic batching (router/batching.py) as a unit: a VariantPool with a Batcher over a fake
WorkerManager whose workers answer batches the way a real worker frames them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from zeroscale.errors import ModelError, RuntimeValidationError, Throttling
from zeroscale.events import EventBus
from zeroscale.router.batching import Batcher, batch_key
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.invocation import Invocation
from zeroscale.router.pool import VariantPool
from zeroscale.runtimes.batching import BATCH_PATH, BatchSettings, pack_answers, unpack_bodies
from zeroscale.workers.client import WorkerResponse
from zeroscale.workers.manager import WorkerHandle

from .fakes import FakeClock, FakeManager, settings, spec

JSON = [(b"content-type", b"application/json"), (b"accept", b"text/csv")]


class BatchWorkers(FakeManager):
    """Workers that answer ``/invocations`` with ``<body>!`` and ``/zeroscale/batch`` with one framed answer
    per body (a body ``bad`` gets a 400); requests can be held until the test answers them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[bytes, int]] = []  # (path, requests in it)
        self.held: list[tuple[bytes, bytes, asyncio.Future[WorkerResponse]]] = []
        self.batch_status = 200
        self.batch_delay_s = 0.0

    async def request(
        self,
        handle: WorkerHandle,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Any,
        timeout_s: float | None = None,
        max_answer: int | None = None,
    ) -> WorkerResponse:
        if not handle.alive:
            raise AssertionError("request to a dead worker")
        self.calls.append((path, len(unpack_bodies(body)) if path == BATCH_PATH else 1))
        if self.hold_requests:
            fut: asyncio.Future[WorkerResponse] = asyncio.get_running_loop().create_future()
            self.held.append((path, body, fut))
            async with asyncio.timeout(timeout_s):  # the contract: TimeoutError past timeout_s
                return await fut
        if path == BATCH_PATH and self.batch_delay_s:
            async with asyncio.timeout(timeout_s):  # the contract: TimeoutError past timeout_s
                await asyncio.sleep(self.batch_delay_s)
        return self.answer_for(path, body)

    def answer_for(self, path: bytes, body: bytes) -> WorkerResponse:
        if path != BATCH_PATH:
            if body == b"bad":
                return WorkerResponse(400, [(b"Content-Type", b"text/plain")], b"bad input")
            return WorkerResponse(200, [(b"Content-Type", b"text/csv")], body + b"!")
        if self.batch_status != 200:
            return WorkerResponse(self.batch_status, [], b"Not found")
        answers = [
            (400, b"bad input", b"text/plain") if b == b"bad" else (200, b + b"!", b"text/csv")
            for b in unpack_bodies(body)
        ]
        return WorkerResponse(200, [], pack_answers(answers))

    def release_one(self) -> bytes:
        path, body, fut = self.held.pop(0)
        fut.set_result(self.answer_for(path, body))
        return path


class World:
    def __init__(self, tmp: Path, *, max_size: int = 4, delay_s: float = 0.0, **kw: Any) -> None:
        self.manager = BatchWorkers()
        self.budget = MemoryBudget(8192, lambda deficit, requester: 0)
        settings_kw = {k: kw.pop(k) for k in ("queue_wait_s", "max_queue", "invocation_timeout_s") if k in kw}
        self.pool = VariantPool(
            spec(**{"max_concurrency": 1, **kw}),
            self.manager.as_manager(),
            self.budget,
            settings(tmp, **settings_kw),
            EventBus([]),
            FakeClock(),
        )
        self.pool.batcher = Batcher(self.pool, BatchSettings(max_size, delay_s))

    def invoke(self, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> asyncio.Task[Any]:
        inv = Invocation(body, list(JSON if headers is None else headers))
        task = asyncio.ensure_future(self._run(inv))
        return task

    async def _run(self, inv: Invocation) -> tuple[Invocation, WorkerResponse]:
        return inv, await self.pool.invoke(inv)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_batch_key() -> None:
    assert batch_key(Invocation(b"x", list(JSON))) == (b"application/json", b"text/csv", None)
    assert batch_key(Invocation(b"x", [])) == (b"", b"", None)  # the default type, JSON
    assert batch_key(Invocation(b"x", [(b"Content-Type", b"text/libsvm")])) is None
    assert batch_key(Invocation(b"x", list(JSON), container="c1")) is None
    assert batch_key(Invocation(b"x", list(JSON), target_model="m.tar.gz")) is None
    assert batch_key(Invocation(b"", [], method=b"GET", path=b"/execution-parameters")) is None
    assert batch_key(Invocation(b"x", list(JSON), timeout_s=5.0)) == (b"application/json", b"text/csv", 5.0)


async def test_requests_waiting_for_a_worker_go_as_one_batch(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=4)
    world.manager.hold_requests = True
    first = world.invoke(b"a")
    await settle()
    assert world.manager.calls == [(b"/invocations", 1)]  # alone: the ordinary request
    rest = [world.invoke(b"r%d" % i) for i in range(6)]
    await settle()
    assert len(world.manager.calls) == 1  # they wait for the one worker
    assert world.pool.load().queued == 6  # the gauge counts requests, not batches
    world.manager.release_one()
    await settle()
    assert world.manager.calls[1] == (BATCH_PATH, 4)
    world.manager.release_one()
    await settle()
    assert world.manager.calls[2] == (BATCH_PATH, 2)
    world.manager.release_one()
    done = await asyncio.gather(first, *rest)
    assert [resp.body for _, resp in done] == [b"a!"] + [b"r%d!" % i for i in range(6)]
    assert all(resp.header(b"content-type") == b"text/csv" for _, resp in done)
    batch = [inv for inv, _ in done[1:5]]
    assert len({inv.model_s for inv in batch}) == 1  # each request's model time is its batch's
    assert [(inv.batch_size, inv.batch_first) for inv in batch] == [(4, True)] + [(4, False)] * 3
    assert (done[0][0].batch_size, done[0][0].batch_first) == (1, False)  # alone
    assert {inv.worker_id for inv, _ in done} == {"w1"}
    assert all(inv.model_status == 200 for inv, _ in done)
    assert done[0][0].setup_s is not None  # the cold start: reported once, by the request that waited
    assert all(inv.setup_s is None for inv, _ in done[1:])
    assert world.pool.load().queued == 0


async def test_groups_never_mix_content_types_or_accepts(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=8)
    world.manager.hold_requests = True
    first = world.invoke(b"a")
    await settle()
    csv = [(b"content-type", b"text/csv")]
    tasks = [world.invoke(b"j1"), world.invoke(b"c1", csv), world.invoke(b"j2"), world.invoke(b"c2", csv)]
    npz = world.invoke(b"z", [(b"content-type", b"application/x-npz")])  # not mergeable: the pool's path
    await settle()
    while world.manager.held:
        world.manager.release_one()
        await settle()
    await asyncio.gather(first, npz, *tasks)
    assert sorted(world.manager.calls) == sorted(
        [(b"/invocations", 1), (b"/invocations", 1), (BATCH_PATH, 2), (BATCH_PATH, 2)]
    )


async def test_an_error_answer_is_that_requests_alone(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=4)
    world.manager.hold_requests = True
    first = world.invoke(b"a")
    await settle()
    tasks = [world.invoke(b"ok1"), world.invoke(b"bad"), world.invoke(b"ok2")]
    await settle()
    world.manager.release_one()
    await settle()
    world.manager.release_one()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert isinstance(results[2], ModelError)
    assert results[2].original_status == 400
    assert results[2].original_message == "bad input"
    assert "Received client error (400)" in results[2].message
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert [resp.body for _, resp in ok] == [b"a!", b"ok1!", b"ok2!"]
    assert world.manager.calls == [(b"/invocations", 1), (BATCH_PATH, 3)]


async def test_a_failed_batch_call_falls_back_to_one_by_one(tmp_path: Path) -> None:
    """A worker without the batch route (or any error answer to the batch itself): each request again,
    alone, through the ordinary path."""
    world = World(tmp_path, max_size=4)
    world.manager.batch_status = 404
    world.manager.hold_requests = True
    first = world.invoke(b"a")
    await settle()
    tasks = [world.invoke(b"x"), world.invoke(b"y"), world.invoke(b"bad")]
    await settle()
    world.manager.hold_requests = False
    world.manager.release_one()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert [r[1].body for r in results[:3] if not isinstance(r, BaseException)] == [b"a!", b"x!", b"y!"]
    assert isinstance(results[3], ModelError) and results[3].original_status == 400
    assert world.manager.calls[:2] == [(b"/invocations", 1), (BATCH_PATH, 3)]
    assert sorted(world.manager.calls[2:]) == [(b"/invocations", 1)] * 3
    # each was answered alone: billed and counted as alone (its own model time, not a third of it)
    assert [r[0].batch_size for r in results[:3] if not isinstance(r, BaseException)] == [1, 1, 1]


async def test_a_malformed_answer_frame_falls_back_to_one_by_one(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=4)

    def truncated(path: bytes, body: bytes) -> WorkerResponse:
        resp = BatchWorkers.answer_for(world.manager, path, body)
        return WorkerResponse(resp.status, resp.headers, resp.body[:-1] if path == BATCH_PATH else resp.body)

    world.manager.answer_for = truncated  # type: ignore[method-assign]
    world.manager.hold_requests = True
    first = world.invoke(b"a")
    await settle()
    tasks = [world.invoke(b"x"), world.invoke(b"y")]
    await settle()
    world.manager.hold_requests = False
    world.manager.release_one()
    results = await asyncio.gather(first, *tasks)
    assert [resp.body for _, resp in results] == [b"a!", b"x!", b"y!"]
    assert world.manager.calls[1] == (BATCH_PATH, 2)
    assert world.manager.calls[2:] == [(b"/invocations", 1)] * 2
    assert [inv.batch_size for inv, _ in results] == [1, 1, 1]  # answered alone, billed alone


async def test_a_batch_that_times_out_times_out_each_request(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=4, invocation_timeout_s=0.05)
    world.manager.batch_delay_s = 1.0
    world.manager.hold_requests = True
    first = world.invoke(b"a")
    await settle()
    tasks = [world.invoke(b"x"), world.invoke(b"y")]
    await settle()
    world.manager.hold_requests = False
    world.manager.release_one()
    results = await asyncio.gather(first, *tasks, return_exceptions=True)
    assert not isinstance(results[0], BaseException)
    for r in results[1:]:
        assert isinstance(r, ModelError)
        assert "timed out" in r.message
    assert world.manager.kills == [("w1", "timed_out")]
    assert world.manager.calls == [(b"/invocations", 1), (BATCH_PATH, 2)]  # not sent again


async def test_delay_gathers_requests_for_a_free_worker(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=8, delay_s=0.05)
    await world.pool.warm()
    tasks = [world.invoke(b"a")]
    await asyncio.sleep(0.01)
    tasks += [world.invoke(b"b"), world.invoke(b"c")]
    results = await asyncio.gather(*tasks)
    assert [resp.body for _, resp in results] == [b"a!", b"b!", b"c!"]
    assert world.manager.calls == [(BATCH_PATH, 3)]


async def test_a_full_batch_does_not_wait_for_the_delay(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=2, delay_s=30.0)
    await world.pool.warm()
    results = await asyncio.wait_for(asyncio.gather(world.invoke(b"a"), world.invoke(b"b")), 5.0)
    assert [resp.body for _, resp in results] == [b"a!", b"b!"]
    assert world.manager.calls == [(BATCH_PATH, 2)]


async def test_without_delay_a_free_worker_takes_a_request_at_once(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=8)
    await world.pool.warm()
    _, resp = await world.invoke(b"a")
    assert resp.body == b"a!"
    assert world.manager.calls == [(b"/invocations", 1)]


async def test_requests_that_waited_through_the_queue_wait_are_throttled(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=4, queue_wait_s=0.05, max_concurrency=1)
    world.manager.hold_requests = True
    first = world.invoke(b"a")
    await settle()
    tasks = [world.invoke(b"x"), world.invoke(b"y")]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Throttling) for r in results)
    assert "no worker became free within" in str(results[0])
    world.manager.release_one()
    assert (await first)[1].body == b"a!"
    assert world.pool.load().queued == 0


async def test_a_full_queue_is_throttled(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=4, max_queue=3)
    world.manager.hold_requests = True
    first = world.invoke(b"a")
    await settle()
    waiting = [world.invoke(b"w%d" % i) for i in range(3)]
    await settle()
    with pytest.raises(Throttling, match="queue is full"):
        await world.invoke(b"one too many")
    world.manager.release_one()
    await settle()
    world.manager.release_one()
    await asyncio.gather(first, *waiting)


async def test_a_client_that_goes_away_leaves_the_batch_alone(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=4)
    world.manager.hold_requests = True
    first = world.invoke(b"a")
    await settle()
    gone = world.invoke(b"gone")
    stays = [world.invoke(b"x"), world.invoke(b"y")]
    await settle()
    gone.cancel()
    await settle()
    world.manager.release_one()
    await settle()
    assert world.manager.calls[1] == (BATCH_PATH, 2)  # the cancelled request was not sent
    world.manager.release_one()
    results = await asyncio.gather(first, *stays)
    assert [resp.body for _, resp in results] == [b"a!", b"x!", b"y!"]


async def test_a_failed_start_fails_the_batch_it_was_for(tmp_path: Path) -> None:
    world = World(tmp_path, max_size=2)
    world.manager.start_errors = ["no memory"]
    tasks = [world.invoke(b"a"), world.invoke(b"b"), world.invoke(b"c")]
    results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in results if isinstance(r, ModelError)]
    assert len(failed) == 2 and "failed to start" in failed[0].message
    assert [r[1].body for r in results if not isinstance(r, BaseException)] == [b"c!"]


async def test_drain_fails_what_waits_saying_why(tmp_path: Path) -> None:
    """Requests still queued when a drain ends are told the endpoint is gone (were cancelled: a 500)."""
    world = World(tmp_path, max_size=4)
    world.manager.hold_requests = True
    first = world.invoke(b"a")
    await settle()
    waiting = [world.invoke(b"x"), world.invoke(b"y")]
    await settle()
    await asyncio.wait_for(world.pool.drain(0.05, deleted=True), 5.0)
    for task in waiting:
        with pytest.raises(RuntimeValidationError, match="not found: it was deleted"):
            await task
    await settle()
    # the fake's stopped worker never answers; the drain's end left nothing of the batcher hanging
    assert first.done()
