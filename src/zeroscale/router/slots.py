"""One pool's workers as a state machine: a slot per worker, and one method that moves a slot.

```
            ready, nobody waits                 scale-in, eviction, drain
 STARTING ----------------------> IDLE ------------------------------------> STOPPING
    |  \\  ready, a request waits   |  ^                                          |
    |   \\-----------------------> BUSY  release                                 | exit
    |                              |  \\--------------------------------------->  |
    | failed to start              |   broke it (timeout, bad connection), drain  v
    +------------------------------+-------------------------------------------> GONE
                          the process exited (crash, memory limit, a stop)
```

``Slots.move`` is the only place a state changes. It refuses any move not drawn above, and it keeps every
figure derived from the states in step: the idle stack (most recently used on top), the count per state,
and the host memory budget (a slot holds its variant's MemorySizeInMB from STARTING until GONE). No I/O and
no clock of its own, so it is tested as a unit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from zeroscale.router.budget import MemoryBudget
from zeroscale.types import WorkerState
from zeroscale.workers.manager import WorkerHandle

S = WorkerState

LEGAL: dict[WorkerState, frozenset[WorkerState]] = {
    S.STARTING: frozenset({S.IDLE, S.BUSY, S.GONE}),
    S.IDLE: frozenset({S.BUSY, S.STOPPING, S.GONE}),
    S.BUSY: frozenset({S.IDLE, S.STOPPING, S.GONE}),
    S.STOPPING: frozenset({S.GONE}),
    S.GONE: frozenset(),
}


class StopReason(StrEnum):
    """Why the pool asked a worker to stop."""

    SCALED_IN = "scaled_in"  # idle past the variant's idle timeout
    EVICTED = "evicted"  # another pool needed its memory
    YIELDED = "yielded"  # another pool wanted memory and this one held more than its fair share
    DRAINED = "drained"  # the variant was replaced or deleted
    BROKEN = "broken"  # a request broke it (timed out, or its connection failed)


class IllegalTransition(RuntimeError):
    pass


@dataclass(eq=False, slots=True)
class Slot:
    worker_id: str
    state: WorkerState = S.STARTING
    handle: WorkerHandle | None = None  # set once the worker is ready
    idle_since: float = 0.0  # the pool clock's time it last became idle
    fresh: bool = True  # not served yet: whoever gets it first waited for its cold start
    stop_reason: StopReason | None = None
    stopping_since: float | None = None  # the pool clock's time it was asked to stop
    reserved_mb: int = 0  # what it holds of the budget: the pool's per-worker figure, or more (``grow``)
    lent: bool = False  # busy as the native data plane's (``VariantPool.lend``) until released

    def exit_kind(self) -> str:
        """The WorkerEvent kind of this worker's end."""
        if self.stop_reason in (StopReason.EVICTED, StopReason.YIELDED):
            return "evicted"  # another pool needed its memory
        if self.handle is not None and self.handle.kill_kind:
            return self.handle.kill_kind  # memory_killed, disk_killed, timed_out
        if self.stop_reason in (StopReason.SCALED_IN, StopReason.DRAINED):
            return "stopped"
        return "crashed"


class Slots:
    """The slots of one pool, keyed by worker id."""

    def __init__(
        self, memory_mb: int, budget: MemoryBudget, owner: object, clock: Callable[[], float]
    ) -> None:
        self._memory_mb = memory_mb
        self._budget = budget
        self._owner = owner  # the pool, as the budget's requester (never evicted for itself)
        self._clock = clock
        self._slots: dict[str, Slot] = {}
        self._idle: list[Slot] = []  # a stack: the most recently used worker on top
        self._counts: Counter[WorkerState] = Counter()

    # ---- views ----
    def __len__(self) -> int:
        return len(self._slots)

    def __iter__(self) -> Iterator[Slot]:
        return iter(list(self._slots.values()))

    def get(self, worker_id: str) -> Slot | None:
        return self._slots.get(worker_id)

    def count(self, state: WorkerState) -> int:
        return self._counts[state]

    @property
    def idle(self) -> Sequence[Slot]:
        """Idle slots, least recently used first."""
        return self._idle

    def most_recent_idle(self, prefer: Callable[[Slot], bool] | None = None) -> Slot | None:
        """The most recently used idle slot; with ``prefer``, the most recent one it accepts if any."""
        if prefer is not None:
            for slot in reversed(self._idle):
                if prefer(slot):
                    return slot
        return self._idle[-1] if self._idle else None

    # ---- changes ----
    def open(self, worker_id: str) -> Slot | None:
        """A STARTING slot, if the budget has room for one more worker (None asks for evictions)."""
        if not self._budget.reserve(self._memory_mb, self._owner, starting=True):
            return None
        slot = Slot(worker_id, reserved_mb=self._memory_mb)
        self._slots[worker_id] = slot
        self._counts[S.STARTING] += 1
        return slot

    def grow(self, slot: Slot, mb: int) -> bool:
        """Hold ``mb`` of the budget for a live worker that uses more than it holds (evictions of other
        pools' idle workers are asked for the rest when it does not fit); False when it does not fit now."""
        if mb <= slot.reserved_mb:
            return True
        if slot.state not in (S.IDLE, S.BUSY) or self._slots.get(slot.worker_id) is not slot:
            return False
        if not self._budget.reserve(mb - slot.reserved_mb, self._owner):
            return False
        slot.reserved_mb = mb
        return True

    def move(self, slot: Slot, to: WorkerState, reason: StopReason | None = None) -> None:
        """Move ``slot`` to ``to``; raise IllegalTransition for a move the state machine does not have."""
        was = slot.state
        if to not in LEGAL[was] or self._slots.get(slot.worker_id) is not slot:
            raise IllegalTransition(f"worker {slot.worker_id}: {was} -> {to}")
        if to is S.STOPPING and reason is None:
            raise IllegalTransition(f"worker {slot.worker_id}: stopping needs a reason")
        self._counts[was] -= 1
        if was is S.IDLE:
            if self._idle and self._idle[-1] is slot:
                self._idle.pop()
            else:
                self._idle.remove(slot)
        slot.state = to
        if to is S.GONE:
            del self._slots[slot.worker_id]
            evicted = slot.stop_reason is StopReason.EVICTED
            self._budget.release(
                slot.reserved_mb, starting=was is S.STARTING, evicted=evicted, owner=self._owner
            )
            return
        self._counts[to] += 1
        if was is S.STARTING:
            self._budget.started(slot.reserved_mb)
        if to is S.IDLE:
            slot.idle_since = self._clock()
            self._idle.append(slot)
        elif to is S.STOPPING:
            slot.stop_reason = reason
            slot.stopping_since = self._clock()
            if reason is StopReason.EVICTED:
                self._budget.evicting(slot.reserved_mb)
