"""The scaling policy, table-driven with a fake clock: times are plain numbers, ``now`` is an argument."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest

from zeroscale.scaler.policy import Decision, IdleWorker, PoolSnapshot, decide

T0 = 1_000.0  # the fake clock's "now" for most rows
TIMEOUT = 10.0


def idle(*workers: tuple[str, float]) -> tuple[IdleWorker, ...]:
    return tuple(IdleWorker(worker_id, since) for worker_id, since in workers)


@dataclass(frozen=True)
class Row:
    id: str
    max_concurrency: int = 3
    provisioned: int = 0
    busy: int = 0
    starting: int = 0
    queued: int = 0
    idle: tuple[IdleWorker, ...] = ()
    draining: bool = False
    max_starting: int = 0
    now: float = T0
    idle_timeout_s: float = TIMEOUT
    start: int = 0
    stop: tuple[str, ...] = field(default=())

    def snapshot(self) -> PoolSnapshot:
        return PoolSnapshot(
            max_concurrency=self.max_concurrency,
            provisioned=self.provisioned,
            idle_timeout_s=self.idle_timeout_s,
            busy=self.busy,
            starting=self.starting,
            queued=self.queued,
            idle=self.idle,
            draining=self.draining,
            max_starting=self.max_starting,
        )


EXPIRED = T0 - TIMEOUT - 1  # idle for longer than the timeout at T0
FRESH = T0 - 1  # idle for one second at T0

ROWS = [
    # ---- scale from zero and scale out: immediate ----
    Row("nothing to do at zero", start=0),
    Row(
        "a lowered MaxConcurrency stops the excess idle workers at once, longest idle first",
        max_concurrency=2,
        provisioned=2,
        busy=1,
        idle=idle(("a", T0 - 1), ("b", T0 - 5), ("c", T0 - 2)),
        stop=("b", "c"),
    ),
    Row(
        "above MaxConcurrency a busy worker is left to finish",
        max_concurrency=1,
        provisioned=1,
        busy=2,
        idle=idle(("a", T0 - 1)),
        stop=("a",),
    ),
    Row("scale from zero is immediate", queued=1, start=1),
    Row("scale from zero with a burst is capped", queued=7, start=3),
    Row("scale out follows busy plus queued", busy=1, queued=1, start=1),
    Row("scale out by several at once", max_concurrency=10, busy=2, queued=4, start=4),
    # ---- at most max_starting workers starting at once ----
    Row("a burst from zero starts max_starting", max_concurrency=50, queued=50, max_starting=2, start=2),
    Row(
        "the next start waits while max_starting start",
        max_concurrency=50,
        starting=2,
        queued=48,
        max_starting=2,
        start=0,
    ),
    Row(
        "one came up: one more starts",
        max_concurrency=50,
        busy=1,
        starting=1,
        queued=48,
        max_starting=2,
        start=1,
    ),
    Row("max_starting 0 is no limit", max_concurrency=50, queued=50, start=50),
    Row("max_starting never starts past the demand", max_concurrency=50, queued=1, max_starting=4, start=1),
    Row("scale out capped at max concurrency", max_concurrency=4, busy=2, queued=5, start=2),
    Row("no scale out at max concurrency", busy=3, queued=9, start=0),
    Row("starting workers count as live", busy=1, starting=1, queued=1, start=0),
    Row("starting workers count towards the cap", starting=2, queued=5, start=1),
    Row("only busy: nothing to start", busy=2, start=0),
    # ---- scale in: only after the idle timeout, longest idle first ----
    Row("idle worker kept before its timeout", idle=idle(("a", T0 - TIMEOUT + 0.01))),
    Row("idle worker stopped at exactly its timeout", idle=idle(("a", T0 - TIMEOUT)), stop=("a",)),
    Row("all expired idle workers go", idle=idle(("a", EXPIRED), ("b", EXPIRED - 5)), stop=("b", "a")),
    Row("only the expired ones stop", idle=idle(("fresh", FRESH), ("old", EXPIRED)), stop=("old",)),
    Row(
        "longest idle first, down to the provisioned floor",
        provisioned=1,
        idle=idle(("new", EXPIRED), ("old", EXPIRED - 20), ("mid", EXPIRED - 10)),
        stop=("old", "mid"),
    ),
    Row("busy workers are never stopped", busy=2, idle=idle(("a", EXPIRED)), stop=("a",)),
    Row("queued demand keeps an expired idle worker", busy=1, queued=1, idle=idle(("a", EXPIRED))),
    Row(
        "scale in never below demand",
        max_concurrency=5,
        busy=1,
        queued=1,
        idle=idle(("a", EXPIRED), ("b", EXPIRED - 1), ("c", EXPIRED - 2)),
        stop=("c", "b"),
    ),
    Row("an expired worker stops while another starts", starting=1, idle=idle(("a", EXPIRED)), stop=("a",)),
    # ---- max concurrency lowered under live workers (a front end's share shrank) ----
    Row(
        "idle above a lowered max stop at once",
        max_concurrency=1,
        idle=idle(("a", FRESH), ("b", FRESH - 1)),
        stop=("b",),
    ),
    Row(
        "busy above a lowered max finish their request",
        max_concurrency=1,
        busy=2,
        idle=idle(("a", FRESH)),
        stop=("a",),
    ),
    # ---- provisioned concurrency: a floor kept warm ----
    Row("provisioned floor started at zero demand", provisioned=2, start=2),
    Row("provisioned floor counts starting workers", provisioned=2, starting=1, start=1),
    Row("provisioned idle workers are kept", provisioned=2, idle=idle(("a", EXPIRED), ("b", EXPIRED))),
    Row("demand above the floor scales out", provisioned=1, max_concurrency=5, busy=2, queued=1, start=1),
    Row("provisioned floor capped at max concurrency", provisioned=5, start=3),
    Row(
        "above the floor scales back to the floor",
        provisioned=2,
        idle=idle(("a", EXPIRED - 3), ("b", EXPIRED - 2), ("c", EXPIRED - 1)),
        stop=("a",),
    ),
    # ---- draining: no floor, no idle worker, but queued requests are still served ----
    Row("draining keeps no provisioned floor", provisioned=2, draining=True),
    Row(
        "draining stops idle at once",
        provisioned=2,
        idle=idle(("a", T0), ("b", FRESH)),
        draining=True,
        stop=("b", "a"),
    ),
    Row("draining still serves queued", queued=2, draining=True, start=2),
    Row("draining serves queued up to max concurrency", queued=5, draining=True, start=3),
    Row("draining keeps busy workers", busy=2, idle=idle(("a", T0)), draining=True, stop=("a",)),
    Row(
        "draining keeps a worker a queued request needs",
        busy=1,
        queued=1,
        idle=idle(("a", T0)),
        draining=True,
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_decide(row: Row) -> None:
    assert decide(row.snapshot(), row.now) == Decision(start=row.start, stop=row.stop)


def test_the_clock_alone_decides_when_an_idle_worker_goes() -> None:
    snap = Row("", idle=idle(("a", 100.0))).snapshot()
    assert decide(snap, 100.0).stop == ()
    assert decide(snap, 109.99).stop == ()
    assert decide(snap, 110.0).stop == ("a",)
    assert decide(snap, 10_000.0).stop == ("a",)


def test_per_pool_idle_timeout() -> None:
    short = Row("", idle_timeout_s=1.0, idle=idle(("a", 100.0))).snapshot()
    long = Row("", idle_timeout_s=300.0, idle=idle(("a", 100.0))).snapshot()
    assert decide(short, 101.0).stop == ("a",)
    assert decide(long, 101.0).stop == ()


def test_decide_is_pure() -> None:
    snap = Row("", provisioned=1, busy=1, queued=2, idle=idle(("a", EXPIRED))).snapshot()
    assert decide(snap, T0) == decide(snap, T0)
    assert snap == Row("", provisioned=1, busy=1, queued=2, idle=idle(("a", EXPIRED))).snapshot()


def test_invariants_over_random_snapshots() -> None:
    rng = random.Random(1234)
    for _ in range(2000):
        mc = rng.randint(1, 6)
        provisioned = rng.randint(0, mc)
        busy = rng.randint(0, mc)
        starting = rng.randint(0, mc - busy)
        n_idle = rng.randint(0, max(0, mc - busy - starting))
        workers = idle(*((f"w{i}", T0 - rng.uniform(0, 2 * TIMEOUT)) for i in range(n_idle)))
        snap = PoolSnapshot(
            max_concurrency=mc,
            provisioned=provisioned,
            idle_timeout_s=TIMEOUT,
            busy=busy,
            starting=starting,
            queued=rng.randint(0, 8),
            idle=workers,
            draining=rng.random() < 0.2,
        )
        d = decide(snap, T0)
        floor = min(mc, max(0 if snap.draining else provisioned, busy + snap.queued))
        assert d.start >= 0
        assert snap.live + d.start <= mc, snap  # never more than MaxConcurrency
        assert snap.live + d.start - len(d.stop) >= floor, snap  # never below the floor
        assert d.start == 0 or not d.stop, snap  # never starts and stops at once
        by_id = {w.worker_id: w for w in workers}
        assert set(d.stop) <= set(by_id), snap  # only idle workers are stopped
        assert len(set(d.stop)) == len(d.stop)
        since = [by_id[w].idle_since for w in d.stop]
        assert since == sorted(since)  # longest idle first
        if not snap.draining:
            assert all(T0 - s >= TIMEOUT for s in since)
        kept = [w for w in workers if w.worker_id not in d.stop]
        if d.stop and kept:  # anything kept that had expired idled less long than everything stopped
            expired_kept = [w for w in kept if snap.draining or T0 - w.idle_since >= TIMEOUT]
            assert all(w.idle_since >= max(since) for w in expired_kept)
