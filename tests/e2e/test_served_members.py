"""Nothing silently dropped, through a real server and real boto3: every member of every operation zeroscale
implements (SageMaker, CloudWatch Logs, Application Auto Scaling, InvokeEndpoint), enumerated from botocore's
model, is either on the served table or refused by name. The served ones come back where AWS returns them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore import xform_name
from botocore.exceptions import ClientError

from zeroscale.api import served
from zeroscale.api.allowlist import Rule
from zeroscale.api.shapes import ServiceShapes
from zeroscale.testing import ServerProcess

ARN = "arn:aws:sagemaker:us-east-1:000000000000"
SERVERLESS = {"MemorySizeInMB": 1024, "MaxConcurrency": 2}


def _placeholder(shape: Any) -> Any:
    """A present value of the right JSON type (validation comes after the refusal, so any value does)."""
    kind = shape.type_name
    if kind == "structure":
        return {}
    if kind == "list":
        return [_placeholder(shape.member)]
    if kind == "map":
        return {"k": _placeholder(shape.value)}
    if kind == "boolean":
        return True
    if kind in ("integer", "long"):
        return 1
    if kind in ("float", "double"):
        return 1.0
    if kind == "timestamp":
        return 0
    if kind == "blob":
        return "eA=="
    enum = shape.metadata.get("enum")
    return enum[0] if enum else "x"


def _refused_value(shape: Any, rule: Rule) -> Any:
    """A value that ``rule`` does not serve."""
    if rule.max_items is not None:
        return [_placeholder(shape.member) for _ in range(rule.max_items + 1)]
    assert rule.values is not None
    if shape.type_name == "boolean":
        return not rule.values[0]
    return next(v for v in shape.metadata["enum"] if v not in rule.values)


class Case:
    """A request carrying one member (and the structures above it), and the phrase that must refuse it."""

    def __init__(self, service: str, operation: str, params: dict[str, Any], phrase: str) -> None:
        self.service, self.operation, self.params, self.phrase = service, operation, params, phrase

    def __repr__(self) -> str:
        return f"{self.operation}:{self.phrase}"


def _frame(steps: list[tuple[str, Any]], value: Any) -> tuple[dict[str, Any], str]:
    """``value`` nested under the members of ``steps`` (name, shape), one item in each list or map on the
    way; and the member's path in that request (``ProductionVariants.1.CoreDumpConfig``)."""
    wire: list[str] = []
    for name, shape in steps[:-1]:
        wire.append(name)
        if shape.type_name == "list":
            wire.append("1")
        elif shape.type_name == "map":
            wire.append("k")
    wire.append(steps[-1][0])
    doc: Any = value
    for index in range(len(steps) - 1, 0, -1):
        doc = {steps[index][0]: doc}
        parent = steps[index - 1][1]
        if parent.type_name == "list":
            doc = [doc]
        elif parent.type_name == "map":
            doc = {"k": doc}
    return {steps[0][0]: doc}, ".".join(wire)


def _walk(
    service: str, operation: str, rules: Any, shape: Any, prefix: str, steps: list[tuple[str, Any]]
) -> Iterator[Case]:
    """A case for each member of ``shape`` that is not served, or served only with some values or sizes;
    into the served structures, below which every member is again on the table or refused."""
    for name, member in shape.members.items():
        path = f"{prefix}.{name}" if prefix else name
        here = [*steps, (name, member)]
        rule = rules.get(path)
        if rule is None:
            params, wire = _frame(here, _placeholder(member))
            yield Case(service, operation, params, wire)
            continue
        if rule.values is not None or rule.max_items is not None:
            value = _refused_value(member, rule)
            params, wire = _frame(here, value)
            yield Case(service, operation, params, rule.problem(wire, value) or "")
        inner = member
        while inner.type_name in ("list", "map"):
            inner = inner.member if inner.type_name == "list" else inner.value
        if inner.type_name == "structure":
            yield from _walk(service, operation, rules, inner, path, here)


TABLES = {
    "sagemaker": served.SAGEMAKER,
    "logs": served.LOGS,
    "application-autoscaling": served.APPLICATION_AUTOSCALING,
    "cloudwatch": served.CLOUDWATCH,
}


def _cases(service: str) -> Iterator[Case]:
    shapes = ServiceShapes(service)
    table = TABLES[service]
    for operation, rules in table.items():
        yield from _walk(service, operation, rules, shapes.input_shape(operation), "", [])


SAGEMAKER_CASES = list(_cases("sagemaker"))
LOGS_CASES = list(_cases("logs"))
AUTOSCALING_CASES = list(_cases("application-autoscaling"))
CLOUDWATCH_CASES = list(_cases("cloudwatch"))


def test_the_enumeration_covers_the_members_the_issue_names() -> None:
    phrases = {c.phrase for c in SAGEMAKER_CASES}
    assert {
        "AsyncInferenceConfig.OutputConfig.KmsKeyId",
        "PrimaryContainer.ImageConfig",
        "ProductionVariants.1.CoreDumpConfig",
        "PrimaryContainer.ModelDataSource.S3DataSource.ModelAccessConfig",
        "PrimaryContainer.ModelDataSource.S3DataSource.ManifestS3Uri",
        "ValidationSpecification",
        "DataCaptureConfig",
        "VpcConfig",
        "DeploymentConfig.RollingUpdatePolicy.RollbackMaximumBatchSize",
    } <= phrases
    assert {c.phrase for c in LOGS_CASES} >= {"accountIdentifiers", "startFromHead=false (only true)"}
    assert {c.phrase for c in AUTOSCALING_CASES} >= {
        "PolicyType=PredictiveScaling (only TargetTrackingScaling or StepScaling)",
        "StepScalingPolicyConfiguration.MetricAggregationType=Minimum (only Average)",
        "TargetTrackingScalingPolicyConfiguration.CustomizedMetricSpecification.Metrics",
        "Tags",
    }
    assert {c.phrase for c in CLOUDWATCH_CASES} >= {
        "ExtendedStatistic",
        "Metrics",
        "Tags",
        "ThresholdMetricId",
    }


@pytest.fixture(scope="module")
def clients(server: ServerProcess) -> dict[str, Any]:
    return {
        "sagemaker": server.client("sagemaker", parameter_validation=False),
        "logs": server.client("logs", parameter_validation=False),
        "application-autoscaling": server.client("application-autoscaling", parameter_validation=False),
        "cloudwatch": server.client("cloudwatch", parameter_validation=False),
    }


def _refusal(client: Any, operation: str, params: dict[str, Any]) -> tuple[str, str, int]:
    with pytest.raises(ClientError) as err:
        getattr(client, xform_name(operation))(**params)
    resp = err.value.response
    return resp["Error"]["Code"], resp["Error"]["Message"], resp["ResponseMetadata"]["HTTPStatusCode"]


@pytest.mark.parametrize(
    "case", SAGEMAKER_CASES + LOGS_CASES + AUTOSCALING_CASES + CLOUDWATCH_CASES, ids=repr
)
def test_every_unserved_member_is_refused_by_name(clients: dict[str, Any], case: Case) -> None:
    code, message, status = _refusal(clients[case.service], case.operation, case.params)
    assert (code, status) == ("ValidationException", 400)
    assert message == f"zeroscale does not support {case.phrase} yet."


@pytest.mark.parametrize("service", sorted(TABLES))
def test_every_listed_operation_is_implemented(clients: dict[str, Any], service: str) -> None:
    table = TABLES[service]
    for operation in table:
        try:
            getattr(clients[service], xform_name(operation))()
        except ClientError as err:
            assert err.response["Error"]["Code"] != "NotImplementedError", operation


@pytest.mark.parametrize(
    ("operation", "table"),
    [
        ("InvokeEndpoint", served.INVOKE_ENDPOINT),
        ("InvokeEndpointWithResponseStream", served.INVOKE_ENDPOINT_WITH_RESPONSE_STREAM),
    ],
)
def test_every_invoke_endpoint_member_is_served_or_refused_by_name(
    server: ServerProcess, operation: str, table: frozenset[str]
) -> None:
    smr = server.client("sagemaker-runtime", parameter_validation=False)
    shape = ServiceShapes("sagemaker-runtime").input_shape(operation)
    refused = [name for name in shape.members if name not in table]
    expected = {"InferenceComponentName", "SessionId"}
    if operation == "InvokeEndpointWithResponseStream":
        expected.add("TargetContainerHostname")  # (it has no TargetModel member)
    if operation == "InvokeEndpoint":
        expected.add("EnableExplanations")
        assert "TargetModel" not in refused  # multi-model endpoints (tests/e2e/test_multimodel.py)
    assert expected <= set(refused)
    for name in refused:
        member = shape.members[name]
        assert member.serialization.get("location") == "header", name  # the only kind the runtime refuses
        header = member.serialization["name"]
        code, message, status = _refusal(smr, operation, {"EndpointName": "any", "Body": b"1", name: "v"})
        assert (code, status) == ("ValidationError", 400)
        assert message == f"zeroscale does not support {name} (header {header}) yet."


# ---- the members the issue names, and what is served instead of refused ---------------------------------


def test_create_model_with_several_containers_is_served(clients: dict[str, Any], sklearn_model: Any) -> None:
    sm = clients["sagemaker"]
    container = {"Image": "sklearn", "ModelDataUrl": sklearn_model.url}
    # several containers are an inference pipeline (tests/e2e/test_pipelines.py), described back
    two = [{**container, "ContainerHostname": "a"}, {**container, "ContainerHostname": "b"}]
    sm.create_model(ModelName="pipeline", Containers=two, InferenceExecutionConfig={"Mode": "Direct"})
    desc = sm.describe_model(ModelName="pipeline")
    assert (desc["Containers"], desc["InferenceExecutionConfig"]) == (two, {"Mode": "Direct"})
    # at most 15, in botocore's words
    code, message, status = _refusal(
        sm, "CreateModel", {"ModelName": "too-many", "Containers": [container] * 16}
    )
    assert (code, status) == ("ValidationException", 400)
    assert "Member must have length less than or equal to 15" in message
    # one container in Containers is served: it is the model's container, and it is described back
    sm.create_model(ModelName="single", Containers=[container])
    assert sm.describe_model(ModelName="single")["Containers"] == [container]


def test_create_endpoint_config_with_an_async_kms_key_is_refused(
    clients: dict[str, Any], sklearn_model: Any
) -> None:
    sm = clients["sagemaker"]
    sm.create_model(
        ModelName="async-model", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": sklearn_model.url}
    )
    params = {
        "EndpointConfigName": "async-config",
        "ProductionVariants": [
            {"VariantName": "AllTraffic", "ModelName": "async-model", "ServerlessConfig": SERVERLESS}
        ],
        "AsyncInferenceConfig": {"OutputConfig": {"S3OutputPath": "s3://bucket/out", "KmsKeyId": "key"}},
    }
    code, message, status = _refusal(sm, "CreateEndpointConfig", params)
    assert (code, message, status) == (
        "ValidationException",
        "zeroscale does not support AsyncInferenceConfig.OutputConfig.KmsKeyId yet.",
        400,
    )
    # nor the configuration's own key: told it is set up, a user would believe the volumes encrypted
    del params["AsyncInferenceConfig"]
    params["KmsKeyId"] = "arn:aws:kms:us-east-1:000000000000:key/k"
    code, message, _ = _refusal(sm, "CreateEndpointConfig", params)
    assert (code, message) == ("ValidationException", "zeroscale does not support KmsKeyId yet.")
    code, _, _ = _refusal(sm, "DescribeEndpointConfig", {"EndpointConfigName": "async-config"})
    assert code == "ValidationException"  # nothing was created


def test_several_refusals_are_named_together(clients: dict[str, Any]) -> None:
    params = {
        "EndpointConfigName": "many",
        "ProductionVariants": [
            {"VariantName": "A", "ModelName": "m", "ServerlessConfig": SERVERLESS},
            {"VariantName": "B", "ModelName": "m", "CoreDumpConfig": {"DestinationS3Uri": "s3://b/d"}},
        ],
        "DataCaptureConfig": {
            "InitialSamplingPercentage": 1,
            "DestinationS3Uri": "s3://b/c",
            "CaptureOptions": [],
        },
        "EnableNetworkIsolation": True,
    }
    assert _refusal(clients["sagemaker"], "CreateEndpointConfig", params)[1] == (
        "zeroscale does not support ProductionVariants.2.CoreDumpConfig, DataCaptureConfig, "
        "EnableNetworkIsolation=true (only false) yet."
    )


def test_served_members_are_stored_and_returned(server: ServerProcess, sklearn_model: Any) -> None:
    """What real clients send (the sagemaker SDK: ExecutionRoleArn and Tags always) is kept and comes back
    from Describe* and ListTags."""
    sm = server.client("sagemaker")  # botocore's own client-side validation on
    role = "arn:aws:iam::000000000000:role/SageMakerRole"
    tags = [{"Key": "team", "Value": "ml"}, {"Key": "sagemaker.amazonaws.com/source", "Value": "sdk"}]
    container = {
        "Image": "sklearn",
        "ModelDataUrl": sklearn_model.url,
        "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
        "ContainerHostname": "main",
        "Mode": "SingleModel",
    }
    for bad, why in (
        ([*tags, {"Key": "team", "Value": "ops"}], "Duplicate tag key: team."),
        ([{"Key": "aws:cloudformation:stack-name", "Value": "x"}], "reserved for AWS use"),
    ):  # refused as AWS refuses them (AddTags too: tests/e2e/test_tags.py)
        code, message, _ = _refusal(
            sm, "CreateModel", {"ModelName": "kept", "PrimaryContainer": container, "Tags": bad}
        )
        assert code == "ValidationException" and why in message
    model_arn = sm.create_model(
        ModelName="kept",
        PrimaryContainer=container,
        ExecutionRoleArn=role,
        Tags=tags,
        EnableNetworkIsolation=False,
    )["ModelArn"]
    desc = sm.describe_model(ModelName="kept")
    assert (desc["PrimaryContainer"], desc["ExecutionRoleArn"], desc["EnableNetworkIsolation"]) == (
        container,
        role,
        False,
    )
    assert sm.list_tags(ResourceArn=model_arn)["Tags"] == tags

    config_arn = sm.create_endpoint_config(
        EndpointConfigName="kept",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "kept",
                "InitialVariantWeight": 1,
                "ServerlessConfig": SERVERLESS,
            }
        ],
        ExecutionRoleArn=role,
        Tags=tags[:1],
    )["EndpointConfigArn"]
    desc = sm.describe_endpoint_config(EndpointConfigName="kept")
    assert desc["ExecutionRoleArn"] == role
    assert sm.list_tags(ResourceArn=config_arn)["Tags"] == tags[:1]

    endpoint_arn = sm.create_endpoint(EndpointName="kept", EndpointConfigName="kept", Tags=tags[1:])[
        "EndpointArn"
    ]
    assert sm.list_tags(ResourceArn=endpoint_arn, MaxResults=50)["Tags"] == tags[1:]
    code, message, _ = _refusal(sm, "ListTags", {"ResourceArn": f"{ARN}:model/ghost"})
    assert (code, message) == ("ValidationException", f'Could not find model "{ARN}:model/ghost".')
    sm.delete_endpoint(EndpointName="kept")


def test_update_endpoint_retain_flags(clients: dict[str, Any]) -> None:
    sm = clients["sagemaker"]
    # both served (tests/e2e/test_realtime.py): the request goes on to the endpoint lookup
    _, message, _ = _refusal(
        sm,
        "UpdateEndpoint",
        {"EndpointName": "e", "EndpointConfigName": "c", "RetainAllVariantProperties": True},
    )
    assert message == f'Could not find endpoint "{ARN}:endpoint/e".'
    _, message, _ = _refusal(
        sm,
        "UpdateEndpoint",
        {"EndpointName": "e", "EndpointConfigName": "c", "RetainAllVariantProperties": False},
    )
    assert message == f'Could not find endpoint "{ARN}:endpoint/e".'
