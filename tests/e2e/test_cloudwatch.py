"""CloudWatch with real boto3 (and the AWS CLI) against a real server: the metrics of a real endpoint read
back with GetMetricStatistics, GetMetricData and ListMetrics; an alarm on Invocation5XXErrors over 10-second
periods goes to ALARM when the model starts failing and back to OK, every change kept in its history;
SetAlarmState, DescribeAlarms filters, DeleteAlarms; bad input refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from e2e.conftest import handler_model
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy, wait_for

AWS = Path("/work/main/.venv/bin/aws")
MODEL = """
def model_fn(model_dir):
    return "model"


def predict_fn(data, model):
    if isinstance(data, dict) and data.get("raise"):
        raise ValueError("asked to fail")
    return {"ok": True}
"""
EP = "cw-ep"
DIMS = [{"Name": "EndpointName", "Value": EP}, {"Name": "VariantName", "Value": "AllTraffic"}]
# An endpoint no test invokes: an alarm on it never has data, so SetAlarmState's state holds through any
# evaluation (on EP's latency, which the earlier tests made, an evaluation would set OK at any moment).
QUIET = [{"Name": "EndpointName", "Value": "cw-quiet"}, {"Name": "VariantName", "Value": "AllTraffic"}]


@pytest.fixture(scope="module")
def cw(server: ServerProcess) -> Any:
    return server.client("cloudwatch")


@pytest.fixture(scope="module")
def endpoint(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    deploy(sm, EP, handler_model(tmp_path_factory.mktemp("cw-model"), MODEL))
    return EP


def invoke(smr: Any, payload: Any) -> str:
    try:
        smr.invoke_endpoint(
            EndpointName=EP, Body=json.dumps(payload).encode(), ContentType="application/json"
        )
    except ClientError as err:
        return str(err.response["Error"]["Code"])
    return "ok"


def error(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def alarm(cw: Any, name: str) -> dict[str, Any]:
    found = cw.describe_alarms(AlarmNames=[name])["MetricAlarms"]
    assert len(found) == 1
    return dict(found[0])


def test_metrics_of_a_real_endpoint(cw: Any, smr: Any, endpoint: str) -> None:
    start = time.time() - 60
    assert [invoke(smr, {"x": 1}) for _ in range(3)] == ["ok"] * 3
    assert invoke(smr, {"raise": 1}) == "ModelError"
    end = time.time() + 60

    def stats(period: int) -> list[dict[str, Any]]:
        got = cw.get_metric_statistics(
            Namespace="AWS/SageMaker",
            MetricName="Invocations",
            Dimensions=DIMS,
            StartTime=start,
            EndTime=end,
            Period=period,
            Statistics=["Sum", "SampleCount"],
        )
        assert got["Label"] == "Invocations"
        return list(got["Datapoints"])

    for period in (10, 60, 120):
        points = stats(period)
        assert sum(p["Sum"] for p in points) == 4, (period, points)
        assert all(p["Unit"] == "None" for p in points)
        assert all(int(p["Timestamp"].timestamp()) % period == 0 or period == 120 for p in points)

    data = cw.get_metric_data(
        StartTime=start,
        EndTime=end,
        MetricDataQueries=[
            {
                "Id": "errors",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": "Invocation5XXErrors",
                        "Dimensions": DIMS,
                    },
                    "Period": 30,
                    "Stat": "Sum",
                },
            },
            {
                "Id": "latency",
                "Label": "model latency",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/SageMaker",
                        "MetricName": "ModelLatency",
                        "Dimensions": DIMS,
                    },
                    "Period": 60,
                    "Stat": "Maximum",
                },
            },
        ],
    )["MetricDataResults"]
    assert [r["Id"] for r in data] == ["errors", "latency"]
    assert sum(data[0]["Values"]) == 1 and data[0]["StatusCode"] == "Complete"
    assert data[1]["Label"] == "model latency" and max(data[1]["Values"]) > 0

    # A metric nobody has: no datapoints, as CloudWatch answers.
    empty = cw.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        Dimensions=[{"Name": "EndpointName", "Value": EP}],
        StartTime=start,
        EndTime=end,
        Period=60,
        Statistics=["Sum"],
    )
    assert empty["Datapoints"] == []

    listed = cw.list_metrics(Namespace="AWS/SageMaker", Dimensions=[{"Name": "EndpointName", "Value": EP}])
    names = {m["MetricName"] for m in listed["Metrics"]}
    assert {"Invocations", "Invocation5XXErrors", "ModelLatency"} <= names
    assert all(
        sorted(d["Name"] for d in m["Dimensions"]) == ["EndpointName", "VariantName"]
        for m in listed["Metrics"]
    )


def test_get_metric_data_with_500_queries(cw: Any, smr: Any, endpoint: str) -> None:
    """The most queries one call takes, read at once: each answers what it answers alone, in the order
    asked; the endpoint's metrics have data, those of endpoints nobody deployed have none."""
    start = time.time() - 600
    assert [invoke(smr, {"x": 1}) for _ in range(2)] == ["ok"] * 2
    end = time.time() + 1  # later tests' invocations come after it

    def query(ident: str, name: str, period: int, stat: str, ep: str = EP) -> dict[str, Any]:
        dims = [{"Name": "EndpointName", "Value": ep}, {"Name": "VariantName", "Value": "AllTraffic"}]
        metric = {"Namespace": "AWS/SageMaker", "MetricName": name, "Dimensions": dims}
        return {"Id": ident, "MetricStat": {"Metric": metric, "Period": period, "Stat": stat}}

    kinds = [
        (name, period, stat)
        for name in ("Invocations", "Invocation5XXErrors", "ModelLatency", "OverheadLatency")
        for period in (10, 60)
        for stat in ("Sum", "SampleCount", "Maximum")
    ]  # 24: the endpoint's, asked for 10 times each (by its name in upper case, too)
    queries = [
        query(f"q{i}", *kinds[i % len(kinds)], ep=EP.upper() if i % 2 else EP) for i in range(10 * len(kinds))
    ]
    queries += [query(f"q{i}", "Invocations", 60, "Sum", ep=f"cw-none-{i}") for i in range(len(queries), 500)]
    got = cw.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=queries)["MetricDataResults"]
    assert [r["Id"] for r in got] == [q["Id"] for q in queries]
    assert all(r["StatusCode"] == "Complete" for r in got)
    alone = [
        cw.get_metric_data(StartTime=start, EndTime=end, MetricDataQueries=[query("one", *kind)])[
            "MetricDataResults"
        ][0]
        for kind in kinds
    ]
    for i, result in enumerate(got):
        want = alone[i % len(kinds)] if i < 10 * len(kinds) else {"Timestamps": [], "Values": []}
        assert (result["Timestamps"], result["Values"]) == (want["Timestamps"], want["Values"]), i
    invocations = [
        r
        for r, q in zip(got, queries, strict=True)
        if q["MetricStat"]["Metric"]["MetricName"] == "Invocations"
    ]
    assert sum(invocations[0]["Values"]) >= 2  # Invocations, 10 s, Sum


def test_an_alarm_follows_real_errors_and_keeps_its_history(cw: Any, smr: Any, endpoint: str) -> None:
    cw.put_metric_alarm(
        AlarmName="cw-errors",
        AlarmDescription="model errors",
        Namespace="AWS/SageMaker",
        MetricName="Invocation5XXErrors",
        Dimensions=DIMS,
        Statistic="Sum",
        Period=10,
        EvaluationPeriods=1,
        Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )
    first = alarm(cw, "cw-errors")
    assert first["AlarmArn"].endswith(":alarm:cw-errors") and first["Period"] == 10
    wait_for(lambda: alarm(cw, "cw-errors")["StateValue"] == "OK", timeout_s=15)

    # the model starts failing: the alarm goes to ALARM after the 10 s period ends
    failing_since = time.time()
    while alarm(cw, "cw-errors")["StateValue"] != "ALARM":
        assert invoke(smr, {"raise": 1}) == "ModelError"
        assert time.time() - failing_since < 25, "no ALARM"
        time.sleep(0.5)
    fired = alarm(cw, "cw-errors")
    assert "greater than the threshold (0)" in fired["StateReason"]
    assert json.loads(fired["StateReasonData"])["period"] == 10
    # healthy again: a period without errors (missing data not breaching) brings it back to OK
    wait_for(lambda: alarm(cw, "cw-errors")["StateValue"] == "OK", timeout_s=30, interval_s=0.5)

    history = cw.describe_alarm_history(AlarmName="cw-errors", HistoryItemType="StateUpdate")[
        "AlarmHistoryItems"
    ]
    summaries = [h["HistorySummary"] for h in reversed(history)]
    assert "Alarm updated from OK to ALARM" in summaries and "Alarm updated from ALARM to OK" in summaries
    assert summaries.index("Alarm updated from OK to ALARM") < summaries.index(
        "Alarm updated from ALARM to OK"
    )
    created = cw.describe_alarm_history(AlarmName="cw-errors", HistoryItemType="ConfigurationUpdate")
    assert created["AlarmHistoryItems"][-1]["HistorySummary"] == 'Alarm "cw-errors" created'

    by_metric = cw.describe_alarms_for_metric(
        Namespace="AWS/SageMaker", MetricName="Invocation5XXErrors", Dimensions=DIMS
    )["MetricAlarms"]
    assert [a["AlarmName"] for a in by_metric] == ["cw-errors"]


def test_set_alarm_state_filters_and_delete(cw: Any, endpoint: str) -> None:
    for name in ("cw-a", "cw-b"):
        cw.put_metric_alarm(
            AlarmName=name,
            Namespace="AWS/SageMaker",
            MetricName="ModelLatency",
            Dimensions=QUIET,
            Statistic="Average",
            Period=60,
            EvaluationPeriods=3,
            DatapointsToAlarm=2,
            Threshold=1e9,
            ComparisonOperator="GreaterThanOrEqualToThreshold",
            TreatMissingData="ignore",  # no data: an evaluation keeps the state SetAlarmState set
        )
    cw.set_alarm_state(
        AlarmName="cw-a", StateValue="ALARM", StateReason="testing", StateReasonData='{"x": 1}'
    )
    a = alarm(cw, "cw-a")
    assert (a["StateValue"], a["StateReason"], a["StateReasonData"]) == ("ALARM", "testing", '{"x": 1}')
    in_alarm = cw.describe_alarms(StateValue="ALARM", AlarmNamePrefix="cw-")["MetricAlarms"]
    assert [x["AlarmName"] for x in in_alarm] == ["cw-a"]
    page = cw.describe_alarms(AlarmNamePrefix="cw-", MaxRecords=1)
    assert len(page["MetricAlarms"]) == 1 and page["NextToken"]
    cw.delete_alarms(AlarmNames=["cw-a", "cw-b"])
    assert cw.describe_alarms(AlarmNames=["cw-a", "cw-b"])["MetricAlarms"] == []
    assert error(cw.delete_alarms, AlarmNames=["cw-a"])[0] == "ResourceNotFound"


def test_bad_input_is_refused_by_name(cw: Any, endpoint: str) -> None:
    good = {
        "AlarmName": "cw-bad",
        "Namespace": "AWS/SageMaker",
        "MetricName": "Invocations",
        "Dimensions": DIMS,
        "Statistic": "Sum",
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": 1,
        "ComparisonOperator": "GreaterThanThreshold",
    }
    code, message = error(cw.put_metric_alarm, **{**good, "Period": 20})
    assert code == "InvalidParameterValue" and "Period" in message and "10, 30 or a multiple of 60" in message
    code, message = error(cw.put_metric_alarm, **{**good, "Period": 90})
    assert code == "InvalidParameterValue" and "Period" in message
    code, message = error(cw.put_metric_alarm, **{**good, "MetricName": "CPUUtilization"})
    assert code == "InvalidParameterValue" and "CPUUtilization" in message
    code, message = error(cw.put_metric_alarm, **{**good, "Namespace": "AWS/EC2"})
    assert code == "InvalidParameterValue" and "AWS/EC2" in message
    code, message = error(cw.put_metric_alarm, **{**good, "DatapointsToAlarm": 2})
    assert code == "InvalidParameterValue" and "DatapointsToAlarm" in message
    code, message = error(cw.put_metric_alarm, **{**good, "AlarmActions": ["arn:aws:sns:us-east-1:1:nope"]})
    assert code == "InvalidParameterValue" and "AlarmActions" in message
    code, message = error(cw.put_metric_alarm, **{**good, "ExtendedStatistic": "p99"})
    assert code == "ValidationException" and "ExtendedStatistic" in message
    code, message = error(cw.set_alarm_state, AlarmName="nope", StateValue="OK", StateReason="x")
    assert code == "ResourceNotFound" and "nope" in message
    cw.put_metric_alarm(**good)
    code, _ = error(
        cw.set_alarm_state, AlarmName="cw-bad", StateValue="OK", StateReason="x", StateReasonData="{"
    )
    assert code == "InvalidFormat"
    code, message = error(
        cw.get_metric_statistics,
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        Dimensions=DIMS,
        StartTime=time.time() - 86400 * 2,
        EndTime=time.time(),
        Period=60,
        Statistics=["Sum"],
    )
    assert code == "InvalidParameterCombination" and "1440" in message
    cw.delete_alarms(AlarmNames=["cw-bad"])


def test_the_aws_cli(server: ServerProcess, endpoint: str, tmp_path: Path) -> None:
    if not AWS.exists():
        pytest.skip("the AWS CLI is not installed")
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    base = [str(AWS), "--endpoint-url", server.url, "cloudwatch"]
    subprocess.run(
        [
            *base,
            "put-metric-alarm",
            "--alarm-name",
            "cw-cli",
            "--namespace",
            "AWS/SageMaker",
            "--metric-name",
            "Invocations",
            "--dimensions",
            f"Name=EndpointName,Value={EP}",
            "Name=VariantName,Value=AllTraffic",
            "--statistic",
            "Sum",
            "--period",
            "30",
            "--evaluation-periods",
            "2",
            "--threshold",
            "1000",
            "--comparison-operator",
            "GreaterThanThreshold",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [*base, "describe-alarms", "--alarm-names", "cw-cli"], env=env, check=True, capture_output=True
    )
    alarms = json.loads(out.stdout)["MetricAlarms"]
    assert alarms[0]["AlarmName"] == "cw-cli" and alarms[0]["Period"] == 30
    bad = subprocess.run([*base, "delete-alarms", "--alarm-names", "nope"], env=env, capture_output=True)
    assert bad.returncode != 0 and b"ResourceNotFound" in bad.stderr
    subprocess.run(
        [*base, "delete-alarms", "--alarm-names", "cw-cli"], env=env, check=True, capture_output=True
    )


def test_iam_evaluates_cloudwatch_actions(server: ServerProcess, cw: Any) -> None:
    iam = server.client("iam")
    iam.create_user(UserName="cw-reader")
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "cloudwatch:Describe*", "Resource": "*"},
            {
                "Effect": "Allow",
                "Action": "cloudwatch:SetAlarmState",
                "Resource": "arn:aws:cloudwatch:*:*:alarm:mine-*",
            },
        ],
    }
    iam.put_user_policy(UserName="cw-reader", PolicyName="p", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="cw-reader")["AccessKey"]
    reader = boto3.client(
        "cloudwatch",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )
    reader.describe_alarms()
    code, message = error(reader.delete_alarms, AlarmNames=["x"])
    assert code == "AccessDeniedException" and "cloudwatch:DeleteAlarms" in message
    code, message = error(reader.set_alarm_state, AlarmName="other", StateValue="OK", StateReason="x")
    assert code == "AccessDeniedException" and "alarm:other" in message
    code, _ = error(reader.set_alarm_state, AlarmName="mine-1", StateValue="OK", StateReason="x")
    assert code == "ResourceNotFound"  # allowed; it does not exist


def cbor_client(server: ServerProcess, tmp_path: Path) -> Any:
    """A real boto3 CloudWatch client speaking smithy RPC v2 CBOR: the installed botocore's own model with
    the protocol newer versions pick first, on the loader's data path."""
    import gzip

    import botocore
    import botocore.session

    source = Path(botocore.__file__).parent / "data" / "cloudwatch" / "2010-08-01" / "service-2.json.gz"
    model = json.loads(gzip.decompress(source.read_bytes()))
    model["metadata"]["protocol"] = "smithy-rpc-v2-cbor"
    model["metadata"]["protocols"] = ["smithy-rpc-v2-cbor"]
    target = tmp_path / "models" / "cloudwatch" / "2010-08-01"
    target.mkdir(parents=True)
    (target / "service-2.json").write_text(json.dumps(model))
    session = botocore.session.Session()
    session.set_config_variable("data_path", str(tmp_path / "models"))
    return boto3.Session(botocore_session=session).client(
        "cloudwatch",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def test_the_rpc_v2_cbor_protocol(server: ServerProcess, smr: Any, endpoint: str, tmp_path: Path) -> None:
    cbor = cbor_client(server, tmp_path)
    sent: list[dict[str, Any]] = []
    cbor.meta.events.register("before-send", lambda request, **_: sent.append(dict(request.headers)))
    assert invoke(smr, {"x": 1}) == "ok"
    now = time.time()
    got = cbor.get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        Dimensions=DIMS,
        StartTime=now - 600,
        EndTime=now + 60,
        Period=60,
        Statistics=["Sum"],
    )
    assert sent[-1]["smithy-protocol"] == b"rpc-v2-cbor" or sent[-1]["smithy-protocol"] == "rpc-v2-cbor"
    assert sum(p["Sum"] for p in got["Datapoints"]) >= 1
    assert all(p["Timestamp"].tzinfo is not None for p in got["Datapoints"])  # CBOR tag 1, parsed
    cbor.put_metric_alarm(
        AlarmName="cw-cbor",
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        Dimensions=DIMS,
        Statistic="Sum",
        Period=30,
        EvaluationPeriods=1,
        Threshold=1e6,
        ComparisonOperator="GreaterThanThreshold",
    )
    found = cbor.describe_alarms(AlarmNames=["cw-cbor"])["MetricAlarms"]
    assert found[0]["Period"] == 30 and found[0]["AlarmConfigurationUpdatedTimestamp"].year >= 2024
    code, message = error(cbor.set_alarm_state, AlarmName="nope", StateValue="OK", StateReason="x")
    assert code == "ResourceNotFound" and "nope" in message
    code, message = error(cbor.put_metric_alarm, **{**_alarm_args("cw-cbor"), "Period": 45})
    assert code == "InvalidParameterValue" and "Period" in message
    cbor.delete_alarms(AlarmNames=["cw-cbor"])


def _alarm_args(name: str) -> dict[str, Any]:
    return {
        "AlarmName": name,
        "Namespace": "AWS/SageMaker",
        "MetricName": "Invocations",
        "Dimensions": DIMS,
        "Statistic": "Sum",
        "Period": 60,
        "EvaluationPeriods": 1,
        "Threshold": 1,
        "ComparisonOperator": "GreaterThanThreshold",
    }
