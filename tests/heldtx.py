"""Racing another front end's transaction, made deterministic (PostgreSQL): the other front end's statements
run in a transaction held open, the code under test runs in a thread, and the transaction commits only
once that thread waits on one of its locks. What the code does when the other write lands between its
read and its own write is then what the test sees, every run."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import create_engine, text

from zeroscale.testing import wait_for

_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


def beside_a_held_transaction(url: str, theirs: Sequence[Any], ours: Callable[[], object]) -> None:
    """Run ``ours`` while a transaction that ran ``theirs`` (SQLAlchemy statements) is held, commit it once
    ``ours`` waits on it, and raise what ``ours`` raised, if anything."""
    engine = create_engine(url)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            ours()
        except BaseException as exc:  # raised in the test's thread below
            failed.append(exc)

    try:
        with engine.connect() as other:
            held = other.begin()
            for statement in theirs:
                other.execute(statement)
            thread = threading.Thread(target=run)
            thread.start()
            with engine.connect() as watch:
                wait_for(lambda: watch.execute(_WAITING).scalar() == 1, timeout_s=10, interval_s=0.02)
            held.commit()
        thread.join(10)
        if thread.is_alive():
            raise AssertionError("the call under test did not finish within 10 s of the commit")
    finally:
        engine.dispose()
    if failed:
        raise failed[0]
