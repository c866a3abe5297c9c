"""The usage ledger: metering's tables on the store's database URL (SQLite by default, PostgreSQL as is),
through SQLAlchemy Core. The only code in metering that touches the database.

- ``usage_invocations``: one row per finished invocation (append-only).
- ``usage_provisioned``: one row per interval a variant had provisioned concurrency; ``ended_at`` is NULL
  while it lasts and ``seen_at`` is refreshed by the running server, so after a crash the interval is closed
  at the last moment a server confirmed it (``close_dangling``) instead of being lost or running on.
  Several front ends on one database each meter their own share (``frontend``: who opened the interval; a
  front end closes and refreshes only its own).
- ``usage_meta``: small facts, e.g. when the first resource was created (the free tier's start).
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    case,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from zeroscale.metering.records import ProvisionedInterval, UsageRecord
from zeroscale.store.engine import make_engine
from zeroscale.store.migrations import Step, add_column, add_index, upgrade
from zeroscale.store.upsert import upsert

FIRST_RESOURCE_AT = "first_resource_at"
# Rows per INSERT statement: 14 parameters each, within SQLite's 32,766 and PostgreSQL's 65,535 a statement.
ROWS_PER_INSERT = 256
# How much of a front end's usage journal (journal.py) is in this ledger: one key per front end, as each
# keeps its own journal in its own data directory ("journal_position:<front end id>"). The bare key is a
# ledger's without a front end id, and what a front end wrote before the keys were its own: read when it
# has none yet (its first start after the upgrade), never written by one that has an id.
JOURNAL_POSITION = "journal_position"
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements only INTEGER PRIMARY KEY

metadata = MetaData()

invocations = Table(
    "usage_invocations",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("endpoint", String(255), nullable=False),
    Column("variant", String(255), nullable=False),
    Column("worker_id", String(255), nullable=False),
    Column("started_at", Double, nullable=False),
    Column("at", Double, nullable=False),
    Column("model_s", Double, nullable=False),
    Column("billed_ms", BigInteger, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("bytes_in", BigInteger, nullable=False),
    Column("bytes_out", BigInteger, nullable=False),
    Column("setup_s", Double, nullable=True),
    Column("status", Integer, nullable=False),
    Column("error_code", String(255), nullable=False),
    Column("provisioned", Boolean, nullable=False),
    Index("ix_usage_invocations_at", "at"),
)

provisioned = Table(
    "usage_provisioned",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("endpoint", String(255), nullable=False),
    Column("variant", String(255), nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("concurrency", Integer, nullable=False),
    Column("started_at", Double, nullable=False),
    Column("ended_at", Double, nullable=True),
    Column("seen_at", Double, nullable=False),
    Column("frontend", String(64), nullable=True),  # NULL: written before front ends had ids
    Index("ix_usage_provisioned_endpoint", "endpoint", "ended_at"),  # an endpoint's open intervals
)

meta = Table(
    "usage_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

_INVOCATION_COLUMNS = [c.name for c in invocations.columns if c.name != "id"]
# Never edit a released step: append (see store/migrations.py).
STEPS: list[Step] = [
    add_column("usage_provisioned", Column("frontend", String(64), nullable=True)),
    add_index("usage_provisioned", "ix_usage_provisioned_endpoint", ["endpoint", "ended_at"]),
]


@dataclass(frozen=True, slots=True)
class Opened:
    """A variant went live with provisioned concurrency (closing any interval it still had open)."""

    endpoint: str
    variant: str
    memory_mb: int
    concurrency: int
    at: float


@dataclass(frozen=True, slots=True)
class Closed:
    """A variant went away (update, delete, shutdown): its open interval ends."""

    endpoint: str
    variant: str
    at: float


Change = Opened | Closed


class Ledger:
    """Thread-safe; every method is one transaction."""

    def __init__(self, url: str, frontend: str | None = None) -> None:
        """``frontend``: the front end this ledger writes for (its provisioned intervals are its own)."""
        self._engine = make_engine(url)
        self._lock = threading.Lock()
        self._frontend = frontend
        upgrade(self._engine, "usage", metadata, STEPS)
        self._insert_sql = functools.partial(_insert_sql, self._engine.dialect.paramstyle)
        self._position_key = position_key(frontend)
        self._native_key = f"{self._position_key}:native"  # the native data plane's journal (its own)

    # ---- writes (the sink's writer thread, and the control plane once) ----
    def write(
        self,
        records: Sequence[UsageRecord],
        changes: Sequence[Change],
        heartbeat_at: float | None = None,
        journal_position: str | None = None,
        native_position: str | None = None,
    ) -> None:
        """Append ``records``, apply interval ``changes`` in order (an Opened first closes any open
        interval of the same variant at its start), and with ``heartbeat_at`` mark open intervals seen;
        ``journal_position`` (how far the usage journal is folded in) is committed with them, and
        ``native_position`` (the native data plane's journal)."""
        with self._lock, self._engine.begin() as conn:
            if journal_position is not None:  # this front end's key: no other writes it
                upsert(conn, meta, [{"key": self._position_key, "value": journal_position}])
            if native_position is not None:
                upsert(conn, meta, [{"key": self._native_key, "value": native_position}])
            for start, rows in insert_chunks(len(records)):
                # Many rows to one INSERT: one statement step (the driver releases the GIL once per step,
                # not once per row, so the event loop's thread is not handed the GIL back and forth).
                params = [value for r in records[start : start + rows] for value in _invocation_row(r)]
                conn.exec_driver_sql(self._insert_sql(rows), tuple(params))
            for change in changes:
                self._close(conn, change.endpoint, change.variant, change.at, self._mine())
                if isinstance(change, Opened):
                    conn.execute(
                        insert(provisioned).values(
                            endpoint=change.endpoint,
                            variant=change.variant,
                            memory_mb=change.memory_mb,
                            concurrency=change.concurrency,
                            started_at=change.at,
                            ended_at=None,
                            seen_at=change.at,
                            frontend=self._frontend,
                        )
                    )
            if heartbeat_at is not None:
                conn.execute(
                    update(provisioned)
                    .where(provisioned.c.ended_at.is_(None) & (provisioned.c.seen_at < heartbeat_at))
                    .where(self._mine())
                    .values(seen_at=heartbeat_at)
                )

    def _mine(self) -> Any:
        c = provisioned.c.frontend
        return c.is_(None) if self._frontend is None else c == self._frontend

    @staticmethod
    def _close(conn: Connection, endpoint: str, variant: str, at: float, mine: Any) -> None:
        open_rows = (
            (provisioned.c.endpoint == endpoint)
            & (provisioned.c.variant == variant)
            & provisioned.c.ended_at.is_(None)
            & mine
        )
        # Never end before it started (the wall clock may step back).
        ended = case((provisioned.c.started_at > at, provisioned.c.started_at), else_=at)
        conn.execute(update(provisioned).where(open_rows).values(ended_at=ended))

    def close_dangling(self, stale_before: float | None = None) -> int:
        """Close intervals a crashed server left open at the last time it saw them; the number closed.

        Those of this front end (or of no front end) always; another front end's only when it has not
        refreshed them since ``stale_before`` (it is dead; a live one refreshes its own every second)."""
        dangling = self._mine() | provisioned.c.frontend.is_(None)
        if stale_before is not None:
            dangling = dangling | (provisioned.c.seen_at < stale_before)
        with self._lock, self._engine.begin() as conn:
            result = conn.execute(
                update(provisioned)
                .where(provisioned.c.ended_at.is_(None) & dangling)
                .values(ended_at=provisioned.c.seen_at)
            )
        return int(result.rowcount or 0)

    def running(self, endpoint: str, seen_since: float, *, others: bool = False) -> dict[str, int]:
        """The provisioned workers of each variant of ``endpoint`` metered as up now: the sums of every front
        end's open intervals seen since ``seen_since`` (a dead front end's are not); with ``others``, the
        other front ends' only."""
        query = (
            select(provisioned.c.variant, func.sum(provisioned.c.concurrency))
            .where(
                (provisioned.c.endpoint == endpoint)
                & provisioned.c.ended_at.is_(None)
                & (provisioned.c.seen_at >= seen_since)
            )
            .group_by(provisioned.c.variant)
        )
        if others:
            query = query.where(~self._mine())
        with self._lock, self._engine.connect() as conn:
            return {str(variant): int(workers) for variant, workers in conn.execute(query)}

    def mark_first_resource(self, at: float) -> float:
        """Record when the first resource was created, once; returns the recorded moment."""
        with self._lock:
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(meta).values(key=FIRST_RESOURCE_AT, value=repr(at)))
            except IntegrityError:
                pass
        found = self.first_resource_at()
        return at if found is None else found

    # ---- reads ----
    def first_resource_at(self) -> float | None:
        with self._lock, self._engine.connect() as conn:
            value = conn.execute(select(meta.c.value).where(meta.c.key == FIRST_RESOURCE_AT)).scalar()
        return None if value is None else float(value)

    def journal_position(self) -> str | None:
        """How far this front end's journal is folded in: its own key, else the bare key (written before the
        keys were per front end), else None."""
        keys = [self._position_key, JOURNAL_POSITION]
        with self._lock, self._engine.connect() as conn:
            found = dict(conn.execute(select(meta.c.key, meta.c.value).where(meta.c.key.in_(keys))).all())
        value = found.get(keys[0], found.get(JOURNAL_POSITION))
        return None if value is None else str(value)

    def native_position(self) -> str | None:
        """How far the native data plane's journal is folded in, or None."""
        with self._lock, self._engine.connect() as conn:
            value = conn.execute(select(meta.c.value).where(meta.c.key == self._native_key)).scalar()
        return None if value is None else str(value)

    def invocations(self, since: float | None = None, until: float | None = None) -> list[UsageRecord]:
        """Records with ``since <= at < until``, in the order they happened."""
        query = select(invocations)
        if since is not None:
            query = query.where(invocations.c.at >= since)
        if until is not None:
            query = query.where(invocations.c.at < until)
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(query.order_by(invocations.c.at, invocations.c.id)).mappings().all()
        return [
            UsageRecord(**{name: row[name] for name in _INVOCATION_COLUMNS}, id=int(row["id"]))
            for row in rows
        ]

    def count_invocations(self) -> int:
        with self._lock, self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(invocations)).scalar_one())

    def intervals(self, since: float | None = None, until: float | None = None) -> list[ProvisionedInterval]:
        """Intervals that overlap ``[since, until)``, oldest first."""
        query = select(provisioned)
        if until is not None:
            query = query.where(provisioned.c.started_at < until)
        if since is not None:
            query = query.where(or_(provisioned.c.ended_at.is_(None), provisioned.c.ended_at > since))
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(query.order_by(provisioned.c.started_at, provisioned.c.id)).mappings().all()
        return [
            ProvisionedInterval(
                endpoint=row["endpoint"],
                variant=row["variant"],
                memory_mb=int(row["memory_mb"]),
                concurrency=int(row["concurrency"]),
                started_at=float(row["started_at"]),
                ended_at=None if row["ended_at"] is None else float(row["ended_at"]),
                seen_at=float(row["seen_at"]),
                id=int(row["id"]),
            )
            for row in rows
        ]

    def close(self) -> None:
        with self._lock:
            self._engine.dispose()


def position_key(frontend: str | None) -> str:
    """The ``usage_meta`` key of ``frontend``'s journal position (within the column's 64 characters: a
    longer id is hashed)."""
    if frontend is None:
        return JOURNAL_POSITION
    ident = frontend if len(frontend) <= 40 else hashlib.sha256(frontend.encode()).hexdigest()[:40]
    return f"{JOURNAL_POSITION}:{ident}"


def insert_chunks(count: int) -> Iterator[tuple[int, int]]:
    """``(start, rows)`` for each INSERT that writes ``count`` records: full statements of
    ``ROWS_PER_INSERT`` rows, then the rest as powers of two, largest first (88: 64, 16, 8).

    So only ``log2(ROWS_PER_INSERT) + 1`` statement texts ever exist. The driver keeps texts it runs
    compiled (sqlite3: the connection's cache of 128 statements; psycopg: one run five times is prepared on
    the server), and a compiled INSERT of a few hundred rows holds ~200 KB: with a text for every remainder a
    flush can leave, each new remainder made the server larger."""
    start = 0
    for rows in _CHUNK_ROWS:
        while count - start >= rows:  # more than once only for full statements
            yield start, rows
            start += rows


# 256, 128, ..., 1: the only row counts a statement has
_CHUNK_ROWS = tuple(ROWS_PER_INSERT >> shift for shift in range(ROWS_PER_INSERT.bit_length()))


@functools.lru_cache(maxsize=len(_CHUNK_ROWS))
def _insert_sql(paramstyle: str, rows: int) -> str:
    """``INSERT ... VALUES (...), (...)`` of ``rows`` rows, in the driver's parameter style."""
    n = len(_INVOCATION_COLUMNS)
    if paramstyle == "qmark":
        marks = ["?"] * (n * rows)
    elif paramstyle in ("format", "pyformat"):
        marks = ["%s"] * (n * rows)
    elif paramstyle == "numeric":
        marks = [f":{i}" for i in range(1, n * rows + 1)]
    else:
        raise ValueError(f"unsupported DB-API paramstyle {paramstyle!r}")
    values = ", ".join(f"({', '.join(marks[i : i + n])})" for i in range(0, n * rows, n))
    return f"INSERT INTO {invocations.name} ({', '.join(_INVOCATION_COLUMNS)}) VALUES {values}"


def _invocation_row(r: UsageRecord) -> tuple[Any, ...]:
    # the order of _INVOCATION_COLUMNS (checked by tests/metering/test_sink.py)
    return (r.endpoint, r.variant, r.worker_id, r.started_at, r.at, r.model_s, r.billed_ms, r.memory_mb,
            r.bytes_in, r.bytes_out, r.setup_s, r.status, r.error_code, r.provisioned)  # fmt: skip
