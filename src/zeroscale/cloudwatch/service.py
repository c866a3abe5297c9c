"""CloudWatch's operations over zeroscale's metrics (GetMetricStatistics, GetMetricData, ListMetrics) and its
metric alarms (PutMetricAlarm, DescribeAlarms, DescribeAlarmsForMetric, DescribeAlarmHistory, DeleteAlarms,
SetAlarmState), and the loop that evaluates the alarms.

The loop runs on every front end but evaluates only on the leader (the oldest live front end sharing the
database, ``leader()``), so each state change is made and recorded once: a change is a compare-and-set on the
alarm's row. An alarm is evaluated once each of its periods has ended (10 s, 30 s or a multiple of 60 s),
over its last EvaluationPeriods periods, and at once after PutMetricAlarm. On a change, the actions for the
new state run (SNS-style topics, see ``actions``) and the ``listeners`` hear it (guarded deployments)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zeroscale.cloudwatch import rules
from zeroscale.cloudwatch.alarms import HISTORY_KEPT_S, Alarm, AlarmStore, HistoryItem
from zeroscale.cloudwatch.data import (
    NAMESPACE,
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
from zeroscale.cloudwatch.reads import MetricReads, epoch, next_offset
from zeroscale.errors import ZeroscaleError
from zeroscale.metrics.catalog import BY_NAME, dimension_names
from zeroscale.metrics.history import PERIOD_S

log = logging.getLogger("zeroscale.cloudwatch")
MAX_ALARM_SPAN_S = 7 * 24 * 3600  # Period x EvaluationPeriods
HIGH_RESOLUTION_LAG_S = 1.0  # a 10 s period is evaluated this long after it ended (late invocations)
MINUTE_LAG_S = 5.0  # a minute, after every front end flushed it (metrics.service.FLUSH_GRACE_S is 2 s)
_DEFAULT_RECORDS = 50
_HISTORY_RECORDS = 100


class ResourceNotFound(ZeroscaleError):
    code = "ResourceNotFound"
    status = 404


class InvalidFormat(ZeroscaleError):
    code = "InvalidFormat"
    status = 400


class Action(Protocol):
    """Where an alarm action's ARN leads (a topic, a step scaling policy): ``check`` raises a ZeroscaleError
    naming what is wrong with the ARN; ``run`` performs it (raises on failure) with the alarm's notification,
    its breach (the newest datapoint minus the threshold; None when the state was set by hand without
    data) and whether the evaluation's data was ``partial`` (another front end did not answer for its
    periods: a scaling policy then takes no step down; the notification, CloudWatch's shape, cannot say so).
    A ``repeats`` action runs again at every evaluation while the alarm stays in ALARM (scaling policies, as
    CloudWatch invokes them)."""

    repeats: bool

    def check(self, arn: str) -> None: ...

    def run(self, arn: str, message: dict[str, Any], breach: float | None, partial: bool) -> None: ...


@dataclass(frozen=True)
class StateChange:
    alarm: str
    old: str
    new: str
    reason: str
    at: float


Operation = Callable[[Mapping[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]


class CloudWatch:
    def __init__(
        self,
        alarms: AlarmStore,
        data: MetricData,
        *,
        region: str,
        account_id: str,
        clock: Callable[[], float] = time.time,
        interval_s: float = 1.0,
        leader: Callable[[], bool] = lambda: True,
        spell: Callable[[str], str] = lambda name: name,
    ) -> None:
        """``leader``: whether this front end evaluates; ``spell``: a lower-cased endpoint name as its user
        spelled it (the history keeps names lower-cased)."""
        self._alarms = alarms
        self._data = data
        self._region = region
        self._account = account_id
        self._clock = clock
        self._interval_s = interval_s
        self._leader = leader
        self.reads = MetricReads(data, clock, spell)
        self.actions: dict[str, Action] = {}  # ARN prefix -> where it leads
        self.listeners: list[Callable[[StateChange], None]] = []
        self._evaluated: dict[str, tuple[float, float]] = {}  # name -> (window end, config time)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def operations(self) -> dict[str, Operation]:
        return {
            "GetMetricStatistics": self.reads.get_metric_statistics,
            "GetMetricData": self.reads.get_metric_data,
            "ListMetrics": self.reads.list_metrics,
            "PutMetricAlarm": self.put_metric_alarm,
            "DescribeAlarms": self.describe_alarms,
            "DescribeAlarmsForMetric": self.describe_alarms_for_metric,
            "DescribeAlarmHistory": self.describe_alarm_history,
            "DeleteAlarms": self.delete_alarms,
            "SetAlarmState": self.set_alarm_state,
        }

    # ---- what other parts read (guarded deployments) ----
    def missing(self, names: Sequence[str]) -> list[str]:
        return self._alarms.missing(list(names))

    def states(self, names: Sequence[str]) -> dict[str, str]:
        wanted = set(names)
        return {a.name: a.state for a in self._alarms.all() if a.name in wanted}

    def alarm_arn(self, name: str) -> str:
        return f"arn:aws:cloudwatch:{self._region}:{self._account}:alarm:{name}"

    # ---- alarms ----
    def put_metric_alarm(self, params: Mapping[str, Any]) -> dict[str, Any]:
        doc = {k: v for k, v in params.items() if v is not None}
        for member in ("MetricName", "Namespace", "Statistic", "Period", "Threshold"):
            if member not in doc:
                raise MissingParameter(f"The parameter {member} is required for a metric alarm.")
        check_period(int(doc["Period"]))
        if doc["Statistic"] not in STATISTICS:
            raise InvalidParameterValue(
                f"Statistic {doc['Statistic']} must be one of {', '.join(STATISTICS)}."
            )
        metric = Metric.of(doc["Namespace"], doc["MetricName"], doc.get("Dimensions"))
        if metric.namespace != NAMESPACE:
            raise InvalidParameterValue(
                f"Namespace {metric.namespace}: zeroscale's metrics are in {NAMESPACE} (PutMetricData is not "
                "served), so an alarm on it could never leave INSUFFICIENT_DATA."
            )
        if metric.name not in BY_NAME:
            raise InvalidParameterValue(
                f"MetricName {metric.name} is not one of zeroscale's metrics: {', '.join(BY_NAME)}."
            )
        if metric.series is None:
            raise InvalidParameterValue(
                f"Dimensions must be exactly {' and '.join(sorted(dimension_names(metric.name)))}: "
                f"CloudWatch names {metric.name} by those."
            )
        if "Unit" in doc and doc["Unit"] != unit(metric.name):
            raise InvalidParameterValue(
                f"Unit {doc['Unit']}: zeroscale records {metric.name} in {unit(metric.name)}."
            )
        if doc["ComparisonOperator"] not in rules.COMPARISONS:
            raise InvalidParameterValue(
                f"ComparisonOperator {doc['ComparisonOperator']} needs an anomaly detection model, which "
                f"zeroscale does not serve: use one of {', '.join(rules.COMPARISONS)}."
            )
        periods = int(doc["EvaluationPeriods"])
        to_alarm = int(doc.get("DatapointsToAlarm", periods))
        if to_alarm > periods:
            raise InvalidParameterValue(
                f"DatapointsToAlarm {to_alarm} must be less than or equal to EvaluationPeriods {periods}."
            )
        if periods * int(doc["Period"]) > MAX_ALARM_SPAN_S:
            raise InvalidParameterValue(
                "Period multiplied by EvaluationPeriods must not exceed 604800 seconds (7 days)."
            )
        treat = doc.get("TreatMissingData", "missing")
        if treat not in rules.TREAT_MISSING:
            raise InvalidParameterValue(
                f"TreatMissingData {treat} must be one of {', '.join(rules.TREAT_MISSING)}."
            )
        for member in ("OKActions", "AlarmActions", "InsufficientDataActions"):
            for arn in doc.get(member) or []:
                try:
                    self._action(arn, member).check(arn)
                except ZeroscaleError as exc:
                    if isinstance(exc, InvalidParameterValue):
                        raise
                    raise InvalidParameterValue(f"{member}: {arn}: {exc.message}") from None
        name = doc["AlarmName"]
        self._alarms.put(name, self.alarm_arn(name), doc, self._clock())
        self._evaluated.pop(name, None)
        self._wake.set()
        return {}

    def describe_alarms(self, params: Mapping[str, Any]) -> dict[str, Any]:
        names = list(params.get("AlarmNames") or [])
        prefix = params.get("AlarmNamePrefix")
        if names and prefix:
            raise InvalidParameterCombination("AlarmNames and AlarmNamePrefix cannot be given together.")
        types = params.get("AlarmTypes") or ["MetricAlarm"]
        found = [] if "MetricAlarm" not in types else self._alarms.all()
        state, action = params.get("StateValue"), params.get("ActionPrefix")
        found = [
            a
            for a in found
            if (not names or a.name in names)
            and (prefix is None or a.name.startswith(prefix))
            and (state is None or a.state == state)
            and (action is None or any(arn.startswith(action) for arn in _actions(a.doc)))
        ]
        page, token = _page(found, params, _DEFAULT_RECORDS)
        return {"MetricAlarms": [self._alarm_doc(a) for a in page], "CompositeAlarms": [], **token}

    def describe_alarms_for_metric(self, params: Mapping[str, Any]) -> dict[str, Any]:
        metric = Metric.of(params["Namespace"], params["MetricName"], params.get("Dimensions"))
        out = []
        for a in self._alarms.all():
            d = a.doc
            if Metric.of(d["Namespace"], d["MetricName"], d.get("Dimensions")) != metric and not (
                params.get("Dimensions") is None
                and (d["Namespace"], d["MetricName"]) == (metric.namespace, metric.name)
            ):
                continue
            if any(
                params.get(k) is not None and params[k] != d.get(k) for k in ("Statistic", "Period", "Unit")
            ):
                continue
            out.append(self._alarm_doc(a))
        return {"MetricAlarms": out}

    def describe_alarm_history(self, params: Mapping[str, Any]) -> dict[str, Any]:
        types = params.get("AlarmTypes")
        if types and "MetricAlarm" not in types:
            return {"AlarmHistoryItems": []}
        items = self._alarms.history(
            params.get("AlarmName"),
            params.get("HistoryItemType"),
            None if params.get("StartDate") is None else epoch(params["StartDate"]),
            None if params.get("EndDate") is None else epoch(params["EndDate"]),
            newest_first=params.get("ScanBy", "TimestampDescending") == "TimestampDescending",
        )
        page, token = _page(items, params, _HISTORY_RECORDS)
        return {"AlarmHistoryItems": [_history_doc(i) for i in page], **token}

    def delete_alarms(self, params: Mapping[str, Any]) -> dict[str, Any]:
        names = list(params["AlarmNames"])
        missing = self._alarms.missing(names)
        if missing:
            raise ResourceNotFound(f"The alarm(s) {', '.join(missing)} do not exist.")
        self._alarms.delete(names, self._clock())
        for name in names:
            self._evaluated.pop(name, None)
        return {}

    def set_alarm_state(self, params: Mapping[str, Any]) -> dict[str, Any]:
        name = params["AlarmName"]
        alarm = self._alarms.get(name)
        if alarm is None:
            raise ResourceNotFound(f"Alarm {name} not found.")
        data = params.get("StateReasonData")
        if data is not None:
            try:
                json.loads(data)
            except ValueError:
                raise InvalidFormat("StateReasonData is not valid JSON.") from None
        self._change(alarm, params["StateValue"], params["StateReason"], data, self._clock())
        return {}

    # ---- state changes ----
    def _change(
        self, alarm: Alarm, state: str, reason: str, data: str | None, now: float, partial: bool = False
    ) -> bool:
        """``partial``: the evaluation's data lacked a front end that did not answer (for the actions)."""
        if state == alarm.state:
            self._alarms.touch(alarm.name, state, reason, data, now)
            if state == rules.ALARM:  # still in ALARM: scaling policies are invoked again
                alarm.reason_data = data
                change = StateChange(alarm.name, state, state, reason, now)
                self._run_actions(alarm, change, repeating=True, partial=partial)
            return False
        if not self._alarms.set_state(alarm.name, state, reason, data, now, expect=alarm.state):
            return False  # changed meanwhile (another front end, or deleted)
        change = StateChange(alarm.name, alarm.state, state, reason, now)
        log.info("alarm %s: %s -> %s: %s", alarm.name, alarm.state, state, reason)
        for listener in self.listeners:
            try:
                listener(change)
            except Exception:
                log.exception("alarm listener failed for %s", alarm.name)
        alarm.reason_data = data
        self._run_actions(alarm, change, partial=partial)
        return True

    def _run_actions(
        self, alarm: Alarm, change: StateChange, *, repeating: bool = False, partial: bool = False
    ) -> None:
        if not alarm.doc.get("ActionsEnabled", True):
            return
        member = {"OK": "OKActions", "ALARM": "AlarmActions"}.get(change.new, "InsufficientDataActions")
        for arn in alarm.doc.get(member) or []:
            message = self._notification(alarm, change)
            try:
                action = self._action(arn, member)
                if repeating and not action.repeats:
                    continue
                action.run(arn, message, _breach(alarm), partial)
                summary, data = f"Successfully executed action {arn}", {"actionState": "Succeeded"}
            except Exception as exc:
                summary = f"Failed to execute action {arn}"
                data = {"actionState": "Failed", "error": getattr(exc, "message", str(exc))}
            self._alarms.record(alarm.name, change.at, "Action", summary, data)

    def _action(self, arn: str, member: str) -> Action:
        for prefix, action in self.actions.items():
            if arn.startswith(prefix):
                return action
        raise InvalidParameterValue(
            f"{member}: the action {arn} is not one zeroscale performs (it performs: "
            f"{', '.join(sorted(self.actions)) or 'none'})."
        )

    def _notification(self, alarm: Alarm, change: StateChange) -> dict[str, Any]:
        """CloudWatch's alarm notification (its ``Region`` is the region's name, as AWS writes it)."""
        d = alarm.doc
        return {
            "AlarmName": alarm.name,
            "AlarmDescription": d.get("AlarmDescription"),
            "AWSAccountId": self._account,
            "AlarmConfigurationUpdatedTimestamp": _stamp(alarm.config_updated_at),
            "NewStateValue": change.new,
            "NewStateReason": change.reason,
            "StateChangeTime": _stamp(change.at),
            "Region": region_description(self._region),
            "AlarmArn": alarm.arn,
            "OldStateValue": change.old,
            "OKActions": list(d.get("OKActions") or []),
            "AlarmActions": list(d.get("AlarmActions") or []),
            "InsufficientDataActions": list(d.get("InsufficientDataActions") or []),
            "Trigger": {
                "MetricName": d["MetricName"],
                "Namespace": d["Namespace"],
                "StatisticType": "Statistic",
                "Statistic": d["Statistic"].upper(),
                "Unit": d.get("Unit"),
                "Dimensions": [{"name": x["Name"], "value": x["Value"]} for x in d.get("Dimensions") or []],
                "Period": d["Period"],
                "EvaluationPeriods": d["EvaluationPeriods"],
                "ComparisonOperator": d["ComparisonOperator"],
                "Threshold": d["Threshold"],
                "TreatMissingData": d.get("TreatMissingData", "missing"),
            },
        }

    # ---- the loop ----
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._alarms.close()

    async def _run(self) -> None:
        pruned = 0.0
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval_s)
            self._wake.clear()
            try:
                self._data.recent.sample()
                if self._leader():
                    await self.evaluate()
                    now = self._clock()
                    if now - pruned > 3600:
                        pruned = now
                        await asyncio.to_thread(self._alarms.prune, now - HISTORY_KEPT_S)
                else:
                    self._evaluated.clear()  # the leader's job; from scratch if this one becomes it
            except Exception:
                log.exception("cloudwatch: alarm evaluation failed")

    async def evaluate(self, *, force: bool = False) -> None:
        """Evaluate every alarm whose newest period has ended since its last evaluation (all with
        ``force``)."""
        now = self._clock()
        for alarm in await asyncio.to_thread(self._alarms.all):
            d = alarm.doc
            period = int(d["Period"])
            lag = HIGH_RESOLUTION_LAG_S if period < PERIOD_S else MINUTE_LAG_S
            end = math.floor((now - lag) / period) * period
            key = (float(end), alarm.config_updated_at)
            if not force and self._evaluated.get(alarm.name) == key:
                continue
            self._evaluated[alarm.name] = key
            rule = rule_of(d)
            start = end - rule.evaluation_periods * period
            metric = Metric.of(d["Namespace"], d["MetricName"], d.get("Dimensions"))
            (read,), missing = await self._data.read_many([(metric, period)], start, end)
            found = dict(read)
            points: list[tuple[float, float | None]] = []
            for at in range(int(start), int(end), period):
                stat = found.get(at)
                points.append((float(at), None if stat is None else value(stat, rule.statistic)))
            verdict = rules.evaluate(rule, points, alarm.state, now)
            if verdict is not None:
                data = json.dumps(verdict.data)
                self._change(alarm, verdict.state, verdict.reason, data, now, partial=bool(missing))

    # ---- documents ----
    def _alarm_doc(self, a: Alarm) -> dict[str, Any]:
        d = a.doc
        out: dict[str, Any] = {
            "AlarmName": a.name,
            "AlarmArn": a.arn,
            "AlarmConfigurationUpdatedTimestamp": a.config_updated_at,
            "ActionsEnabled": d.get("ActionsEnabled", True),
            "OKActions": list(d.get("OKActions") or []),
            "AlarmActions": list(d.get("AlarmActions") or []),
            "InsufficientDataActions": list(d.get("InsufficientDataActions") or []),
            "StateValue": a.state,
            "StateReason": a.reason,
            "StateUpdatedTimestamp": a.state_updated_at,
            "StateTransitionedTimestamp": a.transitioned_at,
            "MetricName": d["MetricName"],
            "Namespace": d["Namespace"],
            "Statistic": d["Statistic"],
            "Dimensions": list(d.get("Dimensions") or []),
            "Period": d["Period"],
            "EvaluationPeriods": d["EvaluationPeriods"],
            "DatapointsToAlarm": d.get("DatapointsToAlarm", d["EvaluationPeriods"]),
            "Threshold": float(d["Threshold"]),
            "ComparisonOperator": d["ComparisonOperator"],
            "TreatMissingData": d.get("TreatMissingData", "missing"),
        }
        for member in ("AlarmDescription", "Unit"):
            if d.get(member) is not None:
                out[member] = d[member]
        if a.reason_data:
            out["StateReasonData"] = a.reason_data
        return out


def rule_of(doc: Mapping[str, Any]) -> rules.Rule:
    periods = int(doc["EvaluationPeriods"])
    return rules.Rule(
        statistic=doc["Statistic"],
        period_s=int(doc["Period"]),
        threshold=float(doc["Threshold"]),
        comparison=doc["ComparisonOperator"],
        evaluation_periods=periods,
        datapoints_to_alarm=int(doc.get("DatapointsToAlarm", periods)),
        treat_missing=doc.get("TreatMissingData", "missing"),
    )


def _breach(alarm: Alarm) -> float | None:
    """The alarm's newest evaluated datapoint minus its threshold (None without one)."""
    try:
        recent = json.loads(alarm.reason_data or "{}").get("recentDatapoints") or []
    except (ValueError, AttributeError):
        return None
    if not recent or not isinstance(recent[-1], int | float):
        return None
    return float(recent[-1]) - float(alarm.doc["Threshold"])


def _actions(doc: Mapping[str, Any]) -> list[str]:
    return [
        *(doc.get("OKActions") or []),
        *(doc.get("AlarmActions") or []),
        *(doc.get("InsufficientDataActions") or []),
    ]


def _history_doc(item: HistoryItem) -> dict[str, Any]:
    return {
        "AlarmName": item.alarm,
        "AlarmType": "MetricAlarm",
        "Timestamp": item.at,
        "HistoryItemType": item.item_type,
        "HistorySummary": item.summary,
        "HistoryData": item.data,
    }


def _page(items: list[Any], params: Mapping[str, Any], default: int) -> tuple[list[Any], dict[str, str]]:
    start = next_offset(params.get("NextToken"))
    size = int(params.get("MaxRecords") or default)
    more = start + size < len(items)
    return items[start : start + size], ({"NextToken": str(start + size)} if more else {})


def _stamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime(epoch))


@functools.cache
def region_description(region: str) -> str:
    """A region's name as AWS writes it in alarm notifications ("US East (N. Virginia)"), from botocore's
    endpoint data; the code itself for a region botocore does not know."""
    import botocore.session

    for partition in botocore.session.get_session().get_data("endpoints").get("partitions", []):
        found = partition.get("regions", {}).get(region)
        if found and found.get("description"):
            return str(found["description"])
    return region
