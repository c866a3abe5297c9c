"""CloudWatch's metric reads over zeroscale's metrics: GetMetricStatistics, GetMetricData and ListMetrics."""

from __future__ import annotations

import contextlib
import datetime
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from zeroscale.cloudwatch.data import (
    STATISTICS,
    InvalidParameterCombination,
    InvalidParameterValue,
    Metric,
    MetricData,
    MissingParameter,
    check_period,
    unit,
    value,
)
from zeroscale.errors import ZeroscaleError
from zeroscale.metrics.history import Stat

MAX_DATAPOINTS = 1440  # GetMetricStatistics' limit per call
_LIST_PAGE = 500
_TWO_WEEKS_S = 14 * 24 * 3600


class InvalidNextToken(ZeroscaleError):
    code = "InvalidNextToken"
    status = 400


class MetricReads:
    def __init__(
        self,
        data: MetricData,
        clock: Callable[[], float] = time.time,
        spell: Callable[[str], str] = lambda name: name,
    ) -> None:
        """``spell``: a lower-cased endpoint name as its user spelled it (the history keeps names
        lower-cased)."""
        self._data = data
        self._clock = clock
        self._spell = spell

    async def get_metric_statistics(self, params: Mapping[str, Any]) -> dict[str, Any]:
        statistics = list(params.get("Statistics") or [])
        if not statistics:
            raise MissingParameter("The parameter Statistics is required (ExtendedStatistics is not served).")
        metric = Metric.of(params["Namespace"], params["MetricName"], params.get("Dimensions"))
        period = int(params["Period"])
        check_period(period)
        start, end = epoch(params["StartTime"]), epoch(params["EndTime"])
        if start >= end:
            raise InvalidParameterValue("The parameter StartTime must be less than the parameter EndTime.")
        wanted = math.ceil((end - start) / period)
        if wanted > MAX_DATAPOINTS:
            raise InvalidParameterCombination(
                f"You have requested up to {wanted} datapoints, which exceeds the limit of {MAX_DATAPOINTS}. "
                "You may reduce the datapoints requested by increasing Period, or decreasing the time range."
            )
        points: list[tuple[int, Stat]] = []
        if params.get("Unit") in (None, unit(metric.name)):
            (points,), _ = await self._data.read_many([(metric, period)], start, end)
        out = []
        for at, stat in points:
            d: dict[str, Any] = {"Timestamp": float(at), "Unit": unit(metric.name)}
            for s in statistics:
                d[s] = value(stat, s)
            out.append(d)
        return {"Label": metric.name, "Datapoints": out}

    async def get_metric_data(self, params: Mapping[str, Any]) -> dict[str, Any]:
        start, end = epoch(params["StartTime"]), epoch(params["EndTime"])
        if start >= end:
            raise InvalidParameterValue("The parameter StartTime must be less than the parameter EndTime.")
        descending = params.get("ScanBy", "TimestampDescending") == "TimestampDescending"
        queries = params["MetricDataQueries"]
        ids = [q["Id"] for q in queries]
        if len(set(ids)) != len(ids):
            raise InvalidParameterValue("The values for parameter Id in MetricDataQueries must be unique.")
        asked: list[tuple[Metric, int, str, bool]] = []  # metric, period, statistic, whether its unit fits
        for i, q in enumerate(queries, start=1):
            stat_spec = q.get("MetricStat")
            if stat_spec is None:
                raise MissingParameter(
                    f"MetricDataQueries.{i}.MetricStat is required (metric math Expression is not served)."
                )
            period = int(stat_spec["Period"])
            check_period(period, f"MetricDataQueries.{i}.MetricStat.Period")
            statistic = stat_spec["Stat"]
            if statistic not in STATISTICS:
                raise InvalidParameterValue(
                    f"MetricDataQueries.{i}.MetricStat.Stat {statistic}: zeroscale serves "
                    f"{', '.join(STATISTICS)} (no percentiles)."
                )
            m = stat_spec["Metric"]
            metric = Metric.of(m.get("Namespace", ""), m.get("MetricName", ""), m.get("Dimensions"))
            given_unit = stat_spec.get("Unit")
            asked.append((metric, period, statistic, given_unit in (None, unit(metric.name))))
        # the queries whose data is returned and whose unit is the metric's, read at once
        read = [i for i, (_, _, _, fits) in enumerate(asked) if fits and queries[i].get("ReturnData", True)]
        found, _ = await self._data.read_many([(asked[i][0], asked[i][1]) for i in read], start, end)
        data = dict(zip(read, found, strict=True))
        results: list[tuple[dict[str, Any], list[tuple[float, float]]]] = []
        for i, (q, (metric, _, statistic, _)) in enumerate(zip(queries, asked, strict=True)):
            if not q.get("ReturnData", True):
                continue
            points = [(float(at), value(stat, statistic)) for at, stat in data.get(i, ())]
            if descending:
                points.reverse()
            results.append(({"Id": q["Id"], "Label": q.get("Label") or metric.name}, points))
        offset = next_offset(params.get("NextToken"))
        limit = int(params.get("MaxDatapoints") or 100800)
        out, seen, room, more = [], 0, limit, False
        for head, points in results:
            rest = points[max(0, offset - seen) :]  # what earlier pages did not return
            seen += len(points)
            take = rest[: max(0, room)]
            room -= len(take)
            partial = len(take) < len(rest)
            more = more or partial
            out.append(
                {
                    **head,
                    "Timestamps": [at for at, _ in take],
                    "Values": [v for _, v in take],
                    "StatusCode": "PartialData" if partial else "Complete",
                }
            )
        answer: dict[str, Any] = {"MetricDataResults": out, "Messages": []}
        if more:
            answer["NextToken"] = str(offset + limit)
        return answer

    async def list_metrics(self, params: Mapping[str, Any]) -> dict[str, Any]:
        now = self._clock()
        since = now - (3 * 3600 if params.get("RecentlyActive") == "PT3H" else _TWO_WEEKS_S)
        found = await self._data.metrics(since)
        namespace, name = params.get("Namespace"), params.get("MetricName")
        filters = [(d["Name"], d.get("Value")) for d in params.get("Dimensions") or []]
        out = []
        for metric in found:
            metric = Metric(
                metric.namespace,
                metric.name,
                tuple((n, self._spell(v) if n == "EndpointName" else v) for n, v in metric.dimensions),
            )
            dims = dict(metric.dimensions)
            if namespace is not None and namespace != metric.namespace:
                continue
            if name is not None and name != metric.name:
                continue
            if any(k not in dims or (v is not None and dims[k] != v) for k, v in filters):
                continue
            out.append(metric.document())
        offset = next_offset(params.get("NextToken"))
        page = out[offset : offset + _LIST_PAGE]
        answer: dict[str, Any] = {"Metrics": page}
        if offset + _LIST_PAGE < len(out):
            answer["NextToken"] = str(offset + _LIST_PAGE)
        return answer


def epoch(value: Any) -> float:
    """A timestamp member as the JSON protocol carries it: epoch seconds, or ISO 8601 text (validated by
    the service model before it gets here)."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    with contextlib.suppress(ValueError):
        return float(text)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def next_offset(token: Any) -> int:
    if not token:
        return 0
    if not (isinstance(token, str) and token.isdigit() and len(token) < 10):
        raise InvalidNextToken("The NextToken is not one zeroscale handed out.")
    return int(token)
