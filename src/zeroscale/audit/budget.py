"""How many refused requests the audit trail records one by one: those refused before their caller was known
(a missing or bad signature, an unknown key) and those refused for their key's rate (``api/throttle.py``).
At most ``per_minute`` a minute from every source together; past them they are counted, and the count is
recorded once, when the minute is over. Anyone can send such requests, so without a bound any client could
grow the server's database without end. A pure policy: the caller passes the time."""

from __future__ import annotations

import threading

WINDOW_S = 60.0
PER_MINUTE = 60


class RefusalBudget:
    def __init__(self, per_minute: int = PER_MINUTE, window_s: float = WINDOW_S) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self._lock = threading.Lock()  # admitted on the event loop, summed up by the writer thread too
        self._window_end: float | None = None
        self._used = 0
        self._dropped = 0
        self._done: list[tuple[float, int]] = []  # windows over, with what they did not record

    def admit(self, now: float) -> bool:
        """Whether this refused request is recorded (else it is counted)."""
        with self._lock:
            if self._window_end is None or now >= self._window_end:
                self._close_window()
                self._window_end = now + self.window_s
            if self._used < self.per_minute:
                self._used += 1
                return True
            self._dropped += 1
            return False

    def ended(self, now: float) -> list[tuple[float, int]]:
        """Each window over since the last call, with the refused requests it did not record (none when
        all were), once."""
        with self._lock:
            if self._window_end is not None and now >= self._window_end:
                self._close_window()
            done, self._done = self._done, []
            return done

    def _close_window(self) -> None:
        if self._dropped and self._window_end is not None:
            self._done.append((self._window_end, self._dropped))
        self._window_end, self._used, self._dropped = None, 0, 0
