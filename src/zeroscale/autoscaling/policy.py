"""Target tracking, as a pure function: a variant's recent metric values, its capacity, its limits and the
time of its last scale-out and scale-in -> the instance count it should have now, and why. No clock and no
I/O: ``now`` is an argument.

The rules follow the two alarms Application Auto Scaling creates for a target-tracking policy:

- scale out when each of the last ``OUT_POINTS`` (3) periods is above the target: to
  ``ceil(current * value / target)``, ``value`` the mean of those periods;
- scale in when each of the last ``IN_POINTS`` (15) periods is below 90% of the target (unless
  DisableScaleIn): to ``ceil(current * value / target)``, ``value`` the highest of those periods;
- a period without data (``None``) stops either from firing;
- ScaleOutCooldown counts from the last scale-out, ScaleInCooldown from the last scale-in; a scale-out is
  never held back by a scale-in cooldown (as in AWS);
- the result is kept within MinCapacity and MaxCapacity, and a capacity outside them is brought inside at
  once (as RegisterScalableTarget with new limits does in AWS).

With several policies on one target, the largest scale-out wins; the target scales in only when every
policy that has data wants to, to the largest of their counts.

A partial view (``partial``: the values lack the traffic of a front end that did not answer the leader,
see ``zeroscale.peers``) never scales in: the missing share can only make the true value higher, so a
"below the target" read from part of the traffic may be wrong, and acting on it would take instances from
traffic that still needs them. It is CloudWatch's rule for an alarm without its data (INSUFFICIENT_DATA
takes no action), kept for the one direction a partial view cannot be trusted in. A scale-out on a partial
view stands: the true value is at least the partial one, so it is, if anything, too small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

OUT_POINTS = 3
IN_POINTS = 15
IN_THRESHOLD = 0.9


@dataclass(frozen=True)
class Tracking:
    """One target-tracking policy."""

    name: str
    metric: str  # how Cause names it: "SageMakerVariantInvocationsPerInstance" or a CloudWatch name
    target: float
    scale_out_cooldown_s: float
    scale_in_cooldown_s: float
    disable_scale_in: bool = False


@dataclass(frozen=True)
class Capacity:
    current: int
    minimum: int
    maximum: int
    last_out_at: float | None = None
    last_in_at: float | None = None
    out_suspended: bool = False
    in_suspended: bool = False


@dataclass(frozen=True)
class Decision:
    desired: int
    policy: str  # the policy that decided ("" when the limits did)
    cause: str


def _want(policy: Tracking, values: Sequence[float | None], current: int) -> tuple[int, str] | None:
    """What one policy wants from its recent values (oldest first), ignoring limits and cooldowns."""
    if policy.target <= 0:
        return None
    last = values[-OUT_POINTS:]
    if len(last) == OUT_POINTS and all(v is not None and v > policy.target for v in last):
        value = sum(v for v in last if v is not None) / OUT_POINTS
        # from zero instances (MinCapacity 0), as if there were one: the first comes back
        return math.ceil(max(1, current) * value / policy.target), (
            f"{policy.metric} was above the target {policy.target:g} for {OUT_POINTS} periods "
            f"(mean {value:.4g})"
        )
    if policy.disable_scale_in:
        return None
    last = values[-IN_POINTS:]
    low = policy.target * IN_THRESHOLD
    if len(last) == IN_POINTS and all(v is not None and v < low for v in last):
        value = max(v for v in last if v is not None)
        return max(0, math.ceil(current * value / policy.target)), (
            f"{policy.metric} was below {IN_THRESHOLD:.0%} of the target {policy.target:g} for {IN_POINTS} "
            f"periods (at most {value:.4g})"
        )
    return None


def decide(
    policies: Sequence[tuple[Tracking, Sequence[float | None]]],
    capacity: Capacity,
    now: float,
    *,
    partial: bool = False,
) -> Decision | None:
    """The count a variant should have now, or None to leave it as it is. ``partial``: the values are
    missing a front end's share, so no scale-in (the limits still apply: they do not depend on the values)."""
    c = capacity
    if c.current < c.minimum:
        return Decision(c.minimum, "", f"the capacity {c.current} was below MinCapacity {c.minimum}")
    if c.current > c.maximum:
        return Decision(c.maximum, "", f"the capacity {c.current} was above MaxCapacity {c.maximum}")
    wants = [(p, w) for p, values in policies if (w := _want(p, values, c.current)) is not None]
    outs = [(p, count, why) for p, (count, why) in wants if count > c.current]
    if outs and not c.out_suspended:
        policy, count, why = max(outs, key=lambda o: o[1])
        desired = min(count, c.maximum)
        cooling = c.last_out_at is not None and now - c.last_out_at < policy.scale_out_cooldown_s
        if desired > c.current and not cooling:
            return Decision(desired, policy.name, _cause(policy, why, desired))
        return None
    ins = [(p, count, why) for p, (count, why) in wants if count < c.current]
    # every policy must agree to scale in: one without data, or content, holds the capacity
    if ins and len(ins) == len(policies) and not c.in_suspended and not partial:
        policy, count, why = max(ins, key=lambda o: o[1])
        desired = max(count, c.minimum)
        cooling = c.last_in_at is not None and now - c.last_in_at < policy.scale_in_cooldown_s
        if desired < c.current and not cooling:
            return Decision(desired, policy.name, _cause(policy, why, desired))
    return None


def _cause(policy: Tracking, why: str, desired: int) -> str:
    return f"target-tracking policy {policy.name}: {why}, so the desired instance count became {desired}"
