"""Quotas hold exactly when front ends write at once: several stores on one database (as several front ends
are), each with threads inserting records of one limited kind at the same moment, never leave more than the
limit. To make the race certain rather than lucky, every insert waits a moment after writing its row and
before counting (a listener on the store's engine): without a lock on what the quota counts, each counts
before the others commit, and all pass."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from zeroscale.errors import ResourceLimitExceeded
from zeroscale.store import Record, Store
from zeroscale.store.db import Limit, Quota, Reads

FRONT_ENDS = 3
THREADS_EACH = 2
ROUNDS = 3
RACE_WINDOW_S = 0.05


def _widen_race_window(store: Store) -> None:
    """Each insert or update of a row holds its transaction open a moment before it counts."""

    @event.listens_for(store._engine, "after_cursor_execute")
    def pause(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT INTO RESOURCES", "UPDATE RESOURCES")):
            time.sleep(RACE_WINDOW_S)


@pytest.fixture
def front_ends(db_url: str, request: pytest.FixtureRequest) -> Iterator[list[Store]]:
    scope: str = request.param
    limit = Limit(2, "endpoints", "--max-resources")
    stores = [
        Store(
            db_url,
            limits={"endpoint": limit} if scope == "account" else {},  # "none": a Quota's alone
            user_limits={"endpoint": limit} if scope == "user" else {},
            creator=lambda: "AIDAALICE",
        )
        for _ in range(FRONT_ENDS)
    ]
    for store in stores:
        _widen_race_window(store)
    yield stores
    for store in stores:
        store.close()


def _at_once(stores: list[Store], write: Any) -> tuple[int, int]:
    """Every store's threads call ``write(store, n)`` together: how many wrote, how many were refused."""
    workers = [(store, i) for store in stores for i in range(THREADS_EACH)]
    start = threading.Barrier(len(workers))
    wrote, refused, failed = [], [], []

    def run(store: Store, n: int) -> None:
        start.wait()
        try:
            write(store, n)
            wrote.append(n)
        except ResourceLimitExceeded:
            refused.append(n)
        except Exception as exc:  # any other error fails the test below
            failed.append(exc)

    threads = [threading.Thread(target=run, args=(store, n)) for n, (store, _) in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failed, failed
    return len(wrote), len(refused)


@pytest.mark.parametrize("front_ends", ["account", "user"], indirect=True)
def test_a_count_limit_holds_when_front_ends_insert_at_once(front_ends: list[Store]) -> None:
    """The account's quota (near its limit every insert counts) and a user's: of six inserts at once with
    room for two, two are written and four refused, round after round."""
    for round_ in range(ROUNDS):

        def insert(store: Store, n: int, round_: int = round_) -> None:
            store.insert(Record("endpoint", f"ep-{round_}-{n}", f"arn:{n}", 1.0, 1.0, "InService", {}))

        wrote, refused = _at_once(front_ends, insert)
        held = front_ends[0].list("endpoint")
        assert (wrote, refused, len(held)) == (2, FRONT_ENDS * THREADS_EACH - 2, 2), f"round {round_}"
        for rec in held:
            front_ends[0].delete("endpoint", rec.name)


def _memory(name: str, wanted_mb: int, most_mb: int = 2048) -> Quota:
    """A user's endpoints hold ``doc["mb"]`` each; ``name`` would hold ``wanted_mb``: refused past
    ``most_mb`` (Endpoints' always-warm memory quota, in miniature)."""

    def check(reads: Reads) -> None:
        held = sum(r.doc["mb"] for r in reads.created_by("endpoint", "AIDAALICE") if r.name != name)
        if held + wanted_mb > most_mb:
            raise ResourceLimitExceeded(f"{held} MB held")

    return Quota("endpoint", "AIDAALICE", check)


@pytest.mark.parametrize("front_ends", ["none"], indirect=True)
def test_a_quota_holds_when_front_ends_insert_and_update_at_once(front_ends: list[Store]) -> None:
    """A Quota's check runs in the write's transaction under the user's lock: of six inserts of 1 GB at once
    with room for 2 GB, two are written; then of six updates growing endpoints from nothing to 1 GB at
    once, with the same room, two are written."""

    def insert(store: Store, n: int) -> None:
        rec = Record("endpoint", f"new-{n}", f"arn:{n}", 1.0, 1.0, "InService", {"mb": 1024})
        store.insert(rec, quota=_memory(rec.name, 1024))

    assert _at_once(front_ends, insert) == (2, FRONT_ENDS * THREADS_EACH - 2)
    first = front_ends[0]
    assert sum(r.doc["mb"] for r in first.list("endpoint")) == 2048
    for rec in first.list("endpoint"):
        first.delete("endpoint", rec.name)
    for n in range(FRONT_ENDS * THREADS_EACH):  # nothing warm yet: no quota to keep
        first.insert(Record("endpoint", f"ep-{n}", f"arn:{n}", 1.0, 1.0, "InService", {"mb": 0}))

    def grow(store: Store, n: int) -> None:
        rec = Record("endpoint", f"ep-{n}", f"arn:{n}", 1.0, 2.0, "Updating", {"mb": 1024})
        assert store.update(rec, if_status="InService", quota=_memory(rec.name, 1024))

    assert _at_once(front_ends, grow) == (2, FRONT_ENDS * THREADS_EACH - 2)
    stored = first.list("endpoint")
    assert sum(r.doc["mb"] for r in stored) == 2048
    assert sorted(r.status for r in stored) == ["InService"] * 4 + ["Updating"] * 2  # refused: unwritten
