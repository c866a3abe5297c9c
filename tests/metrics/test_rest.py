"""GET /zeroscale/v1/metrics: parameters, validation and the JSON it answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from metrics.builders import T0, Clock, record
from zeroscale.api.app import RestRequest
from zeroscale.errors import ValidationException
from zeroscale.metrics.recorder import HistoryRecorder
from zeroscale.metrics.rest import MetricsApi, parse_time
from zeroscale.metrics.service import MetricsHistory
from zeroscale.metrics.store import MinuteStore


@pytest.mark.parametrize(
    ("text", "ago"),
    [("30m", 1800), ("2h", 7200), ("1d", 86400), ("90s", 90), ("15", 900), (" 1.5h ", 5400)],
)
def test_parse_durations(text: str, ago: float) -> None:
    assert parse_time(text, now=T0) == T0 - ago


def test_parse_epoch_seconds_and_rejects_nonsense() -> None:
    assert parse_time("1800000000", now=T0 + 500) == T0
    # and what no database integer holds (an audit's 500s: an overflow, inf, nan), or no time near now
    huge = ("9" * 23, "9" * 20 + "m", "1" * 400, "1" * 400 + "m", "99999999999", "60000000m")
    for bad in ("", "yesterday", "-5m", "3w", *huge):
        with pytest.raises(ValidationException):
            parse_time(bad, now=T0)


def get(**query: list[str]) -> RestRequest:
    return RestRequest("GET", "metrics", dict(query), [], b"")


@pytest.fixture
def api(tmp_path: Path) -> MetricsApi:
    clock = Clock(T0 + 90)
    history = MetricsHistory(
        HistoryRecorder(clock),
        MinuteStore(f"sqlite:///{tmp_path / 'z.db'}"),
        list,
        retention_s=86400,
        clock=clock,
    )
    history.recorder.invocation(record(at=T0 + 10))
    history.recorder.invocation(record(at=T0 + 70, endpoint="Ep"))
    return MetricsApi(history, clock)


async def test_answers_cloudwatch_datapoints(api: MetricsApi) -> None:
    status, content_type, body = await api.handle(get(endpoint=["EP"], since=["30s"], metric=["Invocations"]))
    assert (status, content_type) == (200, "application/json")
    doc = json.loads(body)
    assert doc["EndpointName"] == "EP" and doc["PeriodSeconds"] == 60 and doc["Since"] == T0 + 60
    (point,) = doc["Datapoints"]
    assert point == {
        "VariantName": "AllTraffic",
        "MetricName": "Invocations",
        "Timestamp": "2027-01-15T08:01:00Z",
        "Minute": T0 + 60,
        "Unit": "None",
        "Sum": 1.0,
        "SampleCount": 1,
        "Average": 1.0,
        "Minimum": 1.0,
        "Maximum": 1.0,
    }
    _, _, body = await api.handle(get(endpoint=["EP"], since=["1m"], metric=["Invocations"]))
    assert [p["Minute"] - T0 for p in json.loads(body)["Datapoints"]] == [0, 60]  # from since's minute


async def test_since_selects_minutes_and_metric_filters(api: MetricsApi) -> None:
    _, _, body = await api.handle(get(endpoint=["ep"], since=["5m"], metric=["Invocations,ModelLatency"]))
    points = json.loads(body)["Datapoints"]
    assert [(p["Minute"] - T0, p["MetricName"]) for p in points] == [
        (0, "Invocations"),
        (0, "ModelLatency"),
        (60, "Invocations"),
        (60, "ModelLatency"),
    ]
    _, _, body = await api.handle(get(endpoint=["ep"], since=["5m"], variant=["other"]))
    assert json.loads(body)["Datapoints"] == []


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (get(), "'endpoint' is required"),
        (get(endpoint=["ep"], metric=["Bogus"]), "Unknown metric 'Bogus'"),
        (get(endpoint=["ep"], since=["soon"]), "Invalid time 'soon'"),
        (RestRequest("POST", "metrics", {"endpoint": ["ep"]}, [], b""), "use GET"),
    ],
)
async def test_rejects_bad_requests(api: MetricsApi, request_: RestRequest, message: str) -> None:
    with pytest.raises(ValidationException, match=message):
        await api.handle(request_)
