"""The alarm evaluator with a fake clock, real (in-memory) tables and the real recorders: an alarm on
10-second periods goes to ALARM once the period holding the errors has ended, listeners hear each change,
its history keeps them; only the leader evaluates."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

import pytest

from zeroscale.cloudwatch.alarms import AlarmStore
from zeroscale.cloudwatch.data import RECENT_SERIES_OP, LimitExceeded, Metric, MetricData, Others
from zeroscale.cloudwatch.recent import RecentMetrics
from zeroscale.cloudwatch.service import CloudWatch, StateChange
from zeroscale.events import InvocationRecord
from zeroscale.metrics.recorder import HistoryRecorder
from zeroscale.metrics.service import MetricsHistory
from zeroscale.metrics.store import MinuteStore
from zeroscale.peers import Gathered, Peer, PeerClient

DIMS = [{"Name": "EndpointName", "Value": "demo"}, {"Name": "VariantName", "Value": "A"}]


def failed(at: float) -> InvocationRecord:
    return InvocationRecord("demo", "A", "w", at, 0.1, 0.1, 1, 1, 424, "ModelError", 1024, None, False, 500)


def build(
    now: list[float], leader: bool = True, others: Others | None = None
) -> tuple[CloudWatch, RecentMetrics]:
    clock = lambda: now[0]  # noqa: E731
    recent = RecentMetrics(lambda: [], clock)
    history = MetricsHistory(
        HistoryRecorder(clock), MinuteStore("sqlite://"), lambda: [], retention_s=0, clock=clock
    )
    service = CloudWatch(
        AlarmStore("sqlite://"),
        MetricData(history, recent, others=others),
        region="us-east-1",
        account_id="1",
        clock=clock,
        interval_s=0.01,
        leader=lambda: leader,
    )
    service.put_metric_alarm(
        {
            "AlarmName": "errors",
            "Namespace": "AWS/SageMaker",
            "MetricName": "Invocation5XXErrors",
            "Dimensions": DIMS,
            "Statistic": "Sum",
            "Period": 10,
            "EvaluationPeriods": 1,
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
            "TreatMissingData": "notBreaching",
        }
    )
    return service, recent


def state(service: CloudWatch) -> str:
    return str(service.describe_alarms({"AlarmNames": ["errors"]})["MetricAlarms"][0]["StateValue"])


async def test_errors_in_a_period_put_the_alarm_in_alarm_once_it_ended() -> None:
    now = [1000.0]
    service, recent = build(now)
    heard: list[StateChange] = []
    service.listeners.append(heard.append)
    await service.evaluate()
    assert state(service) == "OK"  # no data, not breaching
    recent.invocation(failed(1002.0))
    now[0] = 1009.0
    await service.evaluate()
    assert state(service) == "OK"  # the period [1000, 1010) has not ended
    now[0] = 1011.5
    await service.evaluate()
    assert state(service) == "ALARM"
    assert [(c.old, c.new) for c in heard] == [("INSUFFICIENT_DATA", "OK"), ("OK", "ALARM")]
    now[0] = 1021.5  # the next period had no errors
    await service.evaluate()
    assert state(service) == "OK"
    items = service.describe_alarm_history({"AlarmName": "errors", "HistoryItemType": "StateUpdate"})
    assert [i["HistorySummary"] for i in items["AlarmHistoryItems"]] == [
        "Alarm updated from ALARM to OK",
        "Alarm updated from OK to ALARM",
        "Alarm updated from INSUFFICIENT_DATA to OK",
    ]


async def test_ten_second_periods_add_up_every_front_ends_traffic() -> None:
    """Two front ends each see their own invocations; the leader's alarm and its 10-second statistics read
    the other's periods too (as its peer route answers them, through JSON), merged by their start."""
    now = [1000.0]
    other = RecentMetrics(lambda: [], lambda: now[0])
    asked: list[tuple[str, dict[str, Any]]] = []

    async def others(op: str, args: dict[str, Any]) -> Gathered:
        asked.append((op, args))
        answer = json.loads(json.dumps(await other.peer_query_series(json.loads(json.dumps(args)))))
        return Gathered((("fe-b", answer),))

    service, recent = build(now, others=others)
    await service.evaluate()
    assert state(service) == "OK"
    other.invocation(failed(1002.0))  # the errors are the other front end's only
    other.invocation(failed(1003.0))
    recent.invocation(failed(1014.0))
    now[0] = 1025.5
    await service.evaluate()
    assert state(service) == "ALARM"
    assert asked and asked[-1][0] == RECENT_SERIES_OP
    assert asked[-1][1]["series"] == [["demo", "A", "Invocation5XXErrors"]]
    metric = Metric.of("AWS/SageMaker", "Invocation5XXErrors", DIMS)
    (tens, thirties), _ = await service._data.read_many([(metric, 10), (metric, 30)], 1000.0, 1030.0)
    assert [(at, stat.sum) for at, stat in tens] == [(1000, 2.0), (1010, 1.0)]
    assert [(at, stat.sum) for at, stat in thirties] == [(1000, 3.0)]


async def test_only_the_leader_evaluates() -> None:
    for leader, expected in ((False, "INSUFFICIENT_DATA"), (True, "OK")):
        service, _ = build([1000.0], leader=leader)
        await service.start()
        await asyncio.sleep(0.1)
        assert state(service) == expected
        await service.close()


async def test_an_action_gets_cloudwatchs_notification() -> None:
    """What an alarm's action (an SNS topic's, say) receives: CloudWatch's notification, its Region as AWS
    writes it, the alarm's actions and the trigger's statistic type and unit."""
    service, _ = build([1000.0])
    got: list[dict[str, object]] = []

    class Recorded:
        repeats = False

        def check(self, arn: str) -> None:
            pass

        def run(self, arn: str, message: dict[str, object], breach: float | None, partial: bool) -> None:
            got.append(message)

    service.actions["arn:aws:sns:"] = Recorded()
    topic = "arn:aws:sns:us-east-1:1:ops"
    alarm = service.describe_alarms({"AlarmNames": ["errors"]})["MetricAlarms"][0]
    kept = ("AlarmName", "Namespace", "MetricName", "Dimensions", "Statistic", "Period", "EvaluationPeriods")
    params = {k: alarm[k] for k in (*kept, "Threshold", "ComparisonOperator")}
    service.put_metric_alarm({**params, "AlarmActions": [topic], "Unit": "None"})
    service.set_alarm_state({"AlarmName": "errors", "StateValue": "ALARM", "StateReason": "by hand"})
    (message,) = got
    assert message["Region"] == "US East (N. Virginia)" and message["NewStateValue"] == "ALARM"
    assert message["AlarmActions"] == [topic] and message["OKActions"] == []
    assert str(message["AlarmConfigurationUpdatedTimestamp"]).endswith(".000+0000")
    trigger = message["Trigger"]
    assert isinstance(trigger, dict) and (trigger["StatisticType"], trigger["Unit"]) == ("Statistic", "None")


def test_alarms_are_held_to_the_servers_resource_limit() -> None:
    """--max-resources: a new alarm past it is CloudWatch's LimitExceeded; an alarm put again is only
    changed, and one deleted makes room."""
    now = [1000.0]
    service, _ = build(now)  # holds "errors"
    service._alarms._most = 2
    alarm = service.describe_alarms({"AlarmNames": ["errors"]})["MetricAlarms"][0]
    put = {k: alarm[k] for k in ("Namespace", "MetricName", "Dimensions", "Statistic", "Period")}
    put.update(EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanThreshold")
    service.put_metric_alarm({**put, "AlarmName": "second"})
    with pytest.raises(LimitExceeded) as err:
        service.put_metric_alarm({**put, "AlarmName": "third"})
    assert (err.value.code, err.value.status) == ("LimitExceeded", 400)
    assert err.value.message.startswith("The quota for alarms for this customer has already been reached")
    service.put_metric_alarm({**put, "AlarmName": "second", "Threshold": 5})
    service.delete_alarms({"AlarmNames": ["errors"]})
    service.put_metric_alarm({**put, "AlarmName": "third"})


async def test_an_alarms_actions_are_told_when_its_data_lacked_a_front_end() -> None:
    """Another live front end does not answer for its 10-second periods (nothing listens where it serves: a
    real peer call, refused): the alarm is evaluated on what it has, and its actions hear that the view was
    partial (a step scaling policy then takes no step down); with the whole view again, they hear it was
    not. Each run in ALARM is told, as each may scale."""
    now = [1000.0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = Peer("fe-b", f"http://127.0.0.1:{s.getsockname()[1]}")
    live = [down]
    client = PeerClient(b"k" * 32, "fe-a", lambda: live, timeout_s=2.0)
    service, recent = build(now, others=client.ask)
    got: list[bool] = []

    class Recorded:
        repeats = True

        def check(self, arn: str) -> None:
            pass

        def run(self, arn: str, message: dict[str, object], breach: float | None, partial: bool) -> None:
            got.append(partial)

    service.actions["arn:aws:autoscaling:"] = Recorded()
    alarm = service.describe_alarms({"AlarmNames": ["errors"]})["MetricAlarms"][0]
    kept = ("AlarmName", "Namespace", "MetricName", "Dimensions", "Statistic", "Period", "EvaluationPeriods")
    policy = "arn:aws:autoscaling:us-east-1:1:scalingPolicy:x"
    service.put_metric_alarm(
        {**{k: alarm[k] for k in (*kept, "Threshold", "ComparisonOperator")}, "AlarmActions": [policy]}
    )
    try:
        recent.invocation(failed(1002.0))
        now[0] = 1011.5
        await service.evaluate()
        assert state(service) == "ALARM" and got == [True]
        live.clear()
        recent.invocation(failed(1012.0))
        now[0] = 1021.5
        await service.evaluate()
        assert state(service) == "ALARM" and got == [True, False]
    finally:
        client.close()
