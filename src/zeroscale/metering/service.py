"""Metering as the server wires it: the ledger, the sink (when metering is on), the price table, the moment
the first resource was created, and usage reports."""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from zeroscale.events import EventBus
from zeroscale.metering.journal import Journal
from zeroscale.metering.ledger import Ledger
from zeroscale.metering.pricing import PriceTable, load_price_table
from zeroscale.metering.reports import Report, build_report, report_since
from zeroscale.metering.sink import MeteringSink

log = logging.getLogger("zeroscale.metering")
H = TypeVar("H", bound=Callable[..., Any])


class Metering:
    def __init__(
        self,
        ledger: Ledger,
        prices: PriceTable,
        *,
        enabled: bool = True,
        flush_interval_s: float = 1.0,
        wall: Callable[[], float] = time.time,
        journal_dir: Path | None = None,
    ) -> None:
        self.ledger = ledger
        self.prices = prices
        self._wall = wall
        journal = Journal(journal_dir) if journal_dir is not None else None
        self.sink = (
            MeteringSink(ledger, flush_interval_s=flush_interval_s, wall=wall, journal=journal)
            if enabled
            else None
        )
        self._first_resource_at = ledger.first_resource_at()
        # On the event loop before a report: what holds invocations answered and not yet handed to the sink
        # (the native data plane's records, which reach Python in batches) hands them over.
        self.collectors: list[Callable[[], None]] = []

    @classmethod
    def open(
        cls,
        db_url: str,
        *,
        price_table: Path | None = None,
        enabled: bool = True,
        frontend: str | None = None,
        journal_dir: Path | None = None,
    ) -> Metering:
        """Raises ``PriceTableError`` (a ValueError) for a bad price table, before anything starts.
        ``frontend``: this front end's id (its provisioned intervals are its own); ``journal_dir``: where the
        usage journal lives (none: a crash loses the last second of records)."""
        return cls(
            Ledger(db_url, frontend), load_price_table(price_table), enabled=enabled, journal_dir=journal_dir
        )

    def attach(self, events: EventBus) -> None:
        if self.sink is not None:
            events.add(self.sink)

    def track_creates(self, operations: Mapping[str, H]) -> dict[str, H]:
        """Wrap every ``Create*`` operation so the first resource ever created is recorded (the free tier
        starts then). After that the wrapper is one attribute check."""

        def mark() -> None:
            if self._first_resource_at is None:
                self._first_resource_at = self.ledger.mark_first_resource(self._wall())

        async def created(pending: Awaitable[Any]) -> Any:
            out = await pending
            mark()
            return out

        def wrap(handler: H) -> H:
            def create(*args: Any, **kwargs: Any) -> Any:
                out = handler(*args, **kwargs)
                if inspect.isawaitable(out):  # an async operation: it has created nothing yet
                    return created(out)
                mark()
                return out

            return create  # type: ignore[return-value]

        return {name: wrap(h) if name.startswith("Create") else h for name, h in operations.items()}

    def native_journal(self) -> tuple[Path, int] | None:
        """Where the native data plane journals the usage of what it answers, and the segment it goes on from
        (once ``start`` folded what its journal held); None when nothing is metered or journaled."""
        sink = self.sink
        if sink is None or sink.native_journal is None:
            return None
        return sink.native_journal.dir, sink.native_segment

    @property
    def first_resource_at(self) -> float | None:
        return self._first_resource_at

    def start(self) -> None:
        if self.sink is not None:
            self.sink.start()

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        self.ledger.close()

    def collect(self) -> None:
        """On the event loop: every invocation answered so far handed to the sink (``collectors``)."""
        for collect in self.collectors:
            collect()

    def flush(self) -> None:
        if self.sink is not None:
            self.sink.flush()

    def report(self, *, group_by: str, start: float | None, end: float | None) -> Report:
        """Blocking (database reads): run it off the event loop. Writes what is queued first, so the report
        includes every invocation answered before it was asked for."""
        self.flush()
        now = self._wall()
        until = now if end is None else end
        since = report_since(start)
        return build_report(
            self.ledger.invocations(since, until),
            self.ledger.intervals(start, until),
            self.prices,
            self._first_resource_at,
            group_by=group_by,
            start=start,
            end=until,
            now=now,
        )
