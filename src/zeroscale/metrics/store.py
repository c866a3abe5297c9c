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
from collections.abc import Set as AbstractSet
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
    select,
)

from zeroscale.metrics.history import Key, Series, Stat, minute_of
from zeroscale.store.engine import make_engine
from zeroscale.store.migrations import upgrade
from zeroscale.store.upsert import Columns, upsert

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


# Endpoints per query of ``query_series``: well under any database's limit on a statement's parameters
_IN_CHUNK = 500


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
        it): a row is added to in SQL, in the statement that inserts it (sum + this sum, the lesser
        minimum, ...; ``store/upsert.py``), never read and written back, so no front end's statistics
        overwrite another's, whichever inserted the row. A minute with no samples adds nothing to a row
        that is there (its minimum is +inf, its maximum -inf)."""
        if not stats:
            return
        with self._lock, self._engine.begin() as conn:
            upsert(conn, metric_minutes, [_row(key, stat) for key, stat in stats.items()], _add)

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

    def query_series(
        self, series: AbstractSet[Series], since: float, until: float
    ) -> dict[Series, dict[int, Stat]]:
        """The stored minutes of each of ``series`` (lower-cased endpoints) that start in [minute of
        ``since``, ``until``), by minute: one query for the lot (its endpoints ``_IN_CHUNK`` at a time),
        where ``query`` would be one each."""
        c = metric_minutes.c
        endpoints = sorted({endpoint for endpoint, _, _ in series})
        names = sorted({metric for _, _, metric in series})
        out: dict[Series, dict[int, Stat]] = {}
        with self._lock, self._engine.connect() as conn:
            for i in range(0, len(endpoints), _IN_CHUNK):
                conditions = [
                    c.endpoint.in_(endpoints[i : i + _IN_CHUNK]),
                    c.minute >= minute_of(since),
                    c.metric.in_(names),
                ]
                if until != math.inf:
                    conditions.append(c.minute < until)
                for r in conn.execute(select(metric_minutes).where(and_(*conditions))):
                    key = (r.endpoint, r.variant, r.metric)
                    if key in series:
                        out.setdefault(key, {})[int(r.minute)] = _stat(r)
        return out

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


def _add(stored: Columns, new: Columns) -> dict[str, Any]:
    """A stored minute's statistics with a new part's added."""
    return {
        "sum": stored.sum + new.sum,
        "sample_count": stored.sample_count + new.sample_count,
        "minimum": case((stored.minimum < new.minimum, stored.minimum), else_=new.minimum),
        "maximum": case((stored.maximum > new.maximum, stored.maximum), else_=new.maximum),
    }


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
