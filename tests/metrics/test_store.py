"""The history table: merge on write, queries, retention, surviving a reopen, and front ends writing the same
minute at once (PostgreSQL)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from heldtx import beside_a_held_transaction
from metrics.builders import T0
from pgserver import PostgresServer
from zeroscale.metrics.history import Key, Stat
from zeroscale.metrics.store import MinuteStore, _row, metric_minutes

M0 = int(T0)


def k(minute: int = 0, metric: str = "Invocations", variant: str = "v", endpoint: str = "ep") -> Key:
    return Key(endpoint, M0 + 60 * minute, variant, metric)


def test_write_query_and_merge_across_a_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'z.db'}"
    store = MinuteStore(url)
    store.write({k(0): Stat.of(1, 1), k(1): Stat.of(1), k(0, "ModelLatency"): Stat.of(5.0, 9.0)})
    store.close()
    store = MinuteStore(url)  # a restart
    store.write({k(1): Stat.of(1, 1, 1), k(2): Stat.of(1), k(0, "ModelLatency"): Stat.of(2.0)})
    got = store.query("EP", since=T0, until=float("inf"))
    assert got == {
        k(0): Stat(2.0, 2, 1.0, 1.0),
        k(1): Stat(4.0, 4, 1.0, 1.0),
        k(2): Stat(1.0, 1, 1.0, 1.0),
        k(0, "ModelLatency"): Stat(16.0, 3, 2.0, 9.0),
    }
    store.close()


def test_query_filters(tmp_path: Path) -> None:
    store = MinuteStore(f"sqlite:///{tmp_path / 'z.db'}")
    store.write(
        {
            k(0): Stat.of(1),
            k(1): Stat.of(1),
            k(2): Stat.of(1),
            k(1, "ModelLatency"): Stat.of(3),
            k(1, variant="w"): Stat.of(1),
            k(1, endpoint="other"): Stat.of(1),
        }
    )
    assert set(store.query("ep", since=T0 + 61, until=T0 + 120, metrics=["Invocations"])) == {
        k(1),
        k(1, variant="w"),
    }
    assert set(store.query("ep", since=T0, until=T0 + 600, variant="w")) == {k(1, variant="w")}
    assert store.query("nothing", since=T0, until=T0 + 600) == {}
    store.close()


def test_prune_drops_minutes_before_the_retention(tmp_path: Path) -> None:
    store = MinuteStore(f"sqlite:///{tmp_path / 'z.db'}")
    store.write({k(i): Stat.of(1) for i in range(10)})
    assert store.prune(before=T0 + 60 * 7) == 7
    assert sorted(key.minute for key in store.query("ep", T0, float("inf"))) == [M0 + 420, M0 + 480, M0 + 540]
    store.close()


def added(key: Key, value: float) -> Any:
    """Another front end's addition of one observation to ``key``'s row."""
    c = metric_minutes.c
    return (
        update(metric_minutes)
        .where((c.minute == key.minute) & (c.metric == key.metric))
        .values(sum=c.sum + value, sample_count=c.sample_count + 1, maximum=value)
    )


def test_front_ends_adding_to_one_minute_at_once_lose_none_of_each_others_statistics(
    postgres: PostgresServer,
) -> None:
    """Every front end writes a finished minute 2 s after it ends, so those serving one endpoint write the
    same rows at about the same moment. A row both add to holds both additions (read and written back,
    the later write dropped the other's)."""
    url = postgres.create_database()
    store = MinuteStore(url)
    store.write({k(0): Stat.of(1.0)})
    beside_a_held_transaction(url, [added(k(0), 10.0)], lambda: store.write({k(0): Stat.of(100.0, 0.5)}))
    assert store.query("ep", since=T0, until=float("inf")) == {k(0): Stat(111.5, 4, 0.5, 100.0)}
    store.close()


def test_a_minute_another_front_end_inserted_meanwhile_is_added_to(postgres: PostgresServer) -> None:
    """Both find no row for a minute and insert one: the second becomes an addition to the first's row (it
    had failed, to be retried a minute later, with its error logged every minute)."""
    url = postgres.create_database()
    store = MinuteStore(url)
    theirs = [insert(metric_minutes).values(**_row(k(1), Stat.of(3.0)))]
    beside_a_held_transaction(url, theirs, lambda: store.write({k(1): Stat.of(7.0), k(2): Stat.of(1.0)}))
    assert store.query("ep", since=T0, until=float("inf")) == {
        k(1): Stat(10.0, 2, 3.0, 7.0),
        k(2): Stat(1.0, 1, 1.0, 1.0),
    }
    store.close()
