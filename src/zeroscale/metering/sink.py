"""The metering sink: fed by the EventBus, on the invoke path it appends each record to the usage journal
(``journal.py``: one write to the OS, before the response goes out) and to an in-memory queue; a background
thread writes what queued to the ledger every ``flush_interval_s`` (or as soon as ``max_batch`` records
wait), with the journal position it reached, and ``close`` writes the rest. After a crash, ``start`` folds
what the journal holds beyond the ledger's position into the ledger: an answered request is never lost.

Provisioned concurrency is metered from VariantEvents: ``activated`` with ``provisioned > 0`` opens an
interval, ``deactivated`` closes it, ``provisioned`` (fewer of its workers up for long, or all again)
closes it and opens one at the number up (none while none is); while intervals are open each flush marks
them seen, so a crashed server's intervals end at the last second it was alive (``Ledger.close_dangling``
at the next start).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from zeroscale.errors import UsageNotRecorded
from zeroscale.events import InvocationRecord, VariantEvent, WorkerEvent
from zeroscale.metering.journal import Journal, Position, decode_position, encode_position
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
        # no worker reached: nothing to bill; a batched request: its share of the batch's predict call
        billed_ms(r.model_s / r.batch_size) if r.worker_id else 0,
        r.memory_mb,
        r.bytes_in,
        r.bytes_out,
        r.setup_s,
        r.status,
        r.error_code,
        r.provisioned,
    )


class MeteringSink:
    before_answer = True  # the journal has each invocation before its answer is sent (events.EventBus)

    def __init__(
        self,
        ledger: Ledger,
        *,
        flush_interval_s: float = 1.0,
        max_batch: int = 5000,
        wall: Callable[[], float] = time.time,
        journal: Journal | None = None,
    ) -> None:
        self._ledger = ledger
        self._journal = journal
        self._journal_failures = 0
        self._interval = flush_interval_s
        self._max_batch = max_batch
        self._wall = wall
        # deque.append and popleft are atomic: the event loop appends, the writer pops, no lock between them.
        # Invocations with the journal position after each (None without a journal), and for one the native
        # data plane journaled, the position in its journal instead.
        self._pending: deque[tuple[InvocationRecord, Position | None, Position | None] | VariantEvent] = (
            deque()
        )
        # The native data plane's journal (a directory of its own, which the plane appends to): folded from
        # the ledger's native position, as the journal is from its own.
        self.native_journal = Journal(journal.dir / "native") if journal is not None else None
        self._wake = threading.Event()
        self._closing = False
        self._flush_lock = threading.Lock()
        self._open: set[tuple[str, str]] = set()  # variants with an open provisioned interval
        self._thread: threading.Thread | None = None
        self.written = 0  # invocation records written so far

    # ---- the Sink protocol: called on the event loop, must not block ----
    def invocation_before_answer(self, record: InvocationRecord) -> None:
        """An invocation about to be answered: in the journal first, else UsageNotRecorded and nothing kept
        (the invoke path answers 503 instead; a full disk held answered usage only in memory, lost by a
        crash)."""
        position = None
        if self._journal is not None:
            try:
                position = self._journal.append(record)
            except OSError as exc:
                self._journal_failed()
                raise UsageNotRecorded(
                    f"zeroscale cannot record this invocation's usage ({exc.strerror or exc}: its journal "
                    "in the data directory), so it is not answered; free space there, or retry later."
                ) from None
        self._queue(record, position)

    def invocation_journaled(self, record: InvocationRecord, position: Position) -> None:
        """An invocation the native data plane journaled itself (at ``position`` of its journal), then
        answered."""
        pending = self._pending
        pending.append((record, None, position))
        if len(pending) == self._max_batch:
            self._wake.set()

    def invocation(self, record: InvocationRecord) -> None:
        """An invocation answered already, or as it goes (a stream, an asynchronous request, a transform's
        record): in the journal if it can be, and metered either way (a full disk: lost only by a crash)."""
        position = None
        if self._journal is not None:
            try:
                position = self._journal.append(record)
            except OSError:
                self._journal_failed()
        self._queue(record, position)

    def _journal_failed(self) -> None:
        self._journal_failures += 1
        if self._journal_failures <= 10 or self._journal_failures % 1000 == 0:
            log.exception("metering: cannot append to the usage journal")

    def _queue(self, record: InvocationRecord, position: Position | None) -> None:
        pending = self._pending
        pending.append((record, position, None))
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
        if self._journal is not None:
            self._replay(self._journal)
        if self.native_journal is not None:
            self._replay(self.native_journal, native=True)
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
        if self._journal is not None:
            self._journal.close()

    def _replay(self, journal: Journal, *, native: bool = False) -> None:
        """Fold what ``journal`` holds beyond the ledger's position for it (what a crash kept out) into the
        ledger, with a position at the start of a fresh segment, in one transaction; then delete the old
        segments. This server appends to its own journal from that segment; the native data plane's journal
        (``native``: a position of its own) is the plane's to append to, from ``native_segment``."""
        since = self._ledger.native_position() if native else self._ledger.journal_position()
        records, _ = journal.unfolded(decode_position(since))
        if native:
            self.native_segment = journal.fresh_segment()
            fresh = (self.native_segment, 0)
        else:
            journal.start()
            fresh = (journal.segment, journal.offset)
        position = encode_position(fresh)
        usage = [usage_record(r) for r in records]
        if native:
            self._ledger.write(usage, [], None, native_position=position)
        else:
            self._ledger.write(usage, [], None, journal_position=position)
        journal.committed(fresh)
        self.written += len(records)
        if records:
            which = "the native data plane's journal" if native else "the journal"
            log.warning("metering: %d usage record(s) recovered from %s after a crash", len(records), which)

    native_segment = 1  # where the native data plane's journal goes on (set by ``start``)

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
            items: list[tuple[InvocationRecord, Position | None, Position | None] | VariantEvent] = []
            pop = self._pending.popleft
            try:
                while True:
                    items.append(pop())
            except IndexError:
                pass
            records: list[UsageRecord] = []
            changes: list[Change] = []
            now_open = set(self._open)
            position: Position | None = None
            native: Position | None = None
            for item in items:
                if isinstance(item, tuple):
                    records.append(usage_record(item[0]))
                    position = item[1] or position
                    native = item[2] or native
                    continue
                key = (item.endpoint, item.variant)
                if item.kind == "activated" and item.provisioned > 0:
                    changes.append(
                        Opened(item.endpoint, item.variant, item.memory_mb, item.provisioned, item.at)
                    )
                    now_open.add(key)
                elif item.kind == "provisioned" and item.provisioned > 0:
                    changes.append(  # closes what is open first
                        Opened(item.endpoint, item.variant, item.memory_mb, item.provisioned, item.at)
                    )
                    now_open.add(key)
                elif key in now_open and item.kind in ("activated", "deactivated", "provisioned"):
                    changes.append(Closed(item.endpoint, item.variant, item.at))
                    now_open.discard(key)
            heartbeat = self._wall() if now_open else None
            if not records and not changes and heartbeat is None:
                return 0
            try:
                self._ledger.write(
                    records,
                    changes,
                    heartbeat,
                    None if position is None else encode_position(position),
                    None if native is None else encode_position(native),
                )
            except BaseException:
                self._pending.extendleft(reversed(items))
                raise
            if position is not None and self._journal is not None:
                self._journal.committed(position)
            if native is not None and self.native_journal is not None:
                self.native_journal.committed(native)
            self._open = now_open
            self.written += len(records)
            return len(records)
