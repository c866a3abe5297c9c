"""The /proc memory reader the watchdog samples."""

from __future__ import annotations

import os
import subprocess
import sys

from zeroscale.workers import memory
from zeroscale.workers.memory import ResidentSets, tree_pids


def rss_mb(pid: int) -> float | None:
    sets = ResidentSets()
    try:
        return sets.mb(pid)
    finally:
        sets.close()


def test_own_resident_set() -> None:
    own = rss_mb(os.getpid())
    assert own is not None and 1 < own < 100_000


def test_a_gone_process_reads_none() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert rss_mb(proc.pid) is None
    assert memory.rss_mb(proc.pid) is None
    assert tree_pids(proc.pid) == [proc.pid]  # no children to read


def test_a_tree_holds_the_children_and_one_read_gives_each_its_own() -> None:
    # Sampled once the child has started (its resident set still grows while the interpreter starts).
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print(1, flush=True); time.sleep(30)"], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline()
        tree = tree_pids(os.getpid())
        assert tree[0] == os.getpid() and child.pid in tree
        once, kept = memory.rss_mb(child.pid), rss_mb(child.pid)
        assert once is not None and kept is not None and 1 < once < 1000
        assert abs(once - kept) < 5  # sampled at slightly different moments
    finally:
        child.kill()
        child.wait()


def test_a_watched_process_is_read_through_its_open_statm_until_it_is_gone() -> None:
    """ResidentSets keeps each process's statm open: it follows the process's growth, reads None once the
    process is gone (even before anyone forgets it), and holds no descriptor after ``forget``."""
    grow = "import sys,time; sys.stdin.readline(); x = b'x' * (64 << 20); print(1, flush=True); time.sleep(9)"
    child = subprocess.Popen(
        [sys.executable, "-c", grow], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    sets = ResidentSets()
    try:
        before = sets.mb(child.pid)
        assert before is not None and before < 60
        fds = len(os.listdir("/proc/self/fd"))
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write("go\n")
        child.stdin.flush()
        child.stdout.readline()
        after = sets.mb(child.pid)
        assert after is not None and after > before + 60  # the same descriptor, a fresh reading
        assert len(os.listdir("/proc/self/fd")) == fds  # no new descriptor for the second read
    finally:
        child.kill()
        child.wait()
    assert sets.mb(child.pid) is None
    fds = len(os.listdir("/proc/self/fd"))
    sets.forget(child.pid)
    sets.close()
    assert len(os.listdir("/proc/self/fd")) == fds  # the failed read closed it already
