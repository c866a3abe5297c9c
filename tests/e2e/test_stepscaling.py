"""Step scaling driven by CloudWatch alarms, and a real-time variant scaled to zero, with real boto3: an
alarm whose AlarmActions name a step policy scales the variant out when it enters ALARM, another scales it to
0 instances (MinCapacity 0), where it still answers (one instance's workers start on demand); each activity
names its alarm; an action naming no policy is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from zeroscale.testing import SKLEARN_IMAGE, ServerProcess, wait_final, wait_for

DIMENSION = "sagemaker:variant:DesiredInstanceCount"
EP = "ss-ep"
SCOPE = {
    "ServiceNamespace": "sagemaker",
    "ResourceId": f"endpoint/{EP}/variant/A",
    "ScalableDimension": DIMENSION,
}
DIMS = [{"Name": "EndpointName", "Value": EP}, {"Name": "VariantName", "Value": "A"}]


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(autoscaling_period_s=1)  # activities settle at each evaluation


@pytest.fixture(scope="module")
def endpoint(sm: Any, sklearn_model: Any) -> str:
    sm.create_model(
        ModelName=EP, PrimaryContainer={"Image": SKLEARN_IMAGE, "ModelDataUrl": sklearn_model.url}
    )
    sm.create_endpoint_config(
        EndpointConfigName=EP,
        ProductionVariants=[
            {"VariantName": "A", "ModelName": EP, "InstanceType": "ml.t2.medium", "InitialInstanceCount": 1}
        ],
    )
    sm.create_endpoint(EndpointName=EP, EndpointConfigName=EP)
    assert wait_final(sm, EP)["EndpointStatus"] == "InService"
    return EP


def count(sm: Any) -> tuple[int, int]:
    v = sm.describe_endpoint(EndpointName=EP)["ProductionVariants"][0]
    return int(v["CurrentInstanceCount"]), int(v["DesiredInstanceCount"])


def error(call: Callable[..., Any], **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def alarm(cw: Any, name: str, actions: list[str]) -> None:
    cw.put_metric_alarm(
        AlarmName=name,
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        Dimensions=DIMS,
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1e9,
        ComparisonOperator="GreaterThanThreshold",
        AlarmActions=actions,
    )


def test_alarms_drive_step_policies_down_to_zero_and_back(
    server: Any, sm: Any, sklearn_model: Any, endpoint: str
) -> None:
    aas, cw, smr = (
        server.client("application-autoscaling"),
        server.client("cloudwatch"),
        server.client("sagemaker-runtime"),
    )
    aas.register_scalable_target(**SCOPE, MinCapacity=0, MaxCapacity=2)
    out = aas.put_scaling_policy(
        **SCOPE,
        PolicyName="out",
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}],
            "Cooldown": 600,
        },
    )["PolicyARN"]
    to_zero = aas.put_scaling_policy(
        **SCOPE,
        PolicyName="to-zero",  # PolicyType omitted: StepScaling, as in AWS
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ExactCapacity",
            "StepAdjustments": [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 0}],
        },
    )["PolicyARN"]
    described = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=SCOPE["ResourceId"])
    assert {p["PolicyType"] for p in described["ScalingPolicies"]} == {"StepScaling"}
    alarm(cw, "ss-busy", [out])
    alarm(cw, "ss-idle", [to_zero])

    cw.set_alarm_state(AlarmName="ss-busy", StateValue="ALARM", StateReason="busy")
    wait_for(lambda: count(sm) == (2, 2), timeout_s=40)
    cw.set_alarm_state(AlarmName="ss-idle", StateValue="ALARM", StateReason="idle")
    wait_for(lambda: count(sm) == (0, 0), timeout_s=40)
    assert wait_final(sm, EP)["EndpointStatus"] == "InService"
    body = sklearn_model.json_body(sklearn_model.X[:2])
    answer = smr.invoke_endpoint(EndpointName=EP, Body=body, ContentType="application/json")
    assert answer["Body"].read()  # at zero instances, one instance's workers start on demand

    def activities() -> list[dict[str, Any]]:
        got = aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=SCOPE["ResourceId"])
        return list(got["ScalingActivities"])

    wait_for(lambda: all(a["StatusCode"] == "Successful" for a in activities()), timeout_s=30)
    causes = " | ".join(a["Cause"] for a in activities())
    assert "ss-busy" in causes and "policy out" in causes and "ss-idle" in causes and "to-zero" in causes
    history = cw.describe_alarm_history(AlarmName="ss-busy", HistoryItemType="Action")["AlarmHistoryItems"]
    assert history and history[0]["HistorySummary"] == f"Successfully executed action {out}"

    # and back from zero by hand (MinCapacity 0 lets UpdateEndpointWeightsAndCapacities set 0 too)
    sm.update_endpoint_weights_and_capacities(
        EndpointName=EP, DesiredWeightsAndCapacities=[{"VariantName": "A", "DesiredInstanceCount": 1}]
    )
    wait_for(lambda: count(sm) == (1, 1), timeout_s=40)

    code, message = error(
        cw.put_metric_alarm,
        AlarmName="ss-bad",
        Namespace="AWS/SageMaker",
        MetricName="Invocations",
        Dimensions=DIMS,
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1,
        ComparisonOperator="GreaterThanThreshold",
        AlarmActions=[
            out.replace("policyName/out", "policyName/nope").replace(
                out.split(":")[5], "00000000-0000-0000-0000-000000000000"
            )
        ],
    )
    assert code == "InvalidParameterValue" and "AlarmActions" in message
