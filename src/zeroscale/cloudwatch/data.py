"""Reading zeroscale's metrics the way CloudWatch answers them: one metric (namespace ``AWS/SageMaker``,
dimensions EndpointName and VariantName; EndpointName alone for the asynchronous backlog's) cut into
periods of 10 s, 30 s or a multiple of 60 s, each period's statistics. Minute periods come from the
one-minute history (the database plus the minutes still in memory, so every front end's stored minutes
count); 10 s and 30 s periods from ``RecentMetrics`` (each front end's last hours: this one's, merged with
what the other live front ends on the database answer, ``zeroscale.peers``). A front end that does not
answer is missing from those periods: ``read`` names it (an alarm's step scaling then takes no step down),
CloudWatch's answers cannot, and the server's log says so."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from zeroscale.cloudwatch.recent import RESOLUTION_S, RecentMetrics
from zeroscale.errors import ZeroscaleError
from zeroscale.metrics.catalog import BY_NAME, ENDPOINT_WIDE, dimension_names
from zeroscale.metrics.history import PERIOD_S, Stat
from zeroscale.metrics.service import MetricsHistory
from zeroscale.peers import Ask, Peer

NAMESPACE = "AWS/SageMaker"
STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
HIGH_RESOLUTION_PERIODS = (10, 30)


class InvalidParameterValue(ZeroscaleError):
    code = "InvalidParameterValue"
    status = 400


class InvalidParameterCombination(ZeroscaleError):
    code = "InvalidParameterCombination"
    status = 400


class LimitExceeded(ZeroscaleError):
    """PutMetricAlarm's LimitExceededFault: the most alarms an account may hold."""

    code = "LimitExceeded"
    status = 400


class MissingParameter(ZeroscaleError):
    code = "MissingParameter"
    status = 400


@dataclass(frozen=True)
class Metric:
    """One metric as CloudWatch names it; ``series`` is zeroscale's (endpoint, variant) when it has it."""

    namespace: str
    name: str
    dimensions: tuple[tuple[str, str], ...]  # sorted by name

    @classmethod
    def of(cls, namespace: str, name: str, dimensions: Sequence[Mapping[str, str]] | None) -> Metric:
        dims = tuple(sorted((d["Name"], d["Value"]) for d in dimensions or ()))
        return cls(namespace, name, dims)

    @property
    def series(self) -> tuple[str, str] | None:
        """(endpoint, variant) when this is one of zeroscale's metrics, else None (no data, as CloudWatch
        answers for a metric nobody published)."""
        dims = dict(self.dimensions)
        if self.namespace != NAMESPACE or self.name not in BY_NAME or set(dims) != dimension_names(self.name):
            return None
        return dims["EndpointName"], dims.get("VariantName", ENDPOINT_WIDE)

    def document(self) -> dict[str, object]:
        return {
            "Namespace": self.namespace,
            "MetricName": self.name,
            "Dimensions": [{"Name": n, "Value": v} for n, v in self.dimensions],
        }


def _dimensions(name: str, endpoint: str, variant: str) -> tuple[tuple[str, str], ...]:
    if "VariantName" in dimension_names(name):
        return (("EndpointName", endpoint), ("VariantName", variant))
    return (("EndpointName", endpoint),)


def check_period(period: int, member: str = "Period") -> None:
    if period in HIGH_RESOLUTION_PERIODS or (period >= PERIOD_S and period % PERIOD_S == 0):
        return
    raise InvalidParameterValue(
        f"The parameter {member} must be 10, 30 or a multiple of 60 (zeroscale keeps 10-second and "
        f"one-minute statistics); got {period}."
    )


def value(stat: Stat, statistic: str) -> float:
    if statistic == "Sum":
        return stat.sum
    if statistic == "SampleCount":
        return float(stat.count)
    if statistic == "Minimum":
        return stat.minimum
    if statistic == "Maximum":
        return stat.maximum
    return stat.average


def unit(name: str) -> str:
    info = BY_NAME.get(name)
    return info.unit if info is not None else "None"


RECENT_OP = "cloudwatch.recent"
# The other front ends' answers to a peer operation, and those that did not answer (PeerClient.ask)
Others = Ask


class MetricData:
    def __init__(self, history: MetricsHistory, recent: RecentMetrics, others: Others | None = None) -> None:
        self._history = history
        self.recent = recent
        self._others = others

    async def periods(self, metric: Metric, start: float, end: float, period: int) -> list[tuple[int, Stat]]:
        """The statistics of each period with data in [start, end), oldest first; a period's timestamp is
        its start, periods aligned to ``start`` rounded down to the data's resolution."""
        return (await self.read(metric, start, end, period))[0]

    async def read(
        self, metric: Metric, start: float, end: float, period: int
    ) -> tuple[list[tuple[int, Stat]], tuple[Peer, ...]]:
        """``periods``, and the other front ends that did not answer for them (10- and 30-second periods
        only: minutes are in the database): when there are any, the periods lack their traffic."""
        series = metric.series
        if series is None or end <= start:
            return [], ()
        endpoint, variant = series
        missing: tuple[Peer, ...] = ()
        if period < PERIOD_S:
            resolution = RESOLUTION_S
            if end <= self.recent.oldest():
                return [], ()
            found = self.recent.query(endpoint, variant, metric.name, start, end)
            pieces = [(k.minute, s) for k, s in found.items()]
            if self._others is not None:
                args = {
                    "endpoint": endpoint,
                    "variant": variant,
                    "metric": metric.name,
                    "since": start,
                    "until": end,
                }
                gathered = await self._others(RECENT_OP, args)
                for _, answer in gathered.answers:
                    pieces += [(int(row[0]), Stat.of_row(row[1:])) for row in answer["periods"]]
                missing = gathered.missing
        else:
            resolution = PERIOD_S
            points = await self._history.query(endpoint, start, end, (metric.name,), variant)
            pieces = [(p.minute, p.stat) for p in points]
        origin = math.floor(start / resolution) * resolution
        buckets: dict[int, Stat] = {}
        for at, stat in pieces:
            if at >= end:
                continue
            bucket = origin + int((at - origin) // period) * period
            have = buckets.get(bucket)
            if have is None:
                buckets[bucket] = stat.copy()
            else:
                have.merge(stat)
        return sorted(buckets.items()), missing

    async def metrics(self, since: float) -> list[Metric]:
        """Every metric with data since ``since`` (stored minutes, and this process's recent periods)."""
        found = await self._history.series(since)
        return [
            Metric(NAMESPACE, name, _dimensions(name, endpoint, variant))
            for endpoint, variant, name in sorted(found)
            if name in BY_NAME
        ]
