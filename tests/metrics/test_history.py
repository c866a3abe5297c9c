"""The one-minute aggregator: CloudWatch statistics per (endpoint, variant, metric, minute)."""

from __future__ import annotations

import math

from metrics.builders import T0
from zeroscale.metrics.history import Key, MinuteAggregator, Stat, minute_of


def test_stat_statistics() -> None:
    s = Stat.of(3.0, 1.0, 2.0)
    assert (s.sum, s.count, s.minimum, s.maximum, s.average) == (6.0, 3, 1.0, 3.0, 2.0)
    s.merge(Stat.of(10.0))
    assert (s.sum, s.count, s.minimum, s.maximum) == (16.0, 4, 1.0, 10.0)
    assert Stat().average == 0.0


def test_observations_fall_into_the_minute_of_their_time() -> None:
    agg = MinuteAggregator()
    agg.observe("Ep", "v", "Invocations", 1.0, T0)
    agg.observe("ep", "v", "Invocations", 1.0, T0 + 59.999)
    agg.observe("ep", "v", "Invocations", 1.0, T0 + 60)
    agg.observe("ep", "v", "ModelLatency", 5.0, T0 + 1)
    stats = agg.take()
    assert stats[Key("ep", int(T0), "v", "Invocations")].count == 2  # endpoint names are case-insensitive
    assert stats[Key("ep", int(T0) + 60, "v", "Invocations")].count == 1
    assert stats[Key("ep", int(T0), "v", "ModelLatency")].sum == 5.0
    assert len(agg) == 0
    assert minute_of(T0 + 61) == T0 + 60


def test_take_leaves_unfinished_minutes_and_restore_merges_back() -> None:
    agg = MinuteAggregator()
    agg.observe("ep", "v", "m", 1.0, T0 + 10)
    agg.observe("ep", "v", "m", 2.0, T0 + 70)
    done = agg.take(before=T0 + 60)
    assert list(done) == [Key("ep", int(T0), "v", "m")]
    assert agg.take(before=T0 + 119.9) == {}
    agg.observe("ep", "v", "m", 4.0, T0 + 20)  # late, for a minute already taken
    agg.restore(done)  # its write failed
    again = agg.take(before=math.inf)
    assert again[Key("ep", int(T0), "v", "m")] == Stat(5.0, 2, 1.0, 4.0)
    assert again[Key("ep", int(T0) + 60, "v", "m")] == Stat(2.0, 1, 2.0, 2.0)


def test_select_filters_and_copies() -> None:
    agg = MinuteAggregator()
    for minute in range(5):
        agg.observe("ep", "a", "Invocations", 1.0, T0 + 60 * minute + 5)
        agg.observe("ep", "b", "ModelLatency", 7.0, T0 + 60 * minute + 5)
        agg.observe("other", "a", "Invocations", 1.0, T0 + 60 * minute + 5)
    got = agg.select("EP", since=T0 + 60 + 30, until=T0 + 240, metrics=["Invocations"])
    assert sorted(k.minute - int(T0) for k in got) == [60, 120, 180]  # since rounds down to its minute
    assert {k.variant for k in got} == {"a"}
    assert set(agg.select("ep", T0, math.inf, variant="b")) == {
        Key("ep", int(T0) + 60 * i, "b", "ModelLatency") for i in range(5)
    }
    next(iter(got.values())).add(100.0)
    assert agg.take()[Key("ep", int(T0) + 60, "a", "Invocations")].count == 1
