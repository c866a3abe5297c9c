"""The web console at ``/console``: static pages plus a small session-authenticated API in front of the
server's own operations.

- ``/console/static/...``: the page's files (no data; served to anyone).
- ``/console/api/session``: GET the session, POST to sign in with an access key and secret, DELETE to
  sign out.
- ``/console/api/sagemaker/<Operation>``, ``/console/api/logs/<Operation>`` (POST, JSON input): the JSON
  1.1 operation tables boto3's requests reach, validation included, answered in the same JSON 1.1 shape.
- ``/console/api/v1/<path>``: zeroscale's own REST routes (``/zeroscale/v1/``: metrics, usage, images).
- ``/console/api/invoke/<EndpointName>`` (POST): the runtime's InvokeEndpoint, answered as the runtime
  answers, with a ``Server-Timing`` header.
- ``/console/api/invoke-async/<EndpointName>`` (POST, no body): InvokeEndpointAsync with the browser's
  ``X-Amzn-SageMaker-*`` headers (InputLocation, ContentType, ...), answered as the runtime answers.
- ``/console/api/load?endpoint=NAME`` (GET): the endpoint's live worker pools.
- any other ``/console/...`` path is the single page, only with a session (else a redirect to sign-in).

Every API answer other than sign-in needs a live session cookie (401 otherwise), and every request other
than GET needs the session's CSRF token in ``X-CSRF-Token`` and, where the browser says, a same-origin
``Origin`` (403 otherwise)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from zeroscale.api.app import RestRequest, rest_access, rest_query
from zeroscale.api.async_invoke import input_location
from zeroscale.api.wire import Headers, Send, control_error, control_ok, respond, runtime_error
from zeroscale.console.assets import Asset, Assets
from zeroscale.console.backend import Backend
from zeroscale.console.sessions import WRONG_CREDENTIALS, Session, Sessions, SignInRefused
from zeroscale.errors import (
    InternalFailure,
    RuntimeValidationError,
    UnknownOperationException,
    ValidationException,
    ZeroscaleError,
)
from zeroscale.iam.authz import Access
from zeroscale.store.db import database_failure

log = logging.getLogger("zeroscale.console")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

PREFIX = "/console"
COOKIE = "zeroscale_console"
CSRF_HEADER = b"x-csrf-token"
_API = PREFIX + "/api/"
MAX_KEY_CHARS = 128  # IAM's AccessKeyIdType (an admin key from the environment longer than this: no console)
MAX_SECRET_CHARS = 1024
_STATIC = PREFIX + "/static/"
_SIGNIN = PREFIX + "/signin"
_BODY_LIMIT = 16 * 1024 * 1024
_SAFE_METHODS = ("GET", "HEAD")
_INVOKE_HEADERS = (
    b"content-type",
    b"accept",
    b"x-amzn-sagemaker-custom-attributes",
    b"x-amzn-sagemaker-target-variant",
    b"x-amzn-sagemaker-inference-id",
)
_SAGEMAKER_HEADER = b"x-amzn-sagemaker-"
_SECURITY_HEADERS: Headers = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]
_NO_STORE = (b"cache-control", b"no-store")


class NotSignedIn(ZeroscaleError):
    code = "NotSignedIn"
    status = 401


class CsrfRefused(ZeroscaleError):
    code = "InvalidCsrfToken"
    status = 403


class SignInFailed(ZeroscaleError):
    code = "SignInFailed"
    status = 401


class TooManyAttempts(ZeroscaleError):
    code = "TooManyAttempts"
    status = 429


def _with_headers(send: Send, extra: Headers) -> Send:
    async def wrapped(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


class Console:
    def __init__(self, backend: Backend, sessions: Sessions, assets: Assets | None = None):
        self._b = backend
        self.sessions = sessions  # in the database: blocking, so called in threads
        self._assets = assets if assets is not None else Assets()
        index = self._assets.get("index.html")
        if index is None:
            raise RuntimeError("the console's index.html is missing from the package")
        self._index = index

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        send = _with_headers(send, _SECURITY_HEADERS)
        request_id = str(uuid.uuid4())
        try:
            if path.startswith(_STATIC):
                await self._static(scope, send, path[len(_STATIC) :])
            elif path.startswith(_API):
                await self._api(scope, receive, send, request_id, method, path[len(_API) :])
            elif method in _SAFE_METHODS:
                await self._page(scope, send, path)
            else:
                raise UnknownOperationException(f"No operation at {method} {path}.")
        except ZeroscaleError as err:
            await control_error(_with_headers(send, [_NO_STORE]), request_id, err)
        except Exception as exc:
            failure = database_failure(exc)  # as through boto3 (``api/app.py``): 503, the database's reason
            if failure is None:
                log.exception("console request %s failed", request_id)
            error = failure or InternalFailure(f"Internal failure (request {request_id}).")
            await control_error(_with_headers(send, [_NO_STORE]), request_id, error)

    # ---- pages and files ----
    async def _page(self, scope: Scope, send: Send, path: str) -> None:
        if path != _SIGNIN and await self._session(scope) is None:
            target = path + (
                "?" + scope["query_string"].decode("latin-1") if scope.get("query_string") else ""
            )
            location = _SIGNIN + "?" + urllib.parse.urlencode({"next": target})
            await respond(send, 303, b"", [(b"location", location.encode()), _NO_STORE])
            return
        await self._asset(scope, send, self._index, cache=False)

    async def _static(self, scope: Scope, send: Send, name: str) -> None:
        asset = self._assets.get(name)
        if asset is None or scope["method"] not in _SAFE_METHODS:
            await respond(send, 404, b"Not found\n", [(b"content-type", b"text/plain")])
            return
        await self._asset(scope, send, asset, cache=True)

    async def _asset(self, scope: Scope, send: Send, asset: Asset, *, cache: bool) -> None:
        headers: Headers = [(b"content-type", asset.content_type.encode())]
        if not cache:
            headers.append(_NO_STORE)
            await respond(send, 200, asset.body, headers)
            return
        headers += [(b"etag", asset.etag.encode()), (b"cache-control", b"no-cache")]
        if _header(scope, b"if-none-match") == asset.etag:
            await respond(send, 304, b"", headers)
            return
        await respond(send, 200, asset.body, headers)

    # ---- the API ----
    async def _api(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, method: str, sub: str
    ) -> None:
        send = _with_headers(send, [_NO_STORE])
        unsafe = method not in _SAFE_METHODS
        if unsafe:
            _check_origin(scope)
        if sub == "session" and method == "POST":
            await self._sign_in(scope, receive, send)
            return
        session = await self._session(scope)
        if session is None:
            raise NotSignedIn("Sign in to the console first: there is no session, or it has ended.")
        if unsafe and not Sessions.csrf_ok(session, _header(scope, CSRF_HEADER)):
            raise CsrfRefused("The request's CSRF token is missing or wrong; reload the page.")
        if sub == "session":
            await self._session_api(scope, send, method, session)
            return
        key = session.access_key_id
        service_name, _, rest = sub.partition("/")
        if service_name == "invoke" and method == "POST" and rest and "/" not in rest:
            self._authorize(Access(key, "runtime", "sagemaker", path=rest))
            await self._invoke(scope, receive, send, request_id, rest)  # scope["path"] is decoded
            return
        if service_name == "invoke-async" and method == "POST" and rest and "/" not in rest:
            location = input_location(scope["headers"])
            self._authorize(
                Access(key, "runtime", "sagemaker", "InvokeEndpointAsync", rest, input_location=location)
            )
            await self._invoke_async(scope, send, request_id, rest)
            return
        body = await _read_body(scope, receive, _BODY_LIMIT, request_id, runtime=False)
        access: Access | None = None
        error_code = ""
        try:
            if service_name == "v1" and rest:
                access = rest_access(key, scope, rest)
                self._authorize(access)
                await self._rest(scope, send, request_id, rest, body)
            elif service_name == "load" and method == "GET" and not rest:
                access = Access(key, "json", "sagemaker", "DescribeEndpoint", body=_endpoint_doc(scope))
                self._authorize(access)
                await self._load(scope, send, request_id)
            elif method == "POST" and rest and "/" not in rest and self._b.service(service_name) is not None:
                access = Access(key, "json", service_name, rest, body=body)
                self._authorize(access)
                await self._json(send, request_id, service_name, rest, body)
            else:
                raise UnknownOperationException(f"No console API at {method} {_API}{sub}.")
        except ZeroscaleError as err:
            error_code = err.code
            raise
        except Exception:
            error_code = InternalFailure.code
            raise
        finally:
            if access is not None and self._b.audit is not None:  # as through boto3 (``api/app.py``)
                self._b.audit(access, scope, "", error_code)

    def _authorize(self, access: Access) -> None:
        """The same IAM check boto3's request would meet (AccessDeniedException naming user, action and
        resource; the admin's key passes everything), and for a control-plane call the same rate."""
        if self._b.throttle is not None and access.kind != "runtime":
            self._b.throttle(access.access_key_id, "ThrottlingException")
        if self._b.authorize is not None:
            self._b.authorize(access)

    async def _sign_in(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(scope, receive, 64 * 1024, "", runtime=False)
        try:
            doc = json.loads(body or b"{}")
            key, secret = doc.get("AccessKeyId"), doc.get("SecretAccessKey")
        except (ValueError, AttributeError):
            key = secret = None
        if not isinstance(key, str) or not isinstance(secret, str) or not key or not secret:
            raise ValidationException("Give both an access key ID and a secret access key.")
        key = key.strip()
        if len(key) > MAX_KEY_CHARS or not key.isascii() or len(secret) > MAX_SECRET_CHARS:
            # No key has that form: refused without a record (an audit's 15,000 failures with keys of 60 KB,
            # each kept a minute for the throttle, held a gigabyte of the server's memory)
            raise SignInFailed(WRONG_CREDENTIALS)
        if self._b.throttle is not None and self.sessions.known(key):
            # a sign-in writes a session: held to its key's rate, as the key's calls are (an unknown key's
            # tries are the throttle's of wrong secrets, and take no bucket of the key rates)
            self._b.throttle(key, "ThrottlingException")
        client = (scope.get("client") or ("", 0))[0]
        try:
            session_id, session = await asyncio.to_thread(self.sessions.sign_in, key, secret, client)
        except SignInRefused as refused:
            raise (TooManyAttempts if refused.throttled else SignInFailed)(refused.message) from None
        max_age = int(self.sessions.absolute_s)
        cookie = f"{COOKIE}={session_id}; Path={PREFIX}; HttpOnly; SameSite=Strict; Max-Age={max_age}"
        if scope.get("scheme") == "https":
            cookie += "; Secure"
        await self._session_doc(send, session, [(b"set-cookie", cookie.encode())])

    async def _session_api(self, scope: Scope, send: Send, method: str, session: Session) -> None:
        if method == "GET":
            await self._session_doc(send, session, [])
        elif method == "DELETE":
            await asyncio.to_thread(self.sessions.sign_out, _cookie(scope))
            expired = f"{COOKIE}=; Path={PREFIX}; HttpOnly; SameSite=Strict; Max-Age=0"
            await respond(send, 204, b"", [(b"set-cookie", expired.encode())])
        else:
            raise UnknownOperationException(f"No console API at {method} {_API}session.")

    async def _session_doc(self, send: Send, session: Session, headers: Headers) -> None:
        doc = {
            "AccessKeyId": session.access_key_id,
            "CsrfToken": session.csrf_token,
            "ExpiresAt": session.expires_at(self.sessions.idle_s, self.sessions.absolute_s),
            "IdleTimeoutSeconds": self.sessions.idle_s,
            "Region": self._b.region,
            "MemorySizesMB": list(self._b.memory_sizes_mb),
        }
        headers = [*headers, (b"content-type", b"application/json")]
        await respond(send, 200, json.dumps(doc).encode(), headers)

    async def _json(
        self, send: Send, request_id: str, service_name: str, operation: str, body: bytes
    ) -> None:
        service = self._b.service(service_name)
        assert service is not None
        result = service.call(service.target_prefix + operation, body)
        if not isinstance(result, dict):  # an async handler
            result = await result or {}
        await control_ok(send, request_id, result)

    async def _rest(self, scope: Scope, send: Send, request_id: str, sub_path: str, body: bytes) -> None:
        handler = self._b.rest_routes.get(sub_path.split("/", 1)[0])
        if handler is None:
            raise UnknownOperationException(f"No zeroscale API at /zeroscale/v1/{sub_path}.")
        request = RestRequest(scope["method"], sub_path, rest_query(scope), scope["headers"], body)
        status, content_type, payload = await handler(request)
        headers = [(b"content-type", content_type.encode()), (b"x-amzn-requestid", request_id.encode())]
        await respond(send, status, payload, headers)

    async def _invoke(
        self, scope: Scope, receive: Receive, send: Send, request_id: str, endpoint: str
    ) -> None:
        """InvokeEndpoint as the runtime answers it (errors in its REST shape), timed."""
        started = time.perf_counter()
        headers = [(k, v) for k, v in scope["headers"] if k.lower() in _INVOKE_HEADERS]

        async def timed(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                took_ms = (time.perf_counter() - started) * 1000
                timing = (b"server-timing", f"invoke;dur={took_ms:.3f}".encode())
                message = {**message, "headers": [*message.get("headers", []), timing]}
            await send(message)

        try:
            body = await _read_body(scope, receive, self._b.payload_limit_bytes, request_id, runtime=True)
            await self._b.invoke(timed, request_id, endpoint, headers, body, started)
        except ZeroscaleError as err:
            await runtime_error(timed, request_id, err)

    async def _invoke_async(self, scope: Scope, send: Send, request_id: str, endpoint: str) -> None:
        """InvokeEndpointAsync as the runtime answers it: its parameters are the SageMaker headers."""
        headers = [(k, v) for k, v in scope["headers"] if k.lower().startswith(_SAGEMAKER_HEADER)]
        try:
            if self._b.invoke_async is None:
                raise RuntimeValidationError("This server does not serve InvokeEndpointAsync.")
            await self._b.invoke_async(send, request_id, endpoint, headers)
        except ZeroscaleError as err:
            await runtime_error(send, request_id, err)

    async def _load(self, scope: Scope, send: Send, request_id: str) -> None:
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        endpoint = (query.get("endpoint") or [""])[-1]
        if not endpoint:
            raise ValidationException("The query parameter 'endpoint' is required.")
        pools = [
            {
                "VariantName": p.variant,
                "MemorySizeInMB": p.memory_mb,
                "MaxConcurrency": p.max_concurrency,
                "ProvisionedConcurrency": p.provisioned,
                "Workers": p.workers,
                "Busy": p.busy,
                "Queued": p.queued,
                "WorkerMemoryMB": list(p.rss_mb),
                "Draining": p.draining,
            }
            for p in self._b.loads()
            if p.endpoint.lower() == endpoint.lower()
        ]
        await control_ok(send, request_id, {"EndpointName": endpoint, "Pools": pools})

    async def _session(self, scope: Scope) -> Session | None:
        return await asyncio.to_thread(self.sessions.get, _cookie(scope))


def _endpoint_doc(scope: Scope) -> bytes:
    """The live-workers view of one endpoint, as the DescribeEndpoint it stands for."""
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    return json.dumps({"EndpointName": (query.get("endpoint") or [""])[-1]}).encode()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _cookie(scope: Scope) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE:
            return value
    return None


def _check_origin(scope: Scope) -> None:
    """Refuse a change a browser says came from another site (SameSite=Strict already keeps the cookie off
    such requests; this also covers sign-in, which has no cookie yet)."""
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise CsrfRefused("Cross-site requests are refused.")
    origin = _header(scope, b"origin")
    if origin is not None:
        host = _header(scope, b"host") or ""
        if urllib.parse.urlsplit(origin).netloc != host:
            raise CsrfRefused("Cross-origin requests are refused.")


async def _read_body(scope: Scope, receive: Receive, limit: int, request_id: str, *, runtime: bool) -> bytes:
    declared = _header(scope, b"content-length")
    chunks: list[bytes] = []
    size = int(declared) if declared and declared.isdigit() else 0
    if size <= limit:
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                break
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)
    if runtime:
        raise RuntimeValidationError(f"Request {request_id} has oversize body.")
    raise ValidationException(f"The request body is larger than {limit} bytes.")
