"""The history table: merge on write, queries, retention, and surviving a reopen."""

from __future__ import annotations

from pathlib import Path

from metrics.builders import T0
from zeroscale.metrics.history import Key, Stat
from zeroscale.metrics.store import MinuteStore

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
