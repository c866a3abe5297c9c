"""The memory watchdog's once-a-second pass (``workers/extramem.py``), on real processes: what it reads of
a worker's other processes, page tables and group, with nothing of the manager's."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zeroscale.workers import extramem
from zeroscale.workers.cgroups import MemoryGroups


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    """A process of this one."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; print(1, flush=True); time.sleep(60)"], stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline()
    yield proc
    proc.kill()
    proc.wait()


def seen(pid: int, *, image: bool = False, cgroup: Path | None = None, room_mb: float = 1e9) -> extramem.Seen:
    return extramem.Seen(pid, 0, image, cgroup, True, room_mb)


def test_without_groups_a_worker_counts_its_page_tables_and_its_own_private_memory() -> None:
    reading = extramem.read([seen(os.getpid())], None)
    assert reading.pte_mb[os.getpid()] > 0
    assert reading.private_mb[os.getpid()] > 1  # this interpreter, at least
    assert not reading.oom_kills and not reading.images and not reading.uid_pids
    assert not reading.shmem_mb  # its limit leaves room for all the host's shared memory


def test_an_image_worker_is_its_process_tree(child: subprocess.Popen[bytes]) -> None:
    """Found by the pass (``images``: what the watchdog's samples read until the next pass), its page
    tables summed over it."""
    worker = seen(os.getpid(), image=True)
    reading = extramem.read([worker], None)
    tree = reading.images[os.getpid()]
    assert tree[0] == os.getpid() and child.pid in tree
    assert reading.pte_mb[os.getpid()] > 0
    assert extramem.pids_of(worker, {}, reading.images) is tree  # not walked again
    assert child.pid in extramem.pids_of(worker, {})  # walked when no pass has found it
    assert not reading.private_mb  # measured for forked workers only


def test_with_groups_the_kernels_kills_are_read_from_each_group(
    tmp_path: Path, child: subprocess.Popen[bytes]
) -> None:
    """A group's ``memory.oom_control`` as the kernel writes it (cgroup v1), read with the reader the
    manager passes; a worker with no group is not asked about."""
    group = tmp_path / "w-1"
    group.mkdir()
    (group / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    workers = [seen(os.getpid(), image=True, cgroup=group), seen(child.pid)]
    reading = extramem.read(workers, MemoryGroups.oom_kills)
    assert reading.oom_kills == {os.getpid(): 2}
    assert child.pid in reading.images[os.getpid()]  # what the manager moves into the group
    assert not reading.pte_mb  # the group counts page tables


@pytest.mark.skipif(os.geteuid() != 0, reason="only root starts processes under another uid")
def test_a_forked_workers_other_processes_count_with_its_uid() -> None:
    """A worker with a uid of its own (``Confinement``): every other process with that uid is found in one
    pass over /proc, and what they hold privately is its ``extra_mb``, added to its own private memory."""
    uid = 65533
    hold = "x=$(head -c 40000000 /dev/zero | tr '\\0' a); echo held; sleep 60"
    worker = subprocess.Popen(["sleep", "60"], user=uid, cwd="/")
    other = subprocess.Popen(["sh", "-c", hold], user=uid, cwd="/", stdout=subprocess.PIPE)
    try:
        assert other.stdout is not None and other.stdout.readline() == b"held\n"
        reading = extramem.read([extramem.Seen(worker.pid, uid, False, None, True, 1e9)], None)
        assert {worker.pid, other.pid} <= set(reading.uid_pids[uid])
        assert reading.extra_mb[uid] > 35  # the shell's 40 MB string (and its copy), not the worker's
        assert reading.private_mb[worker.pid] > reading.extra_mb[uid]
    finally:
        for proc in (worker, other):
            proc.kill()
            proc.wait()
