"""Resident memory of worker processes, read from ``/proc`` (the memory watchdog samples it every 50 ms)."""

from __future__ import annotations

import os

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_MB = 1024 * 1024
_MAX_TREE = 4096  # processes counted in one tree at the most


class ResidentSets:
    """Resident memory in MB of processes watched again and again (the memory watchdog's workers, every
    50 ms): each one's ``/proc/<pid>/statm`` stays open and is read with one ``pread``, not opened, read
    and closed each time. An open /proc file keeps naming the process it was opened for: once that one is
    gone, a read fails (the pid may already be another process's), and ``forget`` closes it."""

    def __init__(self) -> None:
        self._fds: dict[int, int] = {}

    def mb(self, pid: int) -> float | None:
        fd = self._fds.get(pid)
        if fd is None:
            try:
                fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            self._fds[pid] = fd
        try:
            return int(os.pread(fd, 256, 0).split()[1]) * _PAGE_SIZE / _MB
        except (OSError, IndexError, ValueError):
            self.forget(pid)
            return None

    def forget(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        for pid in list(self._fds):
            self.forget(pid)


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB, opened and read once (None once it is gone)."""
    pages = _rss_pages(pid)
    return None if pages is None else pages * _PAGE_SIZE / _MB


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (at most ``_MAX_TREE``), ``pid`` first."""
    seen, todo = [pid], _children(pid)
    known = {pid}
    while todo and len(seen) < _MAX_TREE:
        child = todo.pop()
        if child in known:
            continue
        known.add(child)
        seen.append(child)
        todo += _children(child)
    return seen


def private_bytes(pid: int) -> int:
    """Private_Clean + Private_Dirty of ``pid`` (``/proc/<pid>/smaps_rollup``): what the process holds
    beyond the pages it shares with its parent; 0 once it is gone."""
    total_kb = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith((b"Private_Clean:", b"Private_Dirty:")):
                    total_kb += int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return total_kb * 1024


def status_bytes(pid: int, key: bytes) -> int:
    """A ``kB`` line of ``/proc/<pid>/status`` in bytes (``key`` with its colon: ``b"VmPTE:"``); 0 once the
    process is gone."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def page_table_bytes(pid: int) -> int:
    """The memory the kernel holds in ``pid``'s page tables, in no resident set: a process can make a
    gigabyte of them with a resident set of a few MB (one read every 2 MB of a vast mapping)."""
    return status_bytes(pid, b"VmPTE:")


def _rss_pages(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                out += [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            continue
    return out
