"""The guarded deployment policy with a fake clock: each step's shift, baking, the termination wait, the
retirement of the old fleet; an alarm or the execution timeout rolls back at any point; DeploymentConfigs
read into plans and refused by name."""

from __future__ import annotations

from typing import Any

import pytest

from zeroscale.control.rollout import (
    Plan,
    Progress,
    Retire,
    Rollback,
    Shift,
    Wait,
    advance,
    decide,
    plan_of,
)
from zeroscale.errors import ValidationException


def run(
    plan: Plan, until: float, alarms: dict[str, str] | None = None, fire_at: float | None = None
) -> list[Any]:
    """Drive the policy second by second as the runner does; the decisions that changed something."""
    progress, now, seen = Progress(0.0), 0.0, []
    while now <= until:
        states = alarms if fire_at is not None and now >= fire_at else {}
        d = decide(plan, progress, states or {}, now)
        if isinstance(d, Shift):
            progress = advance(progress, d, now)
            seen.append((now, d))
            continue
        if isinstance(d, (Retire, Rollback)):
            seen.append((now, d))
            return seen
        assert isinstance(d, Wait)
        now += 1
    return seen


def test_canary_bakes_then_shifts_the_rest_then_waits_then_retires() -> None:
    plan = Plan(
        (0.1, 1.0), wait_s=5, termination_wait_s=3, max_execution_s=None, alarms=("a",), kind="BlueGreen"
    )
    seen = run(plan, 100)
    assert seen == [(0, Shift(0, 0.1)), (5, Shift(1, 1.0)), (13, Retire())]


def test_an_alarm_rolls_back_at_any_step_and_names_the_alarm() -> None:
    plan = Plan((0.2, 0.4, 0.6, 0.8, 1.0), 10, 0, None, ("errors", "latency"), "BlueGreen")
    seen = run(plan, 100, {"latency": "ALARM", "errors": "OK"}, fire_at=25)
    assert [type(d).__name__ for _, d in seen] == ["Shift", "Shift", "Shift", "Rollback"]
    assert seen[-1][0] == 25 and "latency" in seen[-1][1].reason and "errors" not in seen[-1][1].reason


def test_the_execution_timeout_rolls_back() -> None:
    plan = Plan((0.5, 1.0), 60, 0, 90, (), "BlueGreen")
    seen = run(plan, 200)
    assert isinstance(seen[-1][1], Rollback) and seen[-1][0] == 91
    assert "MaximumExecutionTimeoutInSeconds" in seen[-1][1].reason


def routing(kind: str, **more: Any) -> dict[str, Any]:
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {"Type": kind, "WaitIntervalInSeconds": 30, **more}
        }
    }


def test_plans_of_deployment_configs() -> None:
    assert plan_of(None, 4, all_real_time=True) is None
    assert plan_of(routing("ALL_AT_ONCE"), 4, all_real_time=True).shares == (1.0,)  # type: ignore[union-attr]
    canary = plan_of(
        routing("CANARY", CanarySize={"Type": "INSTANCE_COUNT", "Value": 1}), 4, all_real_time=True
    )
    assert canary is not None and canary.shares == (0.25, 1.0) and canary.wait_s == 30
    linear = plan_of(
        routing("LINEAR", LinearStepSize={"Type": "CAPACITY_PERCENT", "Value": 30}), 4, all_real_time=True
    )
    assert linear is not None and linear.shares == pytest.approx((0.3, 0.6, 0.9, 1.0))
    rolling = plan_of(
        {
            "RollingUpdatePolicy": {
                "MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 2},
                "WaitIntervalInSeconds": 5,
            }
        },
        4,
        all_real_time=True,
    )
    assert rolling is not None and rolling.shares == (0.5, 1.0) and rolling.kind == "Rolling"
    alarms_only = plan_of(
        {"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "x"}]}}, 1, all_real_time=False
    )
    assert alarms_only is not None and alarms_only.alarms == ("x",) and alarms_only.shares == (1.0,)


@pytest.mark.parametrize(
    ("config", "named"),
    [
        (routing("CANARY", CanarySize={"Type": "CAPACITY_PERCENT", "Value": 60}), "CanarySize 60%"),
        (routing("CANARY", CanarySize={"Type": "INSTANCE_COUNT", "Value": 3}), "3 instances of 4"),
        (routing("CANARY"), "CanarySize is required"),
        (routing("LINEAR", LinearStepSize={"Type": "CAPACITY_PERCENT", "Value": 5}), "LinearStepSize 5%"),
        (routing("ALL_AT_ONCE", CanarySize={"Type": "CAPACITY_PERCENT", "Value": 5}), "CanarySize is for"),
    ],
)
def test_bad_configs_are_refused_by_name(config: dict[str, Any], named: str) -> None:
    with pytest.raises(ValidationException, match=named):
        plan_of(config, 4, all_real_time=True)
