"""The target-tracking policy as a pure function of recent values, capacity, limits and ``now``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zeroscale.autoscaling.policy import IN_POINTS, OUT_POINTS, Capacity, Tracking, decide

POLICY = Tracking("p", "SageMakerVariantInvocationsPerInstance", 100.0, 60.0, 120.0)


def cap(current: int = 2, maximum: int = 10, **kw: Any) -> Capacity:
    return Capacity(current=current, minimum=1, maximum=maximum, **kw)


def desired(values: Sequence[float | None], capacity: Capacity, now: float = 1000) -> int | None:
    d = decide([(POLICY, values)], capacity, now)
    return None if d is None else d.desired


def test_scales_out_after_three_periods_above_the_target_in_proportion() -> None:
    assert decide([(POLICY, [300.0, 300.0])], cap(), now=1000) is None  # two periods are not enough
    d = decide([(POLICY, [50.0, 250.0, 300.0, 350.0])], cap(), now=1000)
    assert d is not None and d.desired == 6 and d.policy == "p"  # ceil(2 * 300 / 100)
    assert "above the target 100" in d.cause and "6" in d.cause


def test_max_capacity_and_scale_out_cooldown() -> None:
    high = [500.0] * OUT_POINTS
    assert desired(high, cap(maximum=4)) == 4
    assert decide([(POLICY, high)], cap(maximum=2), now=1000) is None  # already at the maximum
    assert decide([(POLICY, high)], cap(last_out_at=950.0), now=1000) is None  # 50 s < 60 s cooldown
    assert decide([(POLICY, high)], cap(last_out_at=940.0), now=1000) is not None
    # a scale-in cooldown never holds back a scale-out
    assert decide([(POLICY, high)], cap(last_in_at=999.0), now=1000) is not None


def test_a_period_without_data_holds_the_capacity() -> None:
    assert decide([(POLICY, [500.0, None, 500.0])], cap(), now=1000) is None
    assert decide([(POLICY, [10.0] * (IN_POINTS - 1) + [None])], cap(), now=1000) is None


def test_scales_in_after_fifteen_low_periods_to_the_highest_of_them() -> None:
    low = [10.0] * IN_POINTS
    assert decide([(POLICY, low[1:])], cap(4), now=1000) is None  # 14 periods are not enough
    d = decide([(POLICY, [*low[:-1], 60.0])], cap(4), now=1000)
    assert d is not None and d.desired == 3  # ceil(4 * 60 / 100)
    assert decide([(POLICY, [*low[:-1], 95.0])], cap(4), now=1000) is None  # 95 is not below 90% of 100
    assert desired(low, cap(4)) == 1


def test_scale_in_cooldown_min_capacity_and_disable_scale_in() -> None:
    low = [0.0] * IN_POINTS
    assert decide([(POLICY, low)], cap(4, last_in_at=900.0), now=1000) is None  # 100 s < 120 s
    assert desired(low, cap(4, last_in_at=880.0)) == 1
    assert decide([(POLICY, low)], cap(1), now=1000) is None  # at MinCapacity
    no_in = Tracking("p", "m", 100.0, 60.0, 0.0, disable_scale_in=True)
    assert decide([(no_in, low)], cap(4), now=1000) is None
    assert decide([(POLICY, low)], cap(4, in_suspended=True), now=1000) is None
    assert decide([(POLICY, [900.0] * 3)], cap(4, out_suspended=True), now=1000) is None


def test_limits_bring_the_capacity_inside_at_once() -> None:
    d = decide([], Capacity(current=1, minimum=3, maximum=5), now=0)
    assert d is not None and d.desired == 3 and "MinCapacity 3" in d.cause
    d = decide([], Capacity(current=7, minimum=1, maximum=5), now=0)
    assert d is not None and d.desired == 5 and "MaxCapacity 5" in d.cause


def test_several_policies_largest_scale_out_wins_and_scale_in_needs_them_all() -> None:
    other = Tracking("q", "ModelLatency (Average)", 1000.0, 0.0, 0.0)
    d = decide([(POLICY, [300.0] * 3), (other, [8000.0] * 3)], cap(), now=0)
    assert d is not None and d.policy == "q" and d.desired == 10  # ceil(2 * 8) = 16, capped at 10
    low = [1.0] * IN_POINTS
    assert decide([(POLICY, low), (other, [950.0] * IN_POINTS)], cap(4), now=0) is None
    d = decide([(POLICY, [50.0] * IN_POINTS), (other, [100.0] * IN_POINTS)], cap(4), now=0)
    assert d is not None and d.desired == 2  # the larger of ceil(4 * .5) and ceil(4 * .1)


def test_a_partial_view_never_scales_in_but_still_scales_out() -> None:
    """The values lack a front end that did not answer the leader: fifteen low periods read from part of the
    traffic are not trusted (the rest can only raise them), so the capacity holds, and scales in once the
    view is whole again; three high periods are (the whole traffic is at least as high), so a scale-out
    stands, with its cooldown as ever. The limits do not depend on the values: they still apply."""
    low = [10.0] * IN_POINTS
    assert decide([(POLICY, low)], cap(4), now=1000, partial=True) is None
    d = decide([(POLICY, low)], cap(4), now=1000)
    assert d is not None and d.desired == 1
    high = [300.0] * OUT_POINTS
    d = decide([(POLICY, high)], cap(2), now=1000, partial=True)
    assert d is not None and d.desired == 6 and "above the target 100" in d.cause
    assert decide([(POLICY, high)], cap(2, last_out_at=950.0), now=1000, partial=True) is None
    d = decide([(POLICY, low)], Capacity(current=7, minimum=1, maximum=5), now=1000, partial=True)
    assert d is not None and d.desired == 5 and "MaxCapacity 5" in d.cause
