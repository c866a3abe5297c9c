"""One-minute statistics like CloudWatch's: per (endpoint, variant, metric, minute) the Sum, SampleCount,
Minimum and Maximum of the values observed (Average is Sum / SampleCount). Pure and in memory: observations
carry their own time, and nothing here reads a clock or does I/O."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, NamedTuple

PERIOD_S = 60


@dataclass(slots=True)
class Stat:
    sum: float = 0.0
    count: int = 0
    minimum: float = math.inf
    maximum: float = -math.inf

    @classmethod
    def of(cls, *values: float) -> Stat:
        stat = cls()
        for value in values:
            stat.add(value)
        return stat

    @property
    def average(self) -> float:
        return self.sum / self.count if self.count else 0.0

    def add(self, value: float) -> None:
        self.sum += value
        self.count += 1
        if value < self.minimum:
            self.minimum = value
        if value > self.maximum:
            self.maximum = value

    def merge(self, other: Stat) -> None:
        self.sum += other.sum
        self.count += other.count
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def copy(self) -> Stat:
        return Stat(self.sum, self.count, self.minimum, self.maximum)

    def row(self) -> list[float | int | None]:
        """JSON-ready: [sum, count, minimum, maximum] (an empty statistic's bounds are None)."""
        bounded = self.count > 0
        return [self.sum, self.count, self.minimum if bounded else None, self.maximum if bounded else None]

    @classmethod
    def of_row(cls, row: Sequence[Any]) -> Stat:
        """What ``row`` made (another front end's, so its shape is checked: ValueError)."""
        if len(row) != 4:
            raise ValueError("a statistic is [sum, count, minimum, maximum]")
        total, count, low, high = row
        if int(count) <= 0:
            return cls()
        return cls(float(total), int(count), float(low), float(high))


class Key(NamedTuple):
    endpoint: str  # lower-cased: SageMaker endpoint names are case-insensitive
    minute: int  # the period's start, epoch seconds (a multiple of 60)
    variant: str
    metric: str


# One metric of one variant: (lower-cased endpoint, variant, metric)
Series = tuple[str, str, str]


def minute_of(at: float) -> int:
    return int(at // PERIOD_S) * PERIOD_S


def merge_into(target: dict[Key, Stat], stats: Mapping[Key, Stat]) -> None:
    for key, stat in stats.items():
        have = target.get(key)
        if have is None:
            target[key] = stat.copy()
        else:
            have.merge(stat)


class MinuteAggregator:
    """Open minutes in memory until they are taken (to be written elsewhere)."""

    def __init__(self, period_s: int = PERIOD_S) -> None:
        """``period_s``: how long each aggregated period is (a minute; 10 s for CloudWatch's
        high-resolution reads). ``Key.minute`` is then the period's start."""
        self.period_s = period_s
        # Plain tuples in Key's field order: cheaper to build than a Key on the invoke path.
        self._stats: dict[tuple[str, int, str, str], Stat] = {}

    def __len__(self) -> int:
        return len(self._stats)

    def observe(self, endpoint: str, variant: str, metric: str, value: float, at: float) -> None:
        self.observe_many(endpoint, variant, at, ((metric, value),))

    def observe_many(
        self, endpoint: str, variant: str, at: float, values: Iterable[tuple[str, float]]
    ) -> None:
        """Several metrics' values at one time (one invocation's): the key's prefix is computed once."""
        period = self.period_s
        endpoint, minute, stats = endpoint.lower(), int(at // period) * period, self._stats
        for metric, value in values:
            key = (endpoint, minute, variant, metric)
            stat = stats.get(key)
            if stat is None:
                stats[key] = stat = Stat()
            stat.add(value)

    def open_keys(self) -> list[Key]:
        return [Key._make(k) for k in self._stats]

    def take(self, before: float = math.inf) -> dict[Key, Stat]:
        """Remove and return the minutes that ended at or before ``before`` (all of them by default)."""
        done = [k for k in self._stats if k[1] + self.period_s <= before]
        return {Key._make(k): self._stats.pop(k) for k in done}

    def restore(self, stats: Mapping[Key, Stat]) -> None:
        """Put taken minutes back (their write failed); later observations of them merge in."""
        for key, stat in stats.items():
            plain = (key.endpoint, key.minute, key.variant, key.metric)
            have = self._stats.get(plain)
            if have is None:
                self._stats[plain] = stat.copy()
            else:
                have.merge(stat)

    def select(
        self,
        endpoint: str,
        since: float,
        until: float,
        metrics: Iterable[str] = (),
        variant: str | None = None,
    ) -> dict[Key, Stat]:
        """Copies of the open minutes that match a query (the same rules as ``MinuteStore.query``)."""
        wanted = set(metrics)
        low, high = int(since // self.period_s) * self.period_s, until
        name = endpoint.lower()
        return {
            Key._make(k): s.copy()
            for k, s in self._stats.items()
            if k[0] == name
            and low <= k[1] < high
            and (not wanted or k[3] in wanted)
            and (variant is None or k[2] == variant)
        }

    def select_series(
        self, series: AbstractSet[Series], since: float, until: float
    ) -> dict[Series, dict[int, Stat]]:
        """Copies of the open periods of each of ``series`` that start in [period of ``since``, ``until``),
        by period start, in the order ``select`` finds them: one pass over the open periods for them all."""
        low = int(since // self.period_s) * self.period_s
        out: dict[Series, dict[int, Stat]] = {}
        for (endpoint, start, variant, metric), stat in self._stats.items():
            if low <= start < until and (endpoint, variant, metric) in series:
                out.setdefault((endpoint, variant, metric), {})[start] = stat.copy()
        return out
