"""Application Auto Scaling with real boto3 against a real server: a target-tracking policy on
SageMakerVariantInvocationsPerInstance really adds an instance under load and takes it away after the load
and the cooldown, each activity recorded with its cause; what is not served is refused by name; targets,
policies and activities survive a restart. Evaluation periods are 1 s here (60 s by default)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from zeroscale.testing import ServerProcess, wait_final, wait_for

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
RESOURCE = "endpoint/as-ep/variant/A"
PREDEFINED = {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"}


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(autoscaling_period_s=1)


@pytest.fixture(scope="module")
def aas(server: ServerProcess) -> Any:
    return server.client("application-autoscaling")


@pytest.fixture(scope="module")
def endpoint(sm: Any, sklearn_model: Any) -> str:
    """Variant A on one ml.t2.medium (2 vCPUs: 2 always-warm workers per instance)."""
    sm.create_model(
        ModelName="as-model", PrimaryContainer={"Image": IMAGE, "ModelDataUrl": sklearn_model.url}
    )
    sm.create_endpoint_config(
        EndpointConfigName="as-ep",
        ProductionVariants=[
            {
                "VariantName": "A",
                "ModelName": "as-model",
                "InstanceType": "ml.t2.medium",
                "InitialInstanceCount": 1,
                "InitialVariantWeight": 1.0,
            },
        ],
    )
    sm.create_endpoint(EndpointName="as-ep", EndpointConfigName="as-ep")
    desc = wait_final(sm, "as-ep")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return "as-ep"


@pytest.fixture(scope="module")
def serverless(sm: Any, endpoint: str) -> str:
    sm.create_endpoint_config(
        EndpointConfigName="as-sl",
        ProductionVariants=[
            {
                "VariantName": "S",
                "ModelName": "as-model",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
            }
        ],
    )
    sm.create_endpoint(EndpointName="as-sl", EndpointConfigName="as-sl")
    assert wait_final(sm, "as-sl")["EndpointStatus"] == "InService"
    return "as-sl"


def error(call: Any, **kwargs: Any) -> tuple[str, str]:
    with pytest.raises(ClientError) as exc:
        call(**kwargs)
    return exc.value.response["Error"]["Code"], exc.value.response["Error"]["Message"]


def desired(sm: Any) -> int:
    variants = sm.describe_endpoint(EndpointName="as-ep")["ProductionVariants"]
    return int(next(v for v in variants if v["VariantName"] == "A")["DesiredInstanceCount"])


def activities(aas: Any) -> list[dict[str, Any]]:
    return list(
        aas.describe_scaling_activities(ServiceNamespace="sagemaker", ResourceId=RESOURCE)[
            "ScalingActivities"
        ]
    )


def test_target_tracking_scales_out_under_load_and_back_in(
    server: ServerProcess, sm: Any, smr: Any, aas: Any, endpoint: str, sklearn_model: Any
) -> None:
    arn = aas.register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId=RESOURCE,
        ScalableDimension=DIMENSION,
        MinCapacity=1,
        MaxCapacity=2,
    )["ScalableTargetARN"]
    assert arn.startswith("arn:aws:application-autoscaling:")
    aas.put_scaling_policy(
        PolicyName="per-instance",
        ServiceNamespace="sagemaker",
        ResourceId=RESOURCE,
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 60.0,  # invocations per instance per minute: one a second
            "PredefinedMetricSpecification": PREDEFINED,
            "ScaleOutCooldown": 1,
            "ScaleInCooldown": 2,
        },
    )
    body = sklearn_model.json_body(sklearn_model.X[:1])
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            resp = smr.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json")
            resp["Body"].read()

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        wait_for(lambda: desired(sm) == 2, timeout_s=30)
        wait_for(lambda: server.workers(endpoint, "A") == 4, timeout_s=30)  # two instances of 2 vCPUs
        wait_for(lambda: activities(aas)[0]["StatusCode"] == "Successful", timeout_s=20)
    finally:
        stop.set()
        thread.join(10)
    out = activities(aas)[0]
    assert out["Description"] == "Setting desired instance count to 2."
    assert (
        "per-instance" in out["Cause"] and "SageMakerVariantInvocationsPerInstance was above" in out["Cause"]
    )
    assert out["EndTime"] >= out["StartTime"]
    # no traffic: 15 periods below 90% of the target, then back to MinCapacity
    wait_for(lambda: desired(sm) == 1, timeout_s=40)
    wait_for(lambda: activities(aas)[0]["StatusCode"] == "Successful", timeout_s=20)
    scale_in = activities(aas)[0]
    assert scale_in["Description"] == "Setting desired instance count to 1."
    assert "below 90% of the target 60" in scale_in["Cause"]
    wait_for(lambda: server.workers(endpoint, "A") == 2, timeout_s=30)
    assert len(activities(aas)) == 2


def test_what_is_not_served_is_refused_by_name(aas: Any, endpoint: str, serverless: str) -> None:
    scope = {"ServiceNamespace": "sagemaker", "ResourceId": RESOURCE, "ScalableDimension": DIMENSION}
    register = aas.register_scalable_target
    code, message = error(register, **{**scope, "ServiceNamespace": "ecs"}, MinCapacity=1, MaxCapacity=2)
    assert code == "ValidationException" and "ServiceNamespace ecs" in message
    dimension = "sagemaker:variant:DesiredProvisionedConcurrency"
    code, message = error(register, **{**scope, "ScalableDimension": dimension}, MinCapacity=1, MaxCapacity=2)
    assert code == "ValidationException" and dimension in message
    code, message = error(register, **{**scope, "ResourceId": "endpoint/as-ep"}, MinCapacity=1, MaxCapacity=2)
    assert code == "ValidationException" and "ResourceId endpoint/as-ep" in message
    code, message = error(
        register, **{**scope, "ResourceId": "endpoint/as-ep/variant/C"}, MinCapacity=1, MaxCapacity=2
    )
    assert code == "ValidationException" and "variant C" in message
    code, message = error(
        register, **{**scope, "ResourceId": "endpoint/as-sl/variant/S"}, MinCapacity=1, MaxCapacity=2
    )
    assert code == "ValidationException" and "serverless" in message
    code, message = error(register, **scope, MinCapacity=3, MaxCapacity=2)
    assert code == "ValidationException" and "MaxCapacity 2" in message
    code, message = error(register, **scope, MinCapacity=1, MaxCapacity=2, Tags={"team": "x"})
    assert code == "ValidationException" and "Tags" in message

    put = aas.put_scaling_policy
    tracking = {"TargetValue": 10.0, "PredefinedMetricSpecification": PREDEFINED}
    unregistered = {**scope, "ResourceId": "endpoint/nope/variant/A"}
    code, message = error(
        put,
        PolicyName="p",
        PolicyType="TargetTrackingScaling",
        **unregistered,
        TargetTrackingScalingPolicyConfiguration=tracking,
    )
    assert code == "ObjectNotFoundException" and "endpoint/nope/variant/A" in message
    step = {
        "AdjustmentType": "ChangeInCapacity",
        "StepAdjustments": [{"ScalingAdjustment": 1}],
        "MetricAggregationType": "Maximum",
    }
    code, message = error(
        put, PolicyName="p", PolicyType="StepScaling", **scope, StepScalingPolicyConfiguration=step
    )
    assert code == "ValidationException" and "MetricAggregationType" in message
    custom = {
        "MetricName": "CPUUtilization",
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": "as-ep"}, {"Name": "VariantName", "Value": "A"}],
        "Statistic": "Average",
    }
    code, message = error(
        put,
        PolicyName="p",
        PolicyType="TargetTrackingScaling",
        **scope,
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 50.0,
            "CustomizedMetricSpecification": custom,
        },
    )
    assert code == "ValidationException" and "MetricName CPUUtilization" in message
    code, message = error(aas.delete_scaling_policy, PolicyName="nope", **scope)
    assert code == "ObjectNotFoundException" and "nope" in message


def test_a_customized_metric_policy_and_state_survive_a_restart(
    server: ServerProcess, aas: Any, endpoint: str
) -> None:
    scope = {"ServiceNamespace": "sagemaker", "ResourceId": RESOURCE, "ScalableDimension": DIMENSION}
    latency = {
        "MetricName": "ModelLatency",
        "Namespace": "AWS/SageMaker",
        "Dimensions": [{"Name": "EndpointName", "Value": "as-ep"}, {"Name": "VariantName", "Value": "A"}],
        "Statistic": "Average",
        "Unit": "Microseconds",
    }
    arn = aas.put_scaling_policy(
        PolicyName="latency",
        PolicyType="TargetTrackingScaling",
        **scope,
        TargetTrackingScalingPolicyConfiguration={
            "TargetValue": 5_000_000.0,
            "CustomizedMetricSpecification": latency,
            "DisableScaleIn": True,
        },
    )["PolicyARN"]
    assert ":policyName/latency" in arn
    server.restart()
    aas = server.client("application-autoscaling")
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [(t["ResourceId"], t["MinCapacity"], t["MaxCapacity"]) for t in targets] == [(RESOURCE, 1, 2)]
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=RESOURCE)[
        "ScalingPolicies"
    ]
    by_name = {p["PolicyName"]: p for p in policies}
    assert set(by_name) == {"per-instance", "latency"}
    assert by_name["latency"]["PolicyARN"] == arn
    config = by_name["latency"]["TargetTrackingScalingPolicyConfiguration"]
    assert (
        config["CustomizedMetricSpecification"]["MetricName"] == "ModelLatency" and config["DisableScaleIn"]
    )
    page = aas.describe_scaling_policies(ServiceNamespace="sagemaker", MaxResults=1)
    assert len(page["ScalingPolicies"]) == 1 and page["NextToken"]
    assert len(activities(aas)) == 2
    aas.delete_scaling_policy(PolicyName="latency", **scope)
    aas.deregister_scalable_target(**scope)
    assert aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"] == []
