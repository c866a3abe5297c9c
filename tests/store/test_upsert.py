"""One statement that inserts a row or changes the one there, on both databases zeroscale stores its state
in; a third is refused by name, not written to with SQL it may not run."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Engine

from zeroscale.store.engine import make_engine
from zeroscale.store.upsert import Columns, upsert

metadata = MetaData()
counters = Table(
    "counters",
    metadata,
    Column("name", String(32), primary_key=True),
    Column("part", Integer, primary_key=True),
    Column("count", Integer, nullable=False),
    Column("label", String(32), nullable=False),
)


@pytest.fixture
def engine(db_url: str) -> Any:
    engine = make_engine(db_url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def stored(engine: Engine) -> dict[tuple[str, int], tuple[int, str]]:
    with engine.connect() as conn:
        return {(r.name, r.part): (r.count, r.label) for r in conn.execute(select(counters))}


def test_rows_are_inserted_and_a_row_there_is_replaced_outside_its_key(engine: Engine) -> None:
    with engine.begin() as conn:
        upsert(conn, counters, [{"name": "a", "part": 1, "count": 1, "label": "first"}])
    with engine.begin() as conn:
        upsert(
            conn,
            counters,
            [
                {"name": "a", "part": 1, "count": 5, "label": "second"},
                {"name": "a", "part": 2, "count": 7, "label": "new"},
            ],
        )
    assert stored(engine) == {("a", 1): (5, "second"), ("a", 2): (7, "new")}


def test_a_merge_combines_the_stored_row_with_the_new_one(engine: Engine) -> None:
    def add(old: Columns, new: Columns) -> dict[str, Any]:
        return {"count": old.count + new.count}  # the label stays the first row's

    with engine.begin() as conn:
        upsert(conn, counters, [{"name": "b", "part": 1, "count": 2, "label": "kept"}], add)
    for count in (3, 4):
        with engine.begin() as conn:
            upsert(conn, counters, [{"name": "b", "part": 1, "count": count, "label": "dropped"}], add)
    assert stored(engine) == {("b", 1): (9, "kept")}


def test_a_database_of_another_kind_is_refused_by_name() -> None:
    class Conn:  # what upsert reads of a connection before it writes: no MySQL server runs here
        dialect = mysql.dialect()

    with pytest.raises(NotImplementedError, match="SQLite or PostgreSQL, not mysql"):
        upsert(Conn(), counters, [{"name": "c", "part": 1, "count": 1, "label": ""}])  # type: ignore[arg-type]
