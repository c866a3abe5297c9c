"""``workers/cgroups.py`` on this host's real cgroup v1 memory controller (root, as CI runs): groups made,
joined, limited, adopted, counted and removed with real processes. Where the host has no memory controller
the server may use, each test checks the reason given instead (nothing is skipped)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zeroscale.testing import wait_for
from zeroscale.workers.cgroups import (
    MemoryGroups,
    Unavailable,
    members,
    memory_line,
    own_group,
    own_memory_group,
)

# Whether this host lets a root server make memory groups (this project's machines and CI do): the tests
# check the groups where it does, and the banner's warning where it does not.
_OWN = own_memory_group()
AVAILABLE = os.geteuid() == 0 and isinstance(_OWN, Path) and os.access(_OWN, os.W_OK)
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@pytest.fixture
def groups() -> Iterator[MemoryGroups | Unavailable]:
    opened = MemoryGroups.open()
    yield opened
    if isinstance(opened, MemoryGroups):
        opened.close()
        assert not opened.root.exists()
        assert opened.cpu_root is None or not opened.cpu_root.exists()


def sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen(SLEEPER)


def parent_and_child() -> tuple[subprocess.Popen[bytes], int]:
    """A sleeping process that forked a sleeping child, and the child's pid."""
    spawn = "import subprocess, sys, time; subprocess.Popen(sys.argv[1:]); time.sleep(60)"
    parent = subprocess.Popen([sys.executable, "-c", spawn, *SLEEPER])
    children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
    wait_for(lambda: children.read_text().split(), 10)
    return parent, int(children.read_text().split()[0])


def test_turned_off_says_so_without_a_warning() -> None:
    off = MemoryGroups.open(enabled=False)
    assert isinstance(off, Unavailable)
    assert memory_line(off).startswith("memory: resident sets sampled every 50 ms (no memory cgroups: turned")
    assert memory_line(Unavailable("no cgroup memory controller on this host")).startswith("WARNING: ")


def test_the_servers_directory_is_under_its_own_group(groups: MemoryGroups | Unavailable) -> None:
    if not AVAILABLE:
        assert isinstance(groups, Unavailable) and groups.reason
        return
    assert isinstance(groups, MemoryGroups), groups
    own = own_memory_group()
    assert isinstance(own, Path)
    assert os.getpid() in members(own)  # this process's memory group, found from /proc/self
    assert groups.root == own / f"zeroscale-{os.getpid()}"
    assert "cgroup v1" in memory_line(groups) and not memory_line(groups).startswith("WARNING")


def test_a_process_joins_a_group_with_its_limit_and_a_fork_before_is_adopted(
    groups: MemoryGroups | Unavailable,
) -> None:
    if not isinstance(groups, MemoryGroups):
        assert not AVAILABLE
        return
    parent, child = parent_and_child()
    try:
        group = groups.start("w-test", 1024, parent.pid)
        assert (group / "memory.limit_in_bytes").read_text().strip() == str(1024 << 20)
        assert members(group) == {parent.pid}  # its child was forked before: it stayed where it was
        assert groups.adopt(group, [parent.pid, child]) == 1
        assert members(group) == {parent.pid, child}
        assert groups.adopt(group, [parent.pid, child]) == 0
        assert groups.join(group, 2**22 + 1) is False  # no such process (pid_max is at most 2**22)
    finally:
        parent.kill()
        parent.wait()
    # Removing the group kills what is left in it (the orphaned child), as a worker's uid pass would.
    assert groups.remove(group)
    assert not group.exists()
    wait_for(lambda: not Path(f"/proc/{child}").exists() or b"Z" in _state(child), 10)


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"Z"


def test_the_kernel_stops_a_process_at_its_limit_and_the_group_counts_it(
    groups: MemoryGroups | Unavailable,
) -> None:
    if not isinstance(groups, MemoryGroups):
        assert not AVAILABLE
        return
    hog = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; sys.stdin.read(1); x = b'x' * (300 << 20); time.sleep(60)"],
        stdin=subprocess.PIPE,
    )
    group = groups.start("w-hog", 100, hog.pid)
    assert groups.oom_kills(group) == 0
    assert hog.stdin is not None
    hog.stdin.write(b"go")
    hog.stdin.close()
    assert hog.wait(30) == -9
    assert groups.oom_kills(group) == 1
    assert groups.remove(group)


def test_empty_groups_of_a_server_that_is_gone_are_removed_and_a_live_one_is_left() -> None:
    """A killed server's workers die with it; a group that still holds a process may be another server's
    (one in another pid namespace): it is left, with its process."""
    own = own_memory_group()
    if not isinstance(own, Path) or not AVAILABLE:
        assert isinstance(MemoryGroups.open(), Unavailable)
        return
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    gone, other = own / f"zeroscale-{pid_max + 1}", own / f"zeroscale-{pid_max + 2}"  # no such pids
    (gone / "w-left").mkdir(parents=True)
    (gone / "spare-0").mkdir()
    (other / "w-live").mkdir(parents=True)
    live = sleeper()
    try:
        MemoryGroups.join(other / "w-live", live.pid)
        opened = MemoryGroups.open()
        assert isinstance(opened, MemoryGroups)
        opened.close()
        assert not gone.exists()
        assert members(other / "w-live") == {live.pid} and live.poll() is None
    finally:
        live.kill()
        live.wait()
        for group in (gone / "w-left", gone / "spare-0", gone, other / "w-live", other):
            if group.exists():
                group.rmdir()


def test_a_group_whose_worker_is_gone_is_the_next_ones_with_its_limit(
    groups: MemoryGroups | Unavailable,
) -> None:
    if not isinstance(groups, MemoryGroups):
        assert not AVAILABLE
        return
    first = sleeper()
    group = groups.start("w-first", 2048, first.pid)
    first.kill()
    first.wait()
    assert groups.remove(group) and not group.exists()
    spares = [p for p in groups.root.iterdir() if p.name.startswith("spare-")]
    assert len(spares) == 1 and not members(spares[0])
    for limit_mb in (1024, 3072):  # lowered, then raised
        again = groups.make(f"w-next-{limit_mb}", limit_mb)
        assert not [p for p in groups.root.iterdir() if p.name.startswith("spare-")]  # the spare, renamed
        assert (again / "memory.limit_in_bytes").read_text().strip() == str(limit_mb << 20)
        assert groups.remove(again)


def test_a_group_the_kernel_stopped_a_process_in_is_not_kept(groups: MemoryGroups | Unavailable) -> None:
    if not isinstance(groups, MemoryGroups):
        assert not AVAILABLE
        return
    hog = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5); x = b'x' * (300 << 20)"])
    group = groups.start("w-hog", 100, hog.pid)
    assert hog.wait(30) == -9
    assert groups.oom_kills(group) == 1
    assert groups.remove(group) and not group.exists()
    assert not [p for p in groups.root.iterdir() if p.name.startswith("spare-")]


CPU_AVAILABLE = AVAILABLE and isinstance(own_group("cpu"), Path)


def test_a_group_has_a_cpu_twin_weighted_by_its_memory(groups: MemoryGroups | Unavailable) -> None:
    """Where the cpu controller is mounted (it is here and in CI): the worker is in a cpu group whose
    cpu.shares is its MemorySizeInMB, a fork adopted later joins it too, and it goes with the group."""
    if not isinstance(groups, MemoryGroups):
        assert not AVAILABLE
        return
    assert (groups.cpu_root is not None) == CPU_AVAILABLE
    if groups.cpu_root is None:
        return
    cpu_own = own_group("cpu")
    assert isinstance(cpu_own, Path) and groups.cpu_root == cpu_own / f"zeroscale-{os.getpid()}"
    assert "weighted by MemorySizeInMB" in memory_line(groups)
    parent, child = parent_and_child()
    try:
        group = groups.start("w-cpu", 3072, parent.pid)
        twin = groups.cpu_root / "w-cpu"
        assert (twin / "cpu.shares").read_text().strip() == "3072"
        assert members(twin) == {parent.pid}
        groups.adopt(group, [parent.pid, child])
        assert members(twin) == {parent.pid, child}
        lines = Path(f"/proc/{child}/cgroup").read_text().splitlines()
        assert any(":cpu:" in line and line.endswith(f"/zeroscale-{os.getpid()}/w-cpu") for line in lines)
    finally:
        parent.kill()
        parent.wait()
    assert groups.remove(group)
    assert not twin.exists()
