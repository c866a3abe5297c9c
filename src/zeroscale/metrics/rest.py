"""``GET /zeroscale/v1/metrics?endpoint=NAME[&since=30m][&until=...][&metric=NAME...][&variant=NAME]``:
the one-minute history as JSON, CloudWatch's Datapoint members per (variant, metric, minute)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Protocol

from zeroscale.errors import UnknownOperationException, ValidationException
from zeroscale.metrics.catalog import BY_NAME
from zeroscale.metrics.service import MetricsHistory

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 60}
DEFAULT_SINCE = "1h"


class Request(Protocol):
    """The part of a REST request this handler reads (``api.app.RestRequest`` has it)."""

    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def query(self) -> dict[str, list[str]]: ...


_FUTURE_S = 86400.0


def parse_time(text: str, now: float) -> float:
    """``30m``, ``2h``, ``1d``, ``90s`` (a bare number is minutes) ago, or epoch seconds (>= 10^9)."""
    match = _DURATION.match(text)
    if match is None:
        raise ValidationException(
            f"Invalid time {text!r}: give a duration ago like 30m, 2h, 1d or 90s, or epoch seconds."
        )
    number, unit = float(match.group(1)), match.group(2)
    at = number if not unit and number >= 1e9 else now - number * _UNIT_S[unit]
    if not 0 <= at <= now + _FUTURE_S:  # (inf and nan too: a database integer holds neither)
        raise ValidationException(
            f"Invalid time {text[:64]!r}: it is before 1970 or more than a day from now."
        )
    return at


class MetricsApi:
    def __init__(self, history: MetricsHistory, clock: Callable[[], float] = time.time) -> None:
        self._history = history
        self._clock = clock

    async def handle(self, request: Request) -> tuple[int, str, bytes]:
        if request.method != "GET":
            raise ValidationException(f"{request.method} is not supported on metrics; use GET.")
        if request.path != "metrics":  # what the endpoint's read was authorized on: the path names nothing
            raise UnknownOperationException(f"No zeroscale API at {request.path}: use metrics?endpoint=NAME.")
        q = request.query
        endpoint = _one(q, "endpoint")
        if not endpoint:
            raise ValidationException("The query parameter 'endpoint' is required.")
        now = self._clock()
        since = parse_time(_one(q, "since") or DEFAULT_SINCE, now)
        until_text = _one(q, "until")
        until = parse_time(until_text, now) if until_text else None
        metrics = tuple(name for value in q.get("metric", []) for name in value.split(",") if name)
        unknown = [name for name in metrics if name not in BY_NAME]
        if unknown:
            raise ValidationException(f"Unknown metric {unknown[0]!r}; known: {', '.join(sorted(BY_NAME))}.")
        points = await self._history.query(endpoint, since, until, metrics, _one(q, "variant"))
        body = {
            "EndpointName": endpoint,
            "Since": int(since),
            "PeriodSeconds": 60,
            "Datapoints": [p.document() for p in points],
        }
        return 200, "application/json", json.dumps(body).encode()


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None
