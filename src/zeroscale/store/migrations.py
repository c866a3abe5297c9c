"""Versioned schema upgrades, the same on SQLite and PostgreSQL.

Each part that owns tables (resources, the usage ledger, the metric history, the front ends) brings its
``MetaData`` and the ordered ``Step``s that take a database written by an older zeroscale to its current
shape, and calls ``upgrade(engine, metadata, steps)`` when it opens the database:

- missing tables are created at their current shape;
- each step not yet recorded in ``schema_migrations`` runs once, in the same transaction as its record;
  steps are written so that they also succeed on a table that ``create_all`` just made at the current shape
  (``AddColumn`` adds a column only where it is missing), so a fresh database and an upgraded one end up
  the same;
- on PostgreSQL a transaction-scoped advisory lock serialises front ends that start together; on SQLite
  the first write takes the database's lock.

A step is never edited once released: a change to the schema is a new step at the end of its part's list.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Column, Double, MetaData, String, Table, insert, inspect, select, text
from sqlalchemy.engine import Connection, Engine

_LOCK_KEY = 0x7A65726F  # "zero": the advisory lock id every front end takes while upgrading

registry = MetaData()
schema_migrations = Table(
    "schema_migrations",
    registry,
    Column("step", String(255), primary_key=True),  # "<part>:<number>:<description>"
    Column("applied_at", Double, nullable=False),
)


@dataclass(frozen=True)
class Step:
    """One change to a part's schema; ``name`` is unique within the part and never reused."""

    name: str
    apply: Callable[[Connection], None]


def add_column(table: str, column: Column[object], default_sql: str | None = None) -> Step:
    """``ALTER TABLE table ADD COLUMN column`` where the table lacks it. The column is nullable, or NOT NULL
    with ``default_sql`` (an SQL literal) filling the rows already there."""

    def apply(conn: Connection) -> None:
        if column.name in {c["name"] for c in inspect(conn).get_columns(table)}:
            return
        quote = conn.dialect.identifier_preparer.quote
        ddl = (
            f"ALTER TABLE {quote(table)} ADD COLUMN {quote(column.name)} {column.type.compile(conn.dialect)}"
        )
        if default_sql is not None:
            ddl += f" DEFAULT {default_sql}"
            if not column.nullable:
                ddl += " NOT NULL"
        conn.execute(text(ddl))

    return Step(f"add {table}.{column.name}", apply)


def add_index(table: str, name: str, columns: Sequence[str]) -> Step:
    """``CREATE INDEX IF NOT EXISTS name ON table (columns)``."""

    def apply(conn: Connection) -> None:
        quote = conn.dialect.identifier_preparer.quote
        cols = ", ".join(quote(c) for c in columns)
        conn.execute(text(f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {quote(table)} ({cols})"))

    return Step(f"index {table}.{name}", apply)


def upgrade(engine: Engine, part: str, metadata: MetaData, steps: Sequence[Step] = ()) -> list[str]:
    """Bring ``part``'s tables to their current shape; the names of the steps that ran now."""
    ran: list[str] = []
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        registry.create_all(conn)
        metadata.create_all(conn)
        done = {row[0] for row in conn.execute(select(schema_migrations.c.step))}
        for number, step in enumerate(steps, start=1):
            key = f"{part}:{number}:{step.name}"
            if key in done:
                continue
            step.apply(conn)
            conn.execute(insert(schema_migrations).values(step=key, applied_at=time.time()))
            ran.append(key)
    return ran


def applied(engine: Engine) -> list[str]:
    """Every step recorded in the database, in the order they ran."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(schema_migrations.name):
            return []
        rows = conn.execute(
            select(schema_migrations.c.step).order_by(
                schema_migrations.c.applied_at, schema_migrations.c.step
            )
        )
        return [row[0] for row in rows]
