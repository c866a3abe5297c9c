"""The ASGI application: one port for the control plane (``POST /``), the runtime
(``/endpoints/{name}/invocations``), ``/metrics`` and ``/ping``. A raw ASGI callable, no framework, so the
invoke path is a few dict lookups, a SigV4 check and one hop to a worker."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeroscale import peers
from zeroscale.api import rpcv2, sigv4
from zeroscale.api.async_invoke import AsyncInvokeApi, input_location
from zeroscale.api.direct import DirectRoute
from zeroscale.api.forward import invoke_path, spilled, stream_path
from zeroscale.api.hosts import AllowedHosts
from zeroscale.api.iam_query import IamQueryService
from zeroscale.api.invoke import InvokeApi
from zeroscale.api.jsonrpc import MAX_BODY_BYTES as MAX_JSON_BODY_BYTES
from zeroscale.api.jsonrpc import JsonService
from zeroscale.api.peer import PeerRoute
from zeroscale.api.proxies import TrustedProxies
from zeroscale.api.query import UNSIGNED_ACTIONS, QueryService, is_query_request, parse
from zeroscale.api.stream_invoke import StreamInvokeApi
from zeroscale.api.wire import (
    Receive,
    Send,
    control_error,
    control_ok,
    respond,
    respond_stream,
    runtime_error,
)
from zeroscale.errors import (
    InternalFailure,
    RuntimeValidationError,
    UnknownOperationException,
    ValidationException,
    ZeroscaleError,
)
from zeroscale.iam.authz import Access
from zeroscale.metrics.registry import Metrics
from zeroscale.store.db import database_failure

Scope = MutableMapping[str, Any]
log = logging.getLogger("zeroscale.api")

_RUNTIME_PREFIX = "/endpoints/"
REST_PREFIX = "/zeroscale/v1/"
_UNSIGNED_GETS = ("/metrics", "/ping", "/healthz")
_CONSOLE = "/console"
_INVOCATIONS_SUFFIX = "/invocations"
_ASYNC_SUFFIX = "/async-invocations"
# The ASGI scope's extension by which the native data plane says how long a request it relays waited in it
# for a worker (``zeroscale/dataplane``): the pool's queue wait counts it. Set by the server alone (a
# client cannot put anything in a scope's extensions).
QUEUED_S = "zeroscale.queued_s"
_STREAM_SUFFIX = "/invocations-response-stream"
_CONTROL_BODY_LIMIT = 16 * 1024 * 1024
_SIGNED = "zeroscale.signed"  # in an invocation's scope: its signature as checked at its headers (admit)


class _RequestIds:
    """Unique request ids in uuid4's shape without drawing 16 random bytes per request: a random process
    prefix and a counter."""

    def __init__(self) -> None:
        p = uuid.uuid4().hex[:20]
        self._prefix = f"{p[:8]}-{p[8:12]}-{p[12:16]}-{p[16:20]}-"
        self._counter = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):012x}"


_request_ids = _RequestIds()


def new_request_id() -> str:
    """A request id in uuid4's shape, unique in this process (``x-amzn-requestid``)."""
    return _request_ids.next()


_PEER_INVOKE = invoke_path("")  # /zeroscale/peer/v1/invoke/<endpoint>
_PEER_STREAM = stream_path("")  # /zeroscale/peer/v1/invoke-stream/<endpoint>


async def runtime_failure(send: Send, request_id: str, exc: Exception) -> None:
    """A runtime request's failure in REST-JSON: its own error, or InternalFailure (logged) for anything
    unexpected. Called in the ``except`` block that caught ``exc``."""
    if isinstance(exc, ZeroscaleError):
        await runtime_error(send, request_id, exc)
        return
    log.exception("request %s failed", request_id)
    await runtime_error(send, request_id, InternalFailure(f"Internal failure (request {request_id})."))


class BodyTooLarge(Exception):
    pass


@dataclass(frozen=True)
class RestRequest:
    """A signed request to zeroscale's own API, ``/zeroscale/v1/<resource>/...`` (usage, images, ...)."""

    method: str
    path: str  # after /zeroscale/v1/, e.g. "usage" or "images/demo/1.0"
    query: dict[str, list[str]]
    headers: list[tuple[bytes, bytes]]
    body: bytes


def rest_query(scope: Scope) -> dict[str, list[str]]:
    """A zeroscale API request's query, as its handler reads it and as it is authorized (``rest_access``)."""
    return urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)


def rest_access(access_key_id: str, scope: Scope, sub_path: str) -> Access:
    """A zeroscale API request as IAM names it: with the last value of each query parameter, the one the
    handlers read (``?endpoint=`` names the endpoint a read is about). A path with an empty part is refused
    (``images//name/tag``: the policy check and the handler would read two names), whichever route it came
    by: the API's or the console's."""
    if "" in sub_path.split("/")[:-1]:
        raise UnknownOperationException(f"No zeroscale API at {sub_path}: a path has no empty parts.")
    params = {name: values[-1] for name, values in rest_query(scope).items()}
    return Access(access_key_id, "rest", "zeroscale", scope["method"], sub_path, params=params)


# status, content type, body
RestResponse = tuple[int, str, bytes]
RestHandler = Callable[[RestRequest], Awaitable[RestResponse]]


@dataclass
class AppParts:
    json_services: list[JsonService]  # by X-Amz-Target prefix: SageMaker, CloudWatch Logs, ...
    runtime: InvokeApi
    metrics: Metrics
    lookup_secret: Callable[[str], str | None]
    payload_limit_bytes: int
    startup: Callable[[], Awaitable[None]]
    # zeroscale's own API by first path segment after /zeroscale/v1/ (e.g. "usage", "images"); signed like
    # every other call (signing name "sagemaker"), errors in the JSON 1.1 shape.
    rest_routes: dict[str, RestHandler]
    shutdown: Callable[[], Awaitable[None]]
    region: str  # the server's: a signature's credential scope must name it
    # the web console under /console (an ASGI app with its own sessions), when mounted
    console: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None
    async_runtime: AsyncInvokeApi | None = None  # InvokeEndpointAsync
    stream_runtime: StreamInvokeApi | None = None  # InvokeEndpointWithResponseStream
    query: QueryService | None = None  # the SNS-compatible topic API (query protocol, signing name "sns")
    # Scoped credentials (iam/): every verified request is checked (None: every known key may do anything);
    # IAM's query protocol on POST / for requests signed for "iam".
    authorize: Callable[[Access], None] | None = None
    query_service: IamQueryService | None = None
    # The audit trail (audit/): (the request as authorized, or None when refused before; scope; X-Amz-Target;
    # the error code sent, "" on success).
    audit: Callable[[Access | None, Scope, str, str], None] | None = None
    # Control-plane calls per access key (api/throttle.py): (the verified key, the protocol's error code),
    # raises Throttling past the key's rate. None: no limit.
    throttle: Callable[[str, str], None] | None = None
    # What other front ends on the database may read of this one (its logs, workers, samples, images):
    # zeroscale.peers
    peer: PeerRoute | None = None
    # The Authorization header GET /metrics needs (b"Bearer <token>", --metrics-token-file); None: unsigned
    metrics_authorization: bytes | None = None
    # The Host headers a request that carries no signature is answered for (api/hosts.py, DNS rebinding);
    # None: any
    hosts: AllowedHosts | None = None
    # Reverse proxies whose X-Forwarded-For / -Proto name the client and its scheme (api/proxies.py); None:
    # the connection's peer is the client
    proxies: TrustedProxies | None = None


class App:
    def __init__(self, parts: AppParts) -> None:
        self._p = parts
        self._default_service = parts.json_services[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._p.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._p.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        request_id = _request_ids.next()
        if path.startswith(_RUNTIME_PREFIX):
            await self._runtime(scope, receive, send, request_id, started)
            return
        if self._p.proxies is not None:
            self._p.proxies.resolve(scope)
        if self._p.peer is not None and (path == peers.PATH or path.startswith(peers.PATH + "/")):
            await self._peer(self._p.peer, scope, receive, send)  # authenticated by its MAC, by any name
            return
        if self._p.hosts is not None and not self._names_this_server(scope, method, path):
            await _misdirected(send, scope)
            return
        if method == "GET" and path in _UNSIGNED_GETS:
            await self._unsigned_get(scope, send, path, request_id)
            return
        if method == "GET" and path == "/" and self._p.console is not None and _a_browsers(scope):
            # someone opened the server's address: the console, not an API's error document
            await respond(send, 302, b"", [(b"location", b"/console/"), (b"content-type", b"text/plain")])
            return
        serialise = control_error
        if self._p.console is not None and (path == _CONSOLE or path.startswith(_CONSOLE + "/")):
            await self._p.console(scope, receive, send)
            return
        target, access, error_code = "", None, ""
        try:
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            target = next((v for k, v in headers if k.lower() == b"x-amz-target"), b"").decode("latin-1")
            rpc_target = rpcv2.target(method, path, headers)  # RPC v2 CBOR
            if rpc_target is not None:
                target, serialise = rpc_target, rpcv2.error
            iam = self._p.query_service  # IAM's query protocol: a form POST signed for "iam"
            form_post = not target and method == "POST" and path == "/"
            if iam is not None and not (form_post and iam.claims(headers)):
                iam = None
            topics = self._p.query  # the SNS-style topics: any other query-protocol request
            if iam is None and topics is not None and is_query_request(method, path, headers, target):
                serialise = topics.error
                params = parse(scope.get("query_string", b"")) if method == "GET" else {}
                if params.get("Action") in UNSIGNED_ACTIONS:  # a subscription's confirmation link
                    await topics.handle(send, request_id, params)
                    return
                signed = self._prepare(scope, topics.signing_name)  # before the body: refused unread
                body = await self._body(scope, receive, request_id, path)
                if method == "POST":
                    params = parse(body)
                key = signed.finish(body)
                if self._p.throttle is not None:
                    self._p.throttle(key, "Throttling")  # the query protocol's code
                access = Access(key, "query", topics.signing_name, params=params)
                if self._p.authorize is not None:
                    self._p.authorize(access)
                await topics.handle(send, request_id, params)
                return
            service = self._service(target)
            if iam is not None:
                serialise = iam.error
            signed = self._prepare(scope, iam.signing_name if iam is not None else service.signing_name)
            body = await self._body(scope, receive, request_id, path)
            access_key_id = signed.finish(body)
            if self._p.throttle is not None:
                self._p.throttle(access_key_id, "ThrottlingException" if iam is None else "Throttling")
            call_body = body if rpc_target is None else rpcv2.to_json(body)  # the same call in JSON
            form = parse(body) if iam is not None else None  # parsed once: authorized as it is run
            if self._p.authorize is not None or self._p.audit is not None:
                access = self._access(access_key_id, scope, target, service, call_body, form)
            if self._p.authorize is not None and access is not None:
                self._p.authorize(access)
            if iam is not None and form is not None:
                await iam.handle(send, request_id, form, access_key_id)
                return
            # the body parsed once, for the handler and for authorization and the audit trail
            document = None if access is None or access.kind != "json" else lambda: access.document
            if rpc_target is not None:
                result = service.call(target, call_body, document)
                if not isinstance(result, dict):
                    result = await result or {}
                await rpcv2.ok(send, request_id, service.output_shape(target), result)
            elif method == "POST" and path == "/":
                result = service.call(target, body, document)
                if not isinstance(result, dict):  # an async handler
                    result = await result or {}
                await control_ok(send, request_id, result)
            elif path.startswith(REST_PREFIX):
                await self._rest(send, request_id, scope, path[len(REST_PREFIX) :], body)
            else:
                raise UnknownOperationException(f"No operation at {method} {path}.")
        except ZeroscaleError as err:
            error_code = err.code
            await serialise(send, request_id, err)
        except Exception as exc:
            failure = database_failure(exc)  # e.g. IAM's write or the ledger's read, the database's disk full
            if failure is None:
                log.exception("request %s failed", request_id)
            error = failure or InternalFailure(f"Internal failure (request {request_id}).")
            error_code = error.code
            await serialise(send, request_id, error)
        finally:
            if self._p.audit is not None:  # every control-plane call (invocations are metered instead)
                self._p.audit(access, scope, target, error_code)

    def _names_this_server(self, scope: Scope, method: str, path: str) -> bool:
        """Whether to answer this request, by its Host (``api/hosts.py``): any Host for an API request signed
        with SigV4 (the Host is part of what it signs, and it is refused unless the signature holds) or a
        /metrics scrape with --metrics-token-file's token; else only a Host that names this server. (The
        runtime's paths are signed always and never get here.)"""
        assert self._p.hosts is not None
        given = [v.decode("latin-1") for k, v in scope["headers"] if k.lower() == b"host"]
        if all(self._p.hosts.allows(host) for host in given) if given else self._p.hosts.allows(None):
            return True
        if method == "GET" and path == "/metrics":
            wanted = self._p.metrics_authorization
            return wanted is not None and _authorized(scope, wanted)
        unsigned = (
            (method == "GET" and path in _UNSIGNED_GETS)
            or path == _CONSOLE
            or path.startswith(_CONSOLE + "/")
            or (path == "/" and _unsigned_action(scope))
        )
        return not unsigned and _sigv4(scope)

    def direct_route(self) -> DirectRoute:
        """Where the HTTP layer sends invocations it reads whole (``api/direct.py``), their limit, and what
        admits one to that path before its body arrives."""
        return DirectRoute(self.buffered_invocation, self._p.payload_limit_bytes, self.admit)

    def admit(self, scope: Scope) -> bool:
        """Whether the invocation whose headers ``scope`` holds may have its body read whole by the HTTP
        layer: only when its signature holds as far as the headers go (kept in the scope for ``_runtime``).
        One that does not goes through the ASGI cycle, where ``_runtime`` refuses it before reading its
        body: the server holds no body for a request it can refuse without one."""
        try:
            scope[_SIGNED] = self._prepare(scope, self._default_service.signing_name)
        except Exception:  # answered, with the same check, by ``_runtime`` in the cycle
            return False
        return True

    async def buffered_invocation(self, scope: Scope, body: bytes, send: Send) -> None:
        """``POST /endpoints/{name}/invocations`` whose body the HTTP layer has read whole, within the payload
        limit (``api/direct.py``): the same handling as through ``__call__``."""
        started = time.perf_counter()
        await self._runtime(scope, None, send, _request_ids.next(), started, body)

    async def _runtime(
        self,
        scope: Scope,
        receive: Receive | None,
        send: Send,
        request_id: str,
        started: float,
        body: bytes | None = None,
    ) -> None:
        """``/endpoints/{name}/...``: SageMaker's runtime, signed for "sagemaker", errors in REST-JSON.
        ``body`` when read already (then ``receive`` is None: only an invocation's path comes that way)."""
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            # prepared at the headers by the direct path (``admit``), else here: before the body is read
            signed = scope.get(_SIGNED) or self._prepare(scope, self._default_service.signing_name)
            if body is None:
                assert receive is not None
                try:
                    body = await _read_body(scope, receive, self._p.payload_limit_bytes)
                except BodyTooLarge:
                    raise RuntimeValidationError(f"Request {request_id} has oversize body.") from None
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            access_key_id = signed.finish(body)
            if path.endswith(_ASYNC_SUFFIX) and self._p.async_runtime is not None:
                location = input_location(headers)
                endpoint = self._runtime_target(
                    access_key_id, method, path, _ASYNC_SUFFIX, "InvokeEndpointAsync", location
                )
                await self._p.async_runtime.invoke(send, request_id, endpoint, headers, body)
            elif path.endswith(_STREAM_SUFFIX) and self._p.stream_runtime is not None:
                assert receive is not None  # a buffered body comes only for /invocations (api/direct.py)
                # authorized as sagemaker:InvokeEndpoint, as on AWS
                endpoint = self._runtime_target(access_key_id, method, path, _STREAM_SUFFIX)
                await self._p.stream_runtime.invoke_stream(
                    send, receive, request_id, endpoint, headers, body, started
                )
            else:
                endpoint = self._runtime_target(access_key_id, method, path, _INVOCATIONS_SUFFIX)
                queued_s = float((scope.get("extensions") or {}).get(QUEUED_S, 0.0))
                await self._p.runtime.invoke(
                    send, request_id, endpoint, headers, body, started - queued_s, queued_s=queued_s
                )
        except Exception as exc:
            await runtime_failure(send, request_id, exc)

    def _prepare(self, scope: Scope, service: str) -> sigv4.Signed:
        """This request's signature for ``service``, checked as far as its headers go (``sigv4.prepare``'s
        errors otherwise): done before its body is read, so that a request refused is refused unread."""
        path: str = scope["path"]
        return sigv4.prepare(
            method=scope["method"],
            raw_path=scope.get("raw_path") or path.encode(),
            query_string=scope.get("query_string", b""),
            headers=scope["headers"],
            lookup=self._p.lookup_secret,
            service=service,
            region=self._p.region,
        )

    async def _peer(self, route: PeerRoute, scope: Scope, receive: Receive, send: Send) -> None:
        """Another front end's call: authenticated by its own MAC (``zeroscale.peers``), not SigV4."""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        header = next((v for k, v in headers if k == peers.HEADER.encode()), b"").decode("latin-1")
        json_type = [(b"content-type", b"application/json")]
        if scope["path"].startswith((_PEER_INVOKE, _PEER_STREAM)) and scope["method"] == "POST":
            await self._forwarded(route, header, scope, receive, send)
            return
        if scope["path"] != peers.PATH:  # a file (an image's archive): GET only
            if scope["method"] != "GET":
                await respond(
                    send, 405, json.dumps({"message": "files are read with GET"}).encode(), json_type
                )
                return
            status, found = await route.file(header, scope["path"], scope["headers"])
            if isinstance(found, bytes):
                await respond(send, status, found, json_type)
                return
            octets = [(b"content-type", b"application/octet-stream")]
            await respond_stream(send, 200, _file_chunks(found), octets)
            return
        why = "peer calls are POST" if scope["method"] != "POST" else route.precheck(header)
        if why is not None:
            await respond(send, 403, json.dumps({"message": why}).encode(), json_type)
            return
        try:
            body = await _read_body(scope, receive, peers.MAX_BODY_BYTES)
        except BodyTooLarge:
            message = f"a peer call is at most {peers.MAX_BODY_BYTES} bytes"
            await respond(send, 413, json.dumps({"message": message}).encode(), json_type)
            return
        status, answer = await route.handle(header, body, scope["headers"])
        await respond(send, status, answer, json_type)

    async def _forwarded(
        self, route: PeerRoute, header: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """An invocation or a response stream another front end holds no share of (``api/forward.py``):
        authenticated by its MAC, then run as this front end's own (the caller checked its signature and
        IAM); a stream goes out as it comes."""
        json_type = [(b"content-type", b"application/json")]
        why = route.precheck(header)
        if why is None:
            try:
                body = await _read_body(scope, receive, self._p.payload_limit_bytes)
            except BodyTooLarge:
                body, why = b"", "a forwarded invocation's body is over the payload limit"
            else:
                why = route.check(header, body, scope["path"], scope["headers"])
        if why is not None:
            await respond(send, 403, json.dumps({"message": why}).encode(), json_type)
            return
        request_id, started, headers = _request_ids.next(), time.perf_counter(), scope["headers"]
        spill = spilled(headers)  # refused at once without spare capacity here
        try:
            if scope["path"].startswith(_PEER_INVOKE):
                endpoint = scope["path"][len(_PEER_INVOKE) :]
                await self._p.runtime.invoke(
                    send, request_id, endpoint, headers, body, started, forwarded=True, spilled=spill
                )
            elif self._p.stream_runtime is None:
                raise RuntimeValidationError(
                    "This front end does not serve InvokeEndpointWithResponseStream."
                )
            else:
                endpoint = scope["path"][len(_PEER_STREAM) :]
                await self._p.stream_runtime.invoke_stream(
                    send, receive, request_id, endpoint, headers, body, started, forwarded=True, spilled=spill
                )
        except Exception as exc:  # before any answer: the runtime's error, relayed as it is
            await runtime_failure(send, request_id, exc)

    async def _body(self, scope: Scope, receive: Receive, request_id: str, path: str) -> bytes:
        limit = MAX_JSON_BODY_BYTES if path == "/" else _CONTROL_BODY_LIMIT
        try:
            return await _read_body(scope, receive, limit)
        except BodyTooLarge:
            raise ValidationException(
                f"Request {request_id} has oversize body (at most {limit} bytes)."
            ) from None

    def _runtime_target(
        self,
        access_key_id: str,
        method: str,
        path: str,
        suffix: str,
        operation: str = "",
        location: str = "",
    ) -> str:
        """The endpoint a runtime request names, once the caller may invoke it (and read ``location``, an
        asynchronous request's input)."""
        name = _endpoint_name(path, suffix)
        if self._p.authorize is not None:  # the access is checked first, as before the name
            self._p.authorize(
                Access(access_key_id, "runtime", "sagemaker", operation, name or "", input_location=location)
            )
        if name is None or method != "POST":
            raise RuntimeValidationError(f"No runtime operation at {method} {path}.")
        return name

    async def _rest(self, send: Send, request_id: str, scope: Scope, sub_path: str, body: bytes) -> None:
        handler = self._p.rest_routes.get(sub_path.split("/", 1)[0])
        if handler is None:
            raise UnknownOperationException(f"No zeroscale API at {REST_PREFIX}{sub_path}.")
        request = RestRequest(scope["method"], sub_path, rest_query(scope), scope["headers"], body)
        status, content_type, payload = await handler(request)
        headers = [(b"content-type", content_type.encode()), (b"x-amzn-requestid", request_id.encode())]
        await respond(send, status, payload, headers)

    @staticmethod
    def _access(
        access_key_id: str,
        scope: Scope,
        target: str,
        service: JsonService,
        body: bytes,
        form: dict[str, str] | None,
    ) -> Access:
        path: str = scope["path"]
        if form is not None:
            return Access(access_key_id, "query", "iam", params=form)
        if path.startswith(REST_PREFIX):
            return rest_access(access_key_id, scope, path[len(REST_PREFIX) :])
        operation = (
            target[len(service.target_prefix) :] if target.startswith(service.target_prefix) else target
        )
        return Access(access_key_id, "json", service.signing_name, operation, body=body)

    def _service(self, target: str) -> JsonService:
        for service in self._p.json_services:
            if target.startswith(service.target_prefix):
                return service
        return self._default_service

    async def _unsigned_get(self, scope: Scope, send: Send, path: str, request_id: str) -> None:
        if path == "/metrics":
            wanted = self._p.metrics_authorization
            if wanted is not None and not _authorized(scope, wanted):
                challenge = [(b"www-authenticate", b'Bearer realm="zeroscale metrics"')]
                text = b"GET /metrics needs 'Authorization: Bearer <token>' (--metrics-token-file's).\n"
                await respond(send, 401, text, [(b"content-type", b"text/plain"), *challenge])
                return
            headers = [(b"content-type", Metrics.content_type.encode())]
            await respond_stream(send, 200, self._p.metrics.stream(), headers)
        elif path in ("/ping", "/healthz"):
            await respond(send, 200, b"ok\n", [(b"content-type", b"text/plain")])
        else:
            await control_error(send, request_id, UnknownOperationException(f"No operation at GET {path}."))


def _sigv4(scope: Scope) -> bool:
    """Whether the request carries a SigV4 signature (in its Authorization header or its query), which the
    route it goes to checks before it does anything."""
    for name, value in scope["headers"]:
        if name.lower() == b"authorization" and value.startswith(sigv4.ALGORITHM.encode()):
            return True
    return b"X-Amz-Signature=" in scope.get("query_string", b"")


def _unsigned_action(scope: Scope) -> bool:
    """An SNS-style action served without a signature (a subscription's confirmation link)."""
    try:
        return parse(scope.get("query_string", b"")).get("Action") in UNSIGNED_ACTIONS
    except ZeroscaleError:  # not UTF-8: no action at all
        return False


async def _misdirected(send: Send, scope: Scope) -> None:
    """421 for a request whose Host names another server: what a page that rebound its DNS name to this
    server's address would read."""
    host = next((v for k, v in scope["headers"] if k.lower() == b"host"), b"").decode("latin-1")[:255]
    text = (
        f"Host {host!r} is not a name of this server: without a signature it answers only its own names "
        "(localhost, its IP addresses, its hostname; a guard against DNS rebinding). Start it with "
        "--allowed-host NAME to answer another.\n"
    )
    await respond(send, 421, text.encode(), [(b"content-type", b"text/plain; charset=utf-8")])


def _a_browsers(scope: Scope) -> bool:
    """A bare request a browser makes: no query (an API's GET has its Action there), no signature, and it
    accepts HTML."""
    if scope.get("query_string"):
        return False
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    names = {k.lower(): v for k, v in headers}
    return b"authorization" not in names and b"text/html" in names.get(b"accept", b"")


def _authorized(scope: Scope, wanted: bytes) -> bool:
    """Whether the request's one Authorization header is ``wanted`` (compared in constant time)."""
    given = [value for name, value in scope["headers"] if name.lower() == b"authorization"]
    return len(given) == 1 and hmac.compare_digest(given[0], wanted)


def _endpoint_name(path: str, suffix: str = _INVOCATIONS_SUFFIX) -> str | None:
    if not path.endswith(suffix):
        return None
    name = path[len(_RUNTIME_PREFIX) : -len(suffix)]
    return name if name and "/" not in name else None


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    """A file's bytes a megabyte at a time, read off the event loop; the file is removed at the end."""
    try:
        with path.open("rb") as f:
            while chunk := await asyncio.to_thread(f.read, 1024 * 1024):
                yield chunk
    finally:
        path.unlink(missing_ok=True)


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
        if not message.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
