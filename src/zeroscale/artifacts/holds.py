"""What deployments under way hold in the caches they prepare from (extracted artifacts, requirements
environments): a deployment takes a ``Hold``, each cache adds the entries it hands out with it, and the
deployment closes it once its pools are routed (from then on the pools are what keeps the entries). A cache
never evicts a held entry. Keys are each cache's entry directories, so one hold serves several caches that
share one ``Holds``.

A book ``across_processes`` (a cache several processes share: a Ray node's) also holds a shared ``flock`` on
each entry directory it holds (``entrylocks.py``), one per directory however many holds have it, so another
process's eviction leaves it alone too.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

from zeroscale.artifacts.entrylocks import lock_shared, unlock


class Holds:
    def __init__(self, *, across_processes: bool = False) -> None:
        self.across_processes = across_processes
        self._lock = threading.Lock()
        self._count: Counter[str] = Counter()
        self._fds: dict[str, int] = {}  # across processes: key -> the descriptor holding its shared lock

    def hold(self) -> Hold:
        return Hold(self)

    def held(self) -> set[str]:
        """The keys some open hold has (a copy)."""
        with self._lock:
            return set(self._count)

    def _add(self, hold: Hold, key: str, at: Path | None) -> bool:
        with self._lock:
            if hold.closed or key in hold.keys:
                return True
            if self.across_processes and key not in self._count:
                # ``at``: the directory about to be renamed to ``key`` (locked before it is in place);
                # else ``key`` itself, which must still be there once locked.
                fd = lock_shared(at or Path(key), still_at=None if at else Path(key))
                if fd is None:
                    return False
                self._fds[key] = fd
            hold.keys.add(key)
            self._count[key] += 1
            return True

    def _drop(self, key: str) -> None:
        self._count[key] -= 1
        if self._count[key] <= 0:
            del self._count[key]
            fd = self._fds.pop(key, None)
            if fd is not None:
                unlock(fd)

    def _discard(self, hold: Hold, key: str) -> None:
        with self._lock:
            if key in hold.keys:
                hold.keys.discard(key)
                self._drop(key)

    def _release(self, hold: Hold) -> None:
        with self._lock:
            for key in hold.keys:
                self._drop(key)
            hold.keys.clear()
            hold.closed = True


class Hold:
    """A context manager; closing twice is harmless, and a closed hold holds nothing more."""

    def __init__(self, book: Holds) -> None:
        self.keys: set[str] = set()
        self.closed = False
        self._book = book

    def add(self, key: str, *, at: Path | None = None) -> bool:
        """Hold ``key``. False only across processes, when its directory is gone (``at``: the directory to
        lock instead, about to be renamed to ``key``)."""
        return self._book._add(self, key, at)

    def discard(self, key: str) -> None:
        self._book._discard(self, key)

    def close(self) -> None:
        self._book._release(self)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
