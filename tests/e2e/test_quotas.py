"""--max-resources holds each kind of SageMaker resource to an account-style quota: through a real server and
real boto3, a Create past it is refused with SageMaker's ResourceLimitExceeded (its modeled exception), and
deleting one makes room again; endpoints count too (a refused CreateEndpoint starts nothing); topics,
subscriptions and CloudWatch alarms answer their services' own codes. --max-resources-per-user holds each IAM
user to a quota of its own, and --max-resource-mb-per-user the bytes of its documents."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from e2e.conftest import handler_model, s3_tenant
from zeroscale.testing import ServerProcess, wait_final

MOST = 2


def test_a_create_past_the_quota_is_refused_until_one_is_deleted(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(max_resources=MOST)
    sm = server.client("sagemaker")
    container = {"Image": "sklearn", "ModelDataUrl": "s3://bucket/model.tar.gz"}
    for n in range(MOST):
        sm.create_model(ModelName=f"q{n}", PrimaryContainer=container)
    with pytest.raises(sm.exceptions.ResourceLimitExceeded) as err:
        sm.create_model(ModelName="q-over", PrimaryContainer=container)
    message = err.value.response["Error"]["Message"]
    assert f"'Number of models' is {MOST} models" in message and "--max-resources" in message
    assert {m["ModelName"] for m in sm.list_models()["Models"]} == {"q0", "q1"}
    sm.delete_model(ModelName="q0")
    sm.create_model(ModelName="q-over", PrimaryContainer=container)  # room again

    variant = {
        "VariantName": "v",
        "ModelName": "q1",
        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
    }
    for n in range(MOST):
        sm.create_endpoint_config(EndpointConfigName=f"c{n}", ProductionVariants=[variant])
    with pytest.raises(sm.exceptions.ResourceLimitExceeded, match="'Number of endpoint configs'"):
        sm.create_endpoint_config(EndpointConfigName="c-over", ProductionVariants=[variant])
    for n in range(MOST):  # their model cannot be fetched: Failed, but they are endpoints all the same
        sm.create_endpoint(EndpointName=f"e{n}", EndpointConfigName="c0")
    with pytest.raises(sm.exceptions.ResourceLimitExceeded, match="'Number of endpoints' is 2 endpoints"):
        sm.create_endpoint(EndpointName="e-over", EndpointConfigName="c0")
    with pytest.raises(sm.exceptions.ClientError, match="Could not find endpoint"):
        sm.describe_endpoint(EndpointName="e-over")


def test_topics_and_subscriptions_answer_snss_own_limit_codes(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(max_resources=MOST)
    sns = server.client("sns")
    arns = [sns.create_topic(Name=f"t{n}")["TopicArn"] for n in range(MOST)]
    with pytest.raises(ClientError) as err:
        sns.create_topic(Name="t-over")
    assert err.value.response["Error"]["Code"] == "TopicLimitExceeded"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert sns.create_topic(Name="t0")["TopicArn"] == arns[0]  # an existing one is not a new one
    for n in range(MOST):
        sns.subscribe(TopicArn=arns[0], Protocol="http", Endpoint=f"http://127.0.0.1:9/{n}")
    with pytest.raises(ClientError) as err:
        sns.subscribe(TopicArn=arns[1], Protocol="http", Endpoint="http://127.0.0.1:9/over")
    assert err.value.response["Error"]["Code"] == "SubscriptionLimitExceeded"


ALARM = {
    "Namespace": "AWS/SageMaker",
    "MetricName": "Invocations",
    "Dimensions": [{"Name": "EndpointName", "Value": "e"}, {"Name": "VariantName", "Value": "v"}],
    "Statistic": "Sum",
    "Period": 60,
    "EvaluationPeriods": 1,
    "Threshold": 1.0,
    "ComparisonOperator": "GreaterThanThreshold",
}


def test_alarms_answer_cloudwatchs_own_limit_code(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(max_resources=MOST)
    cw = server.client("cloudwatch")
    alarm = ALARM
    for n in range(MOST):
        cw.put_metric_alarm(AlarmName=f"a{n}", **alarm)
    with pytest.raises(cw.exceptions.LimitExceededFault) as err:  # botocore's modeled exception
        cw.put_metric_alarm(AlarmName="a-over", **alarm)
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "--max-resources" in err.value.response["Error"]["Message"]
    cw.put_metric_alarm(AlarmName="a0", **{**alarm, "Threshold": 2.0})  # an existing one is changed
    cw.delete_alarms(AlarmNames=["a1"])
    cw.put_metric_alarm(AlarmName="a-over", **alarm)


def test_scalable_targets_answer_application_auto_scalings_limit_code(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """A target outlives its endpoint (as on AWS), so endpoints deleted and made again under new names
    would grow them without end: they are held to --max-resources too."""
    server = server_factory(max_resources=MOST)
    sm, aas = server.client("sagemaker"), server.client("application-autoscaling")
    url = handler_model(tmp_path, "def model_fn(model_dir):\n    return None\n")
    sm.create_model(ModelName="m", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url})
    variants = [
        {"VariantName": v, "ModelName": "m", "InstanceType": "ml.t2.medium", "InitialInstanceCount": 1}
        for v in ("A", "B", "C")
    ]
    sm.create_endpoint_config(EndpointConfigName="rt", ProductionVariants=variants)
    sm.create_endpoint(EndpointName="rt", EndpointConfigName="rt")
    assert wait_final(sm, "rt")["EndpointStatus"] == "InService"

    def register(variant: str) -> None:
        aas.register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId=f"endpoint/rt/variant/{variant}",
            ScalableDimension="sagemaker:variant:DesiredInstanceCount",
            MinCapacity=1,
            MaxCapacity=2,
        )

    register("A")
    register("B")
    register("A")  # an existing target is only changed
    with pytest.raises(aas.exceptions.LimitExceededException, match="'Number of scalable targets'"):
        register("C")
    aas.deregister_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId="endpoint/rt/variant/A",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
    )
    register("C")


def test_one_iam_user_cannot_use_up_the_accounts_quota(server_factory: Callable[..., ServerProcess]) -> None:
    """--max-resources-per-user: each IAM user's creates count against a quota of its own (the user the
    request is authorized for), so a tenant at its limit is refused while another tenant and the admin go
    on; topics answer SNS's code; what the user deletes makes room."""
    server = server_factory(max_resources=10, max_resources_per_user=MOST)
    iam = server.client("iam")
    allowed = ["sagemaker:*", "sns:*", "s3:GetObject", "cloudwatch:*"]
    policy = json.dumps({"Statement": [{"Effect": "Allow", "Action": allowed, "Resource": "*"}]})
    clients = {}
    for user in ("tenant-1", "tenant-2"):
        iam.create_user(UserName=user)
        iam.put_user_policy(UserName=user, PolicyName="all", PolicyDocument=policy)
        clients[user] = iam.create_access_key(UserName=user)["AccessKey"]
    one, two = (server.client("sagemaker", key=clients[u]) for u in ("tenant-1", "tenant-2"))
    admin = server.client("sagemaker")
    container = {"Image": "sklearn", "ModelDataUrl": "s3://bucket/model.tar.gz"}
    for n in range(MOST):
        one.create_model(ModelName=f"one-{n}", PrimaryContainer=container)
    with pytest.raises(one.exceptions.ResourceLimitExceeded) as err:
        one.create_model(ModelName="one-over", PrimaryContainer=container)
    assert err.value.response["Error"]["Message"] == (
        f"The service limit 'Number of models per IAM user' is {MOST} models, with current utilization of "
        f"{MOST} models and a request delta of 1 models: delete some, or have the operator raise it "
        "(zeroscale serve --max-resources-per-user)."
    )
    for n in range(MOST):  # another tenant, and the admin beyond any user's quota
        two.create_model(ModelName=f"two-{n}", PrimaryContainer=container)
    for n in range(MOST + 1):
        admin.create_model(ModelName=f"admin-{n}", PrimaryContainer=container)
    admin.delete_model(ModelName="one-0")  # whoever deletes it, it was tenant-1's
    one.create_model(ModelName="one-over", PrimaryContainer=container)
    sns = server.client("sns", key=clients["tenant-1"])
    for n in range(MOST):
        sns.create_topic(Name=f"one-{n}")
    with pytest.raises(ClientError) as refused:
        sns.create_topic(Name="one-over")
    assert refused.value.response["Error"]["Code"] == "TopicLimitExceeded"
    assert "'Number of topics per IAM user'" in refused.value.response["Error"]["Message"]
    cw = server.client("cloudwatch", key=clients["tenant-1"])
    for n in range(MOST):
        cw.put_metric_alarm(AlarmName=f"one-{n}", **ALARM)
    cw.put_metric_alarm(AlarmName="one-0", **{**ALARM, "Threshold": 2.0})  # a change is no new alarm
    with pytest.raises(cw.exceptions.LimitExceededFault, match=r"for this IAM user .* at most 2 "):
        cw.put_metric_alarm(AlarmName="one-over", **ALARM)
    server.client("cloudwatch").put_metric_alarm(AlarmName="admin", **ALARM)


def test_one_iam_user_cannot_fill_the_database_with_its_count_of_large_documents(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """--max-resource-mb-per-user 1: a tenant's models of about 30 KB each (an Environment of 30 long values,
    near its 32 KB bound) stop at about 1 MB, all kinds together, whatever their count; another kind counts
    in the same bytes, the admin is not held to it, and a delete makes room."""
    server = server_factory(max_resource_mb_per_user=1)
    iam = server.client("iam")
    allowed = ["sagemaker:*", "s3:GetObject"]
    policy = json.dumps({"Statement": [{"Effect": "Allow", "Action": allowed, "Resource": "*"}]})
    iam.create_user(UserName="filler")
    iam.put_user_policy(UserName="filler", PolicyName="all", PolicyDocument=policy)
    sm = server.client("sagemaker", key=iam.create_access_key(UserName="filler")["AccessKey"])
    env = {f"V{n}": "x" * 1000 for n in range(30)}
    container = {"Image": "sklearn", "ModelDataUrl": "s3://bucket/model.tar.gz", "Environment": env}
    made = 0
    with pytest.raises(sm.exceptions.ResourceLimitExceeded) as err:
        while made < 50:
            sm.create_model(ModelName=f"big-{made}", PrimaryContainer=container)
            made += 1
    assert 30 <= made <= 34  # 34 x ~31 KB is past 1 MB
    message = err.value.response["Error"]["Message"]
    assert message.startswith("The service limit 'Size of resource documents per IAM user' is 1 MB")
    assert "--max-resource-mb-per-user" in message
    assert len(sm.list_models(MaxResults=100)["Models"]) == made  # the refused one was not kept
    variant = {
        "VariantName": "v",
        "ModelName": "big-0",
        "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
    }
    tags = [{"Key": f"k{n}", "Value": "v" * 256} for n in range(50)]
    with pytest.raises(sm.exceptions.ResourceLimitExceeded):  # another kind, the same bytes
        for n in range(20):
            sm.create_endpoint_config(EndpointConfigName=f"c{n}", ProductionVariants=[variant], Tags=tags)
    server.client("sagemaker").create_model(ModelName="admin-big", PrimaryContainer=container)
    for n in range(3):
        sm.delete_model(ModelName=f"big-{n}")
    sm.create_model(ModelName="big-again", PrimaryContainer=container)  # room again


ECHO = """
def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    return body, content_type
"""


def test_one_iam_user_cannot_reserve_the_hosts_memory(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """--max-warm-mb-per-user 4096: a tenant's endpoints keep at most 4 GB warm (real-time instances x their
    memory, ProvisionedConcurrency x MemorySizeInMB), at CreateEndpoint, UpdateEndpoint and
    UpdateEndpointWeightsAndCapacities alike; scale-to-zero endpoints hold nothing, a change that does not
    grow is never refused, another tenant and the admin are not bounded by it, and a deletion makes room."""
    server = server_factory(max_warm_mb_per_user=4096)
    url = handler_model(tmp_path, ECHO)
    tenant, other = s3_tenant(server, "warm-1", "none/x"), s3_tenant(server, "warm-2", "none/x")
    sm, sm2, admin = (
        server.client("sagemaker", key=tenant),
        server.client("sagemaker", key=other),
        server.client("sagemaker"),
    )

    def config(client: Any, name: str, **variant: Any) -> None:
        client.create_model(ModelName=name, PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url})
        client.create_endpoint_config(
            EndpointConfigName=name,
            ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, **variant}],
        )

    def serverless(provisioned: int) -> dict[str, Any]:
        sc = {"MemorySizeInMB": 1024, "MaxConcurrency": 4}
        return {"ServerlessConfig": {**sc, "ProvisionedConcurrency": provisioned} if provisioned else sc}

    config(sm, "warm-a", **serverless(2))  # 2 GB warm
    config(sm, "cold", **serverless(0))  # nothing warm
    config(sm, "warm-b", InstanceType="ml.t2.medium", InitialInstanceCount=1)  # 4 GB: one instance
    config(sm, "warm-c", **serverless(1))  # 1 GB
    for name in ("warm-a", "cold"):
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        assert wait_final(sm, name)["EndpointStatus"] == "InService"
    with pytest.raises(sm.exceptions.ResourceLimitExceeded) as refused:
        sm.create_endpoint(EndpointName="warm-b", EndpointConfigName="warm-b")
    assert refused.value.response["Error"]["Message"].startswith(
        "The service limit 'Always-warm memory per IAM user' is 4096 MB, with current utilization of 2048 MB "
        "and a request delta of 4096 MB"
    )
    assert "warm-b" not in {e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]}
    sm.create_endpoint(EndpointName="warm-c", EndpointConfigName="warm-c")  # 3 GB in all
    assert wait_final(sm, "warm-c")["EndpointStatus"] == "InService"
    grow = {
        "VariantName": "AllTraffic",
        "ServerlessUpdateConfig": {"MaxConcurrency": 4, "ProvisionedConcurrency": 3},
    }
    with pytest.raises(sm.exceptions.ResourceLimitExceeded, match="request delta of 2048 MB"):
        sm.update_endpoint_weights_and_capacities(EndpointName="warm-c", DesiredWeightsAndCapacities=[grow])
    with pytest.raises(sm.exceptions.ResourceLimitExceeded):
        sm.update_endpoint(EndpointName="cold", EndpointConfigName="warm-b")  # 0 -> 4 GB
    shrink = {**grow, "ServerlessUpdateConfig": {"MaxConcurrency": 4, "ProvisionedConcurrency": 1}}
    sm.update_endpoint_weights_and_capacities(EndpointName="warm-a", DesiredWeightsAndCapacities=[shrink])
    assert wait_final(sm, "warm-a")["EndpointStatus"] == "InService"  # 2 GB in all now
    sm.update_endpoint_weights_and_capacities(EndpointName="warm-c", DesiredWeightsAndCapacities=[grow])
    assert wait_final(sm, "warm-c")["EndpointStatus"] == "InService"  # 1 + 3 GB: at the quota
    # another tenant and the admin have their own room
    config(sm2, "other-b", InstanceType="ml.t2.medium", InitialInstanceCount=1)
    sm2.create_endpoint(EndpointName="other-b", EndpointConfigName="other-b")
    admin.create_endpoint(EndpointName="admin-b", EndpointConfigName="warm-b")
    for client, name in ((sm2, "other-b"), (admin, "admin-b")):
        assert wait_final(client, name)["EndpointStatus"] == "InService"
        client.delete_endpoint(EndpointName=name)
    sm.delete_endpoint(EndpointName="warm-c")  # room again: 1 GB held
    sm.update_endpoint(EndpointName="warm-a", EndpointConfigName="warm-a")  # back to 2 GB: fits
    assert wait_final(sm, "warm-a")["EndpointStatus"] == "InService"
