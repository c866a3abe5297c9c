"""The entries of a cache directory (``root/<name>/``, complete once their marker file is there) with their
sizes and last uses, what keeps them, and their eviction past a capacity: the mechanism the artifact cache and
the requirements environments share (``eviction.py`` is the policy).

- Kept: what ``in_use()`` names (directories ``root/<name>/<leaf>``: the server's pools and cached templates;
  None until a restarted server has routed its endpoints, and nothing is evicted before), what an open
  ``Hold`` holds (a deployment under way), and for ``grace_s`` what was handed out without a hold.
- A caller takes an entry with ``use`` (looked at and held under the lock evictions take) and a new one is
  put in place inside ``placing()``; an eviction moves an entry out of place by one rename under the same
  lock, so a caller either gets an entry that stays or finds it gone and makes it again.
- The last use is also the entry directory's mtime (written to the minute), so the order survives a restart.
- A cache several processes share (its ``Holds`` is ``across_processes``: a Ray node's) counts the others'
  entries afresh at each trim, and evicts only entries no process holds a lock on (``entrylocks.py``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from zeroscale.artifacts.entrylocks import try_lock_exclusive, unlock
from zeroscale.artifacts.eviction import Entry, victims
from zeroscale.artifacts.holds import Hold, Holds
from zeroscale.artifacts.scratch import scratch_path
from zeroscale.fstree import remove_tree_quietly, tree_bytes

# An entry handed out without a hold is not evicted for this long, even when no pool names it yet (a
# multi-model endpoint's target model, fetched and about to get its pool).
GRACE_S = 60.0
# An entry's last use is written to its directory's mtime when it is older than this (not at every use).
PERSIST_USE_S = 60.0
PLACE_TRIES = 5  # a new entry's rename, against others evicting and placing the same entry meanwhile
MB = 1024 * 1024

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShelfLoad:
    """A cache's figures for /metrics."""

    capacity_bytes: int  # -1: no capacity (nothing is evicted)
    entries: int
    bytes: int
    evictions: int
    evicted_bytes: int


class Shelf:
    def __init__(
        self,
        root: Path,
        tmp_dir: Path,
        *,
        marker: str,
        leaf: str,
        label: str,
        capacity_bytes: int | None = None,
        holds: Holds | None = None,
        grace_s: float = GRACE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``leaf``: what of an entry its users name (``root/<name>/<leaf>``); ``label``: the cache's name in
        the log; ``capacity_bytes``: None keeps everything, 0 only what is kept."""
        self.root = root
        self._tmp_dir = tmp_dir
        self._marker = marker
        self._leaf = leaf
        self._label = label
        self.capacity_bytes = capacity_bytes
        self.holds = holds or Holds()
        self.grace_s = grace_s
        self._clock = clock
        # Called from the thread that trims, under the lock: it must not call back into the cache.
        self.in_use: Callable[[], Iterable[str]] | None = None
        self.guard = threading.Lock()  # the entries, and moving an entry in or out of place
        self._entries = self._scan()
        self._bytes = sum(entry.bytes for entry in self._entries.values())
        self._evictions = 0
        self._evicted_bytes = 0
        # What the last trim left (all of it kept then): ``trim_if_grew`` trims again only past it, so a cache
        # held over its capacity by what is in use is not walked at every use.
        self._settled = 0

    def key(self, name: str) -> str:
        """What a hold holds for entry ``name``."""
        return str(self.root / name)

    def is_complete(self, name: str) -> bool:
        return (self.root / name / self._marker).is_file()

    def use(self, name: str, hold: Hold | None) -> bool:
        """Whether entry ``name`` is in place; if it is, it is the most recently used, and held by ``hold``
        (under the lock an eviction takes, so it either went before, and the entry is not there, or it will
        leave the entry alone; across processes, the hold's lock waits for another's eviction to end)."""
        with self.guard:
            if not self.is_complete(name):
                return False
            if hold is not None and not hold.add(self.key(name)):
                return False  # another process evicted it meanwhile
            entry = self._entries.get(name)
            if entry is None:  # another process of this data directory made it: count it from now
                entry = self._entries[name] = Entry(self._marked_bytes(self.root / name), 0.0)
                self._bytes += entry.bytes
            now = self._clock()
            if now - entry.used >= PERSIST_USE_S:  # the order a restart reads: to the minute is enough
                with contextlib.suppress(OSError):
                    os.utime(self.root / name, (now, now))
            entry.used = now
            return True

    @contextlib.contextmanager
    def placing(self, name: str, size: int, hold: Hold | None, staging: Path) -> Iterator[None]:
        """Around the rename of ``staging`` that puts entry ``name`` (``size`` bytes) in place: counted, held,
        used now. Across processes the hold locks ``staging`` before the rename (the lock moves with it)."""
        key = self.key(name)
        with self.guard:
            early = hold is not None and self.holds.across_processes and key not in hold.keys
            if early and hold is not None:
                hold.add(key, at=staging)
            try:
                yield
            except BaseException:
                if early and hold is not None:
                    hold.discard(key)
                raise
            if hold is not None:
                hold.add(key)
            old = self._entries.get(name)
            self._bytes += size - (old.bytes if old is not None else 0)
            entry = self._entries[name] = Entry(size, self._clock())
            with contextlib.suppress(OSError):
                os.utime(self.root / name, (entry.used, entry.used))

    def place(self, name: str, size: int, hold: Hold | None, staging: Path) -> None:
        """Rename the finished ``staging`` (its marker written) into place as entry ``name``, or, when another
        caller or process put that entry in place first, use theirs (``staging`` is then left to the
        caller). Raises OSError when neither could be done."""
        entry = self.root / name
        for _ in range(PLACE_TRIES):
            try:
                with self.placing(name, size, hold, staging):
                    os.rename(staging, entry)
                return
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            if self.use(name, hold):
                return
            # Not usable: evicted since the rename failed (then the next try puts this one in place), or
            # debris, which is moved aside.
            self._clear_debris(name)
        raise OSError(errno.EEXIST, f"{self._label}: entry {name} could not be put in place", str(entry))

    def _clear_debris(self, name: str) -> None:
        """Move aside an entry directory without its marker (no caller makes one: the marker is written
        before the rename), if nobody holds it. A complete entry is left as it is, whoever holds it: another
        process may have evicted what was there and placed it again since the caller looked."""
        entry = self.root / name
        fd = try_lock_exclusive(entry)
        if fd is None:
            return
        try:
            if (entry / self._marker).is_file():
                return
            trash = scratch_path(self._tmp_dir, ".trash")
            try:
                os.rename(entry, trash)
            except OSError:
                return
        finally:
            unlock(fd)
        remove_tree_quietly(trash)

    def kept_for_grace(self, name: str) -> None:
        with self.guard:
            entry = self._entries.get(name)
            if entry is not None:
                entry.kept_until = self._clock() + self.grace_s

    def name_of(self, path: str) -> str | None:
        """The entry a user's directory (``root/<name>/<leaf>``) is, if it is one."""
        where = Path(path)
        if where.name != self._leaf or where.parent.parent != self.root:
            return None
        return where.parent.name

    def over_capacity(self) -> bool:
        capacity = self.capacity_bytes
        return capacity is not None and self.in_use is not None and self._bytes > capacity

    def trim_if_grew(self) -> list[str]:
        return self.trim() if self.over_capacity() and self._bytes > self._settled else []

    def trim(self) -> list[str]:
        """Blocking. Evict entries nothing keeps, least recently used first, until the cache fits its
        capacity; returns their names. A no-op without a capacity, under it, or before ``in_use`` is set."""
        capacity, in_use = self.capacity_bytes, self.in_use
        if capacity is None or in_use is None:
            return []
        evicted: list[tuple[str, Path, int]] = []
        locks: list[int] = []  # across processes: the entries this may evict, locked so no other uses them
        with self.guard:
            if self.holds.across_processes:  # what the other processes added since
                self._entries = self._scan(self._entries)
                self._bytes = sum(entry.bytes for entry in self._entries.values())
            if self._bytes <= capacity:
                return []
            # The holds before the users: a hold is closed only once its pools are routed.
            held = self.holds.held()
            keep = {name for name in self._entries if self.key(name) in held}
            keep.update(name for name in map(self.name_of, in_use()) if name is not None)
            if self.holds.across_processes:
                for name in self._entries.keys() - keep:
                    fd = try_lock_exclusive(self.root / name)
                    if fd is None:
                        keep.add(name)  # another process holds it (or it is gone: the next scan forgets it)
                    else:
                        locks.append(fd)
            try:
                for name in victims(self._entries, capacity, keep, now=self._clock()):
                    trash = scratch_path(self._tmp_dir, ".evicted")
                    try:
                        os.rename(self.root / name, trash)
                    except FileNotFoundError:  # removed by hand: forget it
                        trash = Path()
                    except OSError as exc:
                        log.warning("%s: could not evict %s: %s", self._label, name, exc)
                        continue
                    entry = self._entries.pop(name)
                    self._bytes -= entry.bytes
                    evicted.append((name, trash, entry.bytes))
            finally:
                for fd in locks:
                    unlock(fd)
            self._evictions += len(evicted)
            self._evicted_bytes += sum(size for _, _, size in evicted)
            left = self._settled = self._bytes
        for _, trash, _ in evicted:
            if trash != Path():
                remove_tree_quietly(trash)
        if evicted:
            log.info(
                "%s: evicted %d unused entr%s, %.1f MB; %.1f MB kept (capacity %.1f MB)",
                self._label,
                len(evicted),
                "y" if len(evicted) == 1 else "ies",
                sum(size for _, _, size in evicted) / MB,
                left / MB,
                capacity / MB,
            )
        return [name for name, _, _ in evicted]

    def load(self) -> ShelfLoad:
        with self.guard:
            return ShelfLoad(
                capacity_bytes=-1 if self.capacity_bytes is None else self.capacity_bytes,
                entries=len(self._entries),
                bytes=self._bytes,
                evictions=self._evictions,
                evicted_bytes=self._evicted_bytes,
            )

    def _scan(self, known: dict[str, Entry] | None = None) -> dict[str, Entry]:
        """The entries on disk (a restart's cache), each last used at its directory's mtime; with ``known``
        (what this process counted), their sizes and uses are kept, later uses on disk taken."""
        entries: dict[str, Entry] = {}
        for child in self.root.iterdir():
            if len(child.name) != 64 or not (child / self._marker).is_file():
                continue
            with contextlib.suppress(OSError):
                used = child.stat().st_mtime
                entry = known.get(child.name) if known else None
                if entry is None:
                    entries[child.name] = Entry(self._marked_bytes(child), used)
                else:
                    entries[child.name] = Entry(entry.bytes, max(entry.used, used), entry.kept_until)
        return entries

    def _marked_bytes(self, entry: Path) -> int:
        """An entry's bytes as its marker says (what was counted when it was made); by walking it when the
        marker does not."""
        try:
            size = json.loads((entry / self._marker).read_text()).get("bytes")
            if isinstance(size, int) and size >= 0:
                return size
        except (OSError, ValueError, AttributeError):
            pass
        return tree_bytes(entry)


class Shelved:
    """What a cache kept on a ``Shelf`` shows the server: its book of holds, what it is told is in use, and
    its figures (a subclass makes ``_shelf``)."""

    _shelf: Shelf

    @property
    def holds(self) -> Holds:
        return self._shelf.holds

    @property
    def in_use(self) -> Callable[[], Iterable[str]] | None:
        """The directories the server's pools and cached templates use (set once it routes its endpoints)."""
        return self._shelf.in_use

    @in_use.setter
    def in_use(self, in_use: Callable[[], Iterable[str]] | None) -> None:
        self._shelf.in_use = in_use

    def over_capacity(self) -> bool:
        return self._shelf.over_capacity()

    def load(self) -> ShelfLoad:
        return self._shelf.load()
