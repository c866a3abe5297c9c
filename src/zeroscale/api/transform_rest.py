"""``GET /zeroscale/v1/transform/<TransformJobName>``: a transform job's status and progress (files total,
done and failed; records done), which DescribeTransformJob's shape has no member for."""

from __future__ import annotations

import json
from typing import Any

from zeroscale.control.transform_jobs import TransformJobs
from zeroscale.errors import ValidationException


class TransformApi:
    def __init__(self, jobs: TransformJobs) -> None:
        self._jobs = jobs

    async def handle(self, request: Any) -> tuple[int, str, bytes]:
        if request.method != "GET":
            raise ValidationException(f"{request.method} is not served on /zeroscale/v1/transform.")
        _, _, name = request.path.partition("/")
        if not name:
            raise ValidationException("Name the job: GET /zeroscale/v1/transform/<TransformJobName>.")
        return 200, "application/json", json.dumps(self._jobs.progress(name)).encode()
