"""How a request is named for IAM: the model registry's operations and their resource ARNs."""

from __future__ import annotations

import json
from typing import Any, cast

import pytest

from zeroscale.iam.authz import Access, Authorizer
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
