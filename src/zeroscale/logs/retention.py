"""Delete log streams nobody wrote to for longer than the retention (``--log-retention-hours``), and, past
the logs' size cap (``--log-max-mb``), the least recently written streams until the rest fit."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path

from zeroscale.logs.store import LogStore, Stream

log = logging.getLogger("zeroscale.logs")

# With a size cap, ``run`` sweeps at least this far apart, and sooner than the age alone asks when the live
# workers' streams could fill what is left under the cap before then (``next_sweep_s``).
SIZE_SWEEP_S = 60.0


def over_cap(streams: Iterable[Stream], max_bytes: int, keep: Collection[Path]) -> list[Stream]:
    """The streams to delete, least recently written first, so that the rest take ``max_bytes`` at most;
    streams in ``keep`` (live workers') are never chosen, and may alone exceed it."""
    every = list(streams)
    total = sum(stream.size for stream in every)
    chosen: list[Stream] = []
    for stream in sorted(every, key=lambda s: (s.mtime_ms, str(s.path))):
        if total <= max_bytes:
            break
        if stream.path in keep:
            continue
        chosen.append(stream)
        total -= stream.size
    return chosen


class Retention:
    """``sweep`` once, or ``run`` it periodically. A stream's age is the time since it was last written;
    streams of live workers (``live()``) are kept whatever their age and size. ``max_age_s`` 0 keeps streams
    whatever their age, ``max_bytes`` 0 whatever their size."""

    def __init__(
        self,
        store: LogStore,
        max_age_s: float,
        live: Callable[[], Collection[Path]] = frozenset,
        clock: Callable[[], float] = time.time,
        max_bytes: int = 0,
        stream_bytes_per_minute: int = 0,
    ) -> None:
        """``stream_bytes_per_minute``: the most a live worker's stream grows (its output's limit, 0: no
        limit)."""
        self._store = store
        self.max_age_s = max_age_s
        self.max_bytes = max_bytes
        self.stream_bytes_per_minute = stream_bytes_per_minute
        self._live = live
        self._clock = clock
        self.left_bytes = 0  # what the last sweep left

    @property
    def interval_s(self) -> float:
        """How often ``run`` sweeps for age: a tenth of the retention, between 1 s and 10 minutes."""
        return min(600.0, max(1.0, self.max_age_s / 10)) if self.max_age_s > 0 else 600.0

    def next_sweep_s(self, live: int) -> float:
        """When to sweep next: for age, ``interval_s``; with a size cap, no later than ``live`` streams at
        their limit could fill what the last sweep left under the cap, and no sooner than a minute apart (a
        sweep stats every stream: ~0.3 s for 10,000 endpoints here), so an idle server sweeps seldom."""
        age = self.interval_s
        if self.max_bytes <= 0:
            return age
        growth = live * self.stream_bytes_per_minute / 60
        if self.stream_bytes_per_minute <= 0 and live:
            return min(age, SIZE_SWEEP_S)
        room = max(0, self.max_bytes - self.left_bytes)
        return min(age, max(SIZE_SWEEP_S, room / growth)) if growth else age

    def sweep(self, live: Collection[Path] | None = None) -> list[Stream]:
        """Delete every expired stream, then the oldest past the size cap; returns them."""
        if self.max_age_s <= 0 and self.max_bytes <= 0:
            return []
        keep = self._live() if live is None else live
        streams = self._store.every_stream()
        deleted: list[Stream] = []
        if self.max_age_s > 0:
            cutoff_ms = int((self._clock() - self.max_age_s) * 1000)
            deleted = [s for s in streams if s.mtime_ms < cutoff_ms and s.path not in keep]
        if self.max_bytes > 0:
            gone = {s.path for s in deleted}
            deleted += over_cap((s for s in streams if s.path not in gone), self.max_bytes, keep)
        for stream in deleted:
            self._store.delete(stream)
        self.left_bytes = sum(s.size for s in streams) - sum(s.size for s in deleted)
        return deleted

    async def run(self) -> None:
        """Sweep now and every ``interval_s`` until cancelled, off the event loop."""
        if self.max_age_s <= 0 and self.max_bytes <= 0:
            return
        while True:
            live = frozenset(self._live())  # read on the loop, where the sink changes it
            try:
                deleted = await asyncio.to_thread(self.sweep, live)
            except OSError as exc:
                log.warning("log retention sweep failed: %s", exc)
            else:
                if deleted:
                    log.info(
                        "log retention: deleted %d stream(s), %.1f MB (older than %g h, or the oldest past "
                        "%.0f MB of logs)",
                        len(deleted),
                        sum(s.size for s in deleted) / (1024 * 1024),
                        self.max_age_s / 3600,
                        self.max_bytes / (1024 * 1024),
                    )
            await asyncio.sleep(self.next_sweep_s(len(live)))
