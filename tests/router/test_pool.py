"""VariantPool as a unit: a fake WorkerManager (no processes), a fake clock, a real memory budget.

Each test drives the pool the way the router does (invoke, scale, evict, drain) and checks what the pool
did to its workers, what it reported, and that every figure derived from the slot states agrees.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest

from metrics.promtext import value
from zeroscale.errors import DeployError, ModelError, RuntimeValidationError, ServiceUnavailable, Throttling
from zeroscale.events import EventBus
from zeroscale.metrics.registry import Metrics
from zeroscale.router.budget import MemoryBudget
from zeroscale.router.invocation import Invocation
from zeroscale.router.pool import VariantPool
from zeroscale.router.slots import StopReason
from zeroscale.types import WorkerState
from zeroscale.workers.client import WorkerConnectionError
from zeroscale.workers.zygotes import TemplateRefused, ZygoteError

from .fakes import FakeClock, FakeManager, RaisingSink, Recorder, settings, spec

S = WorkerState


class World:
    """One memory budget shared by the pools a test makes, with a fake manager and clock."""

    def __init__(self, tmp: Path, total_mb: int = 8192, sinks: tuple[Any, ...] = ()) -> None:
        self.tmp = tmp
        self.manager = FakeManager()
        self.clock = FakeClock()
        self.recorder = Recorder()
        self.events = EventBus([self.recorder, *sinks])
        self.pools: list[VariantPool] = []
        self.budget = MemoryBudget(total_mb, self._evict)
        self.budget.on_release = self._serve_waiting
        self.metrics = Metrics()  # its gauges come from the pools' loads, as on /metrics
        self.metrics.watch(lambda: [p.load() for p in self.pools])

    def pool(self, settings_kw: dict[str, Any] | None = None, **spec_kw: Any) -> VariantPool:
        pool = VariantPool(
            spec(**spec_kw),
            self.manager.as_manager(),
            self.budget,
            settings(self.tmp, **(settings_kw or {})),
            self.events,
            self.clock,
        )
        self.pools.append(pool)
        return pool

    # the fleet's part, minimally: evict idle workers of other pools, rescale pools that wait
    def _evict(self, deficit_mb: int, requester: object) -> int:
        freed = 0
        candidates = [(s, p) for p in self.pools if p is not requester for s in p.evictable()]
        for slot, pool in sorted(candidates, key=lambda c: c[0].idle_since):
            if freed >= deficit_mb:
                break
            freed += pool.evict(slot)
        return freed

    def _serve_waiting(self) -> None:
        for pool in self.pools:
            if pool.queued:
                pool.scale()

    def check(self) -> None:
        """The slot states add up to what the budget and the gauges say."""
        used = starting = evicting = 0
        for pool in self.pools:
            slots = pool.slots()
            states = [s.state for s in slots]
            mb = pool.spec.memory_mb
            assert S.GONE not in states
            used += len(slots) * mb
            starting += states.count(S.STARTING) * mb
            evicted = [s for s in slots if s.state is S.STOPPING and s.stop_reason is StopReason.EVICTED]
            evicting += len(evicted) * mb
            load = pool.load()
            assert load.workers == len(slots) - states.count(S.STARTING)
            assert load.busy == states.count(S.BUSY)
            assert load.queued == pool.queued
            snap = pool.snapshot()
            assert snap.busy + snap.starting + len(snap.idle) + snap.stopping == len(slots)
            assert sorted(w.worker_id for w in snap.idle) == sorted(
                s.worker_id for s in slots if s.state is S.IDLE
            )
            assert len(slots) <= pool.spec.max_concurrency
            for slot in slots:
                if slot.state in (S.IDLE, S.BUSY):
                    assert slot.handle is not None and slot.handle.worker_id in self.manager.live
        assert self.budget.used_mb == used <= self.budget.total_mb
        assert self.budget.starting_mb == starting
        assert self.budget.evicting_mb == evicting
        text = self.metrics.render().decode()
        for pool in self.pools:
            labels = {"endpoint_name": pool.spec.endpoint, "variant_name": pool.spec.variant}
            slots = pool.slots()
            live = sum(1 for s in slots if s.state is not S.STARTING)
            assert value(text, "zeroscale_workers", **labels) == live
            busy = sum(1 for s in slots if s.state is S.BUSY)
            assert value(text, "zeroscale_concurrent_executions", **labels) == busy
            assert value(text, "zeroscale_queue_depth", **labels) == pool.queued


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


def states(pool: VariantPool) -> list[WorkerState]:
    return sorted(s.state for s in pool.slots())


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def inv(body: bytes = b"[1]") -> Invocation:
    return Invocation(body, [(b"content-type", b"application/json")])


# ---- cold starts ----
async def test_a_pool_at_zero_starts_a_worker_for_a_request_and_reports_the_cold_start(world: World) -> None:
    pool = world.pool()
    assert pool.live == 0 and world.budget.used_mb == 0
    request = inv()
    resp = await pool.invoke(request)
    assert resp.status == 200 and resp.body == b"[1]"
    assert request.worker_id == "w1" and request.setup_s == 0.025
    assert states(pool) == [S.IDLE]
    assert world.recorder.kinds() == [("w1", "started")]
    again = inv()
    await pool.invoke(again)
    assert again.setup_s is None  # the second request found a warm worker
    world.check()


async def test_a_cold_request_reaches_its_worker_before_the_started_event_is_announced(world: World) -> None:
    # The sinks (metrics, the worker's log stream on disk) take the "started" event after the request that
    # waited for the worker has been written to it, not between the two.
    pool = world.pool()
    seen: list[list[tuple[str, str]]] = []
    request = world.manager.request

    async def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(world.recorder.kinds())
        return await request(*args, **kwargs)

    world.manager.request = recording  # type: ignore[method-assign]
    await pool.invoke(inv())
    assert seen == [[]]
    assert world.recorder.kinds() == [("w1", "started")]  # announced before the answer came back
    world.check()


async def test_a_worker_that_ends_before_it_is_announced_is_announced_first(world: World) -> None:
    pool = world.pool()
    world.manager.hold_requests = True
    hand_over = pool._hand_over

    def crash_after(slot: Any) -> None:
        hand_over(slot)
        world.manager.crash(slot.worker_id)  # gone in the same turn of the loop as its hand-over

    pool._hand_over = crash_after  # type: ignore[method-assign]
    with pytest.raises(ModelError):
        await pool.invoke(inv())
    await settle()
    assert world.recorder.kinds() == [("w1", "started"), ("w1", "crashed")]


async def test_requests_queue_while_cold_starts_run_and_each_start_serves_one(world: World) -> None:
    pool = world.pool(max_concurrency=3)
    world.manager.start_gate.clear()
    tasks = [asyncio.ensure_future(pool.invoke(inv())) for _ in range(3)]
    await settle()
    assert pool.queued == 3 and states(pool) == [S.STARTING] * 3
    assert world.budget.starting_mb == 3 * 1024
    world.check()
    world.manager.start_gate.set()
    done = await asyncio.gather(*tasks)
    assert all(r.status == 200 for r in done)
    assert states(pool) == [S.IDLE] * 3 and pool.queued == 0
    assert world.budget.starting_mb == 0 and world.budget.used_mb == 3 * 1024
    world.check()


async def test_a_burst_starts_max_starting_workers_at_once_and_the_rest_as_they_come_up(world: World) -> None:
    pool = world.pool({"max_starting": 2}, max_concurrency=6)
    world.manager.hold_requests = True
    world.manager.start_gate.clear()
    tasks = [asyncio.ensure_future(pool.invoke(inv())) for _ in range(6)]
    await settle(10)
    assert states(pool) == [S.STARTING] * 2 and pool.queued == 6  # two start; four more are wanted
    world.manager.start_gate.set()
    await settle(20)
    assert len(world.manager.starts) == 6  # each start that finished let the next one go
    world.check()
    while len(world.manager.pending) < 6:
        await settle()
    world.manager.answer_all()
    assert all(r.status == 200 for r in await asyncio.gather(*tasks))
    world.check()


async def test_more_requests_than_max_concurrency_wait_for_the_workers_there_are(world: World) -> None:
    pool = world.pool(max_concurrency=2)
    world.manager.hold_requests = True
    tasks = [asyncio.ensure_future(pool.invoke(inv())) for _ in range(5)]
    await settle(10)
    assert len(world.manager.starts) == 2  # never more processes than MaxConcurrency
    assert pool.queued == 3 and states(pool) == [S.BUSY, S.BUSY]
    world.check()
    for _ in range(5):
        while not world.manager.pending:
            await settle()
        world.manager.answer()
        await settle()
        world.check()
    await asyncio.gather(*tasks)
    assert len(world.manager.starts) == 2 and states(pool) == [S.IDLE, S.IDLE]


async def test_the_template_forks_scale_out_workers_and_goes_at_zero(world: World) -> None:
    pool = world.pool(max_concurrency=3, idle_timeout_s=1.0)
    await pool.invoke(inv())
    await settle()
    assert len(world.manager.templates) == 1
    world.manager.hold_requests = True
    first = asyncio.ensure_future(pool.invoke(inv()))
    second = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    assert world.manager.starts[0][1] is None  # the first worker: a fork of the runtime's zygote
    assert world.manager.starts[1][1] is world.manager.templates[0]  # scale-out: a fork of the template
    world.manager.answer_all()
    await asyncio.gather(first, second)
    world.clock.advance(2.0)
    pool.scale()
    await settle()
    assert pool.live == 0 and world.manager.templates[0].closed


async def test_the_template_loads_after_the_cold_request_is_answered_not_beside_it(world: World) -> None:
    """Loading the template is a second load of the model: not while the request that waited for the
    pool's first worker is being served (on a few cores it would share their CPU), but once it is answered;
    a worker that nobody waited for (a deploy's, a provisioned one) gets it as soon as it is idle."""
    pool = world.pool(max_concurrency=3)
    world.manager.hold_requests = True
    cold = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    assert len(world.manager.starts) == 1 and world.manager.template_tries == 0  # served, no template yet
    world.manager.answer_all()
    await cold
    await settle()
    assert world.manager.template_tries == 1
    idle = world.pool(max_concurrency=3, provisioned=1, model_dir="/artifacts/other/model")
    idle.scale()
    await settle(10)
    assert idle.live == 1 and world.manager.template_tries == 2  # idle at once: its template loads


@pytest.mark.parametrize(("error", "tries"), [(ZygoteError("no memory"), 3), (TemplateRefused("threads"), 1)])
async def test_a_template_that_refused_to_fork_is_not_tried_again(
    world: World, error: ZygoteError, tries: int
) -> None:
    """A template that failed is tried again at the next worker start; one that refused (its model left
    threads running, forking it is not safe) is not: every worker is a fork of the zygote."""
    world.manager.template_error = error
    pool = world.pool(max_concurrency=3)
    for _ in range(3):
        world.manager.hold_requests = True
        calls = [asyncio.ensure_future(pool.invoke(inv())) for _ in range(pool.live + 1)]
        await settle(10)
        world.manager.answer_all()
        await asyncio.gather(*calls)
        await settle()
    assert world.manager.template_tries == tries
    assert all(template is None for _, template in world.manager.starts)


# ---- handing workers out ----
async def test_the_most_recently_used_worker_is_handed_out_first(world: World) -> None:
    pool = world.pool(max_concurrency=3)
    world.manager.hold_requests = True
    tasks = [asyncio.ensure_future(pool.invoke(inv())) for _ in range(3)]
    await settle(10)
    order = [world.manager.answer(i) for i in (2, 0, 0)]  # release the third, then the first, then the second
    await asyncio.gather(*tasks)
    world.manager.hold_requests = False
    nxt = inv()
    await pool.invoke(nxt)
    assert nxt.worker_id == order[-1]
    assert [s.worker_id for s in pool.snapshot().idle][-1] == order[-1]


async def test_a_released_worker_goes_straight_to_the_next_waiter(world: World) -> None:
    pool = world.pool(max_concurrency=1)
    world.manager.hold_requests = True
    first = asyncio.ensure_future(pool.invoke(inv()))
    second = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    assert pool.queued == 1
    world.manager.answer()
    await settle()
    assert pool.queued == 0 and states(pool) == [S.BUSY]  # never idle in between
    world.manager.answer()
    await asyncio.gather(first, second)
    assert world.manager.requests == ["w1", "w1"]


async def test_a_worker_freed_while_requests_wait_goes_to_the_plane_that_wants_one_if_another_serves_them(
    world: World,
) -> None:
    """The native data plane found no idle worker to lend (``lend_wanted``): the next worker a request frees
    goes to it, not to a waiter, as long as another worker (not lent) serves the waiters; once."""
    pool = world.pool(max_concurrency=2)
    world.manager.hold_requests = True
    tasks = [asyncio.ensure_future(pool.invoke(inv())) for _ in range(4)]
    await settle(10)
    assert pool.queued == 2
    taken: list[str] = []

    def wanted(p: VariantPool, slot: Any) -> bool:
        taken.append(slot.worker_id)
        return True

    pool.lend_wanted = wanted
    world.manager.answer()
    await settle()
    assert len(taken) == 1 and pool.queued == 2 and pool.lend_wanted is None  # lent, not handed over
    lent = next(s for s in pool.slots() if s.worker_id == taken[0])
    assert lent.lent and lent.state is S.BUSY
    pool.lend_wanted = wanted  # wanted again: the only worker left for the waiters is not lent
    for _ in range(3):
        while not world.manager.pending:
            await settle()
        world.manager.answer()
        await settle()
    await asyncio.gather(*tasks)
    assert len(taken) == 1 and pool.lend_wanted is wanted
    pool.release(lent)  # the plane gives it back
    assert not lent.lent and sorted(states(pool)) == [S.IDLE, S.IDLE]
    world.check()


async def test_invocations_within_the_provisioned_floor_are_marked_provisioned(world: World) -> None:
    pool = world.pool(max_concurrency=3, provisioned=1)
    pool.scale()
    await settle()
    world.manager.hold_requests = True
    a, b = inv(), inv()
    tasks = [asyncio.ensure_future(pool.invoke(r)) for r in (a, b)]
    await settle(10)
    world.manager.answer_all()
    await asyncio.gather(*tasks)
    assert (a.provisioned, b.provisioned) == (True, False)


# ---- throttling at MaxConcurrency ----
async def test_a_request_that_waits_past_queue_wait_at_max_concurrency_is_throttled(world: World) -> None:
    pool = world.pool({"queue_wait_s": 0.05}, max_concurrency=1)
    world.manager.hold_requests = True
    first = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    with pytest.raises(Throttling, match=r"MaxConcurrency \(1\) and no worker became free within 0.05 s"):
        await pool.invoke(inv())
    assert pool.queued == 0
    world.manager.answer()
    await first
    world.check()


async def test_a_pool_with_no_share_here_throttles_at_once_and_starts_nothing(world: World) -> None:
    """This front end's share of MaxConcurrency is 0 (another front end serves the variant): a request is
    told so at once, not after the queue wait (an hour here), and no worker starts."""
    pool = world.pool({"queue_wait_s": 3600}, max_concurrency=0)
    with pytest.raises(Throttling, match="this one's share is 0"):
        await asyncio.wait_for(pool.invoke(inv()), timeout=5)
    assert pool.queued == 0 and not world.manager.starts
    world.check()


async def test_a_pool_is_saturated_when_no_worker_is_idle_nor_may_start_in_its_share(world: World) -> None:
    """What spill-over asks (``api/forward.py``): a new invocation would wait for a busy worker."""
    pool = world.pool(max_concurrency=2)
    assert not pool.saturated  # at zero: a worker may start
    world.manager.hold_requests = True
    first = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    assert not pool.saturated  # one busy: a second may start
    second = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    assert states(pool) == [S.BUSY, S.BUSY] and pool.saturated
    world.manager.answer()
    await first
    assert states(pool) == [S.BUSY, S.IDLE] and not pool.saturated  # an idle worker
    world.manager.answer()
    await second
    world.check()
    assert world.pool(max_concurrency=0).saturated  # no share here


async def test_a_cold_start_the_hosts_memory_cannot_give_is_throttled_after_the_queue_wait_saying_so(
    tmp_path: Path,
) -> None:
    """Busy workers of another pool hold the host's memory (nothing to evict): a request that needs a cold
    start waits the queue wait only (not also the startup timeout: 190 s with the defaults), and the error
    names the host's memory, not a MaxConcurrency the variant is far from."""
    world = World(tmp_path, total_mb=1024)
    holder = world.pool(max_concurrency=1)
    world.manager.hold_requests = True
    busy = asyncio.ensure_future(holder.invoke(inv()))
    await settle(10)
    starved = world.pool(
        {"queue_wait_s": 0.05, "startup_timeout_s": 60.0}, endpoint="starved", max_concurrency=4
    )
    started = asyncio.get_running_loop().time()
    with pytest.raises(
        Throttling, match=r"could not start a 1024 MB worker within 0.05 s: .*1024 of 1024 MB"
    ):
        await starved.invoke(inv())
    assert asyncio.get_running_loop().time() - started < 5.0
    world.manager.answer()
    await busy
    world.check()


async def test_a_pool_kept_busy_past_its_share_gives_a_worker_back_to_one_that_waits(tmp_path: Path) -> None:
    """Two 1 GB workers' worth, both the holder's, kept busy by its queue: a cold start of another pool
    waits for memory, and as one of the holder's requests ends that worker stops (its next request waits)
    and the other pool's worker starts in its place; it was throttled after the queue wait before."""
    world = World(tmp_path, total_mb=2048)
    holder = world.pool(max_concurrency=2)
    world.manager.hold_requests = True
    busy = [asyncio.ensure_future(holder.invoke(inv())) for _ in range(4)]  # two run, two queue
    await settle(20)
    assert len(world.manager.pending) == 2 and holder.queued == 2
    other = world.pool({"queue_wait_s": 30.0}, endpoint="other", max_concurrency=1)
    waiting = asyncio.ensure_future(other.invoke(inv()))
    await settle(20)
    assert not waiting.done() and other.memory_blocked
    yielded = world.manager.answer()  # a holder's request ends: its worker goes, not to the holder's queue
    await settle(20)
    assert yielded not in {s.worker_id for s in holder.slots() if s.state is not WorkerState.STOPPING}
    assert len(holder.slots()) <= 2 and holder.queued == 2
    for _ in range(40):
        if len(world.manager.pending) == 2:
            break
        await asyncio.sleep(0.01)
    assert {p.spec.endpoint for p in world.pools for s in p.slots() if s.state is WorkerState.BUSY} == {
        holder.spec.endpoint,
        "other",
    }
    world.manager.answer_all()
    while not waiting.done() or not all(b.done() for b in busy):
        world.manager.answer_all()
        await asyncio.sleep(0.01)
    await asyncio.gather(waiting, *busy)
    world.check()


async def test_a_waiter_cancelled_once_it_was_handed_a_worker_passes_the_worker_on(world: World) -> None:
    pool = world.pool(max_concurrency=1)
    world.manager.hold_requests = True
    first = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    second = asyncio.ensure_future(pool.invoke(inv()))
    third = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    assert pool.queued == 2
    hand_over = pool._hand_over

    def cancel_after(slot: Any) -> None:
        hand_over(slot)
        second.cancel()  # handed the worker, cancelled before it could resume

    pool._hand_over = cancel_after  # type: ignore[method-assign]
    world.manager.answer()
    await first
    pool._hand_over = hand_over  # type: ignore[method-assign]
    await settle(10)
    assert second.cancelled()
    assert world.manager.requests == ["w1", "w1"]  # the third got the worker
    world.manager.answer()
    assert (await third).status == 200
    assert states(pool) == [S.IDLE] and pool.queued == 0
    world.check()


async def test_a_full_queue_throttles_at_once(world: World) -> None:
    pool = world.pool({"max_queue": 1}, max_concurrency=1)
    world.manager.hold_requests = True
    tasks = [asyncio.ensure_future(pool.invoke(inv()))]
    await settle(10)  # served
    tasks.append(asyncio.ensure_future(pool.invoke(inv())))
    await settle(10)  # queued
    assert pool.queued == 1
    with pytest.raises(Throttling, match="its queue is full"):
        await pool.invoke(inv())
    for _ in range(2):
        while not world.manager.pending:
            await settle()
        world.manager.answer()
    await asyncio.gather(*tasks)


# ---- failures ----
async def test_a_worker_crashing_mid_request_answers_model_error_and_frees_its_memory(world: World) -> None:
    pool = world.pool()
    world.manager.hold_requests = True
    task = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    world.manager.crash("w1")
    with pytest.raises(ModelError) as err:
        await task
    assert err.value.original_status == 0
    assert "killed by signal 11" in err.value.original_message
    assert "log-stream:AllTraffic/w1" in (err.value.log_stream_arn or "")
    assert pool.live == 0 and world.budget.used_mb == 0
    assert world.recorder.kinds() == [("w1", "started"), ("w1", "crashed")]
    world.manager.hold_requests = False
    nxt = inv()
    await pool.invoke(nxt)  # the next request cold-starts a new worker
    assert nxt.worker_id == "w2" and nxt.setup_s is not None
    world.check()


async def test_an_idle_worker_that_dies_is_forgotten(world: World) -> None:
    pool = world.pool()
    await pool.invoke(inv())
    world.manager.crash("w1")
    assert pool.live == 0 and world.budget.used_mb == 0
    assert world.recorder.kinds()[-1] == ("w1", "crashed")
    world.check()


async def test_a_request_that_never_reached_its_worker_goes_to_another_once(world: World) -> None:
    """A worker that went while idle (its exit not yet reported): a request to it never reached it
    (NotDelivered). It is stopped, and the request goes to another worker, its records that one's."""
    pool = world.pool()
    await pool.invoke(inv())
    world.manager.leaving.add("w1")
    request = inv()
    resp = await pool.invoke(request)
    assert resp.status == 200 and resp.body == b"[1]"
    assert world.manager.requests == ["w1", "w1", "w2"]
    assert request.worker_id == "w2" and request.setup_s == 0.025  # the cold start it waited for: w2's
    await settle()
    assert "w1" in world.manager.stops and states(pool) == [S.IDLE]
    # at most once more: a request whose second worker was gone too is a ModelError
    world.manager.leaving.update(("w2", "w3"))
    with pytest.raises(ModelError):
        await pool.invoke(inv())
    assert world.manager.requests[3:] == ["w2", "w3"]
    await settle()
    world.check()


async def test_a_caller_that_chose_its_worker_gets_no_other(world: World) -> None:
    pool = world.pool()
    await pool.invoke(inv())
    world.manager.leaving.add("w1")
    with pytest.raises(ModelError):
        await pool.serve(await pool.acquire(), inv(), again=False)
    assert world.manager.requests == ["w1", "w1"]


async def test_a_stream_that_never_reached_its_worker_goes_to_another(world: World) -> None:
    pool = world.pool()
    await pool.invoke(inv())
    world.manager.leaving.add("w1")
    request = inv()
    stream = await pool.stream(request)
    assert world.manager.requests == ["w1", "w1", "w2"] and request.worker_id == "w2"
    stream.close()
    world.check()


async def test_an_invocation_timeout_kills_the_worker(world: World) -> None:
    pool = world.pool({"invocation_timeout_s": 0.05})
    world.manager.hold_requests = True
    with pytest.raises(ModelError, match=r"longer than 0\.05 s"):
        await pool.invoke(inv())
    await settle()
    assert world.manager.kills == [("w1", "timed_out")]
    assert pool.live == 0 and world.budget.used_mb == 0
    assert world.recorder.kinds() == [("w1", "started"), ("w1", "timed_out")]


async def test_a_model_error_status_is_a_model_error_and_the_worker_stays(world: World) -> None:
    pool = world.pool()
    world.manager.status = 500
    with pytest.raises(ModelError) as err:
        await pool.invoke(inv(b"boom"))
    assert err.value.original_status == 500 and err.value.original_message == "boom"
    assert states(pool) == [S.IDLE]


async def test_a_failed_start_fails_one_waiter_and_gives_its_memory_back(world: World) -> None:
    pool = world.pool()
    world.manager.start_errors.append("model.joblib is not a model")
    with pytest.raises(ModelError, match=r"failed to start: model\.joblib is not a model"):
        await pool.invoke(inv())
    assert pool.live == 0 and world.budget.used_mb == 0 and world.budget.starting_mb == 0
    assert world.recorder.kinds() == [("w1", "failed")]
    assert (await pool.invoke(inv())).status == 200  # the next start works
    world.check()


# ---- scale-in and the provisioned floor ----
async def test_idle_workers_stop_after_the_idle_timeout_longest_idle_first(world: World) -> None:
    pool = world.pool(max_concurrency=2, idle_timeout_s=10.0)
    world.manager.hold_requests = True
    tasks = [asyncio.ensure_future(pool.invoke(inv())) for _ in range(2)]
    await settle(10)
    first_free = world.manager.answer(1)
    await settle()
    world.clock.advance(5.0)
    world.manager.answer()
    await asyncio.gather(*tasks)
    world.clock.advance(6.0)  # the first idle for 11 s, the second for 6 s
    pool.scale()
    await settle()
    assert [s.worker_id for s in pool.slots()] != [first_free] and pool.live == 1
    assert ("w1" if first_free == "w1" else "w2", "stopped") in world.recorder.kinds()
    world.clock.advance(5.0)
    pool.scale()
    await settle()
    assert pool.live == 0 and world.budget.used_mb == 0


async def test_the_provisioned_floor_starts_at_once_and_never_scales_in(world: World) -> None:
    pool = world.pool(max_concurrency=4, provisioned=2, idle_timeout_s=1.0)
    pool.scale()
    await settle()
    assert states(pool) == [S.IDLE, S.IDLE]
    world.manager.hold_requests = True
    tasks = [asyncio.ensure_future(pool.invoke(inv())) for _ in range(3)]
    await settle(10)
    assert pool.live == 3
    world.manager.answer_all()
    await asyncio.gather(*tasks)
    world.clock.advance(100.0)
    pool.scale()
    await settle()
    assert states(pool) == [S.IDLE, S.IDLE]  # scaled back in to the floor, not below
    world.manager.crash(pool.slots()[0].worker_id)
    pool.scale()  # the reconcile loop restores the floor
    await settle()
    assert states(pool) == [S.IDLE, S.IDLE]
    world.check()


# ---- eviction ----
async def test_eviction_stops_the_longest_idle_worker_above_the_floor(world: World) -> None:
    pool = world.pool(max_concurrency=3, provisioned=1)
    world.manager.hold_requests = True
    tasks = [asyncio.ensure_future(pool.invoke(inv())) for _ in range(3)]
    await settle(10)
    released = [world.manager.answer(0) for _ in range(3)]
    await asyncio.gather(*tasks)
    candidates = pool.evictable()
    assert [s.worker_id for s in candidates] == released[:2]  # above the floor of 1, longest idle first
    assert pool.evict(candidates[0]) == 1024
    assert pool.evict(candidates[0]) == 0  # already stopping
    world.check()
    await settle()
    assert (released[0], "evicted") in world.recorder.kinds()
    world.check()


async def test_a_cold_start_with_the_budget_full_evicts_another_pools_idle_worker(tmp_path: Path) -> None:
    world = World(tmp_path, total_mb=2048)
    other = world.pool(endpoint="other")
    mine = world.pool(endpoint="mine")
    world.manager.hold_requests = True
    tasks = [asyncio.ensure_future(other.invoke(inv())) for _ in range(2)]
    await settle(10)
    world.manager.answer_all()
    await asyncio.gather(*tasks)
    assert world.budget.used_mb == 2048
    world.manager.hold_requests = False
    served = inv()
    await mine.invoke(served)
    assert served.worker_id not in {"w1", "w2"}
    assert other.live == 1 and mine.live == 1
    assert [k for k in world.recorder.kinds() if k[1] == "evicted"] == [("w1", "evicted")]
    world.check()


async def test_warm_fails_clearly_when_nothing_can_be_evicted(tmp_path: Path) -> None:
    world = World(tmp_path, total_mb=1024)
    busy = world.pool(endpoint="busy")
    world.manager.hold_requests = True
    task = asyncio.ensure_future(busy.invoke(inv()))
    await settle(10)
    with pytest.raises(DeployError, match="Not enough memory on this host for a 1024 MB worker"):
        await world.pool(endpoint="new").warm()
    world.manager.answer()
    await task
    world.check()


# ---- drain on update ----
async def test_drain_serves_what_it_accepted_then_stops_every_worker(world: World) -> None:
    pool = world.pool(max_concurrency=2, provisioned=1)
    pool.scale()
    await settle()
    world.manager.hold_requests = True
    busy = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    drain = asyncio.ensure_future(pool.drain(timeout_s=5.0))
    await settle()
    assert not drain.done()
    world.manager.answer()
    assert (await busy).status == 200  # the in-flight request is answered
    await drain
    assert pool.live == 0 and world.budget.used_mb == 0
    assert sorted(k for k in world.recorder.kinds() if k[1] != "started") == [("w1", "stopped")]


async def test_drain_stops_what_is_still_busy_after_its_timeout(world: World) -> None:
    pool = world.pool()
    world.manager.hold_requests = True
    busy = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    await pool.drain(timeout_s=0.05)
    with pytest.raises(ModelError):
        await busy  # the stop closed its connection
    assert pool.live == 0 and world.budget.used_mb == 0
    assert world.recorder.kinds()[-1] == ("w1", "stopped")


async def test_what_a_drain_leaves_unserved_is_told_the_endpoint_is_gone_not_a_model_error(
    world: World,
) -> None:
    """A probe's finding: a request queued on an endpoint being deleted got "the worker process exited with
    code 0" as a ModelError once the drain stopped the worker it was handed. A request still queued when
    the drain's time is up, or whose worker the drain stopped, gets InvokeEndpoint's not-found error
    (deleted) or ServiceUnavailable (an update, a shutdown): never the model's fault."""
    pool = world.pool(max_concurrency=1)
    world.manager.hold_requests = True
    busy = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    queued = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    await pool.drain(timeout_s=0.05, deleted=True)
    with pytest.raises(RuntimeValidationError) as err:
        await queued
    assert err.value.message == (
        "Endpoint ep of account 123456789012 not found: it was deleted before this request was answered."
    )
    for _, fut in world.manager.pending:  # the stopped worker's connection closes under its request
        fut.set_exception(WorkerConnectionError("worker closed the connection"))
    with pytest.raises(RuntimeValidationError, match="not found: it was deleted"):
        await busy
    assert pool.live == 0 and world.budget.used_mb == 0
    other = world.pool(endpoint="other", max_concurrency=1)
    world.manager.hold_requests = True
    busy = asyncio.ensure_future(other.invoke(inv()))
    await settle(10)
    queued = asyncio.ensure_future(other.invoke(inv()))
    await settle(10)
    await other.drain(timeout_s=0.05)  # replaced by an update, or the server shutting down
    with pytest.raises(ServiceUnavailable, match=r"stopped serving .* Retry the request"):
        await queued
    busy.cancel()


# ---- the state machine's guard rails ----
async def test_sinks_that_raise_do_not_break_the_pool(tmp_path: Path) -> None:
    world = World(tmp_path, sinks=(RaisingSink(),))
    pool = world.pool()
    world.manager.hold_requests = True
    task = asyncio.ensure_future(pool.invoke(inv()))
    await settle(10)
    world.manager.crash("w1")  # the exit handler emits to the raising sink
    with pytest.raises(ModelError):
        await task
    world.manager.hold_requests = False
    assert (await pool.invoke(inv())).status == 200
    assert world.events.failures[("RaisingSink", "worker")] == 3  # started, crashed, started
    assert world.recorder.kinds() == [("w1", "started"), ("w1", "crashed"), ("w2", "started")]
    world.check()


@pytest.mark.parametrize("seed", range(6))
async def test_random_traffic_keeps_slots_budget_and_gauges_in_step(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    world = World(tmp_path, total_mb=6 * 1024)
    short = {"queue_wait_s": 0.2}
    pools = [
        world.pool(short, endpoint="a", max_concurrency=3, provisioned=1, idle_timeout_s=5.0),
        world.pool(short, endpoint="b", max_concurrency=4, idle_timeout_s=3.0),
        world.pool(short, endpoint="c", memory_mb=2048, max_concurrency=2, idle_timeout_s=1.0),
    ]
    for pool in pools:
        pool.scale()
    world.manager.hold_requests = True
    tasks: list[asyncio.Task[Any]] = []
    for _ in range(200):
        action = rng.random()
        if action < 0.35:
            tasks.append(asyncio.ensure_future(rng.choice(pools).invoke(inv())))
        elif action < 0.65 and world.manager.pending:
            status = rng.choice((200, 200, 500))
            world.manager.answer(rng.randrange(len(world.manager.pending)), status=status)
        elif action < 0.72 and world.manager.live:
            world.manager.crash(rng.choice(sorted(world.manager.live)))
        elif action < 0.77 and world.manager.live:
            world.manager.start_errors.append("a bad start")
        elif action < 0.9:
            world.clock.advance(rng.uniform(0.0, 3.0))
            for pool in pools:
                pool.scale()
        await settle(rng.randint(0, 4))
        world.check()
    world.manager.hold_requests = False
    world.manager.answer_all()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, (ModelError, Throttling)) or r.status == 200 for r in results)
    world.check()
    await asyncio.gather(*(pool.drain(timeout_s=1.0) for pool in pools))
    world.check()
    assert world.budget.used_mb == 0 and not world.manager.live
    started = sum(1 for k in world.recorder.kinds() if k[1] == "started")
    ended = sum(1 for k in world.recorder.kinds() if k[1] not in ("started", "failed"))
    assert started == ended  # every worker that started is reported gone, once
