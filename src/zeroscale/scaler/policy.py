"""The scaling policy for one variant: ``decide(snapshot, now) -> Decision``.

Pure: it reads only its arguments, so it is covered by table-driven tests with a fake clock. The pool applies
the decision (starting and stopping workers is the workers package's job).

Rules:
- demand is what is being served now plus what waits: ``busy + queued``;
- the variant wants ``min(max_concurrency, max(provisioned, demand))`` live workers;
- scale-from-zero and scale-out are immediate: start ``wanted - live`` (starting workers count as live),
  never more processes than MaxConcurrency, counting workers that are still stopping, and never more than
  ``max_starting`` starting at once (0: no limit): a worker's start is CPU-bound, so fifty started together
  on a few cores all come up late, while a few at a time come up early and serve the queue meanwhile;
- scale-in waits: an idle worker is stopped only once it has been idle for ``idle_timeout_s``, the longest
  idle first, and never below ``max(provisioned, demand)``; except above MaxConcurrency (it was lowered:
  UpdateEndpointWeightsAndCapacities), where idle workers go at once, the longest idle first;
- a draining pool (replaced by an update, or being deleted) still serves what it accepted, but keeps no
  floor and no idle worker.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IdleWorker:
    worker_id: str
    idle_since: float


@dataclass(frozen=True)
class PoolSnapshot:
    max_concurrency: int
    provisioned: int
    idle_timeout_s: float
    busy: int
    starting: int
    queued: int
    idle: tuple[IdleWorker, ...]
    draining: bool = False
    stopping: int = 0  # told to stop, not gone yet: they count toward MaxConcurrency, not toward the floor
    max_starting: int = 0  # workers starting at once, at most (0: no limit)

    @property
    def live(self) -> int:
        return self.busy + self.starting + len(self.idle)


@dataclass(frozen=True)
class Decision:
    start: int
    stop: tuple[str, ...]


def decide(snap: PoolSnapshot, now: float) -> Decision:
    provisioned, idle_timeout_s = (0, 0.0) if snap.draining else (snap.provisioned, snap.idle_timeout_s)
    demand = snap.busy + snap.queued
    floor = min(snap.max_concurrency, max(provisioned, demand))
    start = max(0, min(floor - snap.live, snap.max_concurrency - snap.live - snap.stopping))
    if snap.max_starting:
        start = min(start, max(0, snap.max_starting - snap.starting))
    # Longest idle first; keep enough live workers to cover the floor.
    removable = snap.live - floor
    over = snap.live - snap.max_concurrency
    stop: list[str] = []
    for worker in sorted(snap.idle, key=lambda w: w.idle_since):
        if removable <= 0:
            break
        if over > 0 or now - worker.idle_since >= idle_timeout_s:
            stop.append(worker.worker_id)
            removable -= 1
            over -= 1
    return Decision(start=start, stop=tuple(stop))
