"""The front ends sharing one database: one row each in ``frontends``, refreshed by a heartbeat.

A front end is live while its row was seen less than ``ttl_s`` ago. ``joined_at`` orders the live ones
(oldest first) for the concurrency shares; it is kept across a restart within ``ttl_s`` (the same
identity, from the data directory) and reset when a front end comes back after it was considered dead.
Thread-safe and blocking: call it off the event loop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import Column, Double, Integer, MetaData, String, Table, delete, insert, select, update

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


class Frontends:
    def __init__(self, url: str, ttl_s: float) -> None:
        self._engine = make_engine(url)
        self._lock = threading.Lock()
        self.ttl_s = ttl_s
        upgrade(self._engine, "frontends", metadata)

    def beat(self, me: Frontend) -> None:
        """Register ``me`` or refresh its row (``me.seen_at`` is now)."""
        with self._lock, self._engine.begin() as conn:
            row = conn.execute(select(frontends).where(frontends.c.id == me.id)).mappings().first()
            if row is None:
                conn.execute(insert(frontends).values(**_values(me)))
                return
            joined = row["joined_at"] if me.seen_at - row["seen_at"] < self.ttl_s else me.seen_at
            values = _values(me) | {"joined_at": min(joined, me.seen_at)}
            conn.execute(update(frontends).where(frontends.c.id == me.id).values(**values))

    def live(self, now: float) -> list[Frontend]:
        """Front ends seen within ``ttl_s`` of ``now``, oldest member first."""
        query = (
            select(frontends)
            .where(frontends.c.seen_at > now - self.ttl_s)
            .order_by(frontends.c.joined_at, frontends.c.id)
        )
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            Frontend(r["id"], r["address"], int(r["pid"]), float(r["joined_at"]), float(r["seen_at"]))
            for r in rows
        ]

    def leave(self, frontend_id: str) -> None:
        """A clean stop: the others need not wait ``ttl_s`` to take over its share."""
        with self._lock, self._engine.begin() as conn:
            conn.execute(delete(frontends).where(frontends.c.id == frontend_id))

    def forget_dead(self, now: float, older_than_s: float = 86400.0) -> int:
        with self._lock, self._engine.begin() as conn:
            result = conn.execute(delete(frontends).where(frontends.c.seen_at < now - older_than_s))
        return int(result.rowcount or 0)

    def close(self) -> None:
        with self._lock:
            self._engine.dispose()


def _values(f: Frontend) -> dict[str, object]:
    return {"id": f.id, "address": f.address, "pid": f.pid, "joined_at": f.joined_at, "seen_at": f.seen_at}
