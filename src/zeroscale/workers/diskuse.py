"""What a worker's scratch directory holds on disk: its files' blocks (a sparse file counts what it holds,
not its length), walked without following links, giving up past a number of entries; and the files removed
from it that the worker's processes still hold (open, or mapped), whose blocks stay taken until they let go:
a worker writing a file to the limit, removing it and keeping it open, again and again, held 1.3 GB under a
200 MB limit when only the directory was walked.

The server's watchdog reads it once a second for every confined worker and template (``--worker-disk-mb``):
the directory and the processes' open files every time, their mappings every ``MAPS_EVERY`` looks (reading
a process's mappings costs ~2 ms, its open files ~10 us). A single file is held to the limit by the kernel
at once (``RLIMIT_FSIZE``, ``sandbox.confine``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K")
log = logging.getLogger("zeroscale.workers")

# Files and directories one scratch directory may hold: past it the walk stops and the worker is stopped.
# The walk is the server's CPU, once a second: 10,000 entries cost it ~30 ms (3% of a core) here, where
# 100,000 cost 300 ms, which a model could have kept up by staying just under.
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Usage:
    bytes: int  # ``removed`` included
    entries: int  # MAX_ENTRIES + 1 when the walk gave up
    removed: int = 0  # bytes of files removed from it that its processes still hold

    @property
    def too_many(self) -> bool:
        return self.entries > MAX_ENTRIES


def usage(path: str, skip: Collection[str] = (), max_entries: int = MAX_ENTRIES) -> Usage:
    """The blocks of everything beneath ``path`` (not the directories in ``skip``, another worker's inside
    it), in bytes; a missing ``path`` holds nothing."""
    total = entries = 0
    pending = [path]
    while pending:
        folder = pending.pop()
        try:
            with os.scandir(folder) as found:
                for entry in found:
                    entries += 1
                    if entries > max_entries:
                        return Usage(total, entries)
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:  # gone meanwhile
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False) and entry.path not in skip:
                        pending.append(entry.path)
        except OSError:  # removed meanwhile, or not a directory
            continue
    return Usage(total, entries)


_DELETED = " (deleted)"
MAPS_EVERY = 10  # looks: a removed file only mapped (its descriptor closed) is found within ten seconds


def held_removed(pids: Collection[int], path: str, maps: bool) -> int:
    """The blocks, in bytes, of the files removed from beneath ``path`` that processes ``pids`` hold open
    (their descriptors), or mapped when ``maps``: each file once, however many hold it."""
    prefix = path.rstrip(os.sep) + os.sep
    seen: dict[tuple[int, int], int] = {}
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fd_dir)
        except OSError:  # gone meanwhile
            continue
        for name in names:
            link = f"{fd_dir}/{name}"
            try:
                target = os.readlink(link)
                if target.startswith(prefix) and target.endswith(_DELETED):
                    st = os.stat(link)
                    seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
            except OSError:
                continue
        if maps:
            _mapped_removed(pid, prefix, seen)
    return sum(seen.values())


def _mapped_removed(pid: int, prefix: str, seen: dict[tuple[int, int], int]) -> None:
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return
    for line in lines:
        if not line.endswith(_DELETED) or prefix not in line:
            continue
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[5].startswith(prefix):
            continue
        try:
            st = os.stat(f"/proc/{pid}/map_files/{fields[0]}")
        except OSError:
            continue
        seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512


MB = 1024 * 1024
FLAG = "zeroscale serve --worker-disk-mb"


def over_limit(who: str, used: Usage, limit_bytes: int) -> str | None:
    """Why ``who`` (a worker, a template) is stopped for its scratch directory, or None when it is within."""
    if used.too_many:
        return (
            f"{who} made more than {MAX_ENTRIES} files and directories in its scratch directory (TMPDIR) "
            "and was stopped"
        )
    if used.bytes > limit_bytes:
        held = f", {used.removed / MB:.0f} MB of it in files removed but still open" if used.removed else ""
        return (
            f"{who} wrote {used.bytes / MB:.0f} MB to its scratch directory (TMPDIR){held}, more than the "
            f"{limit_bytes / MB:.0f} MB a worker may write ({FLAG}), and was stopped"
        )
    return None


class DiskTarget(NamedTuple, Generic[K]):
    """A scratch directory to look at: whose (``key``, and ``who`` for the message), the directories beneath
    it not to count (other workers'), and the processes whose removed files count (a confined worker's are
    every process of its uid, as the manager's once-a-second pass found them)."""

    key: K
    who: str
    path: str
    skip: frozenset[str]
    pids: tuple[int, ...]


class DiskWatch(Generic[K]):
    """The scratch directories of the manager's workers and templates, looked at in a thread (one pass at a
    time: a pass still running when the next is due is not doubled); ``on_over(key, reason)`` is called on
    the loop for each past the limit."""

    def __init__(
        self,
        limit_bytes: int,
        on_over: Callable[[K, str], None],
    ) -> None:
        self.limit_bytes = limit_bytes
        self._on_over = on_over
        self._task: asyncio.Task[None] | None = None
        self._looks = 0

    def look(self, targets: list[DiskTarget[K]]) -> None:
        if self.limit_bytes <= 0 or not targets or (self._task is not None and not self._task.done()):
            return
        self._looks += 1
        maps = self._looks % MAPS_EVERY == 1
        self._task = asyncio.get_running_loop().create_task(self._pass(targets, maps))

    def _measure(self, targets: list[DiskTarget[K]], maps: bool) -> list[Usage]:
        measured = []
        for t in targets:
            walked = usage(t.path, t.skip)
            removed = held_removed(t.pids, t.path, maps)
            measured.append(Usage(walked.bytes + removed, walked.entries, removed))
        return measured

    async def _pass(self, targets: list[DiskTarget[K]], maps: bool) -> None:
        try:
            found = await asyncio.to_thread(self._measure, targets, maps)
        except OSError as exc:
            log.warning("scratch disk watch: %s", exc)
            return
        for (key, who, *_), used in zip(targets, found, strict=True):
            why = over_limit(who, used, self.limit_bytes)
            if why is not None:
                self._on_over(key, why)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
