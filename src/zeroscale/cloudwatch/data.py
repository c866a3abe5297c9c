"""Reading zeroscale's metrics the way CloudWatch answers them: one metric (namespace ``AWS/SageMaker``,
dimensions EndpointName and VariantName; EndpointName alone for the asynchronous backlog's) cut into
periods of 10 s, 30 s or a multiple of 60 s, each period's statistics. Minute periods come from the
one-minute history (the database plus the minutes still in memory, so every front end's stored minutes
count); 10 s and 30 s periods from ``RecentMetrics`` (each front end's last hours: this one's, merged with
what the other live front ends on the database answer, ``zeroscale.peers``). A front end that does not
answer is missing from those periods: ``read_many`` names it (an alarm's step scaling then takes no step
down), CloudWatch's answers cannot, and the server's log says so."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from zeroscale.cloudwatch.recent import RESOLUTION_S, RecentMetrics
from zeroscale.errors import ZeroscaleError
from zeroscale.metrics.catalog import BY_NAME, ENDPOINT_WIDE, dimension_names
from zeroscale.metrics.history import PERIOD_S, Series, Stat
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


RECENT_SERIES_OP = "cloudwatch.recent.series"  # the other front ends' 10-second periods of many series
# The other front ends' answers to a peer operation, and those that did not answer (PeerClient.ask)
Others = Ask


class MetricData:
    def __init__(self, history: MetricsHistory, recent: RecentMetrics, others: Others | None = None) -> None:
        self._history = history
        self.recent = recent
        self._others = others

    async def read_many(
        self, wanted: Sequence[tuple[Metric, int]], start: float, end: float
    ) -> tuple[list[list[tuple[int, Stat]]], tuple[Peer, ...]]:
        """The periods of each (metric, period) of ``wanted``, in its order, and the other front ends that
        did not answer for them (10- and 30-second periods only: minutes are in the database; when there are
        any, those periods lack their traffic). A metric's periods: those with data in [start, end), oldest
        first, each with its statistics; a period's timestamp is its start, periods aligned to ``start``
        rounded down to the data's resolution. All are read at once: one database query for the minutes of
        them all, one pass over the periods in memory, one call to each other front end (GetMetricData's 500
        queries read alone made 500 queries of the database, each from a thread of its own)."""
        out: list[list[tuple[int, Stat]]] = [[] for _ in wanted]
        if end <= start:
            return out, ()
        keys: list[Series | None] = []
        minutes: set[Series] = set()
        tens: set[Series] = set()
        gone = end <= self.recent.oldest()  # the 10-second periods asked for are no longer kept
        for metric, period in wanted:
            series = metric.series
            key = None if series is None else (series[0].lower(), series[1], metric.name)
            if key is not None and period < PERIOD_S and gone:
                key = None
            keys.append(key)
            if key is not None:
                (tens if period < PERIOD_S else minutes).add(key)
        stored = await self._history.query_series(minutes, start, end) if minutes else {}
        recent: dict[Series, list[tuple[int, Stat]]] = {}
        missing: tuple[Peer, ...] = ()
        if tens:
            found = self.recent.query_series(tens, start, end)
            recent = {key: list(periods.items()) for key, periods in found.items()}
            if self._others is not None:
                asked = sorted(tens)
                args = {"series": [list(key) for key in asked], "since": start, "until": end}
                gathered = await self._others(RECENT_SERIES_OP, args)
                for _, answer in gathered.answers:
                    for key, rows in zip(asked, answer["periods"], strict=True):
                        if rows:
                            pieces = recent.setdefault(key, [])
                            pieces += [(int(row[0]), Stat.of_row(row[1:])) for row in rows]
                missing = gathered.missing
        for i, ((_, period), key) in enumerate(zip(wanted, keys, strict=True)):
            if key is None:
                continue
            if period < PERIOD_S:
                out[i] = _buckets(recent.get(key, ()), start, end, period, RESOLUTION_S)
            else:
                out[i] = _buckets(stored.get(key, ()), start, end, period, PERIOD_S)
        return out, missing

    async def metrics(self, since: float) -> list[Metric]:
        """Every metric with data since ``since`` (stored minutes, and this process's recent periods)."""
        found = await self._history.series(since)
        return [
            Metric(NAMESPACE, name, _dimensions(name, endpoint, variant))
            for endpoint, variant, name in sorted(found)
            if name in BY_NAME
        ]


def _buckets(
    pieces: Iterable[tuple[int, Stat]], start: float, end: float, period: int, resolution: int
) -> list[tuple[int, Stat]]:
    """Periods of ``resolution`` seconds (``pieces``: their starts and statistics, a start more than once
    where front ends each hold a part) merged into periods of ``period`` aligned to ``start`` rounded down
    to ``resolution``: those with data before ``end``, oldest first."""
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
    return sorted(buckets.items())
