"""The allow-lists of served members: every listed path is a real member in botocore's model, and the walker
refuses by name whatever is present and not listed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from zeroscale.api import served
from zeroscale.api.allowlist import ANY, Refusals, at_most, only, refused_headers
from zeroscale.api.jsonrpc import JsonService
from zeroscale.api.shapes import ServiceShapes
from zeroscale.errors import ValidationException

SERVICES = {
    "sagemaker": served.SAGEMAKER,
    "logs": served.LOGS,
    "application-autoscaling": served.APPLICATION_AUTOSCALING,
}


def _paths(shape: Any, prefix: str = "", seen: frozenset[str] = frozenset()) -> Iterator[str]:
    """Every member path of an input shape (lists and maps are transparent), stopping at recursion."""
    while shape.type_name in ("list", "map"):
        shape = shape.member if shape.type_name == "list" else shape.value
    if shape.type_name != "structure" or shape.name in seen:
        return
    for name, member in shape.members.items():
        path = f"{prefix}.{name}" if prefix else name
        yield path
        yield from _paths(member, path, seen | {shape.name})


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_listed_path_is_a_member_botocore_knows(service: str) -> None:
    shapes = ServiceShapes(service)
    for operation, rules in SERVICES[service].items():
        assert operation in shapes.operation_names()
        known = set(_paths(shapes.input_shape(operation)))
        assert set(rules) <= known, f"{operation}: {sorted(set(rules) - known)}"
        for path in rules:  # a member is reachable only when every structure above it is served too
            parent = path.rpartition(".")[0]
            assert not parent or parent in rules, f"{operation}: {path} is listed without {parent}"


def test_invoke_endpoint_members_are_real() -> None:
    shape = ServiceShapes("sagemaker-runtime").input_shape("InvokeEndpoint")
    assert set(shape.members) >= served.INVOKE_ENDPOINT
    stream = ServiceShapes("sagemaker-runtime").input_shape("InvokeEndpointWithResponseStream")
    assert set(stream.members) >= served.INVOKE_ENDPOINT_WITH_RESPONSE_STREAM


def test_refused_headers_of_invoke_endpoint() -> None:
    shape = ServiceShapes("sagemaker-runtime").input_shape("InvokeEndpoint")
    refused = refused_headers(shape, served.INVOKE_ENDPOINT)
    assert refused[b"x-amzn-sagemaker-enable-explanations"] == (
        "EnableExplanations (header X-Amzn-SageMaker-Enable-Explanations)"
    )
    for header in (
        b"x-amzn-sagemaker-enable-explanations",
        b"x-amzn-sagemaker-inference-component",
        b"x-amzn-sagemaker-session-id",
    ):
        assert header in refused
    for header in (
        b"content-type",
        b"accept",
        b"x-amzn-sagemaker-target-variant",
        b"x-amzn-sagemaker-target-container-hostname",
        b"x-amzn-sagemaker-target-model",
    ):
        assert header not in refused


# ---- the walker, on a table of its own ------------------------------------------------------------------

TABLE = {
    "CreateModel": {
        "ModelName": ANY,
        "PrimaryContainer": ANY,
        "PrimaryContainer.Image": ANY,
        "PrimaryContainer.Environment": ANY,
        "PrimaryContainer.Mode": only("SingleModel"),
        "Containers": at_most(1),
        "Containers.Image": ANY,
        "EnableNetworkIsolation": only(False),
        "Tags": ANY,
        "Tags.Key": ANY,
        "Tags.Value": ANY,
    }
}


@pytest.fixture(scope="module")
def shape() -> Any:
    return ServiceShapes("sagemaker").input_shape("CreateModel")


def _find(shape: Any, **params: Any) -> list[str]:
    return Refusals(TABLE).find("CreateModel", shape, params)


def test_served_members_pass(shape: Any) -> None:
    assert (
        _find(
            shape,
            ModelName="m",
            PrimaryContainer={"Image": "i", "Environment": {"A": "1"}, "Mode": "SingleModel"},
            Tags=[{"Key": "k", "Value": "v"}],
            EnableNetworkIsolation=False,
        )
        == []
    )


def test_unlisted_members_are_named_by_their_path(shape: Any) -> None:
    found = _find(
        shape,
        ModelName="m",
        PrimaryContainer={"Image": "i", "ImageConfig": {"RepositoryAccessMode": "Platform"}},
        Containers=[{"Image": "i", "ModelDataUrl": "s3://b/k"}],
        VpcConfig={"SecurityGroupIds": ["sg"], "Subnets": ["s"]},
    )
    assert found == ["PrimaryContainer.ImageConfig", "Containers.1.ModelDataUrl", "VpcConfig"]


def test_a_member_botocore_does_not_know_is_refused(shape: Any) -> None:
    assert _find(shape, ModelName="m", Surprise=1, PrimaryContainer={"Later": {}}) == [
        "Surprise",
        "PrimaryContainer.Later",
    ]


def test_null_and_empty_collections_are_absent_but_an_empty_structure_is_present(shape: Any) -> None:
    assert (
        _find(shape, ModelName="m", VpcConfig=None, PrimaryContainer={"AdditionalModelDataSources": []}) == []
    )
    assert _find(shape, ModelName="m", PrimaryContainer={"ImageConfig": {}}) == [
        "PrimaryContainer.ImageConfig"
    ]


def test_value_and_size_rules(shape: Any) -> None:
    found = _find(
        shape,
        EnableNetworkIsolation=True,
        PrimaryContainer={"Mode": "MultiModel"},
        Containers=[{"Image": "a"}, {"Image": "b"}],
    )
    assert found == [
        "EnableNetworkIsolation=true (only false)",
        "PrimaryContainer.Mode=MultiModel (only SingleModel)",
        "Containers with 2 items (at most 1)",
    ]


def test_a_flood_of_unknown_members_is_named_briefly(shape: Any) -> None:
    params = {f"k{i:03d}" + "x" * 100: 1 for i in range(500)}
    with pytest.raises(ValidationException) as err:
        Refusals(TABLE).check("CreateModel", shape, params)
    assert err.value.message.endswith(" and 480 more yet.")
    assert len(err.value.message) < 2000


def test_wrong_json_types_are_left_to_the_shape_validator(shape: Any) -> None:
    assert _find(shape, PrimaryContainer="not an object", Tags={"Key": "k"}) == []


def test_check_raises_one_validation_exception_naming_everything(shape: Any) -> None:
    with pytest.raises(ValidationException) as err:
        Refusals(TABLE).check("CreateModel", shape, {"VpcConfig": {}, "InferenceExecutionConfig": {}})
    assert err.value.message == "zeroscale does not support VpcConfig, InferenceExecutionConfig yet."
    assert err.value.status == 400


def test_a_service_cannot_implement_an_operation_without_an_allow_list() -> None:
    with pytest.raises(ValueError, match=r"no allow-list in api/served\.py for CreateTrainingJob"):
        JsonService(ServiceShapes("sagemaker"), {"CreateTrainingJob": lambda p: {}})
