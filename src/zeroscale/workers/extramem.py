"""The memory watchdog's once-a-second pass: what a worker holds that its own resident set does not show
(the private memory of its other processes, page tables, shared memory it maps), read from /proc and the
memory cgroups in a thread.

On the event loop that pass cost 0.8 ms with two workers and 1.6 ms with sixteen on a 2-core machine: a
scan of /proc for the workers' uids (0.6 ms), and one read of ``memory.oom_control`` per worker's group
(~45 us each). Every request that arrived meanwhile waited for it. The manager now hands ``read`` a
snapshot of its workers (``Seen``), awaits it in a thread, and applies the ``Reading`` on the loop, where
it decides what to stop: no state of the manager is touched here.

The pass also finds each image worker's process tree (``Reading.images``). The watchdog's 50-ms samples
read the resident sets of the tree found last, not walk it again: walking reads every thread's
``children`` file, 0.35 ms for a server of five processes and 29 threads, on the loop, 20 times a second.
Until the worker is ready its tree is walked at each sample still (its server starts its processes and
loads the model then); a process it starts later is counted from the next pass, within a second, as a
forked worker's other processes are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zeroscale.workers.confinement import processes_of
from zeroscale.workers.memory import page_table_bytes, private_bytes, tree_pids
from zeroscale.workers.shmem import host_shmem_mb, tmpfs_devices, unseen_bytes

_MB = 1024 * 1024


@dataclass(frozen=True)
class Seen:
    """A worker as the pass sees it: ``image`` for a process worker (its own process tree), else a forked
    one (``uid``: its own uid, 0 for none); ``room_mb``: its MemorySizeInMB less its last resident set."""

    pid: int
    uid: int
    image: bool
    cgroup: Path | None
    measure_private: bool
    room_mb: float


@dataclass(frozen=True)
class Unheld:
    """The uids of templates' blocks (inclusive ranges) that neither a template nor a replica holds: a
    process under one was started by a template's model and moved there (a template may change uids within
    its block), outside every replica's count."""

    blocks: tuple[tuple[int, int], ...]
    held: frozenset[int]

    def __contains__(self, uid: object) -> bool:
        return (
            isinstance(uid, int)
            and any(low <= uid <= high for low, high in self.blocks)
            and uid not in self.held
        )


class _Either:
    def __init__(self, first: frozenset[int], second: Unheld | None) -> None:
        self._first, self._second = first, second

    def __contains__(self, uid: object) -> bool:
        return uid in self._first or (self._second is not None and uid in self._second)


@dataclass
class Reading:
    uid_pids: dict[int, list[int]] = field(default_factory=dict)  # each forked worker's uid -> its pids
    images: dict[int, list[int]] = field(default_factory=dict)  # image worker pid -> its tree, it first
    oom_kills: dict[int, int] = field(default_factory=dict)  # with groups: worker pid -> the kernel's kills
    pte_mb: dict[int, float] = field(default_factory=dict)  # without groups: worker pid -> page tables
    extra_mb: dict[int, float] = field(default_factory=dict)  # uid -> its other processes' private memory
    private_mb: dict[int, float] = field(default_factory=dict)  # worker pid -> its own (measure_private)
    shmem_mb: dict[int, float] = field(default_factory=dict)  # worker pid -> shared memory it maps, unseen
    unheld: dict[int, list[int]] = field(default_factory=dict)  # an ``Unheld`` uid -> its pids


def pids_of(
    worker: Seen, uid_pids: dict[int, list[int]], images: dict[int, list[int]] | None = None
) -> list[int]:
    """A worker's processes: an image's tree (from ``images`` when it is there), a confined worker's uid,
    else the worker alone."""
    if worker.image:
        found = (images or {}).get(worker.pid)
        return found if found is not None else tree_pids(worker.pid)
    return uid_pids.get(worker.uid, [worker.pid]) if worker.uid else [worker.pid]


def read(
    workers: list[Seen], oom_kills: Callable[[Path], int] | None, unheld: Unheld | None = None
) -> Reading:
    """Blocking (/proc and cgroup files): run it in a thread. ``oom_kills``: where the host has memory
    cgroups, how many of a group's processes the kernel killed (then page tables are the group's to
    count, and a worker's processes are what its group should hold). ``unheld``: uids no process should
    have, looked for in the same scan of /proc."""
    forked = [w for w in workers if not w.image]
    owners = {w.uid: w.pid for w in forked if w.uid}
    found = processes_of(_Either(frozenset(owners), unheld)) if owners or unheld is not None else {}
    out = Reading(uid_pids={uid: pids for uid, pids in found.items() if uid in owners})
    out.unheld = {uid: pids for uid, pids in found.items() if uid not in owners}
    out.images = {w.pid: tree_pids(w.pid) for w in workers if w.image}
    if oom_kills is not None:
        out.oom_kills = {w.pid: oom_kills(w.cgroup) for w in workers if w.cgroup is not None}
    else:
        out.pte_mb = {
            w.pid: sum(map(page_table_bytes, pids_of(w, out.uid_pids, out.images))) / _MB for w in workers
        }
    out.extra_mb = {
        uid: sum(private_bytes(p) for p in pids if p != owners[uid]) / _MB
        for uid, pids in out.uid_pids.items()
    }
    for w in forked:
        if w.measure_private:
            out.private_mb[w.pid] = private_bytes(w.pid) / _MB + out.extra_mb.get(w.uid, 0.0)
    out.shmem_mb = _shmem(forked, out.uid_pids)
    return out


def _shmem(workers: list[Seen], uid_pids: dict[int, list[int]]) -> dict[int, float]:
    """A worker is looked at (its maps and descriptors: ~2-5 ms for one that loaded a framework) only while
    the host's shared memory is more than the room its limit leaves it: none of it could put the worker
    over otherwise, and on most hosts that is the only read made here (``/proc/meminfo``)."""
    host_mb = host_shmem_mb()
    devices = None
    shmem: dict[int, float] = {}
    for w in workers:
        if host_mb <= w.room_mb:
            continue
        devices = devices or tmpfs_devices()
        shmem[w.pid] = unseen_bytes(pids_of(w, uid_pids), devices) / _MB
    return shmem
