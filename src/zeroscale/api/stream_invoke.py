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

from zeroscale.api import eventstream
from zeroscale.api.forward import refuse_spill
from zeroscale.api.invoke import UNTRUSTED_ANSWER, InvokeApi, answer_attributes, answer_type
from zeroscale.api.served import INVOKE_ENDPOINT_WITH_RESPONSE_STREAM
from zeroscale.api.wire import Headers, Receive, Send, watch_disconnect
from zeroscale.errors import ModelStreamError, RuntimeValidationError, ZeroscaleError
from zeroscale.router.invocation import Invocation
from zeroscale.router.pool import VariantPool
from zeroscale.router.spec import PoolSpec
from zeroscale.router.streams import PoolStream

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


class StreamInvokeApi(InvokeApi):
    """InvokeEndpointWithResponseStream: the same collaborators, request checks and shadow copies as
    ``InvokeApi``; the answer is relayed part by part."""

    OPERATION = "InvokeEndpointWithResponseStream"
    SERVED = INVOKE_ENDPOINT_WITH_RESPONSE_STREAM
    FORWARDED = _FORWARDED
    ASYNC_REFUSAL = " and cannot stream a response: invoke it with InvokeEndpointAsync."

    async def invoke_stream(
        self,
        send: Send,
        receive: Receive,
        request_id: str,
        endpoint: str,
        headers: Headers,
        body: bytes,
        started: float,
        *,
        forwarded: bool = False,
        spilled: bool = False,
    ) -> None:
        """``started``: ``time.perf_counter()`` when the request arrived; ``forwarded``, ``spilled``: as for
        ``InvokeApi.invoke``."""
        targets, route = await self._prepare(endpoint, headers)
        forward, target_variant = targets.forward, targets.variant
        if targets.model:  # not a member of this operation: a raw header, refused all the same
            raise RuntimeValidationError("zeroscale does not support TargetModel on a streamed invocation.")
        pool = route.choose(target_variant)
        self._check_size(request_id, pool.spec, body)
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
        forwarder = self._forwarder_for(pool, forwarded)
        if forwarder is not None:
            variant, spill = pool.spec.variant, pool.spec.max_concurrency > 0
            if await forwarder.forward_stream(endpoint, variant, headers, body, send, receive, spill=spill):
                return
        elif spilled and pool.saturated:  # checked with no await before the pool takes it
            await refuse_spill(send)
            return
        if route.shadows:
            for shadow in route.copies():
                self._background.spawn(self._shadow(shadow, body, forward))
        inv = Invocation(body, forward)
        try:
            stream = await pool.stream(inv)
        except ZeroscaleError as err:
            self._record(pool.spec, inv, started, err.status, err.code, 0)
            raise
        try:
            content_type = answer_type(stream.header(b"content-type"), inv.model_status)
            attributes = answer_attributes(stream.header(_CUSTOM_ATTRIBUTES), inv.model_status)
        except ZeroscaleError as err:
            stream.close()
            self._record(pool.spec, inv, started, err.status, err.code, 0)
            raise
        out: Headers = [
            (b"content-type", eventstream.CONTENT_TYPE),
            *UNTRUSTED_ANSWER,
            (b"x-amzn-sagemaker-content-type", content_type),
            (b"x-amzn-invoked-production-variant", pool.spec.variant.encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ]
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
        watcher = asyncio.ensure_future(watch_disconnect(receive, stream.close, gone))
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
