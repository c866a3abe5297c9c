"""The alarm rules as CloudWatch applies them: M out of N, each comparison, and the four ways of treating
missing data."""

from __future__ import annotations

import pytest

from zeroscale.cloudwatch.rules import ALARM, INSUFFICIENT_DATA, OK, Rule, evaluate


def rule(**kw: object) -> Rule:
    base: dict[str, object] = {
        "statistic": "Sum",
        "period_s": 10,
        "threshold": 5.0,
        "comparison": "GreaterThanThreshold",
        "evaluation_periods": 3,
        "datapoints_to_alarm": 2,
    }
    base.update(kw)
    return Rule(**base)  # type: ignore[arg-type]


def points(*values: float | None) -> list[tuple[float, float | None]]:
    return [(1000.0 + 10 * i, v) for i, v in enumerate(values)]


def test_m_out_of_n() -> None:
    assert evaluate(rule(), points(6, 1, 7), OK, 2000).state == ALARM  # type: ignore[union-attr]
    assert evaluate(rule(), points(6, 1, 1), ALARM, 2000).state == OK  # type: ignore[union-attr]
    # only the last EvaluationPeriods count
    assert evaluate(rule(), points(9, 9, 1, 1, 9), OK, 2000).state == OK  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("comparison", "value", "fires"),
    [
        ("GreaterThanThreshold", 5.0, False),
        ("GreaterThanOrEqualToThreshold", 5.0, True),
        ("LessThanThreshold", 5.0, False),
        ("LessThanOrEqualToThreshold", 5.0, True),
        ("LessThanThreshold", 4.0, True),
    ],
)
def test_comparisons(comparison: str, value: float, fires: bool) -> None:
    r = rule(comparison=comparison, evaluation_periods=1, datapoints_to_alarm=1)
    verdict = evaluate(r, points(value), OK, 2000)
    assert verdict is not None and (verdict.state == ALARM) == fires


def test_missing_data() -> None:
    nothing = points(None, None, None)
    assert evaluate(rule(), nothing, OK, 2000).state == INSUFFICIENT_DATA  # type: ignore[union-attr]
    assert evaluate(rule(treat_missing="ignore"), nothing, ALARM, 2000) is None  # the state is kept
    assert evaluate(rule(treat_missing="breaching"), nothing, OK, 2000).state == ALARM  # type: ignore[union-attr]
    assert evaluate(rule(treat_missing="notBreaching"), nothing, ALARM, 2000).state == OK  # type: ignore[union-attr]
    # "missing": the periods with data decide
    assert evaluate(rule(), points(None, 9, 9), OK, 2000).state == ALARM  # type: ignore[union-attr]
    assert evaluate(rule(treat_missing="breaching"), points(None, 9, 1), OK, 2000).state == ALARM  # type: ignore[union-attr]


def test_reason_and_data_name_the_datapoints() -> None:
    verdict = evaluate(rule(evaluation_periods=1, datapoints_to_alarm=1), points(7), OK, 2000)
    assert verdict is not None
    assert verdict.reason.startswith("Threshold Crossed: 1 datapoint [7 (")
    assert "greater than the threshold (5)" in verdict.reason
    assert verdict.data["recentDatapoints"] == [7] and verdict.data["period"] == 10
