"""An endpoint configuration's ``AsyncInferenceConfig``: SageMaker's rules on it, and a typed view of it.

botocore's model has already checked types, lengths and patterns; this adds what the model cannot say
(S3OutputPath is needed, s3:// is the scheme served, the notification inclusion values) and reads the stored
document into plain values for the asynchronous queue.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zeroscale.artifacts.fetch import s3_key_problem
from zeroscale.errors import ValidationException

SUCCESS_TOPIC = "SUCCESS_NOTIFICATION_TOPIC"
ERROR_TOPIC = "ERROR_NOTIFICATION_TOPIC"
DEFAULT_PER_INSTANCE = 1


@dataclass(frozen=True)
class AsyncConfig:
    output_path: str  # s3://bucket/prefix, no trailing slash
    failure_path: str  # S3FailurePath, or S3OutputPath when none was given
    success_topic: str | None
    error_topic: str | None
    include_response_in: frozenset[str]
    per_instance: int  # ClientConfig.MaxConcurrentInvocationsPerInstance

    def output_location(
        self, inference_id: str, extension: str | None = None, filename: str | None = None
    ) -> str:
        """``<S3OutputPath>[/<S3OutputPathExtension>]/<Filename, or <InferenceId>.out>``."""
        return f"{_under(self.output_path, extension)}/{filename or inference_id + '.out'}"

    def failure_location(
        self, inference_id: str, extension: str | None = None, filename: str | None = None
    ) -> str:
        """``<S3FailurePath>[/<S3OutputPathExtension>]/<Filename or InferenceId>-error.out``: never the
        output's key, even where the failure path is the output path."""
        return f"{_under(self.failure_path, extension)}/{filename or inference_id}-error.out"


def _under(path: str, extension: str | None) -> str:
    return f"{path}/{extension}" if extension else path


def _s3_path(value: Any, field: str) -> str:
    text = str(value or "")
    if not text.startswith("s3://") or len(text) <= len("s3://") or text[5] == "/":
        raise ValidationException(
            f"Value '{text}' at 'AsyncInferenceConfig.OutputConfig.{field}' failed to satisfy constraint: "
            "zeroscale serves s3://bucket[/prefix] locations"
        )
    if (problem := s3_key_problem(text[5:].partition("/")[2])) is not None:
        raise ValidationException(f"AsyncInferenceConfig.OutputConfig.{field} {text!r}: {problem}.")
    return text.rstrip("/")


def check_async_config(config: Mapping[str, Any] | None) -> None:
    """Raise ValidationException when an AsyncInferenceConfig cannot be served."""
    if config is not None:
        async_config(config)


def async_config(config: Mapping[str, Any]) -> AsyncConfig:
    output = config.get("OutputConfig") or {}
    if output.get("KmsKeyId"):
        raise ValidationException(
            "AsyncInferenceConfig.OutputConfig.KmsKeyId is not served by zeroscale "
            "(results are not encrypted "
            "with a KMS key)."
        )
    if not output.get("S3OutputPath"):
        raise ValidationException(
            "AsyncInferenceConfig.OutputConfig.S3OutputPath is required: it is where results are written."
        )
    output_path = _s3_path(output["S3OutputPath"], "S3OutputPath")
    failure = output.get("S3FailurePath")
    failure_path = _s3_path(failure, "S3FailurePath") if failure else output_path
    notify = output.get("NotificationConfig") or {}
    include = frozenset(notify.get("IncludeInferenceResponseIn") or ())
    unknown = include - {SUCCESS_TOPIC, ERROR_TOPIC}
    if unknown:
        raise ValidationException(
            f"Value '{sorted(unknown)[0]}' at 'AsyncInferenceConfig.OutputConfig.NotificationConfig."
            "IncludeInferenceResponseIn' failed to satisfy constraint: Member must satisfy enum value set: "
            f"[{SUCCESS_TOPIC}, {ERROR_TOPIC}]"
        )
    client = config.get("ClientConfig") or {}
    per_instance = int(client.get("MaxConcurrentInvocationsPerInstance") or DEFAULT_PER_INSTANCE)
    return AsyncConfig(
        output_path=output_path,
        failure_path=failure_path,
        success_topic=notify.get("SuccessTopic") or None,
        error_topic=notify.get("ErrorTopic") or None,
        include_response_in=include,
        per_instance=per_instance,
    )
