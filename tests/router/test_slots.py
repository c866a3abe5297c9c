"""The worker state machine: legal moves, refused moves, and the figures kept in step with them."""

from __future__ import annotations

import pytest

from zeroscale.router.budget import MemoryBudget
from zeroscale.router.slots import LEGAL, IllegalTransition, Slot, Slots, StopReason
from zeroscale.types import WorkerState

S = WorkerState


class Clock:
    now = 10.0

    def __call__(self) -> float:
        return self.now


def make(total_mb: int = 4096, evictable: int = 0) -> tuple[Slots, MemoryBudget, Clock]:
    clock = Clock()
    budget = MemoryBudget(total_mb, lambda deficit, requester: min(deficit, evictable))
    return Slots(1024, budget, object(), clock), budget, clock


def test_open_reserves_memory_as_starting_until_the_budget_is_full() -> None:
    slots, budget, _ = make(total_mb=2048)
    a, b = slots.open("a"), slots.open("b")
    assert a is not None and b is not None and a.state is S.STARTING
    assert slots.open("c") is None
    assert (budget.used_mb, budget.starting_mb, len(slots)) == (2048, 2048, 2)
    slots.move(a, S.IDLE)
    assert (budget.used_mb, budget.starting_mb) == (2048, 1024)
    slots.move(b, S.GONE)  # failed to start
    assert (budget.used_mb, budget.starting_mb, len(slots)) == (1024, 0, 1)
    assert slots.get("b") is None


def test_every_move_not_in_the_table_is_refused() -> None:
    for source in (S.STARTING, S.IDLE, S.BUSY, S.STOPPING):
        for target in WorkerState:
            slots, budget, _ = make()
            slot = slots.open("w")
            assert slot is not None
            path = {
                S.STARTING: [],
                S.IDLE: [S.IDLE],
                S.BUSY: [S.BUSY],
                S.STOPPING: [S.IDLE, S.STOPPING],
            }[source]
            for step in path:
                slots.move(slot, step, StopReason.SCALED_IN)
            used = budget.used_mb
            if target in LEGAL[source]:
                slots.move(slot, target, StopReason.SCALED_IN)
                assert slot.state is target
            else:
                with pytest.raises(IllegalTransition, match=f"{source} -> {target}"):
                    slots.move(slot, target, StopReason.SCALED_IN)
                assert slot.state is source and budget.used_mb == used  # nothing changed


def test_a_gone_slot_cannot_move_again_and_stopping_needs_a_reason() -> None:
    slots, _, _ = make()
    slot = slots.open("w")
    assert slot is not None
    slots.move(slot, S.IDLE)
    with pytest.raises(IllegalTransition, match="needs a reason"):
        slots.move(slot, S.STOPPING)
    slots.move(slot, S.GONE)
    with pytest.raises(IllegalTransition):
        slots.move(slot, S.GONE)
    stranger = Slot("x", S.IDLE)
    with pytest.raises(IllegalTransition):
        slots.move(stranger, S.BUSY)  # not one of this pool's slots


def test_the_idle_stack_keeps_the_most_recently_used_on_top_with_its_time() -> None:
    slots, _, clock = make()
    made = [slots.open(w) for w in "abc"]
    for slot in made:
        assert slot is not None
        clock.now += 1
        slots.move(slot, S.IDLE)
    assert [s.worker_id for s in slots.idle] == ["a", "b", "c"]
    top = slots.most_recent_idle()
    assert top is not None and top.worker_id == "c" and top.idle_since == 13.0
    slots.move(top, S.BUSY)
    b = slots.get("b")
    assert b is not None
    slots.move(b, S.STOPPING, StopReason.EVICTED)
    assert [s.worker_id for s in slots.idle] == ["a"]
    clock.now += 1
    slots.move(top, S.IDLE)
    assert [s.worker_id for s in slots.idle] == ["a", "c"] and top.idle_since == 14.0
    assert (slots.count(S.IDLE), slots.count(S.BUSY), slots.count(S.STOPPING)) == (2, 0, 1)


def test_an_evicted_worker_gives_its_eviction_back_when_gone() -> None:
    slots, budget, _ = make(total_mb=2048, evictable=1024)
    a, b = slots.open("a"), slots.open("b")
    assert a is not None and b is not None
    slots.move(a, S.IDLE)
    slots.move(b, S.BUSY)
    assert not budget.reserve(1024, "someone else")  # asks for evictions (the fleet picks a)
    slots.move(a, S.STOPPING, StopReason.EVICTED)
    assert budget.evicting_mb == 1024
    slots.move(a, S.GONE)
    assert (budget.evicting_mb, budget.used_mb) == (0, 1024)
    slots.move(b, S.STOPPING, StopReason.BROKEN)
    slots.move(b, S.GONE)
    assert budget.used_mb == 0


def test_a_live_worker_grows_its_reservation_and_gives_all_of_it_back() -> None:
    """A worker that holds more than its pool's figure (a multi-model worker whose model's load allocated
    more than its files) holds what it uses; every figure that follows (eviction, release) is that."""
    slots, budget, _ = make(total_mb=3072, evictable=0)
    a, b = slots.open("a"), slots.open("b")
    assert a is not None and b is not None
    assert not slots.grow(a, 1500)  # still starting: nothing to measure yet
    slots.move(a, S.IDLE)
    slots.move(b, S.BUSY)
    assert slots.grow(a, 900) and a.reserved_mb == 1024  # less than it holds: nothing changes
    assert slots.grow(a, 2048) and (a.reserved_mb, budget.used_mb) == (2048, 3072)
    assert not slots.grow(b, 1100) and b.reserved_mb == 1024  # does not fit (nothing to evict)
    slots.move(a, S.STOPPING, StopReason.EVICTED)
    assert budget.evicting_mb == 2048
    slots.move(a, S.GONE)
    assert (budget.evicting_mb, budget.used_mb) == (0, 1024)
    assert slots.grow(b, 1100) and budget.used_mb == 1100
    slots.move(b, S.STOPPING, StopReason.BROKEN)
    assert not slots.grow(b, 1200)  # stopping: not any more
    slots.move(b, S.GONE)
    assert budget.used_mb == 0


@pytest.mark.parametrize(
    ("reason", "kill_kind", "kind"),
    [
        (StopReason.SCALED_IN, None, "stopped"),
        (StopReason.DRAINED, None, "stopped"),
        (StopReason.EVICTED, None, "evicted"),
        (StopReason.BROKEN, "crashed", "crashed"),
        (StopReason.BROKEN, "timed_out", "timed_out"),
        (None, "memory_killed", "memory_killed"),
        (None, None, "crashed"),
    ],
)
def test_exit_kind(reason: StopReason | None, kill_kind: str | None, kind: str) -> None:
    from pathlib import Path

    from zeroscale.workers.manager import WorkerHandle, WorkerSpec

    handle = WorkerHandle("w", WorkerSpec("sklearn", "/m", 1024, Path("/l")), "", Path("/l/w.log"), 0.0)
    handle.kill_kind = kill_kind
    assert Slot("w", S.STOPPING, handle, stop_reason=reason).exit_kind() == kind
