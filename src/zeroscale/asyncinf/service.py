"""Asynchronous inference: accept requests into the durable queue, dispatch them to the endpoint's workers,
write each result (or failure) to S3, and notify.

One dispatcher task for the server. It wakes when a request is accepted or finishes, and every ``tick_s``
(requests put back for want of capacity); at each wake it first fails the queued requests whose
RequestTTLSeconds ran out (at most ``EXPIRE_BATCH`` at a time, while any endpoint serves asynchronously), so
an expired request is failed and notified within a tick of its expiry, not when a worker would take it. Per
endpoint it keeps at most MaxConcurrentInvocationsPerInstance x (the variants' maximum worker count)
requests in flight; each one goes through the router like a synchronous invocation
(``Fleet.route(name).choose().invoke``), so a serverless variant wakes from zero for new work and scales
back to zero once its queue is empty and its workers idle.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from zeroscale.asyncinf.queue import COMPLETED, FAILED, AsyncRequest, Backlog, QueueFull, RequestQueue
from zeroscale.asyncinf.s3io import InputError, OutputError, S3Io
from zeroscale.background import Background
from zeroscale.control.async_config import ERROR_TOPIC, SUCCESS_TOPIC, AsyncConfig, async_config
from zeroscale.control.endpoint_configs import variant_specs
from zeroscale.control.endpoints import Endpoints
from zeroscale.errors import (
    ModelError,
    RuntimeValidationError,
    ServiceUnavailable,
    Throttling,
    ZeroscaleError,
)
from zeroscale.events import EventBus
from zeroscale.router.fleet import Fleet, Variant
from zeroscale.router.invocation import Invocation
from zeroscale.store.db import Record
from zeroscale.types import EndpointStatus
from zeroscale.workers.client import FilePayload

log = logging.getLogger("zeroscale.async")
INLINE_RESPONSE_MAX_BYTES = 128 * 1024
# A request that was running each time the server stopped (killed, out of memory, power lost) runs at most
# this many times: a payload that takes the whole server down must not do so at every restart.
MAX_ATTEMPTS = 3
S3_DEFAULT_CONTENT_TYPE = "binary/octet-stream"  # what S3 answers for an object stored without one
S3_READ, S3_WRITE = "s3:GetObject", "s3:PutObject"
# (IAM user id, None for the admin; action; s3:// URL) -> None when that user may, as its policies are now,
# else why not (``Authorizer.s3_may``)
S3Rights = Callable[[str | None, str, str], str | None]
EXPIRE_BATCH = 256  # expired requests failed per wake of the dispatcher (it wakes again at once for more)
_SERVING = (EndpointStatus.IN_SERVICE.value, EndpointStatus.UPDATING.value)


class Notifier(Protocol):
    def notify(self, topic_arn: str, message: dict[str, Any]) -> None:
        """Hand a notification off for delivery; must not block."""
        ...


@dataclass(frozen=True)
class AsyncEndpoint:
    name: str
    config: AsyncConfig
    limit: int  # requests in flight at most
    # the IAM user ids of who created its configuration and who deployed it (None: the admin): where the
    # server writes for it, both must be allowed to
    writers: tuple[str | None, ...] = ()


@dataclass(frozen=True)
class AsyncParams:
    """An accepted InvokeEndpointAsync, checked by the API layer."""

    input_location: str  # "" when the input is inline (``body``)
    body: bytes | None
    output_extension: str | None  # S3OutputPathExtension
    filename: str | None  # Filename
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    inference_id: str
    ttl_s: int
    timeout_s: int


def _full_message(full: QueueFull, endpoint: str) -> str:
    """Why a request was refused, and what to do: the bound by its flag."""
    if full.scope == "endpoint":
        return (
            f"Endpoint {endpoint} has {full.bound} asynchronous requests waiting, as many as a queue holds "
            "(zeroscale serve --async-max-queued): try again once some have run, or give it more instances."
        )
    if full.scope == "user":
        return (
            f"You have {full.bound} asynchronous requests waiting over all endpoints, as many as one IAM "
            "user may (zeroscale serve --async-max-queued-per-user): try again once some have run."
        )
    return (
        f"The server has {full.bound} asynchronous requests waiting over all endpoints and users, as many as "
        "it holds (zeroscale serve --async-max-queued-total): try again once some have run."
    )


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class AsyncInference:
    def __init__(
        self,
        queue: RequestQueue,
        fleet: Fleet,
        endpoints: Endpoints,
        s3: S3Io,
        events: EventBus,
        *,
        region: str,
        account_id: str,
        payload_limit_bytes: int,
        scratch_dir: Path,
        creator: Callable[[], str] | None = None,
        may: S3Rights | None = None,
        notifier: Notifier | None = None,
        tick_s: float = 1.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._queue = queue
        self._fleet = fleet
        self._endpoints = endpoints
        self._s3 = s3
        self._events = events
        self._region = region
        self._account_id = account_id
        self._payload_limit_bytes = payload_limit_bytes
        self._scratch_dir = scratch_dir
        # ``creator``: the IAM user id of the request being sent ("" for the admin, whom the queue's bound per
        # user does not count)
        self._creator = creator or (lambda: "")
        # ``may``: what the server reads and writes in S3 for a request, with the rights of whom it does it
        # for as they are then (hours may pass in the queue): the sender's for the input, the endpoint
        # configuration's creator for the output and failure (who named where they go)
        self._may = may or (lambda _user, _action, _url: None)
        self.notifier = notifier
        self._tick_s = tick_s
        self._wall = wall
        self._async: dict[str, AsyncEndpoint] = {}
        self._inflight: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._background = Background("async")

    # ---- which endpoints are asynchronous ----
    def is_async(self, endpoint: str) -> bool:
        return endpoint.lower() in self._async

    def refresh(self, endpoint: str, rec: Record | None) -> None:
        """``endpoint`` now serves as ``rec`` says (after a deploy, update or delete; None: it serves no more
        here): whether it takes asynchronous requests, and how many run at once."""
        self._set_entry(endpoint, self._entry(rec))

    def _set_entry(self, endpoint: str, entry: AsyncEndpoint | None) -> None:
        key = endpoint.lower()
        if entry is None:
            old = self._async.pop(key, None)
            if old is not None:  # deleted, or updated to a synchronous configuration
                self._background.spawn(self._drop(old))
        else:
            self._async[key] = entry
        self._wake.set()

    async def _drop(self, entry: AsyncEndpoint) -> None:
        """Fail what an endpoint that no longer serves asynchronous requests left queued."""
        while (req := await asyncio.to_thread(self._queue.claim, entry.name, self._wall())) is not None:
            await self._fail(
                entry, req, f"EndpointDeleted: endpoint {entry.name} no longer serves asynchronous requests."
            )

    def _exists(self, endpoint: str) -> bool:
        try:
            self._endpoints.get(endpoint)
        except ZeroscaleError:
            return False
        return True

    def _read(self, endpoint: str) -> AsyncEndpoint | None:
        try:
            rec = self._endpoints.get(endpoint)
        except ZeroscaleError:
            return None
        return self._entry(rec)

    def _entry(self, rec: Record | None) -> AsyncEndpoint | None:
        """How the endpoint stored as ``rec`` takes asynchronous requests; None when it takes none."""
        if rec is None or rec.status not in _SERVING:
            return None
        try:
            config = self._endpoints.deployed_config(rec)  # also once its configuration was deleted
        except ZeroscaleError:
            return None
        raw = config.doc.get("AsyncInferenceConfig")
        if not raw:
            return None
        cfg = async_config(raw)
        workers = sum(
            v.serverless.max_concurrency if v.serverless is not None else v.instance_count
            for v in variant_specs(config.doc)
        )
        writers = tuple(dict.fromkeys((config.creator, rec.creator)))
        return AsyncEndpoint(rec.name, cfg, max(1, workers) * cfg.per_instance, writers)

    # ---- accepting ----
    async def accept(self, endpoint: str, params: AsyncParams) -> AsyncRequest:
        """Commit the request to the queue (durable before the 202); RuntimeValidationError when the
        endpoint does not serve asynchronous requests."""
        entry = self._async.get(endpoint.lower())
        if entry is None and not self._exists(endpoint):
            raise RuntimeValidationError(f"Endpoint {endpoint} of account {self._account_id} not found.")
        if entry is None:
            raise RuntimeValidationError(
                f"Endpoint {endpoint} of account {self._account_id} is not configured for asynchronous "
                "inference (its endpoint configuration has no AsyncInferenceConfig)."
            )
        try:
            if params.body is None:
                self._s3.locate(params.input_location)
        except ValueError as exc:
            raise RuntimeValidationError(f"InputLocation {exc}.") from None
        if not self._s3.ready and (problem := await asyncio.to_thread(self._s3.problem)) is not None:
            raise ServiceUnavailable(f"Endpoint {entry.name} cannot take asynchronous requests: {problem}.")
        creator = self._creator() or None
        cfg = entry.config
        req = AsyncRequest(
            id=0,
            inference_id=params.inference_id,
            endpoint_name=entry.name,
            status="",
            input_location=params.input_location,
            content_type=params.content_type,
            accept=params.accept,
            custom_attributes=params.custom_attributes,
            output_location=cfg.output_location(
                params.inference_id, params.output_extension, params.filename
            ),
            failure_location=cfg.failure_location(
                params.inference_id, params.output_extension, params.filename
            ),
            ttl_s=params.ttl_s,
            timeout_s=params.timeout_s,
            created_at=self._wall(),
            body=params.body,
            creator=creator,
        )
        try:
            await asyncio.to_thread(self._queue.enqueue, req)
        except QueueFull as full:
            raise ServiceUnavailable(_full_message(full, entry.name)) from None
        self._wake.set()
        return req

    def find(self, inference_id: str) -> AsyncRequest | None:
        return self._queue.find(inference_id)

    def matching(self, inference_id: str, endpoint: str | None, limit: int) -> list[AsyncRequest]:
        return self._queue.matching(inference_id, endpoint, limit)

    def recent(self, endpoint: str, limit: int) -> list[AsyncRequest]:
        return self._queue.recent(endpoint, limit)

    def backlog(self) -> list[Backlog]:
        """Per endpoint with requests or serving asynchronously (zero for an empty queue); no query at all
        while no endpoint serves asynchronous requests (what was left queued by one was failed)."""
        if not self._async:
            return []
        found = self._queue.backlog()
        have = {b.endpoint_name.lower() for b in found}
        serving = list(self._async.items())  # a copy: the history samples this from a thread
        idle = [Backlog(e.name, 0, 0, None) for k, e in serving if k not in have]
        return sorted(found + idle, key=lambda b: b.endpoint_name)

    # ---- the dispatcher ----
    async def start(self, live: set[str] | None = None) -> None:
        """After the endpoints resumed: requests this front end's last stop (or a front end not in ``live``)
        left Running run again, then dispatch."""
        requeued = await asyncio.to_thread(self._queue.requeue_running, live or ())
        if requeued:
            log.info("%d asynchronous request(s) interrupted by the last stop run again", requeued)
        for name in await asyncio.to_thread(self._endpoints_list):
            self._set_entry(name, self._read(name))
        self._loop_task = asyncio.create_task(self._run_loop())

    def sync(self, live: set[str]) -> None:
        """The front ends changed, or another wrote: what a dead one left Running runs again here."""
        if self._async:
            self._background.spawn(self._requeue_orphans(live))

    async def _requeue_orphans(self, live: set[str]) -> None:
        requeued = await asyncio.to_thread(self._queue.requeue_running, live)
        if requeued:
            log.warning("%d asynchronous request(s) of a front end that died run again here", requeued)
            self._wake.set()

    def _endpoints_list(self) -> list[str]:
        names: list[str] = []
        params: dict[str, Any] = {"MaxResults": 100}
        while True:
            page = self._endpoints.list(params)
            names += [r["EndpointName"] for r in page.get("Endpoints", [])]
            if not page.get("NextToken"):
                return names
            params = {"MaxResults": 100, "NextToken": page["NextToken"]}

    async def _run_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._tick_s)
            self._wake.clear()
            try:
                await self._expire()
                await self._dispatch()
                if self._queue.prune_due(self._wall()):
                    await asyncio.to_thread(self._prune)
            except Exception:
                log.exception("async dispatch failed")

    def _prune(self) -> None:
        """Finished requests past the retention are deleted (due at most every hour)."""
        gone = self._queue.prune(self._wall())
        if gone:
            log.info("deleted %d finished asynchronous request(s) past their retention", gone)

    async def _expire(self) -> None:
        """Fail what waited past its RequestTTLSeconds in the queue (none is looked for while no endpoint
        serves asynchronously: the dispatcher costs an idle server nothing)."""
        if not self._async:
            return
        expired = await asyncio.to_thread(self._queue.claim_expired, self._wall(), EXPIRE_BATCH)
        for req in expired:
            self._background.spawn(self._fail_expired(req))
        if len(expired) == EXPIRE_BATCH:
            self._wake.set()  # more may wait: the next batch at once

    async def _fail_expired(self, req: AsyncRequest) -> None:
        entry = self._async.get(req.endpoint_name.lower())
        if entry is None:  # no longer asynchronous here: read what it was, for its notification topics
            entry = await asyncio.to_thread(self._read, req.endpoint_name)
        await self._fail(entry, req, self._expired_reason(req))

    @staticmethod
    def _expired_reason(req: AsyncRequest) -> str:
        return f"Request expired: it waited longer than its RequestTTLSeconds ({req.ttl_s} s) in the queue."

    async def _dispatch(self) -> None:
        for key, entry in list(self._async.items()):
            route = self._fleet.route(entry.name)
            if route is None or not any(v.spec.max_concurrency > 0 for v in route.production):
                continue  # no share of its capacity on this front end: another one runs its queue
            while self._inflight.get(key, 0) < entry.limit:
                req = await asyncio.to_thread(self._queue.claim, key, self._wall())
                if req is None:
                    break
                self._inflight[key] = self._inflight.get(key, 0) + 1
                self._background.spawn(self._run(key, entry, req))

    async def _run(self, key: str, entry: AsyncEndpoint, req: AsyncRequest) -> None:
        try:
            await self._serve(entry, req)
        except Exception as exc:
            log.exception("async request %s failed", req.inference_id)
            await self._fail(entry, req, f"InternalFailure: {type(exc).__name__}: {exc}")
        finally:
            self._inflight[key] -= 1
            self._wake.set()

    async def _serve(self, entry: AsyncEndpoint, req: AsyncRequest) -> None:
        if req.attempts > MAX_ATTEMPTS:
            await self._fail(
                entry,
                req,
                f"InternalFailure: the server stopped while this request ran, {req.attempts - 1} times; "
                f"it is not run again (at most {MAX_ATTEMPTS} attempts).",
                attempts=req.attempts - 1,  # this claim ran nothing
            )
            return
        if self._wall() > req.expires_at:  # expired after the last sweep: the sweep's answer
            await self._fail(entry, req, self._expired_reason(req))
            return
        self._scratch_dir.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.TemporaryFile(dir=self._scratch_dir) as source,
            tempfile.TemporaryFile(dir=self._scratch_dir) as sink,
        ):
            if req.body is not None:  # inline: kept in its row until it finishes
                source.write(req.body)
                size, object_type = len(req.body), None
            else:
                if (why := self._may(req.creator, S3_READ, req.input_location)) is not None:
                    await self._fail(entry, req, f"AccessDenied: {why}")
                    return
                try:
                    got = await asyncio.to_thread(
                        self._s3.download, req.input_location, source, self._payload_limit_bytes
                    )
                except InputError as exc:
                    await self._fail(entry, req, f"ClientError: {exc}")
                    return
                # A request without ContentType: the input object's own (the sagemaker SDK's AsyncPredictor
                # sets it on the object it uploads, not on the request), unless S3 only defaulted it.
                size = got.size
                object_type = got.content_type if got.content_type != S3_DEFAULT_CONTENT_TYPE else None
            source.seek(0)
            await self._invoke(entry, req, FilePayload(source, size, sink), object_type)

    async def _invoke(
        self, entry: AsyncEndpoint, req: AsyncRequest, payload: FilePayload, object_type: str | None = None
    ) -> None:
        route = self._fleet.route(entry.name)
        if route is None:  # deleted meanwhile: back to the queue
            await asyncio.to_thread(self._queue.requeue, req)
            return
        pool = route.choose()
        inv = Invocation(payload, self._headers(req, object_type), timeout_s=float(req.timeout_s))
        started = time.perf_counter()
        try:
            resp = await pool.invoke(inv)
        except Throttling as err:
            self._record(pool, inv, started, err.status, err.code, 0)
            await asyncio.to_thread(self._queue.requeue, req)  # no capacity now: runs again later
            return
        except ModelError as err:
            self._record(pool, inv, started, err.status, err.code, 0)
            timed_out = err.original_message == "invocation timed out"
            reason = (
                f"InvocationTimeout: the model did not answer within {req.timeout_s} s "
                "(InvocationTimeoutSeconds)."
                if timed_out
                else f"ModelError: {err.message}"
            )
            body_out = err.original_message.encode() if err.original_message and not timed_out else None
            await self._fail(entry, req, reason, body_out)
            return
        except ZeroscaleError as err:
            self._record(pool, inv, started, err.status, err.code, 0)
            await self._fail(entry, req, f"{err.code}: {err.message}")
            return
        self._record(pool, inv, started, 200, "", payload.written)
        content_type = (resp.header(b"content-type") or b"application/octet-stream").decode("latin-1")
        sink = payload.sink
        sink.seek(0)
        inline = sink.read() if payload.written <= INLINE_RESPONSE_MAX_BYTES else b""
        sink.seek(0)
        if (why := self._may_write(entry, req.output_location)) is not None:
            await self._fail(entry, req, f"AccessDenied: the output was not written: {why}")
            return
        try:
            await asyncio.to_thread(self._s3.upload, req.output_location, sink, content_type)
        except OutputError as exc:
            await self._fail(entry, req, f"ServerError: {exc}")
            return
        await asyncio.to_thread(self._queue.finish, req, COMPLETED, self._wall())
        self._notify(entry, req, content_type, inline, payload.written)

    async def _fail(
        self,
        entry: AsyncEndpoint | None,
        req: AsyncRequest,
        reason: str,
        body: bytes | None = None,
        attempts: int | None = None,
    ) -> None:
        """``entry``: where to notify (None: nowhere, the endpoint is gone); ``attempts``: the times it ran,
        where the claim that fails it did not run it."""
        try:
            if entry is None or (why := self._may_write(entry, req.failure_location)) is None:
                await asyncio.to_thread(
                    self._s3.write, req.failure_location, body or reason.encode(), "text/plain; charset=utf-8"
                )
            else:
                reason = f"{reason} (and the failure was not written: {why})"
        except OutputError as exc:
            reason = f"{reason} (and the failure could not be written: {exc})"
        await asyncio.to_thread(self._queue.finish, req, FAILED, self._wall(), reason, attempts)
        out = body or reason.encode()
        if entry is not None:
            self._notify(entry, req, "text/plain; charset=utf-8", out, len(out))

    def _may_write(self, entry: AsyncEndpoint, url: str) -> str | None:
        for writer in entry.writers:
            if (why := self._may(writer, S3_WRITE, url)) is not None:
                return why
        return None

    @staticmethod
    def _headers(req: AsyncRequest, object_type: str | None = None) -> list[tuple[bytes, bytes]]:
        headers = [(b"X-Amzn-SageMaker-Inference-Id", req.inference_id.encode())]
        content_type = req.content_type or object_type
        if content_type and content_type.isascii() and len(content_type) <= 1024:
            headers.append((b"Content-Type", content_type.encode()))
        if req.accept:
            headers.append((b"Accept", req.accept.encode()))
        if req.custom_attributes:
            headers.append((b"X-Amzn-SageMaker-Custom-Attributes", req.custom_attributes.encode()))
        return headers

    def _record(
        self, pool: Variant, inv: Invocation, started: float, status: int, code: str, out: int
    ) -> None:
        total_s = time.perf_counter() - started
        self._events.invocation(
            inv.record(pool.spec, at=self._wall(), total_s=total_s, status=status, code=code, bytes_out=out)
        )

    # ---- notifications ----
    def _notify(
        self, entry: AsyncEndpoint, req: AsyncRequest, content_type: str, body: bytes, size: int
    ) -> None:
        """``body``: the response when it is at most INLINE_RESPONSE_MAX_BYTES (``size``) long."""
        cfg = entry.config
        ok = req.status == COMPLETED
        topic = cfg.success_topic if ok else cfg.error_topic
        if topic is None or self.notifier is None:
            return
        message: dict[str, Any] = {
            "awsRegion": self._region,
            "eventTime": _iso(req.finished_at or self._wall()),
            "receivedTime": _iso(req.created_at),
            "invocationStatus": "Completed" if ok else "Failed",
            "requestParameters": {
                "accept": req.accept,
                "contentType": req.content_type,
                "customAttributes": req.custom_attributes,
                "endpointName": req.endpoint_name,
                "inputLocation": req.input_location,
            },
            "responseParameters": {"contentType": content_type},
            "inferenceId": req.inference_id,
            "eventVersion": "1.0",
            "eventSource": "aws:sagemaker",
            "eventName": "InferenceResult",
        }
        message["requestParameters"] = {k: v for k, v in message["requestParameters"].items() if v}
        if ok:
            message["responseParameters"]["outputLocation"] = req.output_location
        else:
            message["responseParameters"]["failureLocation"] = req.failure_location
            message["failureReason"] = req.failure_reason or ""
        if (SUCCESS_TOPIC if ok else ERROR_TOPIC) in cfg.include_response_in:
            if size <= INLINE_RESPONSE_MAX_BYTES:
                message["responseBody"] = {
                    "content": base64.b64encode(body).decode(),
                    "encoding": "BASE64",
                }
            else:
                message["responseBody"] = {
                    "message": f"The response is larger than {INLINE_RESPONSE_MAX_BYTES} bytes; "
                    "read it from S3."
                }
        try:
            self.notifier.notify(topic, message)
        except Exception:
            log.exception("notification of %s to %s failed", req.inference_id, topic)

    async def close(self) -> None:
        """Stop dispatching; requests still Running run again at the next start."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self._background.cancel()
        self._queue.close()
