"""`zeroscale metrics` tables from the API's datapoints."""

from __future__ import annotations

from typing import Any

from metrics.builders import T0
from zeroscale.cli.metrics import detail_rows, summary_rows


def point(metric: str, minute: float, stat_sum: float, count: int = 1, **kw: Any) -> dict[str, Any]:
    return {
        "VariantName": kw.get("variant", "AllTraffic"),
        "MetricName": metric,
        "Minute": int(minute),
        "Unit": kw.get("unit", "None"),
        "Sum": stat_sum,
        "SampleCount": count,
        "Average": stat_sum / count,
        "Minimum": kw.get("minimum", 0.0),
        "Maximum": kw.get("maximum", 1.0),
    }


def test_summary_has_a_row_per_minute_and_only_columns_with_data() -> None:
    points = [
        point("Invocations", T0, 10, 10),
        point("Invocation5XXErrors", T0, 2, 10),
        point("ModelLatency", T0, 30_000, 10, unit="Microseconds"),
        point("Invocations", T0 + 60, 4, 4),
    ]
    header, first, second = summary_rows(points)
    assert header == ("TIME", "VARIANT", "INVOCATIONS", "5XX", "MODEL_MS")
    assert first[1:] == ("AllTraffic", "10", "2", "3.00")
    assert second[1:] == ("AllTraffic", "4", "-", "-")


def test_details_show_every_statistic_in_sagemaker_units() -> None:
    header, row = detail_rows([point("ModelSetupTime", T0, 90_000, 2, unit="Microseconds", minimum=40_000.0)])
    assert header[2:] == ("METRIC", "UNIT", "SUM", "COUNT", "AVG", "MIN", "MAX")
    assert row[2:] == ("ModelSetupTime", "Microseconds", "90000", "2", "45000", "40000", "1")
