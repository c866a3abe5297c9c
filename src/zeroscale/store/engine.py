"""One way to open a database: SQLAlchemy engines tuned for SQLite (WAL, busy timeout, usable from the event
loop thread and worker threads alike) and plain engines for everything else (PostgreSQL unchanged)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import StaticPool

SQLITE_BUSY_TIMEOUT_MS = 10_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    database = parsed.database or ""
    if database in ("", ":memory:"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, poolclass=StaticPool)
    else:
        path = Path(database)
        path.parent.mkdir(parents=True, exist_ok=True)
        # the server's alone (SQLite gives its -wal and -shm files the same mode): it holds models'
        # Environment values, often secrets, and the audit trail
        path.touch(mode=0o600, exist_ok=True)
        with contextlib.suppress(PermissionError):  # a file of another user's: left as it is
            path.chmod(0o600)
        engine = create_engine(url, connect_args={"check_same_thread": False})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def shares_one_connection(engine: Engine) -> bool:
    """Whether every connection of ``engine`` is the same one (an in-memory SQLite database lives in it): a
    connection held for reads would then hold the writes' connection too, and change how they commit."""
    return isinstance(engine.pool, StaticPool)
