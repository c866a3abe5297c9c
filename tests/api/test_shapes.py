"""Validation driven by botocore's sagemaker model."""

from __future__ import annotations

import contextlib
import random
import re
from typing import Any

import pytest

from e2e.test_generated_malformed import WRONG, member_paths, place, skeleton
from zeroscale.api.shapes import (
    _EVERY_NONEMPTY_STRING,
    _EVERY_STRING,
    ServiceShapes,
    _Walker,
    compile_java_pattern,
)
from zeroscale.errors import SerializationException, UnknownOperationException, ValidationException

NAME_PATTERN = "[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"


@pytest.fixture(scope="module")
def sm() -> ServiceShapes:
    return ServiceShapes("sagemaker")


def variant(**over: Any) -> dict[str, Any]:
    v: dict[str, Any] = {
        "VariantName": "AllTraffic",
        "ModelName": "my-model",
        "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
    }
    v.update(over)
    return v


def config(**over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"EndpointConfigName": "my-config", "ProductionVariants": [variant()]}
    c.update(over)
    return c


def errors_of(sm: ServiceShapes, operation: str, params: Any) -> str:
    with pytest.raises(ValidationException) as exc:
        sm.validate(operation, params)
    assert exc.value.code == "ValidationException"
    assert exc.value.status == 400
    return exc.value.message


def test_operation_names(sm: ServiceShapes) -> None:
    names = sm.operation_names()
    assert isinstance(names, frozenset)
    assert {"CreateModel", "CreateEndpointConfig", "CreateEndpoint", "DescribeEndpoint"} <= names
    assert sm.api_version == "2017-07-24"


def test_valid_endpoint_config_passes(sm: ServiceShapes) -> None:
    sm.validate("CreateEndpointConfig", config())
    sm.validate(
        "CreateEndpointConfig",
        config(ProductionVariants=[variant(ServerlessConfig=None, InstanceType="ml.m5.large")]),
    )


def test_missing_endpoint_config_name(sm: ServiceShapes) -> None:
    params = config()
    del params["EndpointConfigName"]
    assert errors_of(sm, "CreateEndpointConfig", params) == (
        "1 validation error detected: Value null at 'endpointConfigName' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_json_null_counts_as_missing(sm: ServiceShapes) -> None:
    msg = errors_of(sm, "CreateEndpointConfig", config(EndpointConfigName=None))
    assert "Value null at 'endpointConfigName'" in msg


def test_a_null_list_item_or_map_value_is_refused_not_skipped(sm: ServiceShapes) -> None:
    # A handler that indexes into a null item would answer 500 (or store a null that breaks a later answer).
    assert errors_of(sm, "CreateEndpointConfig", config(ProductionVariants=[None, variant()])) == (
        "1 validation error detected: Value null at 'productionVariants.1.member' failed to satisfy "
        "constraint: Member must not be null"
    )
    model = {"ModelName": "m", "PrimaryContainer": {"Image": "i", "Environment": {"K": None, "L": "v"}}}
    assert errors_of(sm, "CreateModel", model) == (
        "1 validation error detected: Value null at 'primaryContainer.environment.K' failed to satisfy "
        "constraint: Map value must not be null"
    )
    tags = errors_of(sm, "CreateModel", {"ModelName": "m", "Tags": [{"Key": "k", "Value": "v"}, None]})
    assert "Value null at 'tags.2.member'" in tags
    weights = {"EndpointName": "e", "DesiredWeightsAndCapacities": [None]}
    assert "Value null at 'desiredWeightsAndCapacities.1.member'" in errors_of(
        sm, "UpdateEndpointWeightsAndCapacities", weights
    )


def test_bad_name_pattern(sm: ServiceShapes) -> None:
    assert errors_of(sm, "CreateEndpointConfig", config(EndpointConfigName="bad_name")) == (
        "1 validation error detected: Value 'bad_name' at 'endpointConfigName' failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {NAME_PATTERN}"
    )


def test_pattern_is_a_full_match(sm: ServiceShapes) -> None:
    # 'abc' is a prefix match of the pattern in 'abc-' but the whole value must match.
    msg = errors_of(sm, "CreateEndpointConfig", config(EndpointConfigName="abc-"))
    assert "regular expression pattern" in msg


def test_name_too_long(sm: ServiceShapes) -> None:
    name = "a" * 64  # the pattern also caps the length at 63, so both constraints fail
    assert errors_of(sm, "CreateEndpointConfig", config(EndpointConfigName=name)) == (
        f"2 validation errors detected: Value '{name}' at 'endpointConfigName' failed to satisfy "
        "constraint: Member must have length less than or equal to 63; "
        f"Value '{name}' at 'endpointConfigName' failed to satisfy "
        f"constraint: Member must satisfy regular expression pattern: {NAME_PATTERN}"
    )
    long_arn = "arn:aws:iam::123456789012:role/" + "r" * 2100
    assert errors_of(sm, "CreateModel", {"ModelName": "m", "ExecutionRoleArn": long_arn}).startswith(
        "1 validation error detected: Value 'arn:aws:iam::123456789012:role/rrrr"
    )
    sm.validate("CreateEndpointConfig", config(EndpointConfigName="a" * 63))


def test_max_concurrency_too_high(sm: ServiceShapes) -> None:
    params = config(
        ProductionVariants=[variant(ServerlessConfig={"MemorySizeInMB": 2048, "MaxConcurrency": 500})]
    )
    assert errors_of(sm, "CreateEndpointConfig", params) == (
        "1 validation error detected: Value '500' at "
        "'productionVariants.1.member.serverlessConfig.maxConcurrency' failed to satisfy constraint: "
        "Member must have value less than or equal to 200"
    )


def test_memory_size_limits_come_from_the_model(sm: ServiceShapes) -> None:
    # The model constrains MemorySizeInMB to 1024..6144 only; the 1 GB steps are a service-side rule.
    low = config(ProductionVariants=[variant(ServerlessConfig={"MemorySizeInMB": 512, "MaxConcurrency": 1})])
    assert "Member must have value greater than or equal to 1024" in errors_of(
        sm, "CreateEndpointConfig", low
    )
    high = config(
        ProductionVariants=[variant(ServerlessConfig={"MemorySizeInMB": 8192, "MaxConcurrency": 1})]
    )
    assert "Member must have value less than or equal to 6144" in errors_of(sm, "CreateEndpointConfig", high)


def test_wrong_enum(sm: ServiceShapes) -> None:
    params = config(ProductionVariants=[variant(ServerlessConfig=None, InstanceType="ml.bogus.large")])
    msg = errors_of(sm, "CreateEndpointConfig", params)
    assert msg.startswith(
        "1 validation error detected: Value 'ml.bogus.large' at 'productionVariants.1.member.instanceType' "
        "failed to satisfy constraint: Member must satisfy enum value set: [ml.t2.medium, "
    )
    assert msg.endswith("]")


def test_unknown_member_ignored(sm: ServiceShapes) -> None:
    sm.validate("CreateEndpointConfig", config(NotAMember={"anything": [1, 2]}, Extra=5))
    sm.validate("CreateEndpointConfig", config(ProductionVariants=[variant(FutureField="x")]))


def test_multiple_errors_counted(sm: ServiceShapes) -> None:
    params = {
        "EndpointConfigName": "x" * 64 + "_",
        "ProductionVariants": [
            variant(VariantName=None, ServerlessConfig={"MemorySizeInMB": 2048, "MaxConcurrency": 0}),
            variant(InitialVariantWeight=-1.5),
        ],
        "Tags": [{"Key": "k"}],
    }
    msg = errors_of(sm, "CreateEndpointConfig", params)
    parts = msg.split(": ", 1)[1].split("; ")
    assert msg.startswith("6 validation errors detected: ")
    assert len(parts) == 6
    assert parts == [
        f"Value '{'x' * 64}_' at 'endpointConfigName' failed to satisfy constraint: "
        "Member must have length less than or equal to 63",
        f"Value '{'x' * 64}_' at 'endpointConfigName' failed to satisfy constraint: "
        f"Member must satisfy regular expression pattern: {NAME_PATTERN}",
        "Value null at 'productionVariants.1.member.variantName' failed to satisfy constraint: "
        "Member must not be null",
        "Value '0' at 'productionVariants.1.member.serverlessConfig.maxConcurrency' failed to satisfy "
        "constraint: Member must have value greater than or equal to 1",
        "Value '-1.5' at 'productionVariants.2.member.initialVariantWeight' failed to satisfy constraint: "
        "Member must have value greater than or equal to 0",
        "Value null at 'tags.1.member.value' failed to satisfy constraint: Member must not be null",
    ]


def test_list_length(sm: ServiceShapes) -> None:
    msg = errors_of(sm, "CreateEndpointConfig", config(ProductionVariants=[]))
    assert msg == (
        "1 validation error detected: Value '[]' at 'productionVariants' failed to satisfy constraint: "
        "Member must have length greater than or equal to 1"
    )
    many = [variant(VariantName=f"v{i}") for i in range(11)]
    assert "length less than or equal to 10" in errors_of(
        sm, "CreateEndpointConfig", config(ProductionVariants=many)
    )


def test_list_of_scalars_and_map_constraints(sm: ServiceShapes) -> None:
    params = {
        "ModelName": "m",
        "PrimaryContainer": {"Image": "img", "Environment": {"1BAD": "x", "GOOD": "y" * 1025}},
        "VpcConfig": {"SecurityGroupIds": ["sg-1", "bad id!"], "Subnets": ["subnet-1"]},
    }
    parts = errors_of(sm, "CreateModel", params).split(": ", 1)[1].split("; ")
    assert len(parts) == 3
    assert parts[0].startswith("Value '{1BAD=x, GOOD=yyy")
    assert parts[0].endswith(
        "' at 'primaryContainer.environment' failed to satisfy constraint: Map keys must satisfy "
        "constraint: [Member must satisfy regular expression pattern: [a-zA-Z_][a-zA-Z0-9_]*]"
    )
    assert parts[1].endswith(
        "failed to satisfy constraint: Map value must satisfy constraint: "
        "[Member must have length less than or equal to 1024]"
    )
    assert parts[2] == (
        "Value '[sg-1, bad id!]' at 'vpcConfig.securityGroupIds' failed to satisfy constraint: Member must "
        "satisfy constraint: [Member must satisfy regular expression pattern: [-0-9a-zA-Z]+]"
    )


def test_create_model_minimal_passes(sm: ServiceShapes) -> None:
    sm.validate("CreateModel", {"ModelName": "my-model"})
    sm.validate(
        "CreateModel",
        {
            "ModelName": "my-model",
            "PrimaryContainer": {
                "Image": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
                "ModelDataUrl": "s3://bucket/model.tar.gz",
                "Environment": {"SAGEMAKER_PROGRAM": "inference.py"},
                "Mode": "SingleModel",
            },
            "ExecutionRoleArn": "arn:aws:iam::123456789012:role/SageMakerRole",
            "EnableNetworkIsolation": False,
            "Tags": [{"Key": "team name: ü", "Value": "ml/infra"}],
        },
    )


def test_missing_model_name(sm: ServiceShapes) -> None:
    assert errors_of(sm, "CreateModel", {}) == (
        "1 validation error detected: Value null at 'modelName' failed to satisfy constraint: "
        "Member must not be null"
    )


@pytest.mark.parametrize(
    ("operation", "params"),
    [
        (
            "CreateEndpointConfig",
            config(
                ProductionVariants=[variant(ServerlessConfig={"MemorySizeInMB": "2048", "MaxConcurrency": 5})]
            ),
        ),
        (
            "CreateEndpointConfig",
            config(
                ProductionVariants=[variant(ServerlessConfig={"MemorySizeInMB": 2048.5, "MaxConcurrency": 5})]
            ),
        ),
        (
            "CreateEndpointConfig",
            config(
                ProductionVariants=[variant(ServerlessConfig={"MemorySizeInMB": True, "MaxConcurrency": 5})]
            ),
        ),
        ("CreateEndpointConfig", config(EndpointConfigName=12)),
        ("CreateEndpointConfig", config(ProductionVariants={"VariantName": "v"})),
        ("CreateEndpointConfig", config(ProductionVariants=["v"])),
        ("CreateModel", {"ModelName": "m", "EnableNetworkIsolation": "yes"}),
        ("CreateModel", {"ModelName": "m", "PrimaryContainer": {"Environment": ["A=1"]}}),
        ("CreateModel", {"ModelName": "m", "PrimaryContainer": {"Environment": {"A": 1}}}),
        ("ListEndpoints", {"CreationTimeAfter": "last tuesday"}),
        ("ListEndpoints", {"CreationTimeAfter": [1]}),
    ],
)
def test_type_mismatch_is_serialization_exception(sm: ServiceShapes, operation: str, params: Any) -> None:
    with pytest.raises(SerializationException) as exc:
        sm.validate(operation, params)
    assert exc.value.code == "SerializationException"
    assert exc.value.status == 400


def test_type_mismatch_message_names_the_member(sm: ServiceShapes) -> None:
    params = config(
        ProductionVariants=[variant(ServerlessConfig={"MemorySizeInMB": "abc", "MaxConcurrency": 5})]
    )
    with pytest.raises(
        SerializationException, match=r"productionVariants\.1\.member\.serverlessConfig\.memorySizeInMB"
    ):
        sm.validate("CreateEndpointConfig", params)


@pytest.mark.parametrize("body", [[], "x", 1, None, True])
def test_non_object_input_is_serialization_exception(sm: ServiceShapes, body: Any) -> None:
    with pytest.raises(SerializationException):
        sm.validate("CreateModel", body)


def test_timestamps_and_floats(sm: ServiceShapes) -> None:
    sm.validate("ListEndpoints", {"CreationTimeAfter": 1700000000, "CreationTimeBefore": 1700000000.5})
    sm.validate("ListEndpoints", {"CreationTimeAfter": "2024-01-01T00:00:00Z", "MaxResults": 100})
    sm.validate("CreateEndpointConfig", config(ProductionVariants=[variant(InitialVariantWeight=1)]))
    assert "less than or equal to 100" in errors_of(sm, "ListEndpoints", {"MaxResults": 101})
    assert "enum value set: [Name, CreationTime, Status]" in errors_of(
        sm, "ListEndpoints", {"SortBy": "Size"}
    )


def test_a_float_member_must_fit_a_java_float(sm: ServiceShapes) -> None:
    # InitialVariantWeight 1e308 on two variants summed to infinity, and every invocation answered 500.
    sm.validate("CreateEndpointConfig", config(ProductionVariants=[variant(InitialVariantWeight=3.4e38)]))
    with pytest.raises(SerializationException, match=r"'1e\+308' at 'productionVariants\.1\.member\."
                       r"initialVariantWeight' is out of range of a 32-bit float"):  # fmt: skip
        sm.validate("CreateEndpointConfig", config(ProductionVariants=[variant(InitialVariantWeight=1e308)]))


def test_unknown_operation(sm: ServiceShapes) -> None:
    with pytest.raises(UnknownOperationException):
        sm.validate("NoSuchOperation", {})


def test_every_operation_validates_empty_input(sm: ServiceShapes) -> None:
    names = sm.operation_names()
    assert len(names) > 300
    for name in sorted(names):
        with contextlib.suppress(ValidationException, SerializationException):
            sm.validate(name, {})
        assert isinstance(sm.output_shape_members(name), tuple)


def test_every_model_pattern_compiles() -> None:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    patterns = {
        model.shape_for(n).metadata["pattern"]
        for n in model.shape_names
        if "pattern" in model.shape_for(n).metadata
    }
    assert len(patterns) > 100
    assert [p for p in patterns if compile_java_pattern(p) is None] == []


@pytest.mark.parametrize(
    ("pattern", "good", "bad"),
    [
        (r"([\p{L}\p{Z}\p{N}_.:/=+\-@]*)", "Grüße 東京 _.:/=+-@1", "a!"),
        (r"([\p{L}\p{Z}\p{N}_.:\/=+\-@]*)${1,128}", "abc", "a#"),
        (
            r"arn:[\p{Alnum}\-]+:lambda:[\p{Alnum}\-]+:[0-9]{12}:function:.*",
            "arn:aws:lambda:us-east-1:123456789012:function:f",
            "arn:aws:lambda:us_east:123456789012:function:f",
        ),
        (r"[\u0020-\uD7FF\uE000-\uFFFD\uD800\uDC00-\uDBFF\uDFFF\t]*", "ok 😀\t", "a\x01"),
        (r"[\p{L}\p{M}\p{S}\p{N}\p{P}]+", "a+é!", "a b"),
        (r"\P{Lu}+", "abc", "aBc"),
    ],
)
def test_java_patterns_translated(pattern: str, good: str, bad: str) -> None:
    rx = compile_java_pattern(pattern)
    assert isinstance(rx, re.Pattern)
    assert rx.fullmatch(good) is not None
    assert rx.fullmatch(bad) is None


def test_uncompilable_pattern_is_skipped() -> None:
    assert compile_java_pattern(r"[a-z&&[^b]]") is None
    assert compile_java_pattern(r"\p{InGreek}") is None


def test_runtime_service_model_loads() -> None:
    rt = ServiceShapes("sagemaker-runtime")
    assert "InvokeEndpoint" in rt.operation_names()
    rt.validate("InvokeEndpoint", {"EndpointName": "ep", "Body": "AAEC"})
    with pytest.raises(ValidationException, match="Value null at 'endpointName'"):
        rt.validate("InvokeEndpoint", {"Body": "AAEC"})


# Values of every JSON type, and at and past the limits the models set (lengths, Java int and float ranges).
EDGES: list[Any] = [
    *WRONG,
    0,
    2**31 - 1,
    2**31,
    -(2**63),
    2**63,
    3.4e38,
    3.5e38,
    -1e300,
    False,
    "a",
    "A" * 63,
    "a-b",
    "a\nb",
    "x" * 257,
    "x" * 1025,
    "2020-01-01T00:00:00Z",
    "not a time",
    "1700000000",
    "eA==",
    "not base64!",
    ["a", "b"],
    [None],
    [{"a": 1}],
    {"k": None},
    {"k": "v"},
]


def test_the_patterns_the_fast_check_does_not_match_match_every_string_or_every_nonempty_one() -> None:
    values = ["", "a", "a\nb", "\n", "\ud800", "x" * 3000, "\t\r", "\U0001f600"]
    for pattern in _EVERY_STRING:
        rx = compile_java_pattern(pattern)
        assert rx is not None and all(rx.fullmatch(v) for v in values), pattern
    for pattern in _EVERY_NONEMPTY_STRING:
        rx = compile_java_pattern(pattern)
        assert rx is not None and all(bool(rx.fullmatch(v)) == bool(v) for v in values), pattern


@pytest.mark.parametrize("service", ["sagemaker", "cloudwatch", "logs", "application-autoscaling"])
def test_the_fast_check_passes_exactly_what_the_walker_finds_nothing_in(service: str) -> None:
    """``validate`` skips the walk for what its fast check passes: on every operation's skeleton and on
    thousands of values put at its members, the check passes a request exactly when the walker would report
    nothing and raise nothing."""
    shapes = ServiceShapes(
        service, skip_patterns=frozenset({"Url"}) if service == "sagemaker" else frozenset()
    )
    rng = random.Random(5)
    passed = refused = 0
    for operation in sorted(shapes.operation_names()):
        shape = shapes.input_shape(operation)
        if shape is None:
            continue
        base = skeleton(shape)
        paths = list(member_paths(shape))
        cases = [base, *({k: v for k, v in base.items() if k != name} for name in base)]
        cases += [place(base, rng.choice(paths), rng.choice(EDGES)) for _ in range(min(40, 4 * len(paths)))]
        for params in cases:
            walker = _Walker(frozenset({"Url"}) if service == "sagemaker" else frozenset())
            try:
                walker.walk(shape, params, "")
                clean = not walker.errors
            except SerializationException:
                clean = False
            assert shapes._checks.of(shape)(params) == clean, (operation, params)
            passed, refused = passed + clean, refused + (not clean)
    assert passed > 20 and refused > 100  # both sides were tried
