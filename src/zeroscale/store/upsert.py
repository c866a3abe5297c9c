"""Insert rows, or change the rows already there, in one statement: ``INSERT ... ON CONFLICT DO UPDATE``.

Front ends sharing a database write the same rows at about the same moment (the same metric minutes, a
user's inline policy put through two of them). Read-then-write (an UPDATE, then an INSERT when it changed
nothing) loses to a row another transaction inserts in between: the INSERT fails on the primary key, and the
whole call had to run again. One upsert statement cannot lose that way: the database takes the row's lock
and either inserts it or applies the update to the row that is there, whoever inserted it.

SQLite (3.24 and later) and PostgreSQL spell it the same way, and SQLAlchemy gives each dialect's insert the
same ``on_conflict_do_update``; they are the two databases zeroscale stores its state in (``--database-url``
refuses others).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.sql.base import ReadOnlyColumnCollection

DIALECTS = ("sqlite", "postgresql")

# (the stored row's columns, the columns of the row that was to be inserted) -> the stored row's new values
Columns = ReadOnlyColumnCollection[str, Any]
Merge = Callable[[Columns, Columns], Mapping[str, Any]]


def replace(stored: Columns, new: Columns) -> Mapping[str, Any]:
    """The default merge: every column outside the key takes the new row's value."""
    del stored
    return {column.name: column for column in new if not column.primary_key}


def upsert(conn: Connection, table: Table, rows: Sequence[Mapping[str, Any]], merge: Merge = replace) -> None:
    """Insert ``rows`` into ``table``; where a row with the same primary key is there, set its columns to
    what ``merge`` says instead (``replace``: the new row's). All in ``conn``'s transaction."""
    if not rows:
        return
    name = conn.dialect.name
    if name == "postgresql":
        statement: Any = postgresql.insert(table)
    elif name == "sqlite":
        statement = sqlite.insert(table)
    else:
        raise NotImplementedError(f"zeroscale stores its state in SQLite or PostgreSQL, not {name}")
    keys = [column.name for column in table.primary_key.columns]
    changes = merge(table.c, statement.excluded)  # excluded: the row that was to be inserted
    conn.execute(statement.on_conflict_do_update(index_elements=keys, set_=dict(changes)), list(rows))
