"""SageMaker runtime REST: ``POST /endpoints/{name}/invocations`` -> the endpoint's route -> a worker."""

from __future__ import annotations

from zeroscale.api.wire import Headers, Send, respond
from zeroscale.errors import RuntimeValidationError
from zeroscale.router.fleet import Fleet
from zeroscale.router.pool import Invocation

# Request headers passed on to the worker, as the SageMaker front end does.
_FORWARDED = {
    b"content-type": b"Content-Type",
    b"accept": b"Accept",
    b"x-amzn-sagemaker-custom-attributes": b"X-Amzn-SageMaker-Custom-Attributes",
    b"x-amzn-sagemaker-inference-id": b"X-Amzn-SageMaker-Inference-Id",
}
_CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"
_TARGET_VARIANT = b"x-amzn-sagemaker-target-variant"
_INFERENCE_ID = b"x-amzn-sagemaker-inference-id"


class Runtime:
    def __init__(self, fleet: Fleet, account_id: str) -> None:
        self._fleet = fleet
        self._account_id = account_id

    async def invoke(self, send: Send, request_id: str, endpoint: str, headers: Headers, body: bytes) -> None:
        route = self._fleet.route(endpoint)
        if route is None:
            raise RuntimeValidationError(f"Endpoint {endpoint} of account {self._account_id} not found.")
        forward: Headers = []
        target_variant: str | None = None
        for name, value in headers:
            lname = name.lower()
            wire = _FORWARDED.get(lname)
            if wire is not None:
                _check_header(lname, value)
                forward.append((wire, value))
            elif lname == _TARGET_VARIANT:
                target_variant = value.decode("latin-1")
        pool = route.choose(target_variant)
        resp = await pool.invoke(Invocation(body, forward))
        out: Headers = [
            (b"content-type", resp.header(b"content-type") or b"application/octet-stream"),
            (b"x-amzn-invoked-production-variant", pool.spec.variant.encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ]
        attributes = resp.header(_CUSTOM_ATTRIBUTES)
        if attributes is not None:
            out.append((b"x-amzn-sagemaker-custom-attributes", attributes))
        await respond(send, 200, resp.body, out)


def _check_header(lname: bytes, value: bytes) -> None:
    if lname == _CUSTOM_ATTRIBUTES and (len(value) > 1024 or not value.isascii()):
        raise RuntimeValidationError(
            "1 validation error detected: Value at 'customAttributes' failed to satisfy constraint: "
            "Member must have length less than or equal to 1024 and contain only ASCII characters"
        )
    if lname == _INFERENCE_ID and not 1 <= len(value) <= 64:
        raise RuntimeValidationError(
            "1 validation error detected: Value at 'inferenceId' failed to satisfy constraint: "
            "Member must have length between 1 and 64"
        )
