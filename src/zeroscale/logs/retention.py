"""Delete log streams nobody wrote to for longer than the retention (``--log-retention-hours``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from pathlib import Path

from zeroscale.logs.store import LogStore, Stream

log = logging.getLogger("zeroscale.logs")


class Retention:
    """``sweep`` once, or ``run`` it periodically. A stream's age is the time since it was last written;
    streams of live workers (``live()``) are kept whatever their age. ``max_age_s`` 0 keeps everything."""

    def __init__(
        self,
        store: LogStore,
        max_age_s: float,
        live: Callable[[], Collection[Path]] = frozenset,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.max_age_s = max_age_s
        self._live = live
        self._clock = clock

    @property
    def interval_s(self) -> float:
        """How often ``run`` sweeps: a tenth of the retention, between 1 s and 10 minutes."""
        return min(600.0, max(1.0, self.max_age_s / 10))

    def sweep(self, live: Collection[Path] | None = None) -> list[Stream]:
        """Delete every expired stream; returns them."""
        if self.max_age_s <= 0:
            return []
        keep = self._live() if live is None else live
        cutoff_ms = int((self._clock() - self.max_age_s) * 1000)
        deleted: list[Stream] = []
        for group in self._store.groups():
            for stream in self._store.streams(group):
                if stream.mtime_ms < cutoff_ms and stream.path not in keep:
                    self._store.delete(stream)
                    deleted.append(stream)
        return deleted

    async def run(self) -> None:
        """Sweep now and every ``interval_s`` until cancelled, off the event loop."""
        if self.max_age_s <= 0:
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
                        "log retention: deleted %d stream(s) older than %g h",
                        len(deleted),
                        self.max_age_s / 3600,
                    )
            await asyncio.sleep(self.interval_s)
