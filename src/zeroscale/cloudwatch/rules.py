"""When a metric alarm is in ALARM, OK or INSUFFICIENT_DATA: a pure function of the alarm's rule and its
metric's values over the last EvaluationPeriods periods (oldest first; None where a period has no data).

As CloudWatch decides it:

- a period breaches when its value compares with the threshold by ComparisonOperator;
- ALARM when at least DatapointsToAlarm of the evaluated periods breach ("M out of N");
- a period without data counts by TreatMissingData: ``missing`` (the default) leaves it out, and when every
  period is missing the alarm goes INSUFFICIENT_DATA; ``breaching`` counts it as breaching; ``notBreaching``
  as within the threshold; ``ignore`` leaves it out, and when every period is missing the state is kept;
- otherwise OK.

No clock and no I/O: the caller reads the values and stamps the result.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

OK, ALARM, INSUFFICIENT_DATA = "OK", "ALARM", "INSUFFICIENT_DATA"
STATES = (OK, ALARM, INSUFFICIENT_DATA)
COMPARISONS = {
    "GreaterThanOrEqualToThreshold": (">=", "greater than or equal to"),
    "GreaterThanThreshold": (">", "greater than"),
    "LessThanThreshold": ("<", "less than"),
    "LessThanOrEqualToThreshold": ("<=", "less than or equal to"),
}
TREAT_MISSING = ("missing", "breaching", "notBreaching", "ignore")


@dataclass(frozen=True)
class Rule:
    statistic: str
    period_s: int
    threshold: float
    comparison: str  # a key of COMPARISONS
    evaluation_periods: int
    datapoints_to_alarm: int
    treat_missing: str = "missing"


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str
    data: dict[str, Any]  # StateReasonData, as CloudWatch writes it (a JSON document)


def breaches(rule: Rule, value: float) -> bool:
    op = COMPARISONS[rule.comparison][0]
    if op == ">=":
        return value >= rule.threshold
    if op == ">":
        return value > rule.threshold
    if op == "<":
        return value < rule.threshold
    return value <= rule.threshold


def evaluate(
    rule: Rule, points: Sequence[tuple[float, float | None]], current: str, now: float
) -> Verdict | None:
    """The state the alarm should be in from ``points`` (each period's start and value, oldest first, the
    last EvaluationPeriods periods); None when the state is kept (``ignore`` with no data)."""
    window = list(points)[-rule.evaluation_periods :]
    present = [(at, v) for at, v in window if v is not None]
    missing = len(window) - len(present)
    breaching = sum(1 for _, v in present if breaches(rule, v))
    if rule.treat_missing == "breaching":
        breaching += missing
    data = _data(rule, present, now)
    if breaching >= rule.datapoints_to_alarm:
        return Verdict(ALARM, _crossed(rule, present, missing, breaching, crossed=True), data)
    if not present and rule.treat_missing in ("missing", "ignore"):
        if rule.treat_missing == "ignore":
            return None
        return Verdict(
            INSUFFICIENT_DATA,
            f"Insufficient Data: {len(window)} datapoint{'s' if len(window) != 1 else ''} were unknown.",
            data,
        )
    return Verdict(OK, _crossed(rule, present, missing, breaching, crossed=False), data)


def _stamp(at: float) -> str:
    return time.strftime("%d/%m/%y %H:%M:%S", time.gmtime(at))


def _crossed(
    rule: Rule, present: Sequence[tuple[float, float]], missing: int, breaching: int, *, crossed: bool
) -> str:
    words = COMPARISONS[rule.comparison][1]
    shown = ", ".join(f"{v:g} ({_stamp(at)})" for at, v in reversed(present))
    if crossed:
        n = breaching
        head = (
            f"Threshold Crossed: {n} out of the last {rule.evaluation_periods} datapoints "
            if rule.evaluation_periods > 1
            else f"Threshold Crossed: {n} datapoint "
        )
        tail = (
            f" ({missing} missing, treated as breaching)"
            if missing and rule.treat_missing == "breaching"
            else ""
        )
        return (
            f"{head}[{shown}] {'were' if n > 1 else 'was'} {words} the threshold ({rule.threshold:g}){tail}."
        )
    return (
        f"Threshold Crossed: no {rule.datapoints_to_alarm} of the last {rule.evaluation_periods} datapoints "
        f"[{shown}] were {words} the threshold ({rule.threshold:g})."
    )


def _data(rule: Rule, present: Sequence[tuple[float, float]], now: float) -> dict[str, Any]:
    iso = "%Y-%m-%dT%H:%M:%S.000+0000"
    return {
        "version": "1.0",
        "queryDate": time.strftime(iso, time.gmtime(now)),
        "statistic": rule.statistic,
        "period": rule.period_s,
        "recentDatapoints": [v for _, v in present],
        "threshold": rule.threshold,
        "evaluatedDatapoints": [
            {"timestamp": time.strftime(iso, time.gmtime(at)), "value": v} for at, v in reversed(present)
        ],
    }
