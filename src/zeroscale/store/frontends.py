"""The front ends sharing one database: one row each in ``frontends``, refreshed by a heartbeat.

A front end is live while its row was seen less than ``ttl_s`` ago, by the database's clock. ``joined_at``
orders the live ones (oldest first) for the concurrency shares; it is kept across a restart within
``ttl_s`` (the same identity, from the data directory) and reset when a front end comes back after it was
considered dead.
Thread-safe and blocking: call it off the event loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Double,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    insert,
    literal_column,
    select,
    update,
)

from zeroscale.store.engine import make_engine
from zeroscale.store.migrations import upgrade

metadata = MetaData()

frontends = Table(
    "frontends",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("address", String(255), nullable=False),  # host:port it serves on
    Column("pid", Integer, nullable=False),
    Column("joined_at", Double, nullable=False),
    Column("seen_at", Double, nullable=False),
)


@dataclass(frozen=True)
class Frontend:
    id: str
    address: str
    pid: int
    joined_at: float
    seen_at: float


def _now(dialect: str) -> Any:
    """The database's clock in epoch seconds: every front end's heartbeat and every liveness check use
    this one clock, so the front ends' own clocks may differ."""
    if dialect == "postgresql":
        return literal_column("extract(epoch from clock_timestamp())", Double)
    if dialect == "sqlite":
        return literal_column("((julianday('now') - 2440587.5) * 86400.0)", Double)
    return literal_column("extract(epoch from current_timestamp)", Double)


class Frontends:
    def __init__(self, url: str, ttl_s: float) -> None:
        self._engine = make_engine(url)
        self._lock = threading.Lock()
        self.ttl_s = ttl_s
        self._now = _now(self._engine.dialect.name)
        # SQLite is one machine's file: its front ends cannot be cut off from it while still serving
        self.networked = self._engine.dialect.name != "sqlite"
        upgrade(self._engine, "frontends", metadata)

    def beat(self, ident: str, address: str, pid: int) -> None:
        """Register this front end, or refresh its row; one that comes back after it was considered dead
        joins anew (it becomes the newest member)."""
        c = frontends.c
        with self._lock, self._engine.begin() as conn:
            now = float(conn.execute(select(self._now)).scalar_one())
            row = conn.execute(select(c.seen_at).where(c.id == ident)).first()
            if row is None:
                values = {"id": ident, "address": address, "pid": pid, "joined_at": now, "seen_at": now}
                conn.execute(insert(frontends).values(**values))
                return
            values = {"address": address, "pid": pid, "seen_at": now}
            if now - float(row.seen_at) >= self.ttl_s:
                values["joined_at"] = now
            conn.execute(update(frontends).where(c.id == ident).values(**values))

    def live(self) -> list[Frontend]:
        """Front ends seen within ``ttl_s``, oldest member first."""
        c = frontends.c
        query = select(frontends).where(c.seen_at > self._now - self.ttl_s).order_by(c.joined_at, c.id)
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            Frontend(r["id"], r["address"], int(r["pid"]), float(r["joined_at"]), float(r["seen_at"]))
            for r in rows
        ]

    def leave(self, ident: str) -> None:
        """A clean stop: the others need not wait ``ttl_s`` to take over its share."""
        with self._lock, self._engine.begin() as conn:
            conn.execute(delete(frontends).where(frontends.c.id == ident))

    def close(self) -> None:
        with self._lock:
            self._engine.dispose()
