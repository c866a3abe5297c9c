"""The guarded deployment runner against a fake fleet and alarms: the decisions reach the fleet in order, an
alarm change wakes it at once, and a rollback the fleet cannot do ends UpdateRollbackFailed."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from zeroscale.control.guarded import Guard
from zeroscale.control.rollout import Plan
from zeroscale.errors import DeployError


class FakeFleet:
    def __init__(self, *, rollback_fails: bool = False) -> None:
        self.calls: list[Any] = []
        self.rollback_fails = rollback_fails

    async def stage(self, name: str, specs: list[Any]) -> None:
        self.calls.append("stage")

    def shift(self, name: str, share: float) -> None:
        self.calls.append(("shift", share))

    def promote(self, name: str) -> list[Any]:
        self.calls.append("promote")
        return []

    def rollback(self, name: str) -> list[Any]:
        if self.rollback_fails:
            raise DeployError("the old fleet is gone")
        self.calls.append("rollback")
        return []


class FakeAlarms:
    def __init__(self) -> None:
        self.state = "OK"

    def missing(self, names: Sequence[str]) -> list[str]:
        return [n for n in names if n != "a"]

    def states(self, names: Sequence[str]) -> dict[str, str]:
        return {"a": self.state}


async def test_a_canary_completes_and_reports_its_phases() -> None:
    fleet, phases = FakeFleet(), []
    guard = Guard(fleet, FakeAlarms(), tick_s=0.01)  # type: ignore[arg-type]
    plan = Plan((0.5, 1.0), 0.05, 0.05, None, ("a",), "BlueGreen")
    outcome = await guard.run("ep", [], plan, lambda phase, share, at: phases.append((phase, share)))
    assert outcome.reason is None
    assert fleet.calls == ["stage", ("shift", 0.5), ("shift", 1.0), "promote"]
    assert phases == [
        ("Creating", 0.0),
        ("ActivatingTraffic", 0.5),
        ("Baking", 0.5),
        ("ActivatingTraffic", 1.0),
        ("Baking", 1.0),
        ("TerminationWait", 1.0),
    ]


async def test_an_alarm_change_wakes_the_deployment_at_once() -> None:
    fleet, alarms = FakeFleet(), FakeAlarms()
    guard = Guard(fleet, alarms, tick_s=3600)  # type: ignore[arg-type]
    plan = Plan((0.1, 1.0), 3600, 0, None, ("a",), "BlueGreen")
    task = asyncio.create_task(guard.run("ep", [], plan, lambda *_: None))
    await asyncio.sleep(0.05)
    alarms.state = "ALARM"
    guard.poke()
    outcome = await asyncio.wait_for(task, timeout=1)
    assert outcome.reason is not None and "a went into ALARM" in outcome.reason
    assert fleet.calls == ["stage", ("shift", 0.1), "rollback"]


class AlarmsThatChangeWhileRead(FakeAlarms):
    """The alarm goes into ALARM (and the evaluator pokes) while its states are being read: this read still
    says OK, and the poke lands before the deployment waits."""

    def __init__(self, guard: list[Guard], after_reads: int) -> None:
        super().__init__()
        self._guard = guard
        self._left = after_reads

    def states(self, names: Sequence[str]) -> dict[str, str]:
        seen = super().states(names)
        self._left -= 1
        if self._left == 0:
            self.state = "ALARM"
            self._guard[0].poke()
        return seen


async def test_an_alarm_change_during_the_read_of_the_alarms_is_not_lost() -> None:
    """The read of the alarms runs in a thread while the deployment goes on: a change it missed must still
    wake the deployment at once (not at the next tick, an hour here)."""
    fleet, holder = FakeFleet(), []
    alarms = AlarmsThatChangeWhileRead(holder, after_reads=2)  # the second read: baking at 10%
    guard = Guard(fleet, alarms, tick_s=3600)  # type: ignore[arg-type]
    holder.append(guard)
    plan = Plan((0.1, 1.0), 3600, 0, None, ("a",), "BlueGreen")
    outcome = await asyncio.wait_for(guard.run("ep", [], plan, lambda *_: None), timeout=5)
    assert outcome.reason is not None and "a went into ALARM" in outcome.reason
    assert fleet.calls == ["stage", ("shift", 0.1), "rollback"]


async def test_a_failed_rollback_is_reported() -> None:
    alarms = FakeAlarms()
    alarms.state = "ALARM"
    guard = Guard(FakeFleet(rollback_fails=True), alarms, tick_s=0.01)  # type: ignore[arg-type]
    outcome = await guard.run("ep", [], Plan((1.0,), 1, 0, None, ("a",), "BlueGreen"), lambda *_: None)
    assert outcome.rollback_failed and "the old fleet is gone" in (outcome.reason or "")
