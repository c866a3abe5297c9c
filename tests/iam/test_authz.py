"""How a request is named for IAM: the model registry's operations and their resource ARNs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pytest

from zeroscale.iam.authz import Access, AccessDenied, Authorizer, local_reads
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


FILE = "arn:aws:zeroscale:us-east-1:000000000000:file"


@pytest.mark.parametrize(
    ("params", "paths"),
    [
        ({"ModelName": "m", "PrimaryContainer": {"Image": "sklearn", "ModelDataUrl": "s3://b/m.tar.gz"}}, []),
        ({"PrimaryContainer": {"ModelDataUrl": "file:///srv/models/m.tar.gz"}}, ["/srv/models/m.tar.gz"]),
        ({"PrimaryContainer": {"ModelDataUrl": "/srv/models/../../etc/shadow"}}, ["/etc/shadow"]),
        ({"PrimaryContainer": {"ModelDataUrl": "file:///srv/%2e%2e/etc/passwd"}}, ["/etc/passwd"]),
        ({"PrimaryContainer": {"ModelDataUrl": "file:///srv/mme/", "Mode": "MultiModel"}}, ["/srv/mme/*"]),
        (
            {
                "Containers": [
                    {"ModelDataUrl": "file:///a/m.tar.gz"},
                    {"Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "file:///b/sourcedir.tar.gz"}},
                ]
            },
            ["/a/m.tar.gz", "/b/sourcedir.tar.gz"],
        ),
        # the container path the sagemaker SDK writes is the worker's to read, not the server's
        ({"PrimaryContainer": {"Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}}}, []),
        (
            {"InferenceSpecification": {"Containers": [{"ModelDataUrl": "file:///p/m.tar.gz"}]}},
            ["/p/m.tar.gz"],
        ),
        # what the handler refuses names nothing; a malformed request is the handler's to refuse
        ({"PrimaryContainer": {"ModelDataUrl": "file://host/m.tar.gz"}}, []),
        ({"PrimaryContainer": "file:///etc/shadow", "Containers": {"x": 1}}, []),
    ],
)
def test_the_servers_files_a_model_names(params: dict[str, Any], paths: list[str]) -> None:
    assert local_reads(params) == paths


def test_a_symlinked_path_is_checked_where_it_leads_too(tmp_path: Path) -> None:
    (tmp_path / "models").symlink_to("/etc")
    url = f"file://{tmp_path}/models/shadow"
    assert local_reads({"PrimaryContainer": {"ModelDataUrl": url}}) == [
        f"{tmp_path}/models/shadow",
        "/etc/shadow",
    ]


def test_reading_the_servers_files_needs_its_own_permission(tmp_path: Path) -> None:
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

    create("s3://bucket/model.tar.gz")
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
