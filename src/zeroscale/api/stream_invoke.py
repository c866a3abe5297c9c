"""SageMaker runtime REST: ``POST /endpoints/{name}/invocations-response-stream``
(InvokeEndpointWithResponseStream) -> the endpoint's route -> a worker, its answer sent on as it comes.

Before the stream starts, errors are the runtime's usual ones (ValidationError, ModelError, throttling, ...).
Once it started (200, ``application/vnd.amazon.eventstream``, the model's type in
``X-Amzn-SageMaker-Content-Type``): one PayloadPart event per part the worker sends, written to the client at
once; a failure is a ModelStreamError event with its ErrorCode, and anything unexpected an
InternalStreamFailure event. A client that goes away ends the stream: the worker is handed back and stops
its model at its next part. The invocation is recorded (metering, metrics, logs) when the stream ends,
before its last byte goes out.

Every synchronous endpoint can stream: a model whose hooks return whole answers (or a container that
answers with a Content-Length) streams as one part, as SageMaker forwards such an answer. An endpoint that
cannot stream is an asynchronous one (ValidationError, as for InvokeEndpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from zeroscale.api import eventstream
from zeroscale.api.allowlist import refused_headers
from zeroscale.api.invoke import _check_header
from zeroscale.api.served import INVOKE_ENDPOINT_WITH_RESPONSE_STREAM
from zeroscale.api.shapes import ServiceShapes
from zeroscale.api.wire import Headers, Send
from zeroscale.background import Background
from zeroscale.errors import ModelStreamError, RuntimeValidationError, ZeroscaleError
from zeroscale.events import EventBus
from zeroscale.router.fleet import Fleet, Variant
from zeroscale.router.pool import Invocation, VariantPool
from zeroscale.router.spec import PoolSpec
from zeroscale.router.streams import PoolStream

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
log = logging.getLogger("zeroscale.api")

# Request headers passed on to the worker under the names the container contract uses.
_FORWARDED = {
    b"content-type": b"Content-Type",
    b"x-amzn-sagemaker-accept": b"Accept",
    b"x-amzn-sagemaker-custom-attributes": b"X-Amzn-SageMaker-Custom-Attributes",
    b"x-amzn-sagemaker-inference-id": b"X-Amzn-SageMaker-Inference-Id",
}
_TARGET_VARIANT = b"x-amzn-sagemaker-target-variant"
_CUSTOM_ATTRIBUTES = b"x-amzn-sagemaker-custom-attributes"


class StreamInvokeApi:
    def __init__(
        self,
        fleet: Fleet,
        account_id: str,
        events: EventBus,
        is_async: Callable[[str], bool] | None = None,
        on_miss: Callable[[str], Awaitable[None]] | None = None,
        unavailable: Callable[[], str | None] | None = None,
    ) -> None:
        """The same collaborators as ``InvokeApi``'s."""
        self._fleet = fleet
        self._account_id = account_id
        self._events = events
        self._is_async = is_async
        self._on_miss = on_miss
        self._unavailable = unavailable
        shape = ServiceShapes("sagemaker-runtime").input_shape("InvokeEndpointWithResponseStream")
        self._refused = refused_headers(shape, INVOKE_ENDPOINT_WITH_RESPONSE_STREAM)
        self._background = Background("shadow invocations of streams")

    async def invoke(
        self,
        send: Send,
        receive: Receive,
        request_id: str,
        endpoint: str,
        headers: Headers,
        body: bytes,
        started: float,
    ) -> None:
        """``started``: ``time.perf_counter()`` when the request arrived."""
        if self._unavailable is not None and (reason := self._unavailable()) is not None:
            raise ZeroscaleError(reason, code="ServiceUnavailable", status=503)
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
            elif lname in self._refused:
                raise RuntimeValidationError(f"zeroscale does not support {self._refused[lname]} yet.")
        route = self._fleet.route(endpoint)
        if route is None and self._on_miss is not None:
            await self._on_miss(endpoint)
            route = self._fleet.route(endpoint)
        if route is None:
            raise RuntimeValidationError(f"Endpoint {endpoint} of account {self._account_id} not found.")
        if self._is_async is not None and self._is_async(endpoint):
            raise RuntimeValidationError(
                f"Endpoint {endpoint} of account {self._account_id} is an asynchronous endpoint and cannot "
                "stream a response: invoke it with InvokeEndpointAsync."
            )
        pool = route.choose(target_variant)
        if not isinstance(pool, VariantPool):
            raise RuntimeValidationError(
                f"Endpoint {endpoint} variant {pool.spec.variant} runs a model of several containers "
                f"({', '.join(pool.hostnames)}): InvokeEndpointWithResponseStream serves models of one "
                "container only. Invoke it with InvokeEndpoint."
            )
        if pool.spec.multi_model:
            raise RuntimeValidationError(
                f"Endpoint {endpoint} variant {pool.spec.variant} is a multi-model endpoint: "
                "InvokeEndpointWithResponseStream serves single-model endpoints only. Invoke it with "
                "InvokeEndpoint and TargetModel."
            )
        if route.shadows:
            for shadow in route.copies():
                self._background.spawn(self._shadow(shadow, body, forward))
        inv = Invocation(body, forward)
        try:
            stream = await pool.stream(inv)
        except ZeroscaleError as err:
            self._record(pool.spec, inv, started, err.status, err.code, 0)
            raise
        out: Headers = [
            (b"content-type", eventstream.CONTENT_TYPE),
            (b"x-amzn-sagemaker-content-type", stream.header(b"content-type") or b"application/octet-stream"),
            (b"x-amzn-invoked-production-variant", pool.spec.variant.encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ]
        attributes = stream.header(_CUSTOM_ATTRIBUTES)
        if attributes is not None:
            out.append((b"x-amzn-sagemaker-custom-attributes", attributes))
        await self._relay(send, receive, pool.spec, inv, stream, out, started)

    async def _relay(
        self,
        send: Send,
        receive: Receive,
        spec: PoolSpec,
        inv: Invocation,
        stream: PoolStream,
        out: Headers,
        started: float,
    ) -> None:
        """Send the head, then each part as it arrives; record the invocation before the last byte."""
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, stream, gone))
        status, code, tail = 200, "", b""
        try:
            await send({"type": "http.response.start", "status": 200, "headers": out})
            async for part in stream.parts():
                if gone.is_set():
                    break
                await send(
                    {"type": "http.response.body", "body": eventstream.payload_part(part), "more_body": True}
                )
        except ModelStreamError as err:
            if not gone.is_set():
                status, code = err.status, err.code
                tail = eventstream.exception(
                    "ModelStreamError", {"Message": err.message, "ErrorCode": err.error_code}
                )
        except Exception:
            log.exception("stream of %s failed", spec.endpoint)
            status, code = 500, "InternalStreamFailure"
            tail = eventstream.exception(
                "InternalStreamFailure", {"Message": "The stream failed on the server."}
            )
        finally:
            stream.close()  # no-op once it ended; else (cancelled, failed) the worker is handed back
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        self._record(spec, inv, started, status, code, stream.bytes_out)
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _shadow(self, pool: Variant, body: bytes, forward: Headers) -> None:
        """A shadow variant's copy, as for InvokeEndpoint: served whole (its answer is discarded) and recorded
        under its own variant name."""
        started = time.perf_counter()
        inv = Invocation(body, forward)
        try:
            resp = await pool.invoke(inv)
        except ZeroscaleError as err:
            self._record(pool.spec, inv, started, err.status, err.code, 0)
            return
        self._record(pool.spec, inv, started, 200, "", len(resp.body))

    def _record(
        self, spec: PoolSpec, inv: Invocation, started: float, status: int, code: str, out: int
    ) -> None:
        self._events.invocation(
            inv.record(
                spec,
                at=time.time(),
                total_s=time.perf_counter() - started,
                status=status,
                code=code,
                bytes_out=out,
            )
        )


async def _watch_disconnect(receive: Receive, stream: PoolStream, gone: asyncio.Event) -> None:
    """The request body was read whole, so the next message is the client going away: stop the stream."""
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            gone.set()
            stream.close()
            return
