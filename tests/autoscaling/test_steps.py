"""Step scaling as a pure function: the step holding the breach, the three adjustment types, limits (0
included), cooldowns; configurations refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from zeroscale.autoscaling.policy import Capacity
from zeroscale.autoscaling.steps import check, decide
from zeroscale.errors import ValidationException

STEPS = [
    {"MetricIntervalUpperBound": 0, "ScalingAdjustment": -1},
    {"MetricIntervalLowerBound": 0, "MetricIntervalUpperBound": 10, "ScalingAdjustment": 1},
    {"MetricIntervalLowerBound": 10, "ScalingAdjustment": 3},
]


def config(kind: str = "ChangeInCapacity", **more: Any) -> dict[str, Any]:
    return {"AdjustmentType": kind, "StepAdjustments": STEPS, "Cooldown": 60, **more}


def cap(current: int, **more: Any) -> Capacity:
    return Capacity(current=current, minimum=0, maximum=6, **more)


def test_the_step_of_the_breach() -> None:
    """Above the threshold a step's lower bound is inclusive, its upper one exclusive; below it, the other
    way round (botocore's StepAdjustment); a breach of 0 (an alarm at its threshold, with no data, or set by
    hand) is on the side the alarm watches: a scale-in (LessThan*) alarm's scales in with the step ending
    at 0."""
    assert decide("p", config(), 0.0, cap(2), 1000, "a").desired == 3  # type: ignore[union-attr]
    assert decide("p", config(), 0.0, cap(2), 1000, "a", above=False).desired == 1  # type: ignore[union-attr]
    assert decide("p", config(), 0.5, cap(2), 1000, "a", above=False).desired == 3  # type: ignore[union-attr]
    assert decide("p", config(), 10.0, cap(2), 1000, "a").desired == 5  # type: ignore[union-attr]
    assert decide("p", config(), -0.5, cap(2), 1000, "a").desired == 1  # type: ignore[union-attr]
    below = {
        "AdjustmentType": "ChangeInCapacity",
        "StepAdjustments": [
            {"MetricIntervalLowerBound": -10, "MetricIntervalUpperBound": 0, "ScalingAdjustment": -1},
            {"MetricIntervalUpperBound": -10, "ScalingAdjustment": -2},
        ],
    }
    assert decide("p", below, -10.0, cap(4), 1000, "a").desired == 2  # type: ignore[union-attr]
    assert decide("p", below, -9.0, cap(4), 1000, "a").desired == 3  # type: ignore[union-attr]
    out = decide("p", config(), 50.0, cap(5), 1000, "busy")
    assert out is not None and out.desired == 6 and "busy" in out.cause  # MaxCapacity


def test_adjustment_types_and_zero() -> None:
    exact = {"AdjustmentType": "ExactCapacity", "StepAdjustments": [{"ScalingAdjustment": 0}]}
    assert decide("p", exact, 3.0, cap(2), 1000, "a").desired == 0  # type: ignore[union-attr]
    percent = config("PercentChangeInCapacity", MinAdjustmentMagnitude=2)
    percent["StepAdjustments"] = [{"ScalingAdjustment": 10}]
    assert decide("p", percent, 1.0, cap(3), 1000, "a").desired == 5  # type: ignore[union-attr]


def test_cooldowns_by_direction() -> None:
    assert decide("p", config(), 1.0, cap(2, last_out_at=990.0), 1000, "a") is None
    assert decide("p", config(), 1.0, cap(2, last_in_at=990.0), 1000, "a") is not None
    assert decide("p", config(), -1.0, cap(2, last_in_at=990.0), 1000, "a") is None


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"StepAdjustments": STEPS}, "AdjustmentType"),
        ({"AdjustmentType": "ChangeInCapacity", "StepAdjustments": []}, "at least one step"),
        (
            {
                "AdjustmentType": "ChangeInCapacity",
                "StepAdjustments": [
                    {"MetricIntervalUpperBound": 0, "ScalingAdjustment": -1},
                    {"MetricIntervalLowerBound": 5, "ScalingAdjustment": 1},
                ],
            },
            "gap",
        ),
        (config(MinAdjustmentMagnitude=1), "MinAdjustmentMagnitude"),
    ],
)
def test_bad_configurations(bad: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationException, match=named):
        check(bad)


def test_a_partial_view_takes_no_step_down_but_steps_up() -> None:
    """The alarm's data lacked a front end that did not answer: a step that lowers the capacity is not taken
    (its breach may be the missing traffic's), whatever the adjustment type; one that raises it is."""
    assert decide("p", config(), -1.0, cap(2), 1000, "a", partial=True) is None
    assert decide("p", config(), -1.0, cap(2), 1000, "a").desired == 1  # type: ignore[union-attr]
    exact = {"AdjustmentType": "ExactCapacity", "StepAdjustments": [{"ScalingAdjustment": 0}]}
    assert decide("p", exact, 3.0, cap(2), 1000, "a", partial=True) is None
    up = decide("p", config(), 10.0, cap(2), 1000, "a", partial=True)
    assert up is not None and up.desired == 5
