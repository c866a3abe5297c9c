"""What a worker's scratch directory holds on disk: its files' blocks (a sparse file counts what it holds,
not its length), walked without following links, giving up past a number of entries.

The server's watchdog reads it once a second for every confined worker and template (``--worker-disk-mb``);
a single file is held to the limit by the kernel at once (``RLIMIT_FSIZE``, ``sandbox.confine``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K")
log = logging.getLogger("zeroscale.workers")

# Files and directories one scratch directory may hold: past it the walk stops and the worker is stopped.
# The walk is the server's CPU, once a second: 10,000 entries cost it ~30 ms (3% of a core) here, where
# 100,000 cost 300 ms, which a model could have kept up by staying just under.
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class Usage:
    bytes: int
    entries: int  # MAX_ENTRIES + 1 when the walk gave up

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
        return (
            f"{who} wrote {used.bytes / MB:.0f} MB to its scratch directory (TMPDIR), more than the "
            f"{limit_bytes / MB:.0f} MB a worker may write ({FLAG}), and was stopped"
        )
    return None


class DiskWatch(Generic[K]):
    """The scratch directories of the manager's workers and templates, looked at in a thread (one pass at a
    time: a pass still running when the next is due is not doubled); ``on_over(key, reason)`` is called on
    the loop for each past the limit."""

    def __init__(self, limit_bytes: int, on_over: Callable[[K, str], None]) -> None:
        self.limit_bytes = limit_bytes
        self._on_over = on_over
        self._task: asyncio.Task[None] | None = None

    def look(self, targets: list[tuple[K, str, str, frozenset[str]]]) -> None:
        """``targets``: (key, who, scratch directory, directories beneath it not to count)."""
        if self.limit_bytes <= 0 or not targets or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._pass(targets))

    async def _pass(self, targets: list[tuple[K, str, str, frozenset[str]]]) -> None:
        try:
            found = await asyncio.to_thread(lambda: [usage(path, skip) for _, _, path, skip in targets])
        except OSError as exc:
            log.warning("scratch disk watch: %s", exc)
            return
        for (key, who, _, _), used in zip(targets, found, strict=True):
            why = over_limit(who, used, self.limit_bytes)
            if why is not None:
                self._on_over(key, why)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
