"""How a request is named for IAM: the model registry's operations and their resource ARNs."""

from __future__ import annotations

import contextvars
import json
from pathlib import Path
from typing import Any, cast

import pytest

from zeroscale.errors import AccessDenied, ValidationException
from zeroscale.iam.authz import CALLER, Access, Authorizer
from zeroscale.iam.secrets import SecretBox
from zeroscale.iam.store import IamStore

ARN = "arn:aws:sagemaker:us-east-1:000000000000"


def describe(operation: str, **params: Any) -> tuple[str, str]:
    authorizer = Authorizer(cast(IamStore, None), "AKADMIN", "secret", "us-east-1", "000000000000")
    return authorizer.describe(
        Access("AKUSER", "json", "sagemaker", operation, body=json.dumps(params).encode())
    )


@pytest.mark.parametrize(
    ("operation", "params", "resource"),
    [
        ("CreateModelPackageGroup", {"ModelPackageGroupName": "Churn"}, f"{ARN}:model-package-group/churn"),
        ("DescribeModelPackageGroup", {"ModelPackageGroupName": "churn"}, f"{ARN}:model-package-group/churn"),
        ("DeleteModelPackageGroup", {"ModelPackageGroupName": "churn"}, f"{ARN}:model-package-group/churn"),
        ("ListModelPackageGroups", {}, "*"),
        ("CreateModelPackage", {"ModelPackageGroupName": "churn"}, f"{ARN}:model-package/churn/*"),
        (
            "CreateModelPackage",
            {"ModelPackageGroupName": f"{ARN}:model-package-group/churn"},
            f"{ARN}:model-package/churn/*",
        ),
        ("DescribeModelPackage", {"ModelPackageName": "churn/2"}, f"{ARN}:model-package/churn/2"),
        (
            "DescribeModelPackage",
            {"ModelPackageName": f"{ARN}:model-package/churn/2"},
            f"{ARN}:model-package/churn/2",
        ),
        (
            "UpdateModelPackage",
            {"ModelPackageArn": f"{ARN}:model-package/churn/3"},
            f"{ARN}:model-package/churn/3",
        ),
        ("DeleteModelPackage", {"ModelPackageName": "churn/3"}, f"{ARN}:model-package/churn/3"),
        ("ListModelPackages", {"ModelPackageGroupName": "churn"}, "*"),
        ("CreateModel", {"ModelName": "m"}, f"{ARN}:model/m"),
    ],
)
def test_model_registry_actions_and_resources(operation: str, params: dict[str, Any], resource: str) -> None:
    assert describe(operation, **params) == (f"sagemaker:{operation}", resource)


@pytest.mark.parametrize(
    ("method", "path", "action", "resource"),
    [
        ("GET", "images", "zeroscale:ListImages", "*"),
        (
            "PUT",
            "images/demo/1",
            "zeroscale:PushImage",
            "arn:aws:zeroscale:us-east-1:000000000000:image/demo",
        ),
        (
            "DELETE",
            "images/demo/1",
            "zeroscale:DeleteImage",
            "arn:aws:zeroscale:us-east-1:000000000000:image/demo",
        ),
    ],
)
def test_image_actions_name_the_image(method: str, path: str, action: str, resource: str) -> None:
    authorizer = Authorizer(cast(IamStore, None), "AKADMIN", "secret", "us-east-1", "000000000000")
    assert authorizer.describe(Access("AKUSER", "rest", "zeroscale", method, path)) == (action, resource)


@pytest.mark.parametrize(
    ("path", "params", "action", "resource"),
    [
        ("metrics", {"endpoint": "Team-A-Churn"}, "zeroscale:GetMetrics", f"{ARN}:endpoint/team-a-churn"),
        ("metrics", {}, "zeroscale:GetMetrics", "*"),  # the handler refuses it, naming the parameter
        ("workers", {"endpoint": "churn"}, "zeroscale:ListWorkers", f"{ARN}:endpoint/churn"),
        ("workers", {}, "zeroscale:ListWorkers", "*"),  # every endpoint's
        ("async", {"endpoint": "churn"}, "zeroscale:GetAsyncRequests", f"{ARN}:endpoint/churn"),
        # by InferenceId on the endpoint named (the handler looks at that endpoint's requests only); with
        # none named, the request of any endpoint
        ("async/abc-123", {"endpoint": "churn"}, "zeroscale:GetAsyncRequests", f"{ARN}:endpoint/churn"),
        ("async/abc-123", {}, "zeroscale:GetAsyncRequests", "*"),
        ("transform/nightly", {}, "zeroscale:GetTransformProgress", f"{ARN}:transform-job/nightly"),
        ("usage", {"group_by": "endpoint"}, "zeroscale:GetUsage", "*"),
        ("audit", {}, "zeroscale:GetAuditEvents", "*"),
    ],
)
def test_reads_of_zeroscales_api_name_the_endpoint_they_are_about(
    path: str, params: dict[str, str], action: str, resource: str
) -> None:
    """A tenant can be allowed its own endpoints' metrics, workers and asynchronous requests (``?endpoint=``
    names the endpoint, as the handlers read it) without every endpoint's."""
    authorizer = Authorizer(cast(IamStore, None), "AKADMIN", "secret", "us-east-1", "000000000000")
    access = Access("AKUSER", "rest", "zeroscale", "GET", path, params=params)
    assert authorizer.describe(access) == (action, resource)


FILE = "arn:aws:zeroscale:us-east-1:000000000000:file"


def test_the_data_a_model_names_needs_its_own_permissions(tmp_path: Path) -> None:
    store = IamStore(f"sqlite:///{tmp_path / 'iam.db'}", SecretBox.load_or_create(tmp_path / "iam.key"))
    user = store.create_user("alice", "/")
    key = store.create_key("alice").access_key_id
    store.put_policy(
        user,
        "models",
        json.dumps({"Statement": [{"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}]}),
    )
    authorizer = Authorizer(store, "AKADMIN", "secret", "us-east-1", "000000000000")

    def create(url: str, who: str = key) -> None:
        body = {"ModelName": "m", "PrimaryContainer": {"Image": "sklearn", "ModelDataUrl": url}}
        authorizer.authorize(Access(who, "json", "sagemaker", "CreateModel", body=json.dumps(body).encode()))

    with pytest.raises(AccessDenied) as denied:  # the server's S3 credentials read it for her
        create("s3://tenant-b/model.tar.gz")
    assert denied.value.message == (
        "User: arn:aws:iam::000000000000:user/alice is not authorized to perform: s3:GetObject on resource: "
        "arn:aws:s3:::tenant-b/model.tar.gz because no identity-based policy allows the s3:GetObject action"
    )
    own_bucket = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::tenant-a/*"}
    store.put_policy(user, "bucket", json.dumps({"Statement": [own_bucket]}))
    create("s3://tenant-a/model.tar.gz")
    with pytest.raises(AccessDenied) as denied:
        create("file:///etc/shadow")
    assert denied.value.message == (
        "User: arn:aws:iam::000000000000:user/alice is not authorized to perform: zeroscale:ReadLocalFile on "
        f"resource: {FILE}/etc/shadow because no identity-based policy allows the "
        "zeroscale:ReadLocalFile action"
    )
    create("file:///etc/shadow", who="AKADMIN")  # the operator's own credentials read what the server may

    allow_models = {
        "Effect": "Allow",
        "Action": "zeroscale:ReadLocalFile",
        "Resource": f"{FILE}/srv/models/*",
    }
    store.put_policy(user, "files", json.dumps({"Statement": [allow_models]}))
    create("file:///srv/models/churn/model.tar.gz")
    with pytest.raises(AccessDenied, match="/etc/shadow"):
        create("file:///srv/models/../../etc/shadow")
    store.close()


def test_a_model_from_a_package_needs_the_packages_data_allowed(tmp_path: Path) -> None:
    store = IamStore(f"sqlite:///{tmp_path / 'iam.db'}", SecretBox.load_or_create(tmp_path / "iam.key"))
    user = store.create_user("alice", "/")
    key = store.create_key("alice").access_key_id
    allow = [
        {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::tenant-a/*"},
    ]
    store.put_policy(user, "p", json.dumps({"Statement": allow}))
    packages = {"mine/1": "s3://tenant-a/m.tar.gz", "theirs/1": "s3://tenant-b/m.tar.gz"}

    def package_containers(name: str) -> list[dict[str, Any]]:
        if name not in packages:
            raise ValidationException(f'Could not find model package "{name}".')
        return [{"Image": "sklearn", "ModelDataUrl": packages[name]}]

    authorizer = Authorizer(
        store, "AKADMIN", "secret", "us-east-1", "000000000000", package_containers=package_containers
    )

    def create(package: str) -> None:
        body = {"ModelName": "m", "Containers": [{"ModelPackageName": package}]}
        authorizer.authorize(Access(key, "json", "sagemaker", "CreateModel", body=json.dumps(body).encode()))

    create("mine/1")
    create("nothing/1")  # the handler refuses it, naming it
    with pytest.raises(AccessDenied, match=r"s3:GetObject on resource: arn:aws:s3:::tenant-b/m\.tar\.gz"):
        create("theirs/1")
    store.close()


def test_a_model_reads_with_its_creators_rights_as_they_are_when_it_reads(tmp_path: Path) -> None:
    """``authorize`` says whom a request is for (``CALLER``, remembered by CreateModel); ``local_reads``
    checks a path for that user's policies as they are when the server reads it."""
    store = IamStore(f"sqlite:///{tmp_path / 'iam.db'}", SecretBox.load_or_create(tmp_path / "iam.key"))
    user = store.create_user("alice", "/")
    key = store.create_key("alice").access_key_id
    reads = [
        {"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"},
        {"Effect": "Allow", "Action": "zeroscale:ReadLocalFile", "Resource": f"{FILE}/srv/alice/*"},
    ]
    store.put_policy(user, "p", json.dumps({"Statement": reads}))
    authorizer = Authorizer(store, "AKADMIN", "secret", "us-east-1", "000000000000")
    listing = Access(key, "json", "sagemaker", "ListModels", body=b"{}")

    def caller_of(access: Access) -> tuple[str, str]:
        def run() -> tuple[str, str]:
            authorizer.authorize(access)
            return CALLER.get()

        return contextvars.copy_context().run(run)  # as each request's own task

    before = CALLER.get()
    alice = caller_of(listing)
    assert alice == ("alice", user.user_id)
    assert CALLER.get() == before  # nothing leaks out of a request's context
    assert caller_of(Access("AKADMIN", "json", "sagemaker", "ListModels", body=b"{}")) == ("", "")
    assert authorizer.local_reads(("", "")) is None  # the admin's models read anything
    check = authorizer.local_reads(alice)
    assert check is not None
    assert check(Path("/srv/alice/model/weights.bin")) is None
    assert check(Path("/srv/bob/weights.bin")) == (
        "User: arn:aws:iam::000000000000:user/alice is not authorized to perform: zeroscale:ReadLocalFile on "
        f"resource: {FILE}/srv/bob/weights.bin because no identity-based policy allows the "
        "zeroscale:ReadLocalFile action"
    )
    deny = {"Effect": "Deny", "Action": "zeroscale:ReadLocalFile", "Resource": f"{FILE}/srv/alice/keys/*"}
    store.put_policy(user, "deny", json.dumps({"Statement": [deny]}))  # her rights as they are now
    assert "with an explicit deny" in (check(Path("/srv/alice/keys/k")) or "")
    store.delete_policy(user, "deny")
    store.delete_policy(user, "p")
    store.delete_key(key)
    store.delete_user("alice")
    gone = "IAM user alice, who created the model, no longer exists to read it"
    assert check(Path("/srv/alice/model/weights.bin")) == gone
    again = store.create_user("alice", "/")  # the same name, another user: not the model's creator
    store.put_policy(again, "p", json.dumps({"Statement": reads}))
    assert check(Path("/srv/alice/model/weights.bin")) == gone
    store.close()


@pytest.mark.parametrize(
    ("service", "operation", "params"),
    [
        ("sagemaker", "CreateEndpointConfig", {"EndpointConfigName": "c", "ProductionVariants": 5}),
        ("sagemaker", "CreateEndpointConfig", {"EndpointConfigName": "c", "ShadowProductionVariants": "ab"}),
        ("sagemaker", "CreateTransformJob", {"TransformJobName": "j", "ModelName": ["m"]}),
        ("logs", "GetLogEvents", {"logGroupIdentifiers": 7}),
        ("monitoring", "DeleteAlarms", {"AlarmNames": 7}),
    ],
)
def test_members_of_the_wrong_shape_name_nothing_and_fail_nowhere(
    service: str, operation: str, params: dict[str, Any]
) -> None:
    """The authorizer reads a call before its handler checks the call's shape: a member of another type
    names no resource here (the handler refuses it), rather than failing inside the authorizer (a 500)."""
    authorizer = Authorizer(cast(IamStore, None), "AKADMIN", "secret", "us-east-1", "000000000000")
    access = Access("AKUSER", "json", service, operation, body=json.dumps(params).encode())
    action, resources = authorizer.resources(access)
    assert action.endswith(operation) and all(isinstance(r, str) for r in resources)


LOGS = "arn:aws:logs:us-east-1:000000000000:log-group"
JOBS = "/aws/sagemaker/TransformJobs"


@pytest.mark.parametrize(
    ("operation", "params", "resources"),
    [
        ("GetLogEvents", {"logGroupName": JOBS, "logStreamName": "tj/1"}, [f"{LOGS}:{JOBS}:log-stream:tj/1"]),
        (
            "FilterLogEvents",
            {"logGroupName": JOBS, "logStreamNames": ["a/1", "b/1"]},
            [f"{LOGS}:{JOBS}:log-stream:a/1", f"{LOGS}:{JOBS}:log-stream:b/1"],
        ),
        (
            "DescribeLogStreams",
            {"logGroupIdentifier": f"{LOGS}:{JOBS}", "logStreamNamePrefix": "tj/"},
            [f"{LOGS}:{JOBS}:log-stream:tj/*"],
        ),
        ("FilterLogEvents", {"logGroupName": JOBS}, [f"{LOGS}:{JOBS}:*"]),  # every stream
        ("FilterLogEvents", {"logGroupName": JOBS, "logStreamNamePrefix": ""}, [f"{LOGS}:{JOBS}:*"]),
        ("FilterLogEvents", {"logGroupName": JOBS, "logStreamNames": [1]}, [f"{LOGS}:{JOBS}:*"]),
    ],
)
def test_a_logs_call_names_the_streams_it_reads(
    operation: str, params: dict[str, Any], resources: list[str]
) -> None:
    authorizer = Authorizer(cast(IamStore, None), "AKADMIN", "secret", "us-east-1", "000000000000")
    access = Access("AKUSER", "json", "logs", operation, body=json.dumps(params).encode())
    assert authorizer.resources(access) == (f"logs:{operation}", resources)


def test_a_tenant_reads_its_own_jobs_streams_of_the_shared_group_only(tmp_path: Path) -> None:
    """Every transform job logs to one group (SageMaker's): a policy on the streams of its own jobs lets a
    tenant read those, and no other tenant's (a grant on the group, ``:*``, still covers them all)."""
    store = IamStore(f"sqlite:///{tmp_path / 'iam.db'}", SecretBox.load_or_create(tmp_path / "iam.key"))
    user = store.create_user("carol", "/")
    key = store.create_key("carol").access_key_id
    own = {"Effect": "Allow", "Action": "logs:*", "Resource": f"{LOGS}:{JOBS}:log-stream:carol-*"}
    store.put_policy(user, "p", json.dumps({"Statement": [own]}))
    authorizer = Authorizer(store, "AKADMIN", "secret", "us-east-1", "000000000000")

    def call(operation: str, **params: Any) -> None:
        body = json.dumps({"logGroupName": JOBS, **params}).encode()
        authorizer.authorize(Access(key, "json", "logs", operation, body=body))

    call("DescribeLogStreams", logStreamNamePrefix="carol-nightly/")
    call("GetLogEvents", logStreamName="carol-nightly/i-1")
    call("FilterLogEvents", logStreamNames=["carol-nightly/i-1"])
    for operation, params in (
        ("GetLogEvents", {"logStreamName": "dave-payroll/i-1"}),
        ("FilterLogEvents", {"logStreamNamePrefix": "dave-"}),
        ("FilterLogEvents", {"logStreamNames": ["carol-nightly/i-1", "dave-payroll/i-1"]}),
        ("FilterLogEvents", {}),
    ):
        with pytest.raises(AccessDenied):
            call(operation, **params)
    store.put_policy(user, "p", json.dumps({"Statement": [dict(own, Resource=f"{LOGS}:{JOBS}:*")]}))
    call("FilterLogEvents")
    call("GetLogEvents", logStreamName="dave-payroll/i-1")
    store.close()


EP = "arn:aws:sagemaker:us-east-1:000000000000:endpoint"
INVOCATIONS = {"Namespace": "AWS/SageMaker", "MetricName": "Invocations"}


def dims(endpoint: str | None) -> list[dict[str, str]]:
    named = [{"Name": "EndpointName", "Value": endpoint}] if endpoint else []
    return [*named, {"Name": "VariantName", "Value": "AllTraffic"}]


def stat(endpoint: str | None, n: int) -> dict[str, Any]:
    metric = {**INVOCATIONS, "Dimensions": dims(endpoint)}
    return {"Id": f"q{n}", "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Sum"}}


@pytest.mark.parametrize(
    ("operation", "params", "resources"),
    [
        ("GetMetricStatistics", {**INVOCATIONS, "Dimensions": dims("Alice-EP")}, [f"{EP}/alice-ep"]),
        ("GetMetricStatistics", {**INVOCATIONS, "Dimensions": dims(None)}, ["*"]),
        (
            "GetMetricData",
            {"MetricDataQueries": [stat("a", 1), stat("b", 2), stat("a", 3)]},
            [f"{EP}/a", f"{EP}/b"],
        ),
        ("GetMetricData", {"MetricDataQueries": [stat("a", 1), stat(None, 2)]}, [f"{EP}/a", "*"]),
        ("ListMetrics", {"Dimensions": [{"Name": "EndpointName", "Value": "a"}]}, [f"{EP}/a"]),
        ("ListMetrics", {"Dimensions": [{"Name": "EndpointName"}]}, ["*"]),
        ("ListMetrics", {}, ["*"]),
    ],
)
def test_a_metric_read_names_the_endpoints_it_reads(
    operation: str, params: dict[str, Any], resources: list[str]
) -> None:
    """A probe's tenant, refused another tenant's metrics through zeroscale's own API, read them through
    CloudWatch's: a metric read is now checked on each endpoint it reads (``*`` for the others), so a tenant
    can be allowed its own endpoints' metrics only (a grant on ``*`` reads every one, as before)."""
    authorizer = Authorizer(cast(IamStore, None), "AKADMIN", "secret", "us-east-1", "000000000000")
    access = Access("AKUSER", "json", "monitoring", operation, body=json.dumps(params).encode())
    assert authorizer.resources(access) == (f"cloudwatch:{operation}", resources)
