"""SageMaker ARNs: ``arn:aws:sagemaker:<region>:<account>:<kind>/<lowercased name>``."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("model", "endpoint-config", "endpoint", "transform-job")


@dataclass(frozen=True)
class Arns:
    region: str
    account_id: str

    def arn(self, kind: str, name: str) -> str:
        return f"arn:aws:sagemaker:{self.region}:{self.account_id}:{kind}/{name.lower()}"
