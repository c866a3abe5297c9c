"""``GET /zeroscale/v1/usage?group_by=endpoint|variant|day|month&start=ISO&end=ISO``: the usage report as
JSON (the console's and ``zeroscale usage``'s source)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Protocol

from zeroscale.errors import UnknownOperationException, ValidationException
from zeroscale.metering.reports import GROUPS, parse_time
from zeroscale.metering.service import Metering

_PARAMS = ("group_by", "start", "end")


class Request(Protocol):
    @property
    def method(self) -> str: ...

    @property
    def path(self) -> str: ...

    @property
    def query(self) -> Mapping[str, list[str]]: ...


class UsageApi:
    def __init__(self, metering: Metering) -> None:
        self._metering = metering

    async def __call__(self, request: Request) -> tuple[int, str, bytes]:
        if request.path.rstrip("/") != "usage":
            raise UnknownOperationException(f"No zeroscale API at /zeroscale/v1/{request.path}.")
        if request.method != "GET":
            raise UnknownOperationException(f"No operation at {request.method} /zeroscale/v1/usage; use GET.")
        group_by, start, end = _parse(request.query)
        self._metering.collect()  # on the event loop: what the native data plane answered, handed over
        report = await asyncio.to_thread(self._metering.report, group_by=group_by, start=start, end=end)
        body = json.dumps(report.to_json(), indent=1).encode()
        return 200, "application/json", body


def _parse(query: Mapping[str, list[str]]) -> tuple[str, float | None, float | None]:
    unknown = sorted(set(query) - set(_PARAMS))
    if unknown:
        raise ValidationException(f"Unknown query parameter(s) {unknown}; accepted: {list(_PARAMS)}.")
    values: dict[str, str] = {}
    for name in _PARAMS:
        given = query.get(name) or []
        if len(given) > 1:
            raise ValidationException(f"Query parameter {name} given {len(given)} times.")
        if given and given[0]:
            values[name] = given[0]
    group_by = values.get("group_by", "endpoint")
    if group_by not in GROUPS:
        raise ValidationException(f"Value '{group_by}' at 'group_by' must be one of {list(GROUPS)}.")
    times: dict[str, float] = {}
    for name in ("start", "end"):
        if name in values:
            try:
                times[name] = parse_time(values[name])
            except ValueError:
                raise ValidationException(
                    f"Value '{values[name]}' at '{name}' is not an ISO 8601 date or date-time "
                    "(e.g. 2025-01-31 or 2025-01-31T12:00:00Z)."
                ) from None
    start, end = times.get("start"), times.get("end")
    if start is not None and end is not None and end <= start:
        raise ValidationException("end must be after start.")
    return group_by, start, end
