"""Running guarded deployments: the reconcile loop around ``rollout.decide``. It stages the new fleet beside
the old one (``Fleet.stage``), then applies each decision (shift a share of the traffic, wait while baking,
retire the old fleet, or roll back) until the deployment ends, reading the alarms' states at every tick and
woken at once when an alarm changes state (``poke``, called by the alarm evaluator)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zeroscale.control import rollout
from zeroscale.errors import DeployError, ValidationException
from zeroscale.router.fleet import Fleet
from zeroscale.router.spec import PoolSpec

TICK_S = 0.5
ROLLBACK_DRAIN_S = 30.0  # RollingBack lasts until the new fleet drained, at most this long


class AlarmView(Protocol):
    def missing(self, names: Sequence[str]) -> list[str]: ...

    def states(self, names: Sequence[str]) -> dict[str, str]: ...


@dataclass(frozen=True)
class Outcome:
    """How a guarded deployment ended: ``reason`` is None when the new fleet took over."""

    reason: str | None = None
    rollback_failed: bool = False


# (phase, share of the traffic on the new fleet, step started at); phases: Creating, ActivatingTraffic,
# Baking, TerminationWait, RollingBack
Report = Callable[[str, float, float], None]


class Guard:
    def __init__(
        self,
        fleet: Fleet,
        alarms: AlarmView | None,
        clock: Callable[[], float] = time.time,
        tick_s: float = TICK_S,
    ) -> None:
        self._fleet = fleet
        self._alarms = alarms
        self._clock = clock
        self._tick_s = tick_s
        self._wakes: set[asyncio.Event] = set()

    def poke(self, *_: Any) -> None:
        """An alarm changed state: every deployment in progress looks at its alarms now."""
        for event in self._wakes:
            event.set()

    def check_alarms(self, names: Sequence[str]) -> None:
        if not names:
            return
        missing = self._alarms.missing(names) if self._alarms is not None else list(names)
        if missing:
            raise ValidationException(
                f"DeploymentConfig.AutoRollbackConfiguration.Alarms: the CloudWatch alarm"
                f"{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                f"{'do' if len(missing) > 1 else 'does'} not exist."
            )

    async def run(self, name: str, specs: list[PoolSpec], plan: rollout.Plan, report: Report) -> Outcome:
        """Stage ``specs`` as the new fleet of the routed endpoint ``name`` and carry the plan out. Raises
        DeployError when the new fleet cannot start (the old one serves on, untouched)."""
        report("Creating", 0.0, self._clock())
        await self._fleet.stage(name, specs)
        wake = asyncio.Event()
        self._wakes.add(wake)
        try:
            progress = rollout.Progress(self._clock())
            phase = ""
            while True:
                # Cleared before the alarms are read, never after: a poke while they are read (in a
                # thread) or while a phase is reported must end the wait below at once.
                wake.clear()
                states = (
                    await asyncio.to_thread(self._alarms.states, plan.alarms)
                    if plan.alarms and self._alarms is not None
                    else {}
                )
                now = self._clock()
                decision = rollout.decide(plan, progress, states, now)
                if isinstance(decision, rollout.Rollback):
                    return await self._roll_back(name, decision.reason, report, progress)
                if isinstance(decision, rollout.Retire):
                    self._fleet.promote(name)
                    return Outcome()
                if isinstance(decision, rollout.Shift):
                    self._fleet.shift(name, decision.share)
                    progress = rollout.advance(progress, decision, now)
                    report("ActivatingTraffic", decision.share, now)
                    phase = ""
                    continue
                if decision.phase != phase:
                    phase = decision.phase
                    report(phase, plan.shares[progress.step], progress.step_at)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        wake.wait(), timeout=max(0.0, min(self._tick_s, decision.until - now))
                    )
        finally:
            self._wakes.discard(wake)

    async def _roll_back(self, name: str, reason: str, report: Report, progress: rollout.Progress) -> Outcome:
        try:
            drains = self._fleet.rollback(name)  # all the traffic is back on the old fleet from here
        except DeployError as exc:
            return Outcome(f"{reason} The rollback failed: {exc}", rollback_failed=True)
        report("RollingBack", 0.0, self._clock())
        if drains:
            await asyncio.wait(drains, timeout=ROLLBACK_DRAIN_S)
        return Outcome(reason)
