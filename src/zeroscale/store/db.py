"""Resource state in one SQL table through SQLAlchemy Core (SQLite by default, PostgreSQL unchanged).

Every resource is one row of ``resources``: its kind, its name as the user spelled it (unique per kind,
case-insensitively, through ``key = lower(name)``), its ARN, times, status and wire-shaped document.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Double,
    MetaData,
    RowMapping,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from zeroscale.store.engine import make_engine

metadata = MetaData()

resources = Table(
    "resources",
    metadata,
    Column("kind", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("arn", String(2048), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("modified_at", Double, nullable=False),
    Column("status", String(64), nullable=True),
    Column("doc", JSON, nullable=False),
)


@dataclass
class Record:
    kind: str  # "model" | "endpoint-config" | "endpoint" | ...
    name: str  # as the user spelled it
    arn: str
    created_at: float
    modified_at: float
    status: str | None
    doc: dict[str, Any]  # the resource's wire-shaped document


class AlreadyExists(Exception):
    """A record of that kind and (case-insensitive) name is already stored."""




def _record(row: RowMapping) -> Record:
    return Record(
        kind=row["kind"],
        name=row["name"],
        arn=row["arn"],
        created_at=float(row["created_at"]),
        modified_at=float(row["modified_at"]),
        status=row["status"],
        doc=dict(row["doc"]),
    )


def _values(rec: Record) -> dict[str, Any]:
    return {
        "kind": rec.kind,
        "key": rec.name.lower(),
        "name": rec.name,
        "arn": rec.arn,
        "created_at": rec.created_at,
        "modified_at": rec.modified_at,
        "status": rec.status,
        "doc": rec.doc,
    }


class Store:
    """Thread-safe CRUD over ``resources``; every call is its own transaction."""

    def __init__(self, url: str) -> None:
        self._engine = make_engine(url)
        self._lock = threading.RLock()
        metadata.create_all(self._engine)

    def _where(self, kind: str, name: str) -> Any:
        return (resources.c.kind == kind) & (resources.c.key == name.lower())

    def insert(self, rec: Record) -> None:
        """Store a new record; raises AlreadyExists when (kind, lower(name)) is taken."""
        with self._lock:
            try:
                with self._engine.begin() as conn:
                    conn.execute(insert(resources).values(**_values(rec)))
            except IntegrityError as exc:
                raise AlreadyExists(f"{rec.kind} {rec.name!r} already exists") from exc

    def get(self, kind: str, name: str) -> Record | None:
        with self._lock, self._engine.connect() as conn:
            row = conn.execute(select(resources).where(self._where(kind, name))).mappings().first()
        return None if row is None else _record(row)

    def update(self, rec: Record) -> None:
        """Replace every field of the record with the same (kind, lower(name)); a no-op when it is gone."""
        with self._lock, self._engine.begin() as conn:
            conn.execute(update(resources).where(self._where(rec.kind, rec.name)).values(**_values(rec)))

    def delete(self, kind: str, name: str) -> bool:
        """Remove a record; True when one was removed."""
        with self._lock, self._engine.begin() as conn:
            result = conn.execute(delete(resources).where(self._where(kind, name)))
        return bool(result.rowcount)

    def list(self, kind: str) -> list[Record]:
        """Every record of a kind, oldest first."""
        query = select(resources).where(resources.c.kind == kind)
        with self._lock, self._engine.connect() as conn:
            rows = conn.execute(query.order_by(resources.c.created_at, resources.c.key)).mappings().all()
        return [_record(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._engine.dispose()
