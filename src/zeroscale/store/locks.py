"""Locks on what a quota counts, so that front ends checking the same quota at once take turns.

A quota is checked by counting inside the transaction that writes the record it bounds. On SQLite that
count is exact already: the write took the database's one write lock, which every writer, of any process,
waits for. On PostgreSQL (READ COMMITTED) two transactions can each count before the other commits, both
pass, and the quota is exceeded; so each first takes a transaction-scoped advisory lock on what it counts
(the kind, and the IAM user for a per-user quota): the second waits for the first's commit, and its count,
a new statement, sees the first's row. Released at commit or rollback, whatever happens to the process.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable

from sqlalchemy import text
from sqlalchemy.engine import Connection

# The two-key form: a key space of its own, apart from the one-key lock of schema upgrades (migrations.py).
_LOCK = text("SELECT pg_advisory_xact_lock(CAST(:k1 AS integer), CAST(:k2 AS integer))")


def _key(name: str) -> int:
    """A signed 32-bit key for ``name``, the same in every process (Python's ``hash()`` of a string is salted
    per process). Two names with one key only make their quotas take turns too."""
    value = zlib.crc32(name.encode())
    return value - (1 << 32) if value >= 1 << 31 else value


def lock_counted(conn: Connection, counted: Iterable[tuple[str, str]]) -> None:
    """Hold, until ``conn``'s transaction ends, the locks of what these quotas count: (kind, IAM user id, ""
    for the account's). Taken in one order by everyone, so that no two transactions wait for each other's."""
    if conn.dialect.name != "postgresql":
        return  # SQLite: the write before the count holds the database's write lock (see above)
    for k1, k2 in sorted({(_key(kind), _key(creator)) for kind, creator in counted}):
        conn.execute(_LOCK, {"k1": k1, "k2": k2})
