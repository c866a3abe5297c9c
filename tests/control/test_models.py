from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zeroscale.control import Models
from zeroscale.control.arns import Arns
from zeroscale.errors import AccessDenied, ValidationException
from zeroscale.store.db import Store

from .fakes import FakeClock, arn

IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
CONTAINER = {"Image": IMAGE, "ModelDataUrl": "s3://bucket/model.tar.gz", "Environment": {"A": "1"}}


def params(name: str = "MyModel", **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"ModelName": name, "PrimaryContainer": dict(CONTAINER)}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def test_create_returns_arn(models: Models) -> None:
    assert models.create(params("MyModel")) == {"ModelArn": arn("model", "MyModel")}
    assert arn("model", "MyModel").endswith(":model/mymodel")


def test_describe_primary_container(models: Models, clock: FakeClock) -> None:
    models.create(
        params(ExecutionRoleArn="arn:aws:iam::123456789012:role/R", Tags=[{"Key": "k", "Value": "v"}])
    )
    assert models.describe("mymodel") == {
        "ModelName": "MyModel",
        "PrimaryContainer": CONTAINER,
        "ExecutionRoleArn": "arn:aws:iam::123456789012:role/R",
        "ModelArn": arn("model", "MyModel"),
        "CreationTime": clock.now,
        "EnableNetworkIsolation": False,
    }
    assert models.get("MYMODEL").doc["Tags"] == [{"Key": "k", "Value": "v"}]


def test_describe_containers_and_network_isolation(models: Models, clock: FakeClock) -> None:
    containers = [dict(CONTAINER, ContainerHostname="a", Mode="SingleModel")]
    models.create(params(PrimaryContainer=None, Containers=containers, EnableNetworkIsolation=False))
    out = models.describe("MyModel")
    assert out["Containers"] == containers
    assert "PrimaryContainer" not in out and "ExecutionRoleArn" not in out
    assert out["EnableNetworkIsolation"] is False
    assert out["CreationTime"] == clock.now


def test_create_does_not_alias_the_input(models: Models) -> None:
    p = params()
    models.create(p)
    p["PrimaryContainer"]["Environment"]["A"] = "changed"
    assert models.describe("MyModel")["PrimaryContainer"]["Environment"] == {"A": "1"}


@pytest.mark.parametrize("again", ["MyModel", "mymodel", "MYMODEL"])
def test_duplicate(models: Models, again: str) -> None:
    models.create(params("MyModel"))
    with pytest.raises(ValidationException) as err:
        models.create(params(again))
    assert err.value.code == "ValidationException"
    assert err.value.message == f'Cannot create already existing model "{arn("model", "MyModel")}".'


@pytest.mark.parametrize("op", ["describe", "delete", "get"])
def test_missing(models: Models, op: str) -> None:
    with pytest.raises(ValidationException) as err:
        getattr(models, op)("Nope")
    assert err.value.code == "ValidationException"
    assert err.value.message == 'Could not find model "arn:aws:sagemaker:us-west-2:123456789012:model/nope".'


def test_delete(models: Models) -> None:
    models.create(params("MyModel"))
    models.delete("MYMODEL")
    with pytest.raises(ValidationException, match="Could not find model"):
        models.describe("MyModel")
    models.create(params("MyModel"))  # the name is free again


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"PrimaryContainer": None},
            "A model needs a container: specify either PrimaryContainer or Containers.",
        ),
        ({"PrimaryContainer": None, "Containers": []}, "A model needs a container"),
        ({"Containers": [CONTAINER]}, "Specify either PrimaryContainer or Containers, not both."),
        ({"PrimaryContainer": {"ModelDataUrl": "s3://b/m.tar.gz"}}, "PrimaryContainer must specify an Image"),
        (
            {"PrimaryContainer": {"ModelPackageName": "pkg", "Image": IMAGE}},
            "PrimaryContainer must specify either an Image or a ModelPackageName, not both.",
        ),
        (
            {"PrimaryContainer": None, "Containers": [CONTAINER, {"Environment": {}}]},
            "Containers.2 must specify an Image",
        ),
        # a ModelDataUrl no deployment could read is refused at once, not when an endpoint fails
        (
            {"PrimaryContainer": dict(CONTAINER, ModelDataUrl="ftp://h/m.tar.gz")},
            "PrimaryContainer.ModelDataUrl: Unsupported model artifact URL 'ftp://h/m.tar.gz': scheme",
        ),
        (
            {"PrimaryContainer": dict(CONTAINER, ModelDataUrl="http://h/m.tar.gz")},
            "PrimaryContainer.ModelDataUrl: Unsupported model artifact URL 'http://",
        ),
        (
            {"PrimaryContainer": dict(CONTAINER, ModelDataUrl="s3://bucket")},
            "PrimaryContainer.ModelDataUrl: Invalid model artifact URL 's3://bucket'",
        ),
        (
            {"PrimaryContainer": dict(CONTAINER, ModelDataUrl="model.tar.gz")},
            "PrimaryContainer.ModelDataUrl 'model.tar.gz' is neither an S3 URL",
        ),
        (
            {"PrimaryContainer": dict(CONTAINER, ModelDataUrl="s3://", Mode="MultiModel")},
            "PrimaryContainer.ModelDataUrl 's3://' is neither an S3 URL",
        ),
        (
            {"PrimaryContainer": {"Image": IMAGE, "Mode": "MultiModel"}},
            "PrimaryContainer.Mode is MultiModel: ModelDataUrl must name the S3 prefix",
        ),
        (
            {"PrimaryContainer": dict(CONTAINER, MultiModelConfig={"ModelCacheSetting": "Disabled"})},
            "PrimaryContainer.MultiModelConfig is only for Mode MultiModel.",
        ),
        (
            {"PrimaryContainer": {"Image": IMAGE, "Environment": {f"K{i}": "v" * 1000 for i in range(33)}}},
            "The Environment of PrimaryContainer is 33089 bytes in total",
        ),
        (
            {"PrimaryContainer": {"Image": IMAGE, "Environment": {"OK": "x", "A": "x\0y"}}},
            "PrimaryContainer.Environment.A: the value holds a NUL character",
        ),
        (
            {"PrimaryContainer": None, "Containers": [CONTAINER, dict(CONTAINER, Environment={"B": "\0"})]},
            "Containers.2.Environment.B: the value holds a NUL character",
        ),
    ],
)
def test_container_rules(models: Models, extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationException) as err:
        models.create(params(**extra))
    assert err.value.code == "ValidationException"
    assert err.value.message.startswith(message)
    with pytest.raises(ValidationException, match="Could not find model"):
        models.get("MyModel")


def test_environment_at_the_size_limit_is_accepted(models: Models) -> None:
    env = {f"K{i:02d}": "v" * 1020 for i in range(32)}  # 32 * (3 + 1020) = 32736 bytes
    env["Z"] = "v" * (32 * 1024 - 32736 - 1)
    models.create(params(PrimaryContainer={"Image": IMAGE, "Environment": env}))
    assert models.describe("MyModel")["PrimaryContainer"]["Environment"] == env


def test_list(models: Models, clock: FakeClock) -> None:
    for name in ["b-model", "A-model", "c-other"]:
        models.create(params(name))
        clock.advance(10)
    out = models.list({})
    assert out == {
        "Models": [
            {"ModelName": "c-other", "ModelArn": arn("model", "c-other"), "CreationTime": clock.now - 10},
            {"ModelName": "A-model", "ModelArn": arn("model", "A-model"), "CreationTime": clock.now - 20},
            {"ModelName": "b-model", "ModelArn": arn("model", "b-model"), "CreationTime": clock.now - 30},
        ]
    }
    by_name = models.list({"SortBy": "Name", "SortOrder": "Ascending", "NameContains": "MODEL"})
    assert [m["ModelName"] for m in by_name["Models"]] == ["A-model", "b-model"]
    page = models.list({"MaxResults": 2})
    assert len(page["Models"]) == 2 and "NextToken" in page
    rest = models.list({"MaxResults": 2, "NextToken": page["NextToken"]})
    assert [m["ModelName"] for m in rest["Models"]] == ["b-model"] and "NextToken" not in rest
    with pytest.raises(ValidationException, match="at 'SortBy'"):
        models.list({"SortBy": "Status"})


def test_model_data_on_the_servers_disk_is_there_when_the_model_is_created(
    models: Models, tmp_path: Path
) -> None:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(b"")
    for i, url in enumerate((f"file://{archive}", str(archive), f"file://{tmp_path}")):
        models.create(params(f"here-{i}", PrimaryContainer=dict(CONTAINER, ModelDataUrl=url)))
    for url in (f"file://{tmp_path}/missing.tar.gz", f"{tmp_path}/missing.tar.gz"):
        with pytest.raises(ValidationException) as err:
            models.create(params("gone", PrimaryContainer=dict(CONTAINER, ModelDataUrl=url)))
        assert err.value.message == f"Could not find model data at {url}."
    source = {"SAGEMAKER_SUBMIT_DIRECTORY": f"file://{tmp_path}/sourcedir.tar.gz"}
    with pytest.raises(ValidationException, match=r"sourcedir\.tar\.gz"):
        models.create(params("no-code", PrimaryContainer=dict(CONTAINER, Environment=source)))
    # a multi-model prefix may be empty until its models are put there; S3 is looked at by the deployment
    mme = dict(CONTAINER, ModelDataUrl=f"file://{tmp_path}/later/", Mode="MultiModel")
    models.create(params("mme", PrimaryContainer=mme))
    with pytest.raises(ValidationException, match="Could not find model"):  # nothing was created
        models.describe("gone")


def test_an_iam_users_model_data_is_checked_where_it_leads(store: Store, arns: Arns, tmp_path: Path) -> None:
    """CreateModel (in its thread) checks where each path on the server's disk leads through symlinks now
    against the caller's rights, before saying whether it exists: the path as written was authorized
    on the event loop, which does not touch the disk."""
    allowed, elsewhere = tmp_path / "alice", tmp_path / "bob"
    allowed.mkdir()
    elsewhere.mkdir()
    (elsewhere / "model.tar.gz").write_bytes(b"")
    (allowed / "link.tar.gz").symlink_to(elsewhere / "model.tar.gz")
    (allowed / "theirs").symlink_to(elsewhere)
    (allowed / "model.tar.gz").write_bytes(b"")
    asked: list[tuple[tuple[str, str], Path]] = []

    def local_reads(creator: tuple[str, str]) -> Any:
        def check(real: Path) -> str | None:
            asked.append((creator, real))
            return None if allowed in real.parents else f"not {creator[0]}'s: {real}"

        return check if creator[0] else None

    guarded = Models(store, arns, local_reads=local_reads)
    alice = ("alice", "AIDA1")

    def create(name: str, **container: Any) -> None:
        guarded.create(params(name, PrimaryContainer=dict(CONTAINER, **container)), alice)

    create("own", ModelDataUrl=f"file://{allowed}/model.tar.gz")
    for name, url, leads in (
        ("link", f"file://{allowed}/link.tar.gz", elsewhere / "model.tar.gz"),
        ("missing", f"file://{allowed}/theirs/missing.tar.gz", elsewhere / "missing.tar.gz"),
    ):
        with pytest.raises(AccessDenied) as err:
            create(name, ModelDataUrl=url)
        assert err.value.message == f"not alice's: {leads}"  # not "Could not find model data"
    with pytest.raises(AccessDenied, match=f"not alice's: {elsewhere}/\\*"):
        create("mme", ModelDataUrl=f"file://{allowed}/theirs/", Mode="MultiModel")
    source = {"SAGEMAKER_SUBMIT_DIRECTORY": f"file://{allowed}/link.tar.gz"}
    with pytest.raises(AccessDenied, match=r"model\.tar\.gz"):
        create("code", Environment=source)
    guarded.create(
        params("admin", PrimaryContainer=dict(CONTAINER, ModelDataUrl=f"file://{allowed}/link.tar.gz"))
    )
    assert all(who == alice for who, _ in asked)
