"""What the console's server side calls: the very operation tables, REST routes and runtime that serve
boto3, handed over by the composition root (``server.py``). The console adds sessions in front of them and
nothing else: validation, errors and every rule stay where boto3's requests meet them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from zeroscale.api.app import RestHandler
from zeroscale.api.wire import Headers, Send
from zeroscale.iam.authz import Access
from zeroscale.metrics.load import PoolLoad


class JsonOperations(Protocol):
    """An AWS JSON 1.1 service (``api.jsonrpc.JsonService``): ``call("SageMaker.ListModels", body)``."""

    @property
    def target_prefix(self) -> str: ...

    @property
    def signing_name(self) -> str: ...

    def call(self, target: str, body: bytes) -> dict[str, Any] | Awaitable[dict[str, Any] | None]: ...


# send, request id, endpoint name, headers, body, perf_counter() at arrival: writes the answer itself.
Invoke = Callable[[Send, str, str, Headers, bytes, float], Awaitable[None]]
# send, request id, endpoint name, headers (X-Amzn-SageMaker-InputLocation, ...): InvokeEndpointAsync.
InvokeAsync = Callable[[Send, str, str, Headers], Awaitable[None]]


@dataclass
class Backend:
    json_services: Sequence[JsonOperations]  # SageMaker, CloudWatch Logs, ... by signing name
    rest_routes: Mapping[str, RestHandler]  # /zeroscale/v1/<first segment>
    invoke: Invoke
    lookup_secret: Callable[[str], str | None]
    loads: Callable[[], list[PoolLoad]]
    payload_limit_bytes: int
    region: str
    memory_sizes_mb: tuple[int, ...]
    invoke_async: InvokeAsync | None = None
    # The IAM policy check every API applies (``iam.authz.Authorizer.authorize``), here for the signed-in
    # key: a scoped user sees and does in the console exactly what its policies allow through boto3.
    authorize: Callable[[Access], None] | None = None
    # The signed-in key's control-plane calls count against its --api-rate-per-key as through boto3.
    throttle: Callable[[str, str], None] | None = None
    # The audit trail (``audit.trail.AuditTrail.record``): the console's control-plane calls are recorded
    # as boto3's are, refused ones included.
    audit: Callable[[Access | None, Mapping[str, Any], str, str], None] | None = None

    def service(self, signing_name: str) -> JsonOperations | None:
        return next((s for s in self.json_services if s.signing_name == signing_name), None)
