"""What a call makes the server read or write for its caller (iam/data.py), member by member."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from zeroscale.iam.data import (
    LOCAL_READ,
    PUBLISH,
    S3_READ,
    S3_WRITE,
    SCALE,
    USE_IMAGE,
    Use,
    alarm_actions,
    input_location,
    scaling,
    uses,
)

TOPIC = "arn:aws:sns:us-east-1:000000000000:done"


def read(*targets: str) -> list[Use]:
    return [Use(S3_READ, t) for t in targets]


def local(*paths: str) -> list[Use]:
    return [Use(LOCAL_READ, p) for p in paths]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        (
            {"ModelName": "m", "PrimaryContainer": {"Image": "sklearn", "ModelDataUrl": "s3://b/m.tar.gz"}},
            read("b/m.tar.gz"),
        ),
        (
            {"PrimaryContainer": {"ModelDataUrl": "https://models.s3.us-east-1.amazonaws.com/k/m.tar.gz"}},
            read("models/k/m.tar.gz"),
        ),
        ({"PrimaryContainer": {"ModelDataUrl": "https://seaweed:8333/b/m.tar.gz"}}, read("b/m.tar.gz")),
        ({"PrimaryContainer": {"ModelDataUrl": "https://elsewhere.example/m.tar.gz"}}, []),
        ({"PrimaryContainer": {"ModelDataUrl": "s3://b/mme", "Mode": "MultiModel"}}, read("b/mme/*")),
        (
            {"PrimaryContainer": {"ModelDataSource": {"S3DataSource": {"S3Uri": "s3://b/raw/"}}}},
            read("b/raw/*"),
        ),
        (
            {
                "PrimaryContainer": {
                    "ModelDataSource": {
                        "S3DataSource": {"S3Uri": "s3://b/m.tar.gz", "S3DataType": "S3Object"}
                    }
                }
            },
            read("b/m.tar.gz"),
        ),
        (
            {"PrimaryContainer": {"ModelDataUrl": "file:///srv/models/m.tar.gz"}},
            local("/srv/models/m.tar.gz"),
        ),
        ({"PrimaryContainer": {"ModelDataUrl": "/srv/models/../../etc/shadow"}}, local("/etc/shadow")),
        ({"PrimaryContainer": {"ModelDataUrl": "file:///srv/%2e%2e/etc/passwd"}}, local("/etc/passwd")),
        (
            {"PrimaryContainer": {"ModelDataUrl": "file:///srv/mme/", "Mode": "MultiModel"}},
            local("/srv/mme/*"),
        ),
        (
            {
                "Containers": [
                    {"ModelDataUrl": "file:///a/m.tar.gz"},
                    {"Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "s3://b/sourcedir.tar.gz"}},
                    {"Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "file:///c/sourcedir.tar.gz"}},
                ]
            },
            [*local("/a/m.tar.gz"), *read("b/sourcedir.tar.gz"), *local("/c/sourcedir.tar.gz")],
        ),
        # the container path the sagemaker SDK writes is the worker's to read, in its sandbox
        ({"PrimaryContainer": {"Environment": {"SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code"}}}, []),
        (
            {"InferenceSpecification": {"Containers": [{"ModelDataUrl": "file:///p/m.tar.gz"}]}},
            local("/p/m.tar.gz"),
        ),
        (
            {
                "AsyncInferenceConfig": {
                    "OutputConfig": {
                        "S3OutputPath": "s3://out/results/",
                        "S3FailurePath": "s3://out/failures",
                        "NotificationConfig": {"SuccessTopic": TOPIC},
                    }
                }
            },
            [Use(S3_WRITE, "out/results/*"), Use(S3_WRITE, "out/failures/*"), Use(PUBLISH, TOPIC)],
        ),
        (
            {
                "TransformInput": {
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://in/day-1"}}
                },
                "TransformOutput": {"S3OutputPath": "s3://out/day-1/"},
            },
            [*read("in/day-1*"), Use(S3_WRITE, "out/day-1/*")],
        ),
        # a manifest: the objects it names are checked when the job reads it (``object_reads``)
        (
            {
                "TransformInput": {
                    "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": "s3://in/list"}}
                }
            },
            read("in/list"),
        ),
        # a bucket alone is every object in it: a transform job reads the whole bucket (a probe read another
        # tenant's objects through ``s3://their-bucket``, named nothing here before)
        (
            {
                "TransformInput": {
                    "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://theirs"}}
                },
                "TransformOutput": {"S3OutputPath": "s3://out/"},
            },
            [*read("theirs/*"), Use(S3_WRITE, "out/*")],
        ),
        (
            {"TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "s3://theirs/"}}}},
            read("theirs/*"),
        ),
        (
            {"TransformInput": {"DataSource": {"S3DataSource": {"S3Uri": "https://seaweed:8333/theirs/"}}}},
            read("*"),
        ),
        # an S3 URL whatever else is wrong with it names every object of its bucket (the handler refuses it
        # too, by name): never nothing
        ({"PrimaryContainer": {"ModelDataUrl": "s3://bucket-only"}}, read("bucket-only/*")),
        ({"PrimaryContainer": {"ModelDataUrl": "s3://b/a/../m.tar.gz"}}, read("b/*")),
        ({"PrimaryContainer": {"ModelDataUrl": "s3:///m.tar.gz"}}, read("*")),
        # what the handler refuses names nothing; a malformed request is the handler's to refuse
        ({"PrimaryContainer": {"ModelDataUrl": "file://host/m.tar.gz"}}, []),
        ({"PrimaryContainer": "file:///etc/shadow", "Containers": {"x": 1}, "TransformInput": [1]}, []),
    ],
)
def test_what_a_call_names(params: dict[str, Any], expected: list[Use]) -> None:
    assert uses(params, "https://seaweed:8333") == expected


def test_a_path_is_named_as_written_without_touching_the_disk(tmp_path: Path) -> None:
    """Authorization runs on the event loop: where a path leads through symlinks (which may hang on a
    mount) is checked by CreateModel in its thread (``control/models.py``), and at deployment."""
    (tmp_path / "models").symlink_to("/etc")
    url = f"file://{tmp_path}/models/../models/shadow"
    assert uses({"PrimaryContainer": {"ModelDataUrl": url}}) == local(f"{tmp_path}/models/shadow")


def test_a_pushed_image_is_its_pushers_and_a_framework_image_is_anyones() -> None:
    def images(*values: object) -> list[Use]:
        return uses({"Containers": [{"Image": v} for v in values]})

    assert images("mine:1.0", "123.dkr.ecr.us-east-1.amazonaws.com/theirs:2@sha256:ab") == [
        Use(USE_IMAGE, "mine"),
        Use(USE_IMAGE, "theirs"),
    ]
    assert images("theirs") == [Use(USE_IMAGE, "theirs")]  # ":latest"
    sklearn = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    assert images(sklearn, "xgboost", "", None, 7) == []
    assert images("Not An Image!") == [Use(USE_IMAGE, "*")]  # refused by CreateModel, never unchecked
    package = {"InferenceSpecification": {"Containers": [{"Image": "theirs:1"}]}}
    assert uses(package) == [Use(USE_IMAGE, "theirs")]


def test_scaling_a_variant_is_changing_its_endpoints_capacity() -> None:
    variant = {"ResourceId": "endpoint/theirs/variant/AllTraffic"}
    for operation in ("RegisterScalableTarget", "DeregisterScalableTarget", "PutScalingPolicy"):
        assert scaling(operation, variant) == [Use(SCALE, "theirs")]
    assert scaling("DeleteScalingPolicy", {"ResourceId": "endpoint/x/y"}) == [Use(SCALE, "*")]
    assert scaling("RegisterScalableTarget", {"ResourceId": 3}) == [Use(SCALE, "*")]
    assert scaling("DescribeScalableTargets", variant) == []


def test_an_asynchronous_requests_input() -> None:
    assert input_location("s3://in/req.json") == read("in/req.json")
    assert input_location("https://inputs.s3.amazonaws.com/req.json") == read("inputs/req.json")
    assert input_location("ftp://in/req.json") == []
    assert input_location("s3://theirs") == input_location("s3://theirs/") == read("theirs/*")


def test_an_alarms_actions_are_what_the_server_does_for_its_creator() -> None:
    """A topic is published to (the alarm's description and a state reason its creator sets); a step
    scaling policy changes the capacity of the endpoint its ARN names."""
    policy = (
        "arn:aws:autoscaling:us-east-1:000000000000:scalingPolicy:6d8c-41:"
        "resource/sagemaker/endpoint/Their-Endpoint/variant/AllTraffic:policyName/up"
    )
    params = {
        "AlarmName": "a",
        "AlarmActions": [TOPIC, policy],
        "OKActions": [TOPIC, 7],
        "InsufficientDataActions": "not a list",
    }
    assert alarm_actions(params) == [Use(PUBLISH, TOPIC), Use(SCALE, "Their-Endpoint")]
    assert alarm_actions({"AlarmName": "a"}) == []
