"""SageMaker runtime REST: ``POST /endpoints/{name}/invocations`` -> the endpoint's route -> a worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from zeroscale.api.allowlist import refused_headers
from zeroscale.api.forward import Forwarder, refuse_spill
from zeroscale.api.served import INVOKE_ENDPOINT
from zeroscale.api.shapes import ServiceShapes
from zeroscale.api.wire import Headers, Send, header_text, respond
from zeroscale.background import Background
from zeroscale.errors import ModelError, RuntimeValidationError, UsageNotRecorded, ZeroscaleError
from zeroscale.events import EventBus, InvocationRecord
from zeroscale.router.fleet import EndpointRoute, Fleet, Variant
from zeroscale.router.invocation import Invocation
from zeroscale.router.pool import VariantPool
from zeroscale.router.slots import Slot
from zeroscale.router.spec import PoolSpec
from zeroscale.workers.client import WorkerResponse

log = logging.getLogger("zeroscale.invoke")

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
_TARGET_CONTAINER = b"x-amzn-sagemaker-target-container-hostname"
_TARGET_MODEL = b"x-amzn-sagemaker-target-model"


@dataclass(frozen=True, slots=True)
class PayloadLimits:
    """InvokeEndpoint's limits past the largest request body (checked as it arrives, ``api/app.py``): a
    serverless variant's largest request body, and the largest answer taken from a worker (None: none)."""

    serverless_request: int | None = None
    answer: int | None = None


@dataclass(frozen=True, slots=True)
class Targets:
    """What a runtime request's headers ask for: the headers the worker gets, and whom it targets."""

    forward: Headers
    variant: str | None = None
    container: str | None = None  # TargetContainerHostname
    model: str = ""  # TargetModel


def parse_headers(
    headers: Headers, forwarded: Mapping[bytes, bytes], refused: Mapping[bytes, str]
) -> Targets:
    """``forwarded``: request header -> the name the worker gets it under; ``refused``: headers of members the
    operation does not serve (checked before the targets, so an operation that does not serve one refuses
    it by name)."""
    forward: Headers = []
    variant: str | None = None
    container: str | None = None
    model = ""
    for name, value in headers:
        lname = name.lower()
        wire = forwarded.get(lname)
        if wire is not None:
            _check_header(lname, value)
            forward.append((wire, value))
        elif lname == _TARGET_VARIANT:
            variant = value.decode("latin-1")
        elif lname in refused:
            raise RuntimeValidationError(f"zeroscale does not support {refused[lname]} yet.")
        elif lname == _TARGET_CONTAINER:
            container = value.decode("latin-1")
        elif lname == _TARGET_MODEL:
            model = _target_model(value)
    return Targets(forward, variant, container, model)


class InvokeApi:
    """InvokeEndpoint; ``stream_invoke.StreamInvokeApi`` is InvokeEndpointWithResponseStream on the same
    footing (the class attributes are what differs before the worker is reached)."""

    OPERATION = "InvokeEndpoint"
    SERVED = INVOKE_ENDPOINT
    FORWARDED = _FORWARDED
    ASYNC_REFUSAL = ": invoke it with InvokeEndpointAsync."

    def __init__(
        self,
        fleet: Fleet,
        account_id: str,
        events: EventBus,
        is_async: Callable[[str], bool] | None = None,
        on_miss: Callable[[str], Awaitable[None]] | None = None,
        unavailable: Callable[[], str | None] | None = None,
        limits: PayloadLimits = PayloadLimits(),
        forwarder: Forwarder | None = None,
    ) -> None:
        """``on_miss``: awaited when no route is found, before answering "not found" (with several front
        ends, another may have deployed the endpoint a moment ago: this one catches up). ``unavailable``:
        why this front end serves nothing now (503 ServiceUnavailable), or None. ``forwarder``: sends an
        invocation this front end holds no share of to one that holds one (several front ends)."""
        self._fleet = fleet
        self._is_async = is_async
        self._account_id = account_id
        self._events = events
        self._on_miss = on_miss
        self._unavailable = unavailable
        self._limits = limits
        self._background = Background("shadow invocations")
        # Members of the operation zeroscale does not serve (explanations, inference components, sessions,
        # ...), by header: refused by name, never ignored.
        shape = ServiceShapes("sagemaker-runtime").input_shape(self.OPERATION)
        self._refused = refused_headers(shape, self.SERVED)
        self.forwarder = forwarder

    async def invoke(
        self,
        send: Send,
        request_id: str,
        endpoint: str,
        headers: Headers,
        body: bytes,
        started: float,
        *,
        forwarded: bool = False,
        spilled: bool = False,
        queued_s: float = 0.0,
    ) -> None:
        """``started``: ``time.perf_counter()`` when the request arrived; ``forwarded``: sent by a front end
        that holds no share of its variant, or (``spilled``) whose share is saturated (``api/forward.py``):
        never sent on again, and a spilled one is refused at once unless there is spare capacity here;
        ``queued_s``: how long it waited for a worker already (in the native data plane)."""
        targets, route = await self._prepare(endpoint, headers)
        forward, target_container, target_model = targets.forward, targets.container, targets.model
        pool = route.choose(targets.variant)
        self._check_size(request_id, pool.spec, body)
        if target_container is not None and not pool.spec.containers:
            raise RuntimeValidationError(
                f"Endpoint {endpoint} has one container: a request cannot target a container by hostname "
                "(TargetContainerHostname)."
            )
        if target_model and not pool.spec.multi_model:
            raise RuntimeValidationError(
                f"Endpoint {endpoint} variant {pool.spec.variant} is not a multi-model endpoint: "
                "TargetModel is only for endpoints whose model has Mode MultiModel."
            )
        forwarder = self._forwarder_for(pool, forwarded)
        if forwarder is not None:
            spill = pool.spec.max_concurrency > 0
            answer = await forwarder.forward(endpoint, pool.spec.variant, headers, body, spill=spill)
            if answer is not None:
                status, relayed, payload = answer
                await respond(send, status, payload, relayed)
                return
        elif spilled and pool.saturated:  # checked with no await before the pool takes it
            await refuse_spill(send)
            return
        if route.shadows:
            for shadow in route.copies():
                self._background.spawn(self._shadow(shadow, body, forward, target_container, target_model))
        inv = Invocation(
            body,
            forward,
            container=target_container,
            target_model=target_model,
            max_answer=self._limits.answer,
            queued_s=queued_s,
        )
        try:
            resp = await pool.invoke(inv)
        except ZeroscaleError as err:
            self._record(pool.spec, inv, started, err.status, err.code, 0)
            raise
        await self._deliver(send, request_id, pool.spec, inv, resp, started)

    async def lent(
        self,
        send: Send,
        request_id: str,
        pool: VariantPool,
        slot: Slot,
        outcome: tuple[str, WorkerResponse | None, float, float],
        headers: Headers,
        body: bytes,
        started: float,
    ) -> None:
        """A request the native data plane sent to a worker lent to it (``zeroscale/dataplane``) that did not
        end in a success the plane answered itself: answered as ``invoke`` answers what the pool makes of it.
        ``outcome``: how it ended (``VariantPool.lent_outcome``), the answer, the model's seconds and the
        invocation's timeout."""
        kind, answer, model_s, timeout_s = outcome
        targets = parse_headers(headers, self.FORWARDED, self._refused)
        inv = Invocation(body, targets.forward, max_answer=self._limits.answer)
        inv.worker_id, inv.model_s = slot.worker_id, model_s
        inv.model_status = answer.status if answer is not None else 0
        if kind == "unrecorded":  # the worker answered, and the plane could not journal it: not answered
            pool.release(slot)
            err = UsageNotRecorded(
                "zeroscale cannot record this invocation's usage (the native data plane's journal in the "
                "data directory), so it is not answered; free space there, or retry later."
            )
            self._events.invocation_after_answer(
                self._finished(pool.spec, inv, started, err.status, err.code, 0)
            )
            raise err
        try:
            resp = await pool.lent_outcome(slot, kind, answer, inv, timeout_s)
        except ZeroscaleError as err:
            self._record(pool.spec, inv, started, err.status, err.code, 0)
            raise
        await self._deliver(send, request_id, pool.spec, inv, resp, started)

    async def _deliver(
        self,
        send: Send,
        request_id: str,
        spec: PoolSpec,
        inv: Invocation,
        resp: WorkerResponse,
        started: float,
    ) -> None:
        """The worker's success, answered: metered before the answer goes out, the rest after it."""
        try:
            content_type = answer_type(resp.header(b"content-type"), resp.status)
            attributes = answer_attributes(resp.header(_CUSTOM_ATTRIBUTES), resp.status)
        except ZeroscaleError as err:
            self._record(spec, inv, started, err.status, err.code, 0)
            raise
        out: Headers = [
            (b"content-type", content_type),
            *UNTRUSTED_ANSWER,
            (b"x-amzn-invoked-production-variant", spec.variant.encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ]
        if attributes is not None:
            out.append((b"x-amzn-sagemaker-custom-attributes", attributes))
        record = self._finished(spec, inv, started, 200, "", len(resp.body))
        # Metered (journaled) before the answer goes out: a crash right after it loses no usage (if it cannot
        # be, the answer is withheld: 503, the record of that for metrics and logs). Metrics, logs and
        # autoscaling samples take it once the answer is written.
        try:
            self._events.invocation_before_answer(record)
        except UsageNotRecorded as err:
            failed = self._finished(spec, inv, started, err.status, err.code, 0)
            self._events.invocation_after_answer(failed)
            raise
        try:
            await respond(send, 200, resp.body, out)
        finally:
            self._events.invocation_after_answer(record)

    def _forwarder_for(self, pool: Variant, forwarded: bool) -> Forwarder | None:
        """Where an invocation of ``pool``'s variant goes when this front end holds no share of it, or when
        its share is saturated (spill-over: to a holder with spare capacity, else it queues here); the front
        end that takes it runs it, shadows included. None: it runs here (an invocation forwarded to this
        front end is never sent on again). An idle worker here costs one check (``saturated``)."""
        if forwarded or (pool.spec.max_concurrency > 0 and not pool.saturated):
            return None
        return self.forwarder

    def _check_size(self, request_id: str, spec: PoolSpec, body: bytes) -> None:
        limit = self._limits.serverless_request
        if limit is not None and len(body) > limit and not spec.instance_count:
            raise RuntimeValidationError(
                f"Request {request_id} has oversize body: variant {spec.variant} of endpoint {spec.endpoint} "
                f"is serverless, which takes at most {limit} bytes (real-time variants take more)."
            )

    async def _prepare(self, endpoint: str, headers: Headers) -> tuple[Targets, EndpointRoute]:
        """The request's targets and the endpoint's route, or the error that ends the request first: this
        front end unavailable, a refused header, an endpoint not found (after ``on_miss``) or asynchronous."""
        if self._unavailable is not None and (reason := self._unavailable()) is not None:
            raise ZeroscaleError(reason, code="ServiceUnavailable", status=503)
        targets = parse_headers(headers, self.FORWARDED, self._refused)
        route = self._fleet.route(endpoint)
        if route is None and self._on_miss is not None:
            await self._on_miss(endpoint)
            route = self._fleet.route(endpoint)
        if route is None:
            raise RuntimeValidationError(f"Endpoint {endpoint} of account {self._account_id} not found.")
        if self._is_async is not None and self._is_async(endpoint):
            raise RuntimeValidationError(
                f"Endpoint {endpoint} of account {self._account_id} is an asynchronous endpoint"
                f"{self.ASYNC_REFUSAL}"
            )
        return targets, route

    async def _shadow(
        self,
        pool: Variant,
        body: bytes,
        forward: Headers,
        container: str | None = None,
        target_model: str = "",
    ) -> None:
        """A copy of a request for a shadow variant: served and recorded under its own variant name (metrics,
        logs, usage), its answer discarded."""
        started = time.perf_counter()
        inv = Invocation(
            body,
            forward,
            container=container if pool.spec.containers else None,
            target_model=target_model if pool.spec.multi_model else "",
            max_answer=self._limits.answer,
        )
        try:
            resp = await pool.invoke(inv)
        except ZeroscaleError as err:
            self._record(pool.spec, inv, started, err.status, err.code, 0)
            return
        self._record(pool.spec, inv, started, 200, "", len(resp.body))

    def _record(
        self, spec: PoolSpec, inv: Invocation, started: float, status: int, code: str, out: int
    ) -> None:
        self._events.invocation(self._finished(spec, inv, started, status, code, out))

    @staticmethod
    def _finished(
        spec: PoolSpec, inv: Invocation, started: float, status: int, code: str, out: int
    ) -> InvocationRecord:
        total_s = time.perf_counter() - started
        return inv.record(spec, at=time.time(), total_s=total_s, status=status, code=code, bytes_out=out)


# A model's answer, in the type its code chose, is served on the console's origin: opened in a browser (a
# cross-site form can POST to a presigned InvokeEndpoint URL), an HTML answer's script would run as the
# console and use a signed-in user's session. So no answer is sniffed into another type, and none runs
# anything or loads anything: a sandbox with no permission, an origin of its own.
UNTRUSTED_ANSWER: list[tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"content-security-policy", b"sandbox; default-src 'none'"),
]


def answer_type(value: bytes | None, status: int) -> bytes:
    """The Content-Type ``value`` of an answer of ``status``, held to botocore's ``Header`` shape (1,024
    ASCII characters at most: it comes from the model's code); application/octet-stream when it is None."""
    if value is None:
        return b"application/octet-stream"
    if len(value) > 1024 or not value.isascii():
        message = (
            "The model answered a Content-Type that is not at most 1024 ASCII characters "
            f"({len(value)} bytes, starting {value[:40].decode('latin-1')!r})."
        )
        raise ModelError(message, original_status=status, original_message=message)
    return value


def answer_attributes(value: bytes | None, status: int) -> bytes | None:
    """The CustomAttributes ``value`` of an answer, held to the shape the request's are (1,024 ASCII
    characters at most), as its Content-Type is: it comes from the model's code."""
    if value is not None and (len(value) > 1024 or not value.isascii()):
        message = (
            "The model answered X-Amzn-SageMaker-Custom-Attributes that are not at most 1024 ASCII "
            f"characters ({len(value)} bytes, starting {value[:40].decode('latin-1')!r})."
        )
        raise ModelError(message, original_status=status, original_message=message)
    return value


def _target_model(value: bytes) -> str:
    """The TargetModel header: 1 to 1,024 printable characters, a path relative to the model's prefix (as
    botocore sent it: UTF-8, so ``é.tar.gz`` is that key, not ``Ã©.tar.gz``)."""
    text = header_text(value)
    if not 1 <= len(text) <= 1024 or not text.isprintable() or text[0].isspace():
        raise RuntimeValidationError(
            "1 validation error detected: Value at 'targetModel' failed to satisfy constraint: "
            "Member must have length between 1 and 1024 and contain only printable characters"
        )
    parts = text.split("/")
    if text.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise RuntimeValidationError(
            f"TargetModel {text!r} must be a path relative to the model's S3 prefix (no '..', '.' or empty "
            "parts)."
        )
    return text


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
