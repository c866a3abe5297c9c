"""One error base. Each class carries its wire code and HTTP status; api/ serialises them.

Errors are raised anywhere below api/ and know nothing of the web framework.
"""

from __future__ import annotations


class ZeroscaleError(Exception):
    """Base of every error that reaches a client. ``code`` is the AWS error code on the wire."""

    code: str = "InternalFailure"
    status: int = 500

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class AccessDenied(ZeroscaleError):
    """JSON and REST protocols' AccessDeniedException (the query protocol's is AccessDenied): an IAM
    user's policies do not allow what the request does (``iam/authz.py``), or what the server would read
    for it (``control/models.py``)."""

    code = "AccessDeniedException"
    status = 400


# ---- control plane (JSON 1.1) ----
class ValidationException(ZeroscaleError):
    code = "ValidationException"
    status = 400


class ResourceLimitExceeded(ZeroscaleError):
    code = "ResourceLimitExceeded"
    status = 400


class ResourceInUse(ZeroscaleError):
    code = "ResourceInUse"
    status = 400


class ResourceNotFound(ZeroscaleError):
    code = "ResourceNotFound"
    status = 400


class ConflictException(ZeroscaleError):
    code = "ConflictException"
    status = 400


# ---- CloudWatch Logs (JSON 1.1) ----
class LogsResourceNotFound(ZeroscaleError):
    """An unknown log group or stream (CloudWatch Logs' code; SageMaker's is ResourceNotFound)."""

    code = "ResourceNotFoundException"
    status = 400


class InvalidParameterException(ZeroscaleError):
    code = "InvalidParameterException"
    status = 400


class UnknownOperationException(ZeroscaleError):
    code = "UnknownOperationException"
    status = 400


class NotImplementedOperation(ZeroscaleError):
    """An operation botocore knows but zeroscale does not implement yet."""

    code = "NotImplementedError"
    status = 501


class SerializationException(ZeroscaleError):
    code = "SerializationException"
    status = 400


# ---- authentication (both protocols) ----
class MissingAuthenticationToken(ZeroscaleError):
    code = "MissingAuthenticationToken"
    status = 403


class UnrecognizedClient(ZeroscaleError):
    code = "UnrecognizedClientException"
    status = 403


class InvalidSignature(ZeroscaleError):
    code = "InvalidSignatureException"
    status = 403


# ---- runtime (REST-JSON) ----
class RuntimeValidationError(ZeroscaleError):
    code = "ValidationError"
    status = 400


class ModelError(ZeroscaleError):
    """The model container answered an error or broke; carries the original status and message."""

    code = "ModelError"
    status = 424

    def __init__(
        self,
        message: str,
        *,
        original_status: int = 500,
        original_message: str = "",
        log_stream_arn: str = "",
    ) -> None:
        super().__init__(message)
        self.original_status = original_status
        self.original_message = original_message
        self.log_stream_arn = log_stream_arn


class ModelStreamError(ZeroscaleError):
    """A response stream failed after it started: sent as a ModelStreamError event, with ``error_code``
    (ModelInvocationTimeExceeded or StreamBroken, SageMaker's two)."""

    code = "ModelStreamError"
    status = 424

    def __init__(self, message: str, *, error_code: str, original_status: int = 0) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.original_status = original_status


class ModelNotReady(ZeroscaleError):
    code = "ModelNotReadyException"
    status = 429


class Throttling(ZeroscaleError):
    code = "ThrottlingException"
    status = 429


class ServiceUnavailable(ZeroscaleError):
    code = "ServiceUnavailable"
    status = 503


class UsageNotRecorded(ServiceUnavailable):
    """An invocation's usage could not be made durable before its answer (the journal's disk full or
    failing): the answer is withheld, so that nothing answered is ever lost to a crash, nor billed
    unanswered."""


class InternalFailure(ZeroscaleError):
    code = "InternalFailure"
    status = 500


# ---- deploy-time failures (become an endpoint's FailureReason, never a wire error) ----
class DeployError(Exception):
    """Why a model could not be made ready: artifact fetch or extraction, unknown image, no /ping."""


class HostMemoryFull(DeployError):
    """A worker does not fit in the host's memory budget now (busy or provisioned workers hold it), though it
    would in an empty one: what waits its turn (a transform job) tries again later; a deploy fails."""


class WorkersUnavailable(DeployError):
    """No worker can start anywhere for now, whatever the model (the Ray cluster's head is lost and no node
    is left): a request waiting for a worker answers ServiceUnavailable with this message, not ModelError."""


# ---- SNS-compatible topics (query protocol) ----
class TopicNotFound(ZeroscaleError):
    code = "NotFound"
    status = 404


class InvalidParameter(ZeroscaleError):
    code = "InvalidParameter"
    status = 400


class TopicLimitExceeded(ZeroscaleError):
    code = "TopicLimitExceeded"
    status = 403


class SubscriptionLimitExceeded(ZeroscaleError):
    code = "SubscriptionLimitExceeded"
    status = 403


class MalformedQueryString(ZeroscaleError):
    """A query-protocol request (IAM, topics) whose parameters are not UTF-8 form encoding."""

    code = "MalformedQueryString"
    status = 400
