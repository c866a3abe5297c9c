"""The one-minute history on disk: one SQL table, ``metric_minutes``, in the server's database
(``Settings.db_url``: SQLite in the data directory, or PostgreSQL), through SQLAlchemy Core.

One row per (endpoint, minute, variant, metric) with the minute's statistics. Writing merges into a row
that is already there (a minute flushed at shutdown and continued after a restart), so writes can come in
any order and any number of times for the same minute. Blocking calls: run them off the event loop.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from zeroscale.metrics.history import Key, Stat, minute_of
from zeroscale.store.engine import make_engine
from zeroscale.store.migrations import upgrade

metadata = MetaData()

metric_minutes = Table(
    "metric_minutes",
    metadata,
    Column("endpoint", String(63), primary_key=True),  # lower-cased
    Column("minute", BigInteger, primary_key=True),  # epoch seconds of the minute's start
    Column("variant", String(63), primary_key=True),
    Column("metric", String(64), primary_key=True),
    Column("sum", Double, nullable=False),
    Column("sample_count", Integer, nullable=False),
    Column("minimum", Double, nullable=False),
    Column("maximum", Double, nullable=False),
)


def _stat(row: Any) -> Stat:
    return Stat(float(row.sum), int(row.sample_count), float(row.minimum), float(row.maximum))


class MinuteStore:
    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        self._lock = threading.Lock()
        upgrade(self._engine, "metrics", metadata)

    def write(self, stats: Mapping[Key, Stat]) -> None:
        """Add these minutes' statistics to what is stored, in one transaction. Front ends sharing the
        database write the same minutes at about the same moment (each flushes a finished minute 2 s after
        it): a row is added to in SQL (sum + this sum, the lesser minimum, ...), never read and written back,
        so no front end's statistics overwrite another's; a row another front end inserted meanwhile fails
        this transaction's insert, and the write runs again, adding to it."""
        if not stats:
            return
        with self._lock:
            try:
                self._write(stats)
            except IntegrityError:
                self._write(stats)

    def _write(self, stats: Mapping[Key, Stat]) -> None:
        c = metric_minutes.c
        with self._engine.begin() as conn:
            stored = self._existing(conn, stats.keys())
            fresh = []
            for key, stat in stats.items():
                if key not in stored:
                    fresh.append(_row(key, stat))
                    continue
                if not stat.count:
                    continue  # nothing observed: nothing to add
                conn.execute(
                    update(metric_minutes)
                    .where(_is(key))
                    .values(
                        sum=c.sum + stat.sum,
                        sample_count=c.sample_count + stat.count,
                        minimum=case((c.minimum < stat.minimum, c.minimum), else_=stat.minimum),
                        maximum=case((c.maximum > stat.maximum, c.maximum), else_=stat.maximum),
                    )
                )
            if fresh:
                conn.execute(insert(metric_minutes), fresh)

    def _existing(self, conn: Connection, keys: Iterable[Key]) -> dict[Key, Stat]:
        """The stored rows among ``keys``: one range query per endpoint."""
        ranges: dict[str, tuple[int, int]] = {}
        for k in keys:
            low, high = ranges.get(k.endpoint, (k.minute, k.minute))
            ranges[k.endpoint] = (min(low, k.minute), max(high, k.minute))
        wanted = set(keys)
        found: dict[Key, Stat] = {}
        for endpoint, (low, high) in ranges.items():
            query = select(metric_minutes).where(
                and_(
                    metric_minutes.c.endpoint == endpoint,
                    metric_minutes.c.minute >= low,
                    metric_minutes.c.minute <= high,
                )
            )
            for row in conn.execute(query):
                key = Key(row.endpoint, int(row.minute), row.variant, row.metric)
                if key in wanted:
                    found[key] = _stat(row)
        return found

    def query(
        self,
        endpoint: str,
        since: float,
        until: float,
        metrics: Iterable[str] = (),
        variant: str | None = None,
    ) -> dict[Key, Stat]:
        """The stored minutes of an endpoint that start in [minute of ``since``, ``until``)."""
        c = metric_minutes.c
        conditions = [c.endpoint == endpoint.lower(), c.minute >= minute_of(since)]
        if until != math.inf:
            conditions.append(c.minute < until)
        names = list(metrics)
        if names:
            conditions.append(c.metric.in_(names))
        if variant is not None:
            conditions.append(c.variant == variant)
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(select(metric_minutes).where(and_(*conditions))).all()
        return {Key(r.endpoint, int(r.minute), r.variant, r.metric): _stat(r) for r in rows}

    def series(self, since: float) -> set[tuple[str, str, str]]:
        """Every (endpoint, variant, metric) with a minute stored since ``since``."""
        c = metric_minutes.c
        query = select(c.endpoint, c.variant, c.metric).where(c.minute >= minute_of(since)).distinct()
        with self._lock, self._engine.connect() as conn:
            return {(r.endpoint, r.variant, r.metric) for r in conn.execute(query)}

    def prune(self, before: float) -> int:
        """Delete the minutes that started before ``before``; returns how many rows went."""
        with self._lock, self._engine.begin() as conn:
            result = conn.execute(delete(metric_minutes).where(metric_minutes.c.minute < before))
        return int(result.rowcount or 0)

    def close(self) -> None:
        with self._lock:
            self._engine.dispose()


def _is(key: Key) -> Any:
    c = metric_minutes.c
    return and_(
        c.endpoint == key.endpoint, c.minute == key.minute, c.variant == key.variant, c.metric == key.metric
    )


def _row(key: Key, stat: Stat) -> dict[str, Any]:
    return {
        "endpoint": key.endpoint,
        "minute": key.minute,
        "variant": key.variant,
        "metric": key.metric,
        "sum": stat.sum,
        "sample_count": stat.count,
        "minimum": stat.minimum,
        "maximum": stat.maximum,
    }
