"""Step scaling, as a pure function: a step policy invoked by a CloudWatch alarm in ALARM, the breach (the
alarm's metric value minus its threshold), the variant's capacity and ``now`` -> the instance count it should
have, or None. No clock and no I/O.

As Application Auto Scaling applies it:

- the step whose interval holds the breach applies, a missing bound being infinite: above the threshold
  (a breach over 0) the lower bound is inclusive and the upper one exclusive; otherwise (at or below it,
  a scale-in alarm's case) the lower bound is exclusive and the upper one inclusive (botocore's
  StepAdjustment), so a step ``(-inf, 0]`` holds a breach of 0. A breach of exactly 0 (an alarm at its
  threshold, one with no data, put in ALARM by hand) is on the side the alarm watches (``above``: a
  GreaterThan* alarm's), so ``[0, inf)`` holds it for a scale-out alarm and ``(-inf, 0]`` for a scale-in one;
- ChangeInCapacity adds ScalingAdjustment; PercentChangeInCapacity adds that percent of the current count
  (rounded away from zero, at least MinAdjustmentMagnitude); ExactCapacity sets it;
- Cooldown (seconds) counts from the target's last scale-out for a scale-out, its last scale-in for a
  scale-in; the result stays within MinCapacity and MaxCapacity (0 is allowed: zeroscale scales a real-time
  variant to zero).

A step that would lower the capacity is not taken when the alarm's data was a partial view (``partial``:
a front end did not answer for its 10- or 30-second periods, ``zeroscale.peers``): its missing traffic can
only raise the metric, so a breach read from part of it may not be one (as ``policy`` holds a target-tracking
scale-in). A step that raises the capacity is taken: the whole traffic would call for at least as much.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import Any

from zeroscale.autoscaling.policy import Capacity, Decision
from zeroscale.errors import ValidationException

DEFAULT_COOLDOWN_S = 300.0
ADJUSTMENTS = ("ChangeInCapacity", "PercentChangeInCapacity", "ExactCapacity")


def check(config: Mapping[str, Any]) -> None:
    """ValidationException naming what Application Auto Scaling refuses in a step configuration."""
    if config.get("AdjustmentType") not in ADJUSTMENTS:
        raise ValidationException(
            f"StepScalingPolicyConfiguration.AdjustmentType is required: one of {', '.join(ADJUSTMENTS)}."
        )
    steps = list(config.get("StepAdjustments") or [])
    if not steps:
        raise ValidationException("StepScalingPolicyConfiguration.StepAdjustments needs at least one step.")
    bounds = sorted(
        (
            _bound(s.get("MetricIntervalLowerBound"), -math.inf),
            _bound(s.get("MetricIntervalUpperBound"), math.inf),
        )
        for s in steps
    )
    for low, high in bounds:
        if low >= high:
            raise ValidationException(
                "StepAdjustments: each MetricIntervalLowerBound must be under its MetricIntervalUpperBound."
            )
    for (_, high), (low, _) in itertools.pairwise(bounds):
        if high != low:
            raise ValidationException("StepAdjustments: the intervals must not overlap or leave a gap.")
    if config.get("MetricAggregationType") not in (None, "Average", "Minimum", "Maximum"):
        raise ValidationException("MetricAggregationType must be Average, Minimum or Maximum.")
    if (
        config.get("MinAdjustmentMagnitude") is not None
        and config["AdjustmentType"] != "PercentChangeInCapacity"
    ):
        raise ValidationException(
            "MinAdjustmentMagnitude is for AdjustmentType PercentChangeInCapacity only."
        )


def _bound(value: Any, default: float) -> float:
    return default if value is None else float(value)


def _holds(step: Mapping[str, Any], breach: float, above: bool) -> bool:
    low = _bound(step.get("MetricIntervalLowerBound"), -math.inf)
    high = _bound(step.get("MetricIntervalUpperBound"), math.inf)
    return low <= breach < high if above else low < breach <= high


def decide(
    name: str,
    config: Mapping[str, Any],
    breach: float,
    capacity: Capacity,
    now: float,
    alarm: str,
    *,
    above: bool = True,
    partial: bool = False,
) -> Decision | None:
    """``above``: the alarm fires above its threshold (GreaterThan*), for a breach of exactly 0.
    ``partial``: the alarm's data lacked a front end's share, so a step that lowers the capacity is held."""
    side = breach > 0 if breach != 0 else above
    step = next((s for s in config["StepAdjustments"] if _holds(s, breach, side)), None)
    if step is None:
        return None
    c, adjustment = capacity, int(step["ScalingAdjustment"])
    kind = config["AdjustmentType"]
    if kind == "ExactCapacity":
        wanted = adjustment
    elif kind == "ChangeInCapacity":
        wanted = c.current + adjustment
    else:
        change = c.current * adjustment / 100
        rounded = math.ceil(abs(change)) * (1 if change >= 0 else -1)
        least = int(config.get("MinAdjustmentMagnitude") or 0)
        if rounded and abs(rounded) < least:
            rounded = least if rounded > 0 else -least
        wanted = c.current + rounded
    desired = max(c.minimum, min(c.maximum, wanted))
    if desired == c.current:
        return None
    out = desired > c.current
    if (out and c.out_suspended) or (not out and (c.in_suspended or partial)):
        return None
    cooldown = float(config.get("Cooldown", DEFAULT_COOLDOWN_S))
    last = c.last_out_at if out else c.last_in_at
    if last is not None and now - last < cooldown:
        return None
    cause = (
        f"monitor alarm {alarm} in state ALARM triggered policy {name} (breach {breach:g}), so the desired "
        f"instance count became {desired}"
    )
    return Decision(desired, name, cause)
