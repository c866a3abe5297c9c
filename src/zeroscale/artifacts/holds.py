"""What deployments under way hold in the caches they prepare from (extracted artifacts, requirements
environments): a deployment takes a ``Hold``, each cache adds the entries it hands out with it, and the
deployment closes it once its pools are routed (from then on the pools are what keeps the entries). A cache
never evicts a held entry. Keys are each cache's entry directories, so one hold serves several caches that
share one ``Holds``."""

from __future__ import annotations

import threading
from collections import Counter


class Holds:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: Counter[str] = Counter()

    def hold(self) -> Hold:
        return Hold(self)

    def held(self) -> set[str]:
        """The keys some open hold has (a copy)."""
        with self._lock:
            return set(self._count)

    def _add(self, hold: Hold, key: str) -> None:
        with self._lock:
            if not hold.closed and key not in hold.keys:
                hold.keys.add(key)
                self._count[key] += 1

    def _release(self, hold: Hold) -> None:
        with self._lock:
            for key in hold.keys:
                self._count[key] -= 1
                if self._count[key] <= 0:
                    del self._count[key]
            hold.keys.clear()
            hold.closed = True


class Hold:
    """A context manager; closing twice is harmless, and a closed hold holds nothing more."""

    def __init__(self, book: Holds) -> None:
        self.keys: set[str] = set()
        self.closed = False
        self._book = book

    def add(self, key: str) -> None:
        self._book._add(self, key)

    def close(self) -> None:
        self._book._release(self)

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
