"""Guarded deployments with real boto3 against a real server: UpdateEndpoint with a DeploymentConfig stages
the new fleet beside the old one and shifts traffic by its plan; a canary whose model starts failing is
rolled back by a CloudWatch alarm driven by the real Invocation5XXErrors metric; a linear deployment of a
multi-variant endpoint is rolled back by SetAlarmState; a canary that stays healthy completes; bad
DeploymentConfigs are refused by name."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from e2e.conftest import handler_model
from zeroscale.testing import SKLEARN_IMAGE, ServerProcess, wait_final, wait_for

BLUE = """
def model_fn(model_dir):
    return "blue"


def predict_fn(data, model):
    return {"model": "blue"}
"""
GREEN_FAILING = """
def model_fn(model_dir):
    return "green"


def predict_fn(data, model):
    raise ValueError("the new model is broken")
"""
GREEN = """
def model_fn(model_dir):
    return "green"


def predict_fn(data, model):
    return {"model": "green"}
"""


@pytest.fixture(scope="module")
def cw(server: ServerProcess) -> Any:
    return server.client("cloudwatch")


@pytest.fixture(scope="module")
def models(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = {}
    for name, code in (("gd-blue", BLUE), ("gd-green-bad", GREEN_FAILING), ("gd-green", GREEN)):
        url = handler_model(tmp_path_factory.mktemp(name), code)
        sm.create_model(ModelName=name, PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": url})
        out[name] = name
    return out


def real_time(sm: Any, name: str, model: str, variants: tuple[str, ...] = ("AllTraffic",)) -> str:
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {"VariantName": v, "ModelName": model, "InstanceType": "ml.t2.medium", "InitialInstanceCount": 1}
            for v in variants
        ],
    )
    return name


def serverless(sm: Any, name: str, model: str, variants: tuple[str, ...] = ("A",)) -> str:
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": v,
                "ModelName": model,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
            }
            for v in variants
        ],
    )
    return name


def answer(smr: Any, endpoint: str) -> str:
    """Which fleet answered: "blue", "green", or the error code."""
    try:
        resp = smr.invoke_endpoint(EndpointName=endpoint, Body=b"[1]", ContentType="application/json")
    except ClientError as err:
        return str(err.response["Error"]["Code"])
    return str(json.loads(resp["Body"].read())["model"])


def error(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def errors_alarm(cw: Any, name: str, endpoint: str, variant: str = "AllTraffic") -> None:
    cw.put_metric_alarm(
        AlarmName=name,
        Namespace="AWS/SageMaker",
        MetricName="Invocation5XXErrors",
        Dimensions=[{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}],
        Statistic="Sum",
        Period=10,
        EvaluationPeriods=1,
        Threshold=0,
        ComparisonOperator="GreaterThanThreshold",
        TreatMissingData="notBreaching",
    )


def canary(percent: int, wait_s: int, alarms: list[str], **more: Any) -> dict[str, Any]:
    return {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "CANARY",
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": percent},
                "WaitIntervalInSeconds": wait_s,
            },
            **more,
        },
        **({"AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms]}} if alarms else {}),
    }


def test_a_failing_canary_is_rolled_back_by_an_alarm_on_real_errors(
    sm: Any, smr: Any, cw: Any, models: dict[str, str]
) -> None:
    ep = "gd-canary"
    sm.create_endpoint(EndpointName=ep, EndpointConfigName=real_time(sm, "gd-canary-blue", "gd-blue"))
    assert wait_final(sm, ep)["EndpointStatus"] == "InService"
    errors_alarm(cw, "gd-canary-errors", ep)
    config = canary(50, 300, ["gd-canary-errors"], MaximumExecutionTimeoutInSeconds=1800)
    sm.update_endpoint(
        EndpointName=ep,
        EndpointConfigName=real_time(sm, "gd-canary-green", "gd-green-bad"),
        DeploymentConfig=config,
    )
    wait_for(
        lambda: (
            sm.describe_endpoint(EndpointName=ep)
            .get("PendingDeploymentSummary", {})
            .get("ProductionVariants", [{}])[0]
            .get("VariantStatus", [{}])[0]
            .get("Status")
            == "Baking"
        ),
        timeout_s=60,
    )
    desc = sm.describe_endpoint(EndpointName=ep)
    assert desc["EndpointStatus"] == "Updating" and desc["EndpointConfigName"] == "gd-canary-blue"
    assert desc["PendingDeploymentSummary"]["EndpointConfigName"] == "gd-canary-green"
    assert desc["LastDeploymentConfig"] == config

    # traffic: half of it reaches the broken canary; its errors put the alarm in ALARM; rollback
    seen: list[str] = []
    deadline = time.monotonic() + 60
    while sm.describe_endpoint(EndpointName=ep)["EndpointStatus"] != "InService":
        seen += [answer(smr, ep) for _ in range(5)]
        assert time.monotonic() < deadline, "no rollback"
    assert "ModelError" in seen and "blue" in seen
    desc = sm.describe_endpoint(EndpointName=ep)
    assert desc["EndpointConfigName"] == "gd-canary-blue"
    assert "gd-canary-errors" in desc["FailureReason"] and "ALARM" in desc["FailureReason"]
    assert "PendingDeploymentSummary" not in desc
    assert [answer(smr, ep) for _ in range(20)] == ["blue"] * 20
    history = cw.describe_alarm_history(AlarmName="gd-canary-errors", HistoryItemType="StateUpdate")
    assert any("to ALARM" in h["HistorySummary"] for h in history["AlarmHistoryItems"])
    sm.delete_endpoint(EndpointName=ep)


def test_set_alarm_state_rolls_back_a_multi_variant_linear_deployment(
    sm: Any, smr: Any, cw: Any, models: dict[str, str]
) -> None:
    ep = "gd-linear"
    sm.create_endpoint(
        EndpointName=ep, EndpointConfigName=real_time(sm, "gd-linear-blue", "gd-blue", ("A", "B"))
    )
    assert wait_final(sm, ep)["EndpointStatus"] == "InService"
    errors_alarm(cw, "gd-linear-manual", ep, "A")
    config = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": {
                "Type": "LINEAR",
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 50},
                "WaitIntervalInSeconds": 300,
            }
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "gd-linear-manual"}]},
    }
    sm.update_endpoint(
        EndpointName=ep,
        EndpointConfigName=real_time(sm, "gd-linear-green", "gd-green", ("A", "B")),
        DeploymentConfig=config,
    )
    # both fleets answer, on both variants
    seen: set[tuple[str, str]] = set()
    deadline = time.monotonic() + 60
    while len(seen) < 4:
        for variant in ("A", "B"):
            resp = smr.invoke_endpoint(
                EndpointName=ep, Body=b"[1]", ContentType="application/json", TargetVariant=variant
            )
            seen.add((resp["InvokedProductionVariant"], json.loads(resp["Body"].read())["model"]))
        assert time.monotonic() < deadline, seen
    pending = sm.describe_endpoint(EndpointName=ep)["PendingDeploymentSummary"]
    assert [v["VariantName"] for v in pending["ProductionVariants"]] == ["A", "B"]

    cw.set_alarm_state(AlarmName="gd-linear-manual", StateValue="ALARM", StateReason="a person saw it")
    desc = wait_final(sm, ep)
    statuses = desc["EndpointStatus"]
    wait_for(lambda: sm.describe_endpoint(EndpointName=ep)["EndpointStatus"] == "InService", timeout_s=40)
    desc = sm.describe_endpoint(EndpointName=ep)
    assert statuses in ("RollingBack", "InService")
    assert desc["EndpointConfigName"] == "gd-linear-blue" and "gd-linear-manual" in desc["FailureReason"]
    assert {answer(smr, ep) for _ in range(20)} == {"blue"}
    sm.delete_endpoint(EndpointName=ep)


def test_a_healthy_canary_completes_and_the_config_can_be_retained(
    sm: Any, smr: Any, cw: Any, models: dict[str, str]
) -> None:
    ep = "gd-ok"
    errors_alarm(cw, "gd-ok-errors", ep, "A")
    config = canary(10, 1, ["gd-ok-errors"], TerminationWaitInSeconds=1)
    sm.create_endpoint(
        EndpointName=ep,
        EndpointConfigName=serverless(sm, "gd-ok-blue", "gd-blue", ("A",)),
        DeploymentConfig=config,
    )
    assert wait_final(sm, ep)["EndpointStatus"] == "InService"
    sm.update_endpoint(
        EndpointName=ep,
        EndpointConfigName=serverless(sm, "gd-ok-green", "gd-green", ("A",)),
        RetainDeploymentConfig=True,
    )
    desc = wait_final(sm, ep, timeout_s=60)
    assert desc["EndpointStatus"] == "InService" and "FailureReason" not in desc
    assert desc["EndpointConfigName"] == "gd-ok-green" and desc["LastDeploymentConfig"] == config
    assert {answer(smr, ep) for _ in range(10)} == {"green"}
    sm.delete_endpoint(EndpointName=ep)


def test_bad_deployment_configs_are_refused_by_name(sm: Any, cw: Any, models: dict[str, str]) -> None:
    ep = "gd-bad"
    sm.create_endpoint(EndpointName=ep, EndpointConfigName=serverless(sm, "gd-bad-blue", "gd-blue", ("A",)))
    assert wait_final(sm, ep)["EndpointStatus"] == "InService"
    errors_alarm(cw, "gd-bad-errors", ep, "A")
    green = serverless(sm, "gd-bad-green", "gd-green", ("A",))

    def refused(config: dict[str, Any]) -> str:
        code, message = error(
            sm.update_endpoint, EndpointName=ep, EndpointConfigName=green, DeploymentConfig=config
        )
        assert code == "ValidationException", message
        return message

    assert "CanarySize" in refused(canary(60, 10, ["gd-bad-errors"])) and "50%" in refused(canary(51, 1, []))
    assert "nope" in refused(canary(10, 10, ["nope"]))
    by_count = canary(10, 10, [])
    by_count["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["CanarySize"] = {
        "Type": "INSTANCE_COUNT",
        "Value": 2,
    }
    assert "2 instances of 2" in refused(by_count)  # serverless: MaxConcurrency 2 is the fleet's size
    linear = canary(10, 10, [])
    linear["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] = {
        "Type": "LINEAR",
        "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 5},
        "WaitIntervalInSeconds": 10,
    }
    assert "LinearStepSize" in refused(linear)
    rolling = {
        "RollingUpdatePolicy": {
            "MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
            "WaitIntervalInSeconds": 1,
        }
    }
    assert "RollingUpdatePolicy" in refused(rolling)  # serverless variants
    rolling["RollingUpdatePolicy"]["RollbackMaximumBatchSize"] = {"Type": "CAPACITY_PERCENT", "Value": 25}
    assert "RollbackMaximumBatchSize" in refused(rolling)
    # refused before anything changed
    desc = sm.describe_endpoint(EndpointName=ep)
    assert desc["EndpointStatus"] == "InService" and desc["EndpointConfigName"] == "gd-bad-blue"
    sm.delete_endpoint(EndpointName=ep)
