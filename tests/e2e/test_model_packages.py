"""The model registry through the real server and real boto3: groups, versioned packages with their
inference specifications, approval, deploying a version by ARN or a group's latest Approved version, a
Rejected version refused by name, and bad input refused by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from e2e.conftest import handler_model
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, SKLEARN_IMAGE, ServerProcess, wait_final

# Answers with the version its package's environment names, and the content type it was sent.
VERSIONED = """
import json
import os


def model_fn(model_dir):
    return os.environ["VERSION"]


def transform_fn(model, body, content_type, accept):
    return json.dumps({"version": model, "content_type": content_type}), "application/json"
"""

ACCOUNT_PREFIX = "arn:aws:sagemaker:us-east-1:000000000000"

# Groups, versions and their numbering on SQLite and on PostgreSQL.
BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="module")
def model_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return handler_model(tmp_path_factory.mktemp("versioned"), VERSIONED)


def spec(url: str, version: str) -> dict[str, Any]:
    return {
        "Containers": [
            {
                "Image": SKLEARN_IMAGE,
                "ModelDataUrl": url,
                "Environment": {"VERSION": version},
                "Framework": "SKLEARN",
            }
        ],
        "SupportedContentTypes": ["text/csv"],
        "SupportedResponseMIMETypes": ["application/json"],
    }


def code(err: pytest.ExceptionInfo[ClientError]) -> tuple[str, str]:
    error = err.value.response["Error"]
    return str(error["Code"]), str(error["Message"])


def serve(sm: Any, smr: Any, name: str, container: dict[str, Any]) -> dict[str, Any]:
    sm.create_model(ModelName=name, PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    desc = wait_final(sm, name)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resp = smr.invoke_endpoint(EndpointName=name, Body=b"1,2", ContentType="text/csv")
    answer: dict[str, Any] = json.loads(resp["Body"].read())
    return answer


def zeroscale(server: ServerProcess, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZEROSCALE_"))}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
    command = [str(Path(sys.executable).parent / "zeroscale"), *args, "--endpoint-url", server.url]
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_groups_and_versions(server: ServerProcess, sm: Any, smr: Any, model_url: str) -> None:
    group_arn = sm.create_model_package_group(
        ModelPackageGroupName="churn",
        ModelPackageGroupDescription="churn models",
        Tags=[{"Key": "t", "Value": "1"}],
    )["ModelPackageGroupArn"]
    assert group_arn == f"{ACCOUNT_PREFIX}:model-package-group/churn"
    group = sm.describe_model_package_group(ModelPackageGroupName="churn")
    assert group["ModelPackageGroupStatus"] == "Completed"
    assert group["ModelPackageGroupDescription"] == "churn models"
    assert (
        sm.describe_model_package_group(ModelPackageGroupName=group_arn)["ModelPackageGroupName"] == "churn"
    )
    assert sm.list_tags(ResourceArn=group_arn)["Tags"] == [{"Key": "t", "Value": "1"}]
    groups = sm.list_model_package_groups(NameContains="chur")["ModelPackageGroupSummaryList"]
    assert [g["ModelPackageGroupName"] for g in groups] == ["churn"]

    arns = [
        sm.create_model_package(
            ModelPackageGroupName="churn",
            ModelPackageDescription=f"version {v}",
            InferenceSpecification=spec(model_url, f"v{v}"),
            **({"ModelApprovalStatus": "Approved"} if v < 3 else {}),
        )["ModelPackageArn"]
        for v in (1, 2, 3)
    ]
    assert arns == [f"{ACCOUNT_PREFIX}:model-package/churn/{v}" for v in (1, 2, 3)]
    third = sm.describe_model_package(ModelPackageName=arns[2])
    assert third["ModelPackageVersion"] == 3
    assert third["ModelPackageGroupName"] == "churn"
    assert third["ModelApprovalStatus"] == "PendingManualApproval"
    assert third["ModelPackageStatus"] == "Completed"
    assert third["InferenceSpecification"]["SupportedContentTypes"] == ["text/csv"]
    assert third["InferenceSpecification"]["Containers"][0]["Environment"] == {"VERSION": "v3"}
    assert sm.describe_model_package(ModelPackageName="churn/2")["ModelPackageArn"] == arns[1]

    listed = sm.list_model_packages(
        ModelPackageGroupName="churn", SortBy="CreationTime", SortOrder="Ascending"
    )
    assert [p["ModelPackageVersion"] for p in listed["ModelPackageSummaryList"]] == [1, 2, 3]
    approved = sm.list_model_packages(ModelPackageGroupName="churn", ModelApprovalStatus="Approved")
    assert {p["ModelPackageArn"] for p in approved["ModelPackageSummaryList"]} == set(arns[:2])
    both = sm.list_model_packages(ModelPackageType="Both")["ModelPackageSummaryList"]
    assert len(both) == 3
    assert sm.list_model_packages()["ModelPackageSummaryList"] == []  # Unversioned by default: none kept
    # a group's versions are not Unversioned packages: the type named is the filter (it was ignored)
    unversioned = sm.list_model_packages(ModelPackageGroupName="churn", ModelPackageType="Unversioned")
    assert unversioned["ModelPackageSummaryList"] == []

    # the command line lists groups, and a group's versions newest first
    assert "churn" in zeroscale(server, "model-packages", "list")
    table = zeroscale(server, "model-packages", "list", "churn").splitlines()
    assert table[0].split() == ["VERSION", "APPROVAL", "STATUS", "CREATED", "ARN"]
    assert [(r.split()[0], r.split()[1]) for r in table[1:]] == [
        ("3", "PendingManualApproval"),
        ("2", "Approved"),
        ("1", "Approved"),
    ]

    # deploy by group: its latest Approved version (2, not the pending 3)
    assert serve(sm, smr, "by-group", {"ModelPackageName": "churn"}) == {
        "version": "v2",
        "content_type": "text/csv",
    }
    model = sm.describe_model(ModelName="by-group")
    assert model["PrimaryContainer"] == {"ModelPackageName": "churn"}  # as given

    # approve 3: the group now deploys it; by ARN deploys the version named
    sm.update_model_package(ModelPackageArn=arns[2], ModelApprovalStatus="Approved", ApprovalDescription="ok")
    assert sm.describe_model_package(ModelPackageName=arns[2])["ApprovalDescription"] == "ok"
    assert serve(sm, smr, "by-group-again", {"ModelPackageName": group_arn})["version"] == "v3"
    assert serve(sm, smr, "by-arn", {"ModelPackageName": arns[0]})["version"] == "v1"
    # the endpoint made before keeps the version it was made from
    body = smr.invoke_endpoint(EndpointName="by-group", Body=b"1", ContentType="text/csv")["Body"].read()
    assert json.loads(body)["version"] == "v2"

    # a Rejected version is refused by name, by ARN and when it would be a group's latest
    sm.update_model_package(ModelPackageArn=arns[2], ModelApprovalStatus="Rejected")
    with pytest.raises(ClientError) as err:
        sm.create_model(ModelName="rejected", PrimaryContainer={"ModelPackageName": arns[2]})
    assert code(err)[0] == "ValidationException"
    assert arns[2] in code(err)[1] and "Rejected" in code(err)[1]
    assert serve(sm, smr, "skips-rejected", {"ModelPackageName": "churn"})["version"] == "v2"

    # a group with versions cannot go; its versions can, then it can
    with pytest.raises(ClientError) as err:
        sm.delete_model_package_group(ModelPackageGroupName="churn")
    assert code(err)[0] == "ConflictException"
    for arn in arns:
        sm.delete_model_package(ModelPackageName=arn)
    with pytest.raises(ClientError) as err:
        sm.describe_model_package(ModelPackageName=arns[0])
    assert code(err) == ("ValidationException", f'Could not find model package "{arns[0]}".')
    sm.delete_model_package_group(ModelPackageGroupName="churn")
    assert sm.list_model_package_groups()["ModelPackageGroupSummaryList"] == []


def test_a_retried_create_with_its_client_token_makes_one_version(sm: Any, model_url: str) -> None:
    sm.create_model_package_group(ModelPackageGroupName="retried")

    def create(token: str, tag: str = "v1") -> str:
        arn: str = sm.create_model_package(
            ModelPackageGroupName="retried", InferenceSpecification=spec(model_url, tag), ClientToken=token
        )["ModelPackageArn"]
        return arn

    first = create("token-1")
    assert create("token-1") == first  # a retry: the same version, not a second one
    assert create("token-2") == first.replace("/retried/1", "/retried/2")
    with pytest.raises(ClientError) as err:
        create("token-1", tag="v2")  # the same token for another request
    assert code(err)[0] == "ValidationException" and "ClientToken token-1" in code(err)[1]
    listed = sm.list_model_packages(ModelPackageGroupName="retried")["ModelPackageSummaryList"]
    assert len(listed) == 2


def test_bad_input_is_refused_by_name(sm: Any, model_url: str, tmp_path: Path) -> None:
    del tmp_path

    def refused(call: Any, **kw: Any) -> tuple[str, str]:
        with pytest.raises(ClientError) as err:
            call(**kw)
        return code(err)

    sm.create_model_package_group(ModelPackageGroupName="empty")
    assert refused(sm.create_model_package_group, ModelPackageGroupName="empty") == (
        "ValidationException",
        f'Cannot create already existing model package group "{ACCOUNT_PREFIX}:model-package-group/empty".',
    )
    # A name that is no version: a group's, which names no one version, or nothing's
    c, m = refused(sm.describe_model_package, ModelPackageName="empty")
    assert c == "ValidationException" and "is not a versioned model package" in m
    assert refused(sm.describe_model_package, ModelPackageName="nothing") == (
        "ValidationException",
        f'Could not find model package "{ACCOUNT_PREFIX}:model-package/nothing".',
    )
    c, m = refused(sm.create_model, ModelName="no-approved", PrimaryContainer={"ModelPackageName": "empty"})
    assert c == "ValidationException" and '"empty" has no Approved' in m
    c, m = refused(sm.create_model, ModelName="no-group", PrimaryContainer={"ModelPackageName": "nowhere"})
    assert c == "ValidationException" and "nowhere" in m
    c, m = refused(
        sm.create_model,
        ModelName="both",
        PrimaryContainer={"ModelPackageName": "empty", "Image": SKLEARN_IMAGE},
    )
    assert c == "ValidationException" and "not both" in m
    # a hostname for one container of a package of two: it was stored, shown, and never any container's
    two = spec(model_url, "x")
    two["Containers"] = [dict(two["Containers"][0], ContainerHostname=h) for h in ("pc1", "pc2")]
    sm.create_model_package_group(ModelPackageGroupName="pair")
    sm.create_model_package(
        ModelPackageGroupName="pair", InferenceSpecification=two, ModelApprovalStatus="Approved"
    )
    c, m = refused(
        sm.create_model,
        ModelName="renamed",
        PrimaryContainer={"ModelPackageName": "pair", "ContainerHostname": "myhost"},
    )
    assert c == "ValidationException" and "names one container, but model package" in m, m
    c, m = refused(
        sm.create_model,
        ModelName="with-data",
        PrimaryContainer={"ModelPackageName": "empty", "ModelDataUrl": model_url},
    )
    assert c == "ValidationException" and "ModelDataUrl must not be given" in m
    c, m = refused(
        sm.create_model_package, ModelPackageName="unversioned", InferenceSpecification=spec(model_url, "x")
    )
    assert c == "ValidationException" and "ModelPackageName" in m
    c, m = refused(
        sm.create_model_package, ModelPackageGroupName="nowhere", InferenceSpecification=spec(model_url, "x")
    )
    assert c == "ValidationException" and "nowhere" in m
    c, m = refused(sm.create_model_package, ModelPackageGroupName="empty")
    assert c == "ValidationException" and "InferenceSpecification" in m
    no_image = {"Containers": [{"ModelDataUrl": model_url}]}
    c, m = refused(sm.create_model_package, ModelPackageGroupName="empty", InferenceSpecification=no_image)
    assert c == "ValidationException" and "InferenceSpecification.Containers.1" in m
    c, m = refused(
        sm.create_model_package,
        ModelPackageGroupName="empty",
        InferenceSpecification=spec(model_url, "x"),
        ModelApprovalStatus="Maybe",
    )
    assert c == "ValidationException" and "Maybe" in m
    c, m = refused(
        sm.create_model_package,
        ModelPackageGroupName="empty",
        InferenceSpecification=spec(model_url, "x"),
        SourceUri="s3://somewhere/model",
    )
    assert c == "ValidationException" and "SourceUri" in m
    c, m = refused(sm.describe_model_package, ModelPackageName="empty/7")
    assert c == "ValidationException" and "model-package/empty/7" in m
    c, m = refused(sm.describe_model_package_group, ModelPackageGroupName="nowhere")
    assert c == "ValidationException" and "model-package-group/nowhere" in m
    sm.delete_model_package_group(ModelPackageGroupName="empty")


def test_a_deployed_package_survives_its_deletion_and_a_restart(
    server_factory: Any, model_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The model keeps what its package resolved to: the package may go, and a restart (on either database)
    serves the same version again."""
    srv = server_factory(tmp_path_factory.mktemp("registry-restart") / "data")
    sm, smr = srv.client("sagemaker"), srv.client("sagemaker-runtime")
    sm.create_model_package_group(ModelPackageGroupName="kept")
    arn = sm.create_model_package(
        ModelPackageGroupName="kept",
        InferenceSpecification=spec(model_url, "v1"),
        ModelApprovalStatus="Approved",
    )["ModelPackageArn"]
    assert serve(sm, smr, "kept", {"ModelPackageName": "kept"})["version"] == "v1"
    sm.delete_model_package(ModelPackageName=arn)
    sm.delete_model_package_group(ModelPackageGroupName="kept")
    srv.restart()
    smr = srv.client("sagemaker-runtime")
    body = smr.invoke_endpoint(EndpointName="kept", Body=b"1", ContentType="text/csv")["Body"].read()
    assert json.loads(body) == {"version": "v1", "content_type": "text/csv"}
