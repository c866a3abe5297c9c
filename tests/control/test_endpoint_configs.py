from __future__ import annotations

from typing import Any

import pytest

from zeroscale.control import (
    EndpointConfigs,
    Models,
    ServerlessSpec,
    VariantSpec,
    idle_timeout_override,
    variant_specs,
)
from zeroscale.errors import ValidationException

from .fakes import FakeClock, arn

MEMORY_ENUM = "[1024, 2048, 3072, 4096, 5120, 6144]"


def serverless(
    memory: int = 2048, max_c: int = 5, provisioned: int | None = None, **extra: Any
) -> dict[str, Any]:
    sc: dict[str, Any] = {"MemorySizeInMB": memory, "MaxConcurrency": max_c}
    if provisioned is not None:
        sc["ProvisionedConcurrency"] = provisioned
    return {"VariantName": "AllTraffic", "ModelName": "m1", "ServerlessConfig": sc, **extra}


def instance(name: str = "AllTraffic", model: str | None = "m1", **extra: Any) -> dict[str, Any]:
    return {"VariantName": name, "ModelName": model, "InstanceType": "ml.m5.large", **extra}


def cfg(*variants: dict[str, Any], name: str = "MyConfig", **extra: Any) -> dict[str, Any]:
    return {"EndpointConfigName": name, "ProductionVariants": list(variants), **extra}


@pytest.fixture(autouse=True)
def _models(models: Models) -> None:
    for name in ("m1", "M2"):
        models.create({"ModelName": name, "PrimaryContainer": {"Image": "img"}})


def test_create_returns_arn(configs: EndpointConfigs) -> None:
    out = configs.create(cfg(serverless()))
    assert out == {"EndpointConfigArn": arn("endpoint-config", "MyConfig")}
    assert out["EndpointConfigArn"].endswith(":endpoint-config/myconfig")


def test_describe_serverless(configs: EndpointConfigs, clock: FakeClock) -> None:
    configs.create(cfg(serverless(provisioned=2), Tags=[{"Key": "team", "Value": "ml"}]))
    assert configs.describe("myconfig") == {
        "EndpointConfigName": "MyConfig",
        "EndpointConfigArn": arn("endpoint-config", "MyConfig"),
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": "m1",
                "ServerlessConfig": {
                    "MemorySizeInMB": 2048,
                    "MaxConcurrency": 5,
                    "ProvisionedConcurrency": 2,
                },
                "InitialVariantWeight": 1.0,
            }
        ],
        "CreationTime": clock.now,
    }
    assert configs.get("MYCONFIG").doc["Tags"] == [{"Key": "team", "Value": "ml"}]


def test_describe_instance_variants_and_optional_members(configs: EndpointConfigs) -> None:
    role = "arn:aws:iam::123456789012:role/R"
    configs.create(
        cfg(
            instance("A", InitialInstanceCount=2, InitialVariantWeight=3),
            instance("B", model="m2"),
            ExecutionRoleArn=role,
            EnableNetworkIsolation=False,
        )
    )
    out = configs.describe("MyConfig")
    assert out["ProductionVariants"] == [
        {
            "VariantName": "A",
            "ModelName": "m1",
            "InstanceType": "ml.m5.large",
            "InitialInstanceCount": 2,
            "InitialVariantWeight": 3.0,
        },
        {"VariantName": "B", "ModelName": "m2", "InstanceType": "ml.m5.large", "InitialVariantWeight": 1.0},
    ]
    assert out["ExecutionRoleArn"] == role
    assert out["EnableNetworkIsolation"] is False
    assert "Tags" not in out


@pytest.mark.parametrize("again", ["MyConfig", "myconfig"])
def test_duplicate(configs: EndpointConfigs, again: str) -> None:
    configs.create(cfg(serverless()))
    with pytest.raises(ValidationException) as err:
        configs.create(cfg(serverless(), name=again))
    assert err.value.code == "ValidationException"
    assert err.value.message == (
        f'Cannot create already existing endpoint configuration "{arn("endpoint-config", "MyConfig")}".'
    )


@pytest.mark.parametrize("op", ["describe", "delete", "get"])
def test_missing(configs: EndpointConfigs, op: str) -> None:
    with pytest.raises(ValidationException) as err:
        getattr(configs, op)("Nope")
    assert err.value.code == "ValidationException"
    assert err.value.message == (
        "Could not find endpoint configuration "
        '"arn:aws:sagemaker:us-west-2:123456789012:endpoint-config/nope".'
    )


def test_delete(configs: EndpointConfigs) -> None:
    configs.create(cfg(serverless()))
    configs.delete("MYCONFIG")
    with pytest.raises(ValidationException, match="Could not find endpoint configuration"):
        configs.get("MyConfig")


@pytest.mark.parametrize(
    ("variants", "message"),
    [
        (
            [instance(model="ghost")],
            'Could not find model "arn:aws:sagemaker:us-west-2:123456789012:model/ghost".',
        ),
        ([instance(model=None)], 'Production variant "AllTraffic" must specify a ModelName.'),
        (
            [instance("A"), instance("a")],
            "Production variant names must be unique within an endpoint configuration; "
            '"a" appears more than once.',
        ),
        (
            [{"VariantName": "v", "ModelName": "m1"}],
            'Production variant "v" must specify either InstanceType or ServerlessConfig.',
        ),
        (
            [serverless(InstanceType="ml.m5.large")],
            'Production variant "AllTraffic" specifies both InstanceType and ServerlessConfig; '
            "specify exactly one.",
        ),
        (
            [serverless(InitialInstanceCount=5)],
            'Production variant "AllTraffic" is serverless (ServerlessConfig): InitialInstanceCount is for '
            "instance variants (InstanceType); leave it out.",
        ),
        (
            [serverless(memory=1000)],
            f"Value '1000' at 'MemorySizeInMB' failed to satisfy constraint: "
            f"Member must satisfy enum value set: {MEMORY_ENUM}",
        ),
        (
            [serverless(memory=1536)],
            f"Value '1536' at 'MemorySizeInMB' failed to satisfy constraint: "
            f"Member must satisfy enum value set: {MEMORY_ENUM}",
        ),
        (
            [serverless(memory=7168)],
            f"Value '7168' at 'MemorySizeInMB' failed to satisfy constraint: "
            f"Member must satisfy enum value set: {MEMORY_ENUM}",
        ),
        (
            [serverless(max_c=0)],
            "Value '0' at 'MaxConcurrency' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1",
        ),
        (
            [serverless(max_c=201)],
            "Value '201' at 'MaxConcurrency' failed to satisfy constraint: "
            "Member must have value less than or equal to 200",
        ),
        (
            [serverless(provisioned=0)],
            "Value '0' at 'ProvisionedConcurrency' failed to satisfy constraint: "
            "Member must have value greater than or equal to 1",
        ),
        (
            [serverless(max_c=200, provisioned=201)],
            "Value '201' at 'ProvisionedConcurrency' failed to satisfy constraint: "
            "Member must have value less than or equal to 200",
        ),
        (
            [serverless(max_c=3, provisioned=4)],
            'ProvisionedConcurrency (4) of production variant "AllTraffic" must be less than or equal to '
            "its MaxConcurrency (3).",
        ),
        (
            [serverless(), instance("B")],
            "An endpoint configuration cannot mix serverless production variants (ServerlessConfig) "
            "with instance-based ones (InstanceType).",
        ),
        (
            [serverless(), serverless(VariantName="B")],
            "A serverless endpoint configuration supports only one production variant; 2 were given.",
        ),
    ],
)
def test_variant_rules(configs: EndpointConfigs, variants: list[dict[str, Any]], message: str) -> None:
    variants = [{k: v for k, v in variant.items() if v is not None} for variant in variants]
    with pytest.raises(ValidationException) as err:
        configs.create(cfg(*variants))
    assert err.value.code == "ValidationException"
    assert err.value.message == message
    with pytest.raises(ValidationException, match="Could not find endpoint configuration"):
        configs.get("MyConfig")


@pytest.mark.parametrize("memory", [1024, 2048, 3072, 4096, 5120, 6144])
def test_every_memory_size_is_accepted(configs: EndpointConfigs, memory: int) -> None:
    configs.create(cfg(serverless(memory=memory, max_c=200, provisioned=200)))
    assert variant_specs(configs.get("MyConfig").doc)[0].serverless == ServerlessSpec(memory, 200, 200)


def test_variant_specs(configs: EndpointConfigs) -> None:
    configs.create(cfg(serverless(memory=4096, max_c=10), name="sl"))
    configs.create(
        cfg(instance("A", InitialInstanceCount=3, InitialVariantWeight=0.5), instance("B"), name="rt")
    )
    assert variant_specs(configs.get("sl").doc) == [
        VariantSpec("AllTraffic", "m1", 1.0, ServerlessSpec(4096, 10, 0), None, 0)
    ]
    assert variant_specs(configs.get("rt").doc) == [
        VariantSpec("A", "m1", 0.5, None, "ml.m5.large", 3),
        VariantSpec("B", "m1", 1.0, None, "ml.m5.large", 1),
    ]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (None, None),
        ([], None),
        ([{"Key": "other", "Value": "5"}], None),
        ([{"Key": "zeroscale:idle-timeout-s", "Value": "30"}], 30.0),
        ([{"Key": "zeroscale:idle-timeout-s", "Value": "0.5"}], 0.5),
        ([{"Key": "zeroscale:idle-timeout-s", "Value": "3600"}, {"Key": "x", "Value": ""}], 3600.0),
    ],
)
def test_idle_timeout_override(
    configs: EndpointConfigs, tags: list[dict[str, str]] | None, expected: float | None
) -> None:
    params = cfg(serverless())
    if tags is not None:
        params["Tags"] = tags
    configs.create(params)
    assert idle_timeout_override(configs.get("MyConfig").doc) == expected


@pytest.mark.parametrize("value", ["0", "-5", "abc", "", "nan", "inf"])
def test_invalid_idle_timeout_tag(configs: EndpointConfigs, value: str) -> None:
    with pytest.raises(ValidationException) as err:
        configs.create(cfg(serverless(), Tags=[{"Key": "zeroscale:idle-timeout-s", "Value": value}]))
    assert err.value.code == "ValidationException"
    assert err.value.message == (
        f"Value '{value}' of tag 'zeroscale:idle-timeout-s' failed to satisfy constraint: "
        "Member must be a positive number of seconds"
    )
    with pytest.raises(ValidationException, match="Could not find endpoint configuration"):
        configs.get("MyConfig")


def test_model_deletion_does_not_touch_configs(configs: EndpointConfigs, models: Models) -> None:
    configs.create(cfg(serverless()))
    models.delete("m1")
    assert configs.describe("MyConfig")["ProductionVariants"][0]["ModelName"] == "m1"


def test_list(configs: EndpointConfigs, clock: FakeClock) -> None:
    for name in ["cfg-b", "Cfg-A", "other"]:
        configs.create(cfg(serverless(), name=name))
        clock.advance(1.5)
    out = configs.list({"NameContains": "CFG"})
    assert out == {
        "EndpointConfigs": [
            {
                "EndpointConfigName": "Cfg-A",
                "EndpointConfigArn": arn("endpoint-config", "Cfg-A"),
                "CreationTime": clock.now - 3.0,
            },
            {
                "EndpointConfigName": "cfg-b",
                "EndpointConfigArn": arn("endpoint-config", "cfg-b"),
                "CreationTime": clock.now - 4.5,
            },
        ]
    }
    names = [
        c["EndpointConfigName"]
        for c in configs.list({"SortBy": "Name", "SortOrder": "Ascending"})["EndpointConfigs"]
    ]
    assert names == ["Cfg-A", "cfg-b", "other"]
    after = configs.list({"CreationTimeAfter": clock.now - 4.0})
    assert [c["EndpointConfigName"] for c in after["EndpointConfigs"]] == ["other", "Cfg-A"]
    first = configs.list({"MaxResults": 1})
    second = configs.list({"MaxResults": 2, "NextToken": first["NextToken"]})
    assert [c["EndpointConfigName"] for c in first["EndpointConfigs"] + second["EndpointConfigs"]] == [
        "other",
        "Cfg-A",
        "cfg-b",
    ]
    assert "NextToken" not in second
