"""AsyncInferenceConfig: what SageMaker requires beyond botocore's model, and the locations it yields."""

from __future__ import annotations

import pytest

from zeroscale.control.async_config import async_config, check_async_config
from zeroscale.errors import ValidationException


def test_locations_defaults_and_notifications() -> None:
    cfg = async_config(
        {
            "OutputConfig": {
                "S3OutputPath": "s3://bucket/out/",
                "NotificationConfig": {
                    "SuccessTopic": "arn:aws:sns:us-east-1:000000000000:ok",
                    "IncludeInferenceResponseIn": ["SUCCESS_NOTIFICATION_TOPIC"],
                },
            }
        }
    )
    assert cfg.output_location("abc") == "s3://bucket/out/abc.out"
    assert cfg.failure_location("abc") == "s3://bucket/out/abc-error.out"  # no S3FailurePath: beside it
    assert cfg.per_instance == 1 and cfg.error_topic is None
    assert cfg.include_response_in == {"SUCCESS_NOTIFICATION_TOPIC"}
    cfg = async_config(
        {
            "OutputConfig": {"S3OutputPath": "s3://b/o", "S3FailurePath": "s3://b/f"},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
        }
    )
    assert cfg.failure_location("x") == "s3://b/f/x-error.out" and cfg.per_instance == 4


@pytest.mark.parametrize(
    ("config", "text"),
    [
        ({"OutputConfig": {}}, "S3OutputPath is required"),
        ({"OutputConfig": {"S3OutputPath": "s3://b", "KmsKeyId": "k"}}, "KmsKeyId is not served"),
        ({"OutputConfig": {"S3OutputPath": "https://bucket/out"}}, "s3://bucket"),
        ({"OutputConfig": {"S3OutputPath": "s3://b", "S3FailurePath": "s3:///x"}}, "S3FailurePath"),
        (
            {
                "OutputConfig": {
                    "S3OutputPath": "s3://b",
                    "NotificationConfig": {"IncludeInferenceResponseIn": ["X"]},
                }
            },
            "enum value set",
        ),
    ],
)
def test_refused(config: dict[str, object], text: str) -> None:
    with pytest.raises(ValidationException, match=text):
        check_async_config(config)
    check_async_config(None)
