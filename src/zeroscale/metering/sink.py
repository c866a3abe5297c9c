"""The metering sink: fed by the EventBus, it only appends to an in-memory queue on the invoke path; a
background thread writes what queued to the ledger every ``flush_interval_s`` (or as soon as ``max_batch``
records wait), and ``close`` writes the rest. A crash loses at most the last interval's records.

Provisioned concurrency is metered from VariantEvents: ``activated`` with ``provisioned > 0`` opens an
interval, ``deactivated`` closes it; while intervals are open each flush marks them seen, so a crashed
server's intervals end at the last second it was alive (``Ledger.close_dangling`` at the next start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metering.ledger import Change, Closed, Ledger, Opened
from zeroscale.metering.pricing import billed_ms
from zeroscale.metering.records import UsageRecord

log = logging.getLogger("zeroscale.metering")


def usage_record(r: InvocationRecord) -> UsageRecord:
    return UsageRecord(
        r.endpoint,
        r.variant,
        r.worker_id,
        r.at - r.total_s,  # started_at
        r.at,
        r.model_s,
        billed_ms(r.model_s) if r.worker_id else 0,  # no worker reached: nothing to bill
        r.memory_mb,
        r.bytes_in,
        r.bytes_out,
        r.setup_s,
        r.status,
        r.error_code,
        r.provisioned,
    )


class MeteringSink:
    def __init__(
        self,
        ledger: Ledger,
        *,
        flush_interval_s: float = 1.0,
        max_batch: int = 5000,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._wall = wall
        # deque.append and popleft are atomic: the event loop appends, the writer pops, no lock between them.
        self._pending: deque[InvocationRecord | VariantEvent] = deque()
        self._wake = threading.Event()
        self._closing = False
        self._flush_lock = threading.Lock()
        self._open: set[tuple[str, str]] = set()  # variants with an open provisioned interval
        self._thread: threading.Thread | None = None
        self.written = 0  # invocation records written so far

    # ---- the Sink protocol: called on the event loop, must not block ----
    def invocation(self, record: InvocationRecord) -> None:
        pending = self._pending
        pending.append(record)
        if len(pending) == self._max_batch:
            self._wake.set()

    def worker(self, event: WorkerEvent) -> None:
        return None

    def variant(self, event: VariantEvent) -> None:
        self._pending.append(event)

    # ---- lifecycle ----
    def start(self) -> None:
        """Close what a crashed predecessor left open, then start the writer thread."""
        # Another front end's intervals not refreshed for a minute: it died (a live one refreshes each flush).
        closed = self._ledger.close_dangling(stale_before=self._wall() - 60.0)
        if closed:
            log.warning("metering: closed %d provisioned interval(s) left open by an unclean stop", closed)
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="zeroscale-metering", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the writer and write everything still queued."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _run(self) -> None:
        while not self._closing:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._closing:
                return
            try:
                self.flush()
            except Exception:  # the queue is kept; the next round retries
                log.exception("metering: writing usage failed; will retry")

    # ---- the writer ----
    def flush(self) -> int:
        """Write what is queued (and refresh open intervals); returns the number of invocation records."""
        with self._flush_lock:
            items: list[InvocationRecord | VariantEvent] = []
            pop = self._pending.popleft
            try:
                while True:
                    items.append(pop())
            except IndexError:
                pass
            records: list[UsageRecord] = []
            changes: list[Change] = []
            now_open = set(self._open)
            for item in items:
                if isinstance(item, InvocationRecord):
                    records.append(usage_record(item))
                    continue
                key = (item.endpoint, item.variant)
                if item.kind == "activated" and item.provisioned > 0:
                    changes.append(
                        Opened(item.endpoint, item.variant, item.memory_mb, item.provisioned, item.at)
                    )
                    now_open.add(key)
                elif key in now_open and item.kind in ("activated", "deactivated"):
                    changes.append(Closed(item.endpoint, item.variant, item.at))
                    now_open.discard(key)
            heartbeat = self._wall() if now_open else None
            if not records and not changes and heartbeat is None:
                return 0
            try:
                self._ledger.write(records, changes, heartbeat)
            except BaseException:
                self._pending.extendleft(reversed(items))
                raise
            self._open = now_open
            self.written += len(records)
            return len(records)
