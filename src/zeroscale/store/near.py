"""When a bound on what the database holds must be counted exactly: only near it.

A quota (endpoints per account, asynchronous requests queued per endpoint, ...) is checked in the
transaction that writes one more, by reading an index up to the bound, under a lock that front ends checking
the same bound take in turn (``store/locks.py``). Far from the bound that read and that lock are waste: an
enqueue at 40,000 queued requests read 40,000 index entries. So each front end keeps an estimate per bound:
counted once, followed through its own writes, and counted again every ``RECOUNT_EVERY`` of them or every
``RECOUNT_S``, whichever comes first (other front ends write too). A write is counted exactly only when the
estimate is within a tenth of the bound, or four recounts' worth of writes, whichever is more. A bound can
pass only if other front ends wrote more than that margin since this one's last count, less than
``RECOUNT_S`` ago, and then by fewer than ``RECOUNT_EVERY``.

A pure policy: the caller passes the exact count as a function, called only when a recount is due.
Thread-safe under the caller's lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class NearBound:
    RECOUNT_EVERY = 256
    RECOUNT_S = 1.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # key -> (the estimate, writes since it was counted, when it was counted)
        self._about: dict[Hashable, tuple[int, int, float]] = {}

    def near(self, key: Hashable, bound: int, count: Callable[[], int]) -> bool:
        """Within the transaction that has just written one more under ``key``: whether to count it exactly.
        ``count``: how many there are now, the one just written included (asked when a recount is due)."""
        now = self._clock()
        about, since, at = self._about.get(key, (0, self.RECOUNT_EVERY, now))
        if since >= self.RECOUNT_EVERY or now - at >= self.RECOUNT_S:
            about = count()
            self._about[key] = (about - 1, 0, now)  # the one just written: ``added`` adds it once committed
        else:
            about += 1
        return about + max(bound // 10, 4 * self.RECOUNT_EVERY) >= bound

    def added(self, key: Hashable) -> None:
        """One more committed under ``key``."""
        known = self._about.get(key)
        if known is not None:
            about, since, at = known
            self._about[key] = (about + 1, since + 1, at)

    def removed(self, key: Hashable) -> None:
        """One fewer (a delete this front end made)."""
        known = self._about.get(key)
        if known is not None:
            about, since, at = known
            self._about[key] = (max(0, about - 1), since, at)
