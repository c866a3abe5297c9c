"""Guarded deployments (UpdateEndpoint's DeploymentConfig) as a pure policy: what a deployment in progress
should do now, from its plan, its progress, the states of its alarms and ``now``. No clock and no I/O; the
runner (control/guarded.py) reads the alarms, applies the decisions to the fleet and reports them.

The flow, as SageMaker runs a blue/green deployment: the new fleet is provisioned beside the old one; then,
step by step, a share of the traffic moves to it (ALL_AT_ONCE: everything; CANARY: the canary, then
everything; LINEAR: one step size more each time; a rolling update: one batch more each time), each step
followed by a baking period of WaitIntervalInSeconds; after the last, TerminationWaitInSeconds more; then
the old fleet is retired. Until then, any AutoRollbackConfiguration alarm in ALARM, or the whole taking
longer than MaximumExecutionTimeoutInSeconds, sends all the traffic back to the old fleet.

``plan_of`` reads and checks a DeploymentConfig against the new fleet's size (instances, or MaxConcurrency
for serverless variants), and refuses what SageMaker refuses, by name (a canary over 50% of the fleet, a
linear step outside 10-50%, ...). Unlike SageMaker, an endpoint with several variants is guarded too: the
share is of the endpoint's traffic, each fleet splitting its part by its own variant weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zeroscale.errors import ValidationException

ALARM = "ALARM"


@dataclass(frozen=True)
class Plan:
    shares: tuple[float, ...]  # the new fleet's share of the traffic at each step; the last is 1.0
    wait_s: float  # baking after each step
    termination_wait_s: float  # after the last bake, before the old fleet is retired
    max_execution_s: float | None
    alarms: tuple[str, ...]
    kind: str  # "BlueGreen" | "Rolling" | "" (no guard: the plain swap)


@dataclass(frozen=True)
class Progress:
    started_at: float
    step: int = -1  # the step now baking (an index of Plan.shares); -1 before the first shift
    step_at: float = 0.0  # when that step's traffic moved


@dataclass(frozen=True)
class Shift:
    step: int
    share: float


@dataclass(frozen=True)
class Wait:
    until: float
    phase: str  # "Baking" | "TerminationWait"


@dataclass(frozen=True)
class Retire:
    """The new fleet keeps all the traffic; the old one goes."""


@dataclass(frozen=True)
class Rollback:
    reason: str


Decision = Shift | Wait | Retire | Rollback


def decide(plan: Plan, progress: Progress, alarm_states: Mapping[str, str], now: float) -> Decision:
    firing = [name for name in plan.alarms if alarm_states.get(name) == ALARM]
    if firing:
        names = ", ".join(firing)
        return Rollback(
            f"Rolled back because CloudWatch alarm{'s' if len(firing) > 1 else ''} {names} "
            f"went into ALARM during the deployment."
        )
    if plan.max_execution_s is not None and now - progress.started_at > plan.max_execution_s:
        return Rollback(
            f"Rolled back because the deployment took longer than MaximumExecutionTimeoutInSeconds "
            f"({plan.max_execution_s:g} s)."
        )
    if progress.step < 0:
        return Shift(0, plan.shares[0])
    baked = progress.step_at + plan.wait_s
    if now < baked:
        return Wait(baked, "Baking")
    if progress.step + 1 < len(plan.shares):
        return Shift(progress.step + 1, plan.shares[progress.step + 1])
    retire_at = baked + plan.termination_wait_s
    if now < retire_at:
        return Wait(retire_at, "TerminationWait")
    return Retire()


def advance(progress: Progress, decision: Shift, now: float) -> Progress:
    return Progress(progress.started_at, decision.step, now)


# ---- reading a DeploymentConfig ----
def plan_of(config: Mapping[str, Any] | None, instances: int, *, all_real_time: bool) -> Plan | None:
    """The plan of a DeploymentConfig for a new fleet of ``instances`` units of capacity (instances, or
    MaxConcurrency where variants are serverless); None when there is nothing to guard (no config)."""
    if not config:
        return None
    blue_green = config.get("BlueGreenUpdatePolicy")
    rolling = config.get("RollingUpdatePolicy")
    alarms = tuple(
        a["AlarmName"] for a in (config.get("AutoRollbackConfiguration") or {}).get("Alarms") or []
    )
    if blue_green and rolling:
        raise ValidationException(
            "DeploymentConfig: give BlueGreenUpdatePolicy or RollingUpdatePolicy, not both."
        )
    if rolling:
        if not all_real_time:
            raise ValidationException(
                "DeploymentConfig.RollingUpdatePolicy needs variants that run on instances (InstanceType)."
            )
        batch = _fraction(rolling["MaximumBatchSize"], instances, "RollingUpdatePolicy.MaximumBatchSize")
        steps = math.ceil(1 / batch - 1e-9)
        batches = tuple(min(1.0, batch * (i + 1)) for i in range(steps))
        return Plan(
            batches,
            float(rolling["WaitIntervalInSeconds"]),
            0.0,
            _float(rolling.get("MaximumExecutionTimeoutInSeconds")),
            alarms,
            "Rolling",
        )
    if not blue_green:
        # AutoRollbackConfiguration alone: an all-at-once shift, watched until the old fleet goes
        return Plan((1.0,), 0.0, 0.0, None, alarms, "BlueGreen")
    routing = blue_green["TrafficRoutingConfiguration"]
    kind = routing["Type"]
    if kind == "ALL_AT_ONCE":
        for member in ("CanarySize", "LinearStepSize"):
            if routing.get(member):
                raise ValidationException(
                    f"TrafficRoutingConfiguration.{member} is for CANARY or LINEAR only."
                )
        shares: tuple[float, ...] = (1.0,)
    elif kind == "CANARY":
        if not routing.get("CanarySize"):
            raise ValidationException("TrafficRoutingConfiguration.CanarySize is required for CANARY.")
        canary = _fraction(routing["CanarySize"], instances, "TrafficRoutingConfiguration.CanarySize")
        shares = (canary, 1.0)
    else:  # LINEAR
        if not routing.get("LinearStepSize"):
            raise ValidationException("TrafficRoutingConfiguration.LinearStepSize is required for LINEAR.")
        step = _fraction(
            routing["LinearStepSize"], instances, "TrafficRoutingConfiguration.LinearStepSize", least=0.1
        )
        count = math.ceil(1 / step - 1e-9)
        shares = tuple(min(1.0, step * (i + 1)) for i in range(count))
    return Plan(
        shares,
        float(routing["WaitIntervalInSeconds"]),
        float(blue_green.get("TerminationWaitInSeconds") or 0),
        _float(blue_green.get("MaximumExecutionTimeoutInSeconds")),
        alarms,
        "BlueGreen",
    )


def _fraction(size: Mapping[str, Any], instances: int, member: str, *, least: float = 0.0) -> float:
    """A CapacitySize as a share of the new fleet: at most 50% (and at least ``least``) of it."""
    value = int(size["Value"])
    if size["Type"] == "CAPACITY_PERCENT":
        share = value / 100
        shown = f"{value}%"
    else:
        share = value / max(1, instances)
        shown = f"{value} instance{'s' if value != 1 else ''} of {instances}"
    if share > 0.5:
        raise ValidationException(
            f"{member} {shown} is over 50% of the new fleet: it must be at most 50% of it."
        )
    if share < least:
        raise ValidationException(f"{member} {shown} is under {least:.0%} of the new fleet.")
    return share


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def alarm_names(config: Mapping[str, Any] | None) -> Sequence[str]:
    if not config:
        return ()
    return [a["AlarmName"] for a in (config.get("AutoRollbackConfiguration") or {}).get("Alarms") or []]
