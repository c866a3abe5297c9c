"""InvokeEndpointAsync (``POST /endpoints/{name}/async-invocations``: its input at an InputLocation in S3, or
inline as the body, at most 128,000 bytes) and zeroscale's status routes
for asynchronous requests: ``GET /zeroscale/v1/async/<InferenceId>`` for one request, and
``GET /zeroscale/v1/async?endpoint=NAME`` for an endpoint's latest requests, newest first."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Callable
from typing import Any

from zeroscale.api.wire import Headers, Send, header_text, respond
from zeroscale.artifacts.fetch import s3_key_problem
from zeroscale.asyncinf.queue import AsyncRequest
from zeroscale.asyncinf.service import AsyncInference, AsyncParams
from zeroscale.errors import AccessDenied, RuntimeValidationError, ValidationException

_PREFIX = "x-amzn-sagemaker-"
DEFAULT_TTL_S = 21600
DEFAULT_TIMEOUT_S = 900
RECENT_MAX = 100  # requests listed per endpoint by GET /zeroscale/v1/async?endpoint=NAME
# header (after the prefix) -> (wire member name, min, max) for the integer headers
_RANGES = {
    "requestttlseconds": ("requestTTLSeconds", 60, 21600),
    "invocationtimeoutseconds": ("invocationTimeoutSeconds", 1, 3600),
}
_INPUT_LOCATION = re.compile(r"^(https|s3)://([^/]+)/?(.*)$")
# header (after the prefix) -> (wire member name, botocore's pattern and length, as its message says it):
# a path below S3OutputPath; a file name with at most one dot
_PATTERNED = {
    "s3outputpathextension": (
        "s3OutputPathExtension",
        re.compile(r"^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]{1,512}$"),
        "have length between 1 and 512 and satisfy regular expression pattern: "
        "^(?!s3:|https:)[a-zA-Z0-9!_.*'()/-]+$",
    ),
    "filename": (
        "filename",
        re.compile(r"^(?!.*\..*\.)[a-zA-Z0-9][a-zA-Z0-9_.-]{0,31}$"),
        "have length between 1 and 32 and satisfy regular expression pattern: "
        "^(?!.*\\..*\\.)[a-zA-Z0-9][a-zA-Z0-9-_\\.]*$",
    ),
}
MAX_INLINE_BYTES = 128_000  # InvokeEndpointAsync's Body


def _invalid(member: str, value: str, constraint: str) -> RuntimeValidationError:
    return RuntimeValidationError(
        f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy constraint: "
        f"Member must {constraint}"
    )


def _text(headers: dict[str, str], name: str, member: str) -> str | None:
    value = headers.get(name)
    if value is not None and (len(value) > 1024 or not value.isascii()):
        raise _invalid(member, value[:64], "have length less than or equal to 1024 and be ASCII")
    return value


def input_location(raw: Headers) -> str:
    """The InputLocation header as ``parse_params`` reads it (the last one given), "" without one: the
    object the caller must be allowed to read (``iam/data.py``)."""
    found = ""
    for raw_name, raw_value in raw:
        if raw_name.decode("latin-1").lower() == _PREFIX + "inputlocation":
            found = header_text(raw_value)
    return found


def parse_params(raw: Headers, body: bytes = b"") -> AsyncParams:
    """The request's members from its SageMaker headers, and ``body`` (an inline input, when not empty)."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in raw:
        lname = raw_name.decode("latin-1").lower()
        if lname.startswith(_PREFIX):
            headers[lname[len(_PREFIX) :]] = header_text(raw_value)  # an S3 key may be non-ASCII
    location = headers.get("inputlocation")
    if body and location:
        raise RuntimeValidationError(
            "Body and InputLocation are mutually exclusive: give the input inline or in S3, not both."
        )
    if len(body) > MAX_INLINE_BYTES:
        raise _invalid("body", f"{len(body)} bytes", f"have length less than or equal to {MAX_INLINE_BYTES}")
    if not body and not location:
        raise RuntimeValidationError(
            "Give the request's input: an InputLocation (s3://bucket/key), or the input itself as the Body "
            f"(at most {MAX_INLINE_BYTES} bytes)."
        )
    if location is not None:
        matched = _INPUT_LOCATION.match(location) if len(location) <= 1024 else None
        if matched is None:
            raise _invalid(
                "inputLocation", location[:256], "satisfy regular expression pattern: (https|s3)://..."
            )
        if not matched.group(3):
            raise RuntimeValidationError(
                f"InputLocation {location[:256]!r} names a bucket, not an object: give s3://bucket/key."
            )
        if (problem := s3_key_problem(matched.group(3))) is not None:
            raise RuntimeValidationError(f"InputLocation {location[:256]!r}: {problem}.")
    for name, (member, pattern, constraint) in _PATTERNED.items():
        value = headers.get(name)
        if value is not None and not pattern.match(value):
            raise _invalid(member, value[:256], constraint)
        if value is not None and (problem := s3_key_problem(value)) is not None:
            raise RuntimeValidationError(f"{member} {value[:256]!r}: {problem}.")
    extension = headers.get("s3outputpathextension")
    inference_id = headers.get("inference-id")
    if inference_id is None:
        inference_id = str(uuid.uuid4())
    elif not (
        1 <= len(inference_id) <= 64
        and inference_id[:1].strip()
        and inference_id.isprintable()
        and inference_id.isascii()
    ):
        raise _invalid(
            "inferenceId", inference_id[:64], "have length between 1 and 64 and be printable ASCII"
        )
    elif (problem := s3_key_problem(inference_id)) is not None:  # it names the output's object
        raise RuntimeValidationError(
            f"InferenceId {inference_id!r} names this request's output object (<InferenceId>.out), "
            f"and {problem}."
        )
    numbers: dict[str, int] = {}
    for name, (member, low, high) in _RANGES.items():
        value = headers.get(name)
        if value is None:
            continue
        try:
            number = int(value)
        except ValueError:
            raise _invalid(member, value[:32], "be an integer") from None
        if number < low:
            raise _invalid(member, value, f"have value greater than or equal to {low}")
        if number > high:
            raise _invalid(member, value, f"have value less than or equal to {high}")
        numbers[name] = number
    return AsyncParams(
        input_location=location or "",
        body=body or None,
        output_extension=extension.strip("/") if extension else None,
        filename=headers.get("filename"),
        content_type=_text(headers, "content-type", "contentType"),
        accept=_text(headers, "accept", "accept"),
        custom_attributes=_text(headers, "custom-attributes", "customAttributes"),
        inference_id=inference_id,
        ttl_s=numbers.get("requestttlseconds", DEFAULT_TTL_S),
        timeout_s=numbers.get("invocationtimeoutseconds", DEFAULT_TIMEOUT_S),
    )


# Requests of several endpoints under one InferenceId looked at for one that the caller may read
SAME_ID_MAX = 20


def status_document(req: AsyncRequest) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "InferenceId": req.inference_id,
        "EndpointName": req.endpoint_name,
        "Status": req.status,
        **({"InputLocation": req.input_location} if req.input_location else {}),  # else inline
        "OutputLocation": req.output_location,
        "FailureLocation": req.failure_location,
        "CreationTime": req.created_at,
        "Attempts": req.attempts,
    }
    if req.started_at is not None:
        doc["StartTime"] = req.started_at
    if req.finished_at is not None:
        doc["EndTime"] = req.finished_at
    if req.failure_reason:
        doc["FailureReason"] = req.failure_reason
    return doc


class AsyncInvokeApi:
    def __init__(self, service: AsyncInference, check: Callable[[str, str], None] | None = None) -> None:
        """``check``: (action, endpoint) -> raises AccessDenied unless the caller may read that endpoint's
        requests (``Authorizer.check_endpoint``): a request looked up by its InferenceId names its endpoint
        only once found."""
        self._service = service
        self._check = check

    async def invoke(
        self, send: Send, request_id: str, endpoint: str, headers: Headers, body: bytes = b""
    ) -> None:
        params = parse_params(headers, body)
        req = await self._service.accept(endpoint, params)
        answer = json.dumps({"InferenceId": req.inference_id}).encode()
        await respond(
            send,
            202,
            answer,
            [
                (b"content-type", b"application/json"),
                (b"x-amzn-requestid", request_id.encode()),
                (b"x-amzn-sagemaker-outputlocation", req.output_location.encode()),
                (b"x-amzn-sagemaker-failurelocation", req.failure_location.encode()),
            ],
        )

    async def status(self, request: Any) -> tuple[int, str, bytes]:
        """``GET /zeroscale/v1/async/<InferenceId>``: the request's state and times (epoch seconds)."""
        if request.method != "GET":
            raise ValidationException(f"{request.method} is not served on /zeroscale/v1/async.")
        _, _, inference_id = request.path.partition("/")
        endpoint = (request.query.get("endpoint") or [""])[-1]
        if not inference_id and endpoint:
            found = await asyncio.to_thread(self._service.recent, endpoint, RECENT_MAX)
            doc = {"EndpointName": endpoint, "Requests": [status_document(r) for r in found]}
            return 200, "application/json", json.dumps(doc).encode()
        if not inference_id:
            raise ValidationException(
                "Name the request: GET /zeroscale/v1/async/<InferenceId>, or the endpoint: "
                "GET /zeroscale/v1/async?endpoint=<EndpointName>."
            )
        found = await asyncio.to_thread(self._service.matching, inference_id, endpoint or None, SAME_ID_MAX)
        if not found:
            where = f" on endpoint {endpoint}" if endpoint else ""
            raise ValidationException(f"No asynchronous request with InferenceId {inference_id}{where}.")
        # The newest the caller may read: another tenant's request under the same InferenceId (which a
        # caller chooses) hides none of the caller's own.
        refused: AccessDenied | None = None
        for req in found:
            try:
                if self._check is not None:
                    self._check("zeroscale:GetAsyncRequests", req.endpoint_name)
            except AccessDenied as exc:
                refused = refused or exc
                continue
            return 200, "application/json", json.dumps(status_document(req)).encode()
        assert refused is not None
        raise refused
