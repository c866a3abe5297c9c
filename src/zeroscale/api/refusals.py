"""A saturated front end's short memory of the peers that refused its spilled invocations
(``api/forward.py``).

Spilling costs a round trip to the peer, which refuses at once when it has no spare capacity either. Under
sustained saturation of every front end that would be one wasted round trip per request, so a refusal (or a
peer that could not be reached) closes that (peer, endpoint, variant) for a while: ``FIRST_S`` after a first
refusal, twice as long after each refusal that follows, up to ``MOST_S``. An accepted spill forgets it. A
closed peer is not asked: the invocation queues here at once, as it did before spill-over existed. So a
front end whose peers stay saturated asks each at most about once a ``MOST_S`` per variant, and one whose
peer frees a worker finds it within ``MOST_S`` at worst.

Pure: the clock is given, nothing else is read; ``tests/api/test_refusals.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

FIRST_S = 0.05
MOST_S = 1.0

Key = tuple[str, str, str]  # (peer id, endpoint, variant)


@dataclass(slots=True)
class _Closed:
    until: float  # the clock's time it may be asked again
    hold_s: float  # how long the last refusal closed it for


class Refusals:
    def __init__(
        self, clock: Callable[[], float] = time.monotonic, first_s: float = FIRST_S, most_s: float = MOST_S
    ) -> None:
        self._clock = clock
        self._first_s = first_s
        self._most_s = most_s
        self._closed: dict[Key, _Closed] = {}

    def open(self, key: Key) -> bool:
        """Whether the peer may be asked to take an invocation of the variant now."""
        closed = self._closed.get(key)
        return closed is None or self._clock() >= closed.until

    def refused(self, key: Key) -> None:
        """The peer refused (or could not be reached): closed for twice as long as the last time, when that
        refusal is recent (its hold ended less than ``most_s`` ago), else for ``first_s``."""
        now = self._clock()
        last = self._closed.get(key)
        hold_s = self._first_s
        if last is not None and now - last.until < self._most_s:
            hold_s = min(last.hold_s * 2, self._most_s)
        # forget the stale ones (their peers or variants may be long gone): refusals are few by design
        self._closed = {k: c for k, c in self._closed.items() if now - c.until < self._most_s}
        self._closed[key] = _Closed(now + hold_s, hold_s)

    def accepted(self, key: Key) -> None:
        """The peer took an invocation: asked again from now on, from a first refusal's hold."""
        self._closed.pop(key, None)
