"""A memory cgroup per worker and per template: the kernel holds each to its MemorySizeInMB.

The watchdog (``manager.py``) samples resident sets every 50 ms; a memory cgroup charges what no resident set
shows (a worker's shared memory, its pipes' buffers, page tables, tmpfs pages it wrote) and
stops an allocation the moment it passes the limit, however fast it grows and however busy the server is.
Each worker is moved into a group of its own after its fork, and each template (which runs the model's
load, i.e. the user's code) into one of its own: ``<server's group>/zeroscale-<server pid>/<name>``,
``memory.limit_in_bytes`` its MemorySizeInMB (and ``memory.memsw.limit_in_bytes`` where swap is accounted,
so swap is no way out).

Joining a group costs an RCU grace period (``cgroup.procs``: 10-30 ms measured on these machines, one after
another much less), so the manager's own thread makes the calls, in order, never on the cold start's path:
a worker serves at once and is in its group a moment later. What it forked before that (nothing, for the
built-in runtimes) is moved by the once-a-second pass (``adopt``); meanwhile the watchdog counts it as before.
A group whose worker is gone is emptied (what is left in it is killed) and kept as a spare for the next
worker, renamed: two renames cost a quarter of a mkdir and an rmdir (0.03 against 0.11 ms, back to back
here), and the kernel neither makes nor retires a memory controller's state for it.

Where the host mounts cgroup v1's cpu controller too, each group has a twin there (same name, under
``<the server's cpu cgroup>/zeroscale-<server pid>``) whose ``cpu.shares`` is its MemorySizeInMB (1024 for
1 GB, the kernel's default weight): a worker is one scheduling entity weighted by its size, however many
threads it runs, so a model spinning 64 threads takes its share of a busy host, not 64 threads' worth of it.
A weight, never a cap: a worker alone on an idle host runs as fast as before. A cpu group's failure never
stops a memory group's work (the worker just runs without its weight).

cgroup v1's memory controller only (this project's machines have it: ``/sys/fs/cgroup/memory``, where root
makes groups). cgroup v2's needs a subtree delegated to the server (systemd's ``Delegate=yes``, the server in
a leaf of its own); on such hosts, and where the server may not make groups, ``MemoryGroups.open`` says why
there are none and the watchdog alone holds workers to their memory, as it always has.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("zeroscale.workers")
_MB = 1024 * 1024
_PREFIX = "zeroscale-"
_MIN_SHARES, _MAX_SHARES = 2, 262144  # what cpu.shares takes
_REMOVE_TRIES = 20  # a removed group's killed processes take a moment to leave it (10 ms apart)
_SPARES = 64  # empty groups kept for the next workers


@dataclass(frozen=True)
class Unavailable:
    """Why there are no memory groups on this host (for the start banner)."""

    reason: str


class MemoryGroups:
    """This server's memory cgroups: one directory of its own under the server's group, a group per worker
    and per template in it. Every method but ``open`` blocks (``cgroup.procs`` writes wait for an RCU grace
    period): call them from one thread of their own, in order (``manager.py`` does)."""

    def __init__(self, root: Path, cpu_root: Path | None = None) -> None:
        self.root = root  # <the server's memory cgroup>/zeroscale-<pid>
        self.cpu_root = cpu_root  # <the server's cpu cgroup>/zeroscale-<pid>, where there is one
        self._swap_accounted = (root / "memory.memsw.limit_in_bytes").exists()
        self._spare: list[Path] = []  # empty groups of workers gone, for the next ones
        self._spare_ids = itertools.count()

    @classmethod
    def open(cls, *, enabled: bool = True) -> MemoryGroups | Unavailable:
        """The server's own directory of groups, made now (stale ones of servers that are gone removed), or
        why there is none."""
        if not enabled:
            return Unavailable("turned off (--no-worker-cgroups)")
        root = _server_dir("memory")
        if isinstance(root, Unavailable):
            return root
        try:
            (root / "memory.limit_in_bytes").write_text("-1")  # the groups' parent: no limit of its own
        except OSError as exc:
            return Unavailable(f"cannot make memory cgroups in {root} ({exc.strerror or exc})")
        cpu = _server_dir("cpu")
        if isinstance(cpu, Unavailable):
            log.info("no cpu cgroups (%s): workers run without weights", cpu.reason)
        return cls(root, cpu if isinstance(cpu, Path) else None)

    def describe(self) -> str:
        weights = ", weighted by MemorySizeInMB in a cpu cgroup" if self.cpu_root is not None else ""
        return f"a memory cgroup per worker and template{weights} (cgroup v1, under {self.root})"

    # ---- one group ----
    def make(self, name: str, limit_mb: int) -> Path:
        """A group ``name`` limited to ``limit_mb``: a spare one renamed where there is one (``remove``
        keeps them: renaming costs the host a fraction of what making and removing one does)."""
        path = self.root / name
        if self._spare:
            spare = self._spare.pop()
            try:
                spare.rename(path)
            except OSError:  # ``name`` is there already (left from before): that one is used
                _remove_group(spare)
        path.mkdir(exist_ok=True)
        try:
            self._limit(path, limit_mb)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # A spare still charged for more than the new limit (its last worker's page cache): a new one.
            _remove_group(path)
            path.mkdir()
            self._limit(path, limit_mb)
        return path

    def _limit(self, path: Path, limit_mb: int) -> None:
        limit = str(limit_mb * _MB)
        files = ["memory.limit_in_bytes"]
        if self._swap_accounted:  # memory and swap together: no more than memory alone
            files.append("memory.memsw.limit_in_bytes")
        try:
            for name in files:
                (path / name).write_text(limit)
        except OSError as exc:
            if exc.errno != errno.EINVAL or len(files) == 1:
                raise
            for name in reversed(files):  # a raise: memory and swap's limit may never be below memory's
                (path / name).write_text(limit)

    @staticmethod
    def join(path: Path, pid: int) -> bool:
        """Move process ``pid`` (all its threads) into the group; False once it is gone."""
        try:
            (path / "cgroup.procs").write_text(str(pid))
        except ProcessLookupError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ESRCH, errno.ENOENT):
                return False
            raise
        return True

    def start(self, name: str, limit_mb: int, pid: int) -> Path:
        """``prepare`` then ``join``: a worker's group, after its fork (and its cpu twin)."""
        path, *twin = self.prepare(name, limit_mb)
        self.join(path, pid)
        for cpu in twin:
            try:
                self.join(cpu, pid)
            except OSError as exc:
                log.warning("cpu cgroup %s: %s (the worker runs without its weight)", cpu, exc)
        return path

    def prepare(self, name: str, limit_mb: int) -> list[Path]:
        """The memory group ``name`` (``make``), then its cpu twin where there is one: the groups a process
        joins (a template joins them itself, before its model's code runs: ``forkserver._become``)."""
        path = self.make(name, limit_mb)
        cpu = self._cpu(name)
        if cpu is None:
            return [path]
        try:
            cpu.mkdir(exist_ok=True)
            (cpu / "cpu.shares").write_text(str(max(_MIN_SHARES, min(_MAX_SHARES, limit_mb))))
        except OSError as exc:
            log.warning("cpu cgroup %s: %s (the worker runs without its weight)", cpu, exc)
            return [path]
        return [path, cpu]

    def _cpu(self, name: str) -> Path | None:
        return None if self.cpu_root is None else self.cpu_root / name

    def adopt(self, path: Path, pids: Iterable[int]) -> int:
        """Move those of ``pids`` not yet in the group into it (processes a worker forked before it joined),
        and into its cpu twin; how many were moved into the memory group."""
        pids = list(pids)
        inside = members(path)
        moved = 0
        for pid in pids:
            if pid not in inside and self.join(path, pid):
                moved += 1
        cpu = self._cpu(path.name)
        if cpu is not None and cpu.is_dir():
            in_cpu = members(cpu)
            with contextlib.suppress(OSError):
                for pid in pids:
                    if pid not in in_cpu:
                        self.join(cpu, pid)
        return moved

    @staticmethod
    def oom_kills(path: Path) -> int:
        """How many of the group's processes the kernel killed for its limit."""
        try:
            text = (path / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def remove(self, path: Path) -> bool:
        """A group whose worker is gone: what is left in it is killed (its processes die with it, as those
        with its uid do), then it is kept as a spare for the next worker (``make``), or removed; False if
        something stayed in it."""
        if not _emptied(path):
            return False
        cpu = self._cpu(path.name)
        if cpu is not None:
            _remove_group(cpu)  # emptied with the memory group: its twin goes (made again at the next start)
        if len(self._spare) < _SPARES and self.oom_kills(path) == 0:  # a count that never goes down
            spare = self.root / f"spare-{next(self._spare_ids)}"
            with contextlib.suppress(OSError):
                path.rename(spare)
                self._spare.append(spare)
                return True
        return _remove_group(path)

    def close(self) -> None:
        """Remove every group left, then the server's directory (and their cpu twins)."""
        for root in (self.root, self.cpu_root):
            if root is None:
                continue
            with contextlib.suppress(OSError):
                for child in root.iterdir():
                    if child.is_dir():
                        _remove_group(child)
            with contextlib.suppress(OSError):
                root.rmdir()


def memory_line(groups: MemoryGroups | Unavailable) -> str:
    """The start banner's line on what holds workers to their memory."""
    watchdog = "resident sets sampled every 50 ms"
    if isinstance(groups, MemoryGroups):
        return f"memory: {groups.describe()}, and {watchdog}"
    line = f"memory: {watchdog} (no memory cgroups: {groups.reason})"
    return line if groups.reason.startswith("turned off") else f"WARNING: {line}"


def members(path: Path) -> set[int]:
    try:
        return {int(p) for p in (path / "cgroup.procs").read_text().split()}
    except (OSError, ValueError):
        return set()


def _emptied(path: Path) -> bool:
    """Kill what is in the group until nothing is (False if something stays, or the group is gone)."""
    for _ in range(_REMOVE_TRIES):
        if not path.is_dir():
            return False
        left = members(path)
        if not left:
            return True
        for pid in left:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.01)
    log.warning("memory cgroup %s still holds processes; left in place", path)
    return False


def _remove_group(path: Path) -> bool:
    if not path.is_dir():
        return True
    for _ in range(_REMOVE_TRIES):
        if not _emptied(path):
            return False
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY:  # busy: its last process is still leaving it
                log.warning("cannot remove memory cgroup %s: %s", path, exc)
                return False
        time.sleep(0.01)
    return False


def _server_dir(controller: str) -> Path | Unavailable:
    """This server's directory of ``controller``'s groups, ``zeroscale-<pid>`` under its own group, made now
    (those of servers that are gone removed), or why there is none."""
    found = own_group(controller)
    if isinstance(found, Unavailable):
        return found
    _remove_stale(found)
    root = found / f"{_PREFIX}{os.getpid()}"
    try:
        root.mkdir(exist_ok=True)
    except OSError as exc:
        return Unavailable(f"cannot make {controller} cgroups in {found} ({exc.strerror or exc})")
    return root


def own_memory_group() -> Path | Unavailable:
    """The directory of this process's cgroup v1 memory group."""
    return own_group("memory")


def own_group(controller: str) -> Path | Unavailable:
    """The directory of this process's cgroup v1 group of ``controller``."""
    try:
        cgroups = Path("/proc/self/cgroup").read_text()
        mounts = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        return Unavailable(f"cannot read this process's cgroups ({exc})")
    rel = None
    for line in cgroups.splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            rel = path
    if rel is None:
        if "cgroup2" in mounts:
            return Unavailable(
                f"cgroup v2 only: its {controller} controller needs a subtree delegated to the server "
                "(not done yet)"
            )
        return Unavailable(f"no cgroup {controller} controller on this host")
    for line in mounts.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        fstype, options = fields[dash + 1], fields[dash + 3] if len(fields) > dash + 3 else ""
        if fstype != "cgroup" or controller not in options.split(","):
            continue
        root, mountpoint = fields[3], fields[4]
        inner = rel[len(root) :] if root != "/" and rel.startswith(root) else rel
        here = Path(mountpoint) / inner.lstrip("/")
        if here.is_dir():
            return here
        return Unavailable(f"this process's {controller} cgroup {rel} is not under {mountpoint}")
    return Unavailable(f"the cgroup v1 {controller} controller is not mounted")


def _remove_stale(parent: Path) -> None:
    """Directories of groups left by servers that were killed (their pid is gone): their empty groups go.
    A group that still holds a process is left as it is, and so is its directory: a killed server's workers
    die with it (their parent-death signal), so a live one may be another server's, one whose pid this
    process cannot see (another pid namespace)."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            name = entry.name
            if not name.startswith(_PREFIX) or not name[len(_PREFIX) :].isdigit():
                continue
            pid = int(name[len(_PREFIX) :])
            if pid == os.getpid() or Path(f"/proc/{pid}").exists():
                continue
            for child in entry.iterdir():
                if child.is_dir() and not members(child):
                    with contextlib.suppress(OSError):
                        child.rmdir()
            with contextlib.suppress(OSError):
                entry.rmdir()
