"""The console's ASGI app in process, over a fake backend: what needs a session, CSRF and Origin checks,
expiry, and that each API route hands the request to the backend's own tables unchanged."""

from __future__ import annotations

import json
from collections.abc import Awaitable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from zeroscale.api.wire import Headers, Send, respond
from zeroscale.console import Backend, Console
from zeroscale.console.app import COOKIE
from zeroscale.console.sessions import Sessions
from zeroscale.errors import ModelError, RuntimeValidationError, ValidationException
from zeroscale.metrics.load import PoolLoad

KEY, SECRET = "AKIDCONSOLE", "console-secret"


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeService:
    target_prefix: str
    signing_name: str
    calls: list[tuple[str, bytes]] = field(default_factory=list)

    def call(self, target: str, body: bytes) -> dict[str, Any] | Awaitable[dict[str, Any] | None]:
        self.calls.append((target, body))
        if target.endswith("Bad"):
            raise ValidationException("Value 'x' at 'modelName' failed to satisfy constraint.")
        if target.endswith("Async"):

            async def later() -> dict[str, Any]:
                return {"Async": True}

            return later()
        return {"Target": target, "Params": json.loads(body or b"{}")}


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[-1] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class Harness:
    def __init__(self, db: Path) -> None:
        self.clock = Clock()
        self.sagemaker = FakeService("SageMaker.", "sagemaker")
        self.logs = FakeService("Logs_20140328.", "logs")
        self.invocations: list[tuple[str, Headers, bytes]] = []
        self.rest_calls: list[Any] = []
        self.async_invocations: list[tuple[str, Headers]] = []

        async def invoke(
            send: Send, rid: str, endpoint: str, headers: Headers, body: bytes, t: float
        ) -> None:
            self.invocations.append((endpoint, headers, body))
            if endpoint == "broken":
                raise ModelError("Received server error (500)", original_status=500, original_message="boom")
            await respond(send, 200, b"[1]", [(b"content-type", b"application/json")])

        async def invoke_async(send: Send, rid: str, endpoint: str, headers: Headers) -> None:
            self.async_invocations.append((endpoint, headers))
            if endpoint == "not-async":
                raise RuntimeValidationError("Endpoint not-async is not asynchronous.")
            await respond(send, 202, b'{"InferenceId": "i-1"}', [(b"content-type", b"application/json")])

        async def usage(request: Any) -> tuple[int, str, bytes]:
            self.rest_calls.append(request)
            return (
                200,
                "application/json",
                json.dumps({"path": request.path, "query": request.query}).encode(),
            )

        pools = [
            PoolLoad("demo", "AllTraffic", 5, 0, 1024, 2, 1, 0, (80.0, 0.0), False),
            PoolLoad("other", "AllTraffic", 5, 0, 1024, 1, 0, 0, (), False),
        ]
        self.backend = Backend(
            json_services=[self.sagemaker, self.logs],
            rest_routes={"usage": usage},
            invoke=invoke,
            invoke_async=invoke_async,
            lookup_secret={KEY: SECRET}.get,
            loads=lambda: pools,
            payload_limit_bytes=100,
            region="eu-west-1",
            memory_sizes_mb=(1024, 2048),
        )
        self.sessions = Sessions(
            self.backend.lookup_secret, f"sqlite:///{db}", idle_s=60, absolute_s=600, clock=self.clock
        )
        self.console = Console(self.backend, self.sessions)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        query: str = "",
    ) -> Response:
        all_headers = {"host": "console.test", **(headers or {})}
        scope: MutableMapping[str, Any] = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in all_headers.items()],
            "client": ("127.0.0.1", 5555),
            "scheme": "http",
        }
        sent = False

        async def receive() -> MutableMapping[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        messages: list[MutableMapping[str, Any]] = []

        async def send(message: MutableMapping[str, Any]) -> None:
            messages.append(message)

        await self.console(scope, receive, send)
        start = messages[0]
        out: dict[str, list[str]] = {}
        for k, v in start["headers"]:
            out.setdefault(k.decode().lower(), []).append(v.decode())
        return Response(start["status"], out, b"".join(m.get("body", b"") for m in messages[1:]))

    async def sign_in(self) -> tuple[str, str]:
        resp = await self.request(
            "POST",
            "/console/api/session",
            json.dumps({"AccessKeyId": KEY, "SecretAccessKey": SECRET}).encode(),
        )
        assert resp.status == 200, resp.body
        cookie = resp.header("set-cookie") or ""
        return cookie.split(";")[0].split("=", 1)[1], resp.json()["CsrfToken"]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path / "sessions.db")


def signed(sid: str, csrf: str | None = None, **extra: str) -> dict[str, str]:
    headers = {"cookie": f"other=1; {COOKIE}={sid}", **extra}
    if csrf is not None:
        headers["x-csrf-token"] = csrf
    return headers


async def test_sign_in_sets_a_strict_httponly_cookie_and_answers_the_session(h: Harness) -> None:
    resp = await h.request(
        "POST", "/console/api/session", json.dumps({"AccessKeyId": KEY, "SecretAccessKey": SECRET}).encode()
    )
    assert resp.status == 200
    cookie = resp.header("set-cookie") or ""
    attributes = [a.strip() for a in cookie.split(";")]
    assert attributes[0].startswith(f"{COOKIE}=")
    assert {"HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age=600"} <= set(attributes)
    doc = resp.json()
    assert doc["AccessKeyId"] == KEY and doc["Region"] == "eu-west-1" and doc["MemorySizesMB"] == [1024, 2048]
    assert SECRET not in resp.body.decode()
    assert resp.header("cache-control") == "no-store"
    assert "frame-ancestors 'none'" in (resp.header("content-security-policy") or "")


@pytest.mark.parametrize(
    "body",
    [
        {"AccessKeyId": KEY, "SecretAccessKey": "wrong"},
        {"AccessKeyId": "AKIDNOBODY", "SecretAccessKey": SECRET},
    ],
)
async def test_wrong_credentials_get_a_clear_401_and_no_cookie(h: Harness, body: dict[str, str]) -> None:
    resp = await h.request("POST", "/console/api/session", json.dumps(body).encode())
    assert resp.status == 401
    assert resp.json() == {
        "__type": "SignInFailed",
        "message": "The access key ID or the secret access key is not correct.",
    }
    assert resp.header("set-cookie") is None


async def test_malformed_sign_in_is_a_validation_error(h: Harness) -> None:
    for body in (b"", b"not json", b"[]", json.dumps({"AccessKeyId": KEY}).encode()):
        resp = await h.request("POST", "/console/api/session", body)
        assert resp.status == 400, body
        assert resp.json()["__type"] == "ValidationException"


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", "/console/api/session", ""),
        ("POST", "/console/api/sagemaker/ListEndpoints", ""),
        ("POST", "/console/api/logs/FilterLogEvents", ""),
        ("GET", "/console/api/v1/usage", ""),
        ("GET", "/console/api/load", "endpoint=demo"),
        ("POST", "/console/api/invoke/demo", ""),
        ("POST", "/console/api/invoke-async/demo", ""),
        ("DELETE", "/console/api/session", ""),
        ("GET", "/console/api/nothing-here", ""),
    ],
)
async def test_no_api_answers_without_a_session(h: Harness, method: str, path: str, query: str) -> None:
    resp = await h.request(method, path, b"{}", query=query)
    assert resp.status == 401
    assert resp.json()["__type"] == "NotSignedIn"
    assert not h.sagemaker.calls and not h.logs.calls and not h.invocations and not h.rest_calls
    sid, _ = await h.sign_in()
    h.sessions.sign_out(sid)  # an ended session is no session
    resp = await h.request(method, path, b"{}", headers=signed(sid), query=query)
    assert resp.status == 401


async def test_pages_redirect_to_sign_in_without_a_session(h: Harness) -> None:
    for path in (
        "/console",
        "/console/",
        "/console/endpoints/demo",
        "/console/usage",
        "/console/models/create",
    ):
        resp = await h.request("GET", path, query="tab=1")
        assert resp.status == 303, path
        assert resp.header("location") == "/console/signin?next=" + (path.replace("/", "%2F") + "%3Ftab%3D1")
        assert resp.body == b""
    sign_in_page = await h.request("GET", "/console/signin")
    assert sign_in_page.status == 200 and b"<main" in sign_in_page.body
    sid, _ = await h.sign_in()
    page = await h.request("GET", "/console/endpoints/demo", headers=signed(sid))
    assert page.status == 200 and page.header("content-type") == "text/html; charset=utf-8"


async def test_static_files_with_etags_and_nothing_outside_them(h: Harness) -> None:
    resp = await h.request("GET", "/console/static/js/main.js")
    assert resp.status == 200 and resp.header("content-type") == "text/javascript; charset=utf-8"
    etag = resp.header("etag") or ""
    again = await h.request("GET", "/console/static/js/main.js", headers={"if-none-match": etag})
    assert again.status == 304 and again.body == b""
    lib = await h.request("GET", "/console/static/vendor/uplot/uPlot.iife.min.js")
    assert lib.status == 200 and b"uPlot" in lib.body[:200]
    for name in ("../app.py", "..%2Fapp.py", "js/../../app.py", "nope.js", "", "js"):
        assert (await h.request("GET", "/console/static/" + name)).status == 404, name


async def test_every_change_needs_the_csrf_token(h: Harness) -> None:
    sid, csrf = await h.sign_in()
    path = "/console/api/sagemaker/CreateModel"
    for token in (None, "", "wrong", csrf[:-1]):
        resp = await h.request("POST", path, b"{}", headers=signed(sid, token))
        assert resp.status == 403 and resp.json()["__type"] == "InvalidCsrfToken"
    resp = await h.request("DELETE", "/console/api/session", headers=signed(sid))
    assert resp.status == 403
    assert not h.sagemaker.calls
    ok = await h.request("POST", path, b'{"ModelName": "m"}', headers=signed(sid, csrf))
    assert ok.status == 200
    assert h.sagemaker.calls == [("SageMaker.CreateModel", b'{"ModelName": "m"}')]


async def test_cross_site_changes_are_refused_even_with_the_token(h: Harness) -> None:
    sid, csrf = await h.sign_in()
    for extra in ({"origin": "http://evil.test"}, {"sec-fetch-site": "cross-site"}):
        resp = await h.request("POST", "/console/api/sagemaker/ListModels", b"{}", signed(sid, csrf, **extra))
        assert resp.status == 403, extra
        body = json.dumps({"AccessKeyId": KEY, "SecretAccessKey": SECRET}).encode()
        assert (await h.request("POST", "/console/api/session", body, extra)).status == 403
    same = signed(sid, csrf, origin="http://console.test", **{"sec-fetch-site": "same-origin"})
    assert (await h.request("POST", "/console/api/sagemaker/ListModels", b"{}", same)).status == 200


async def test_sessions_expire_and_sign_out_clears_the_cookie(h: Harness) -> None:
    sid, csrf = await h.sign_in()
    h.clock.now += 59
    assert (await h.request("GET", "/console/api/session", headers=signed(sid))).status == 200
    h.clock.now += 61
    assert (await h.request("GET", "/console/api/session", headers=signed(sid))).status == 401
    assert (await h.request("GET", "/console/models", headers=signed(sid))).status == 303
    sid, csrf = await h.sign_in()
    out = await h.request("DELETE", "/console/api/session", headers=signed(sid, csrf))
    assert out.status == 204
    assert "Max-Age=0" in (out.header("set-cookie") or "")
    assert (await h.request("GET", "/console/api/session", headers=signed(sid))).status == 401


async def test_json_operations_reach_the_services_tables_and_their_errors(h: Harness) -> None:
    sid, csrf = await h.sign_in()
    ok = await h.request("POST", "/console/api/logs/GetLogEvents", b'{"a": 1}', signed(sid, csrf))
    assert ok.status == 200 and ok.json() == {"Target": "Logs_20140328.GetLogEvents", "Params": {"a": 1}}
    assert ok.header("content-type") == "application/x-amz-json-1.1"
    later = await h.request("POST", "/console/api/sagemaker/DoAsync", b"", signed(sid, csrf))
    assert later.json() == {"Async": True}
    bad = await h.request("POST", "/console/api/sagemaker/DoBad", b"{}", signed(sid, csrf))
    assert bad.status == 400
    assert bad.json() == {
        "__type": "ValidationException",
        "message": "Value 'x' at 'modelName' failed to satisfy constraint.",
    }
    for path in ("/console/api/ec2/RunInstances", "/console/api/sagemaker/a/b", "/console/api/sagemaker/"):
        resp = await h.request("POST", path, b"{}", signed(sid, csrf))
        assert resp.status == 400 and resp.json()["__type"] == "UnknownOperationException", path
    get = await h.request("GET", "/console/api/sagemaker/ListModels", headers=signed(sid))
    assert get.status == 400


async def test_rest_routes_load_and_invoke(h: Harness) -> None:
    sid, csrf = await h.sign_in()
    usage = await h.request("GET", "/console/api/v1/usage", headers=signed(sid), query="group_by=variant")
    assert usage.json() == {"path": "usage", "query": {"group_by": ["variant"]}}
    missing = await h.request("GET", "/console/api/v1/jobs", headers=signed(sid))
    assert missing.status == 400
    load = await h.request("GET", "/console/api/load", headers=signed(sid), query="endpoint=DEMO")
    pools = load.json()["Pools"]
    assert [(p["VariantName"], p["Workers"], p["WorkerMemoryMB"]) for p in pools] == [
        ("AllTraffic", 2, [80.0, 0.0])
    ]
    headers = signed(sid, csrf, **{"content-type": "text/csv", "accept": "application/json"})
    resp = await h.request("POST", "/console/api/invoke/demo", b"1,2", headers)
    assert resp.status == 200 and resp.body == b"[1]"
    assert (resp.header("server-timing") or "").startswith("invoke;dur=")
    endpoint, forwarded, body = h.invocations[-1]
    assert endpoint == "demo" and body == b"1,2"
    assert dict(forwarded) == {b"content-type": b"text/csv", b"accept": b"application/json"}  # no cookie
    broken = await h.request("POST", "/console/api/invoke/broken", b"x", signed(sid, csrf))
    assert broken.status == 424 and broken.header("x-amzn-errortype") == "ModelError:"
    assert broken.json()["OriginalStatusCode"] == 500
    assert (broken.header("server-timing") or "").startswith("invoke;dur=")
    big = await h.request("POST", "/console/api/invoke/demo", b"x" * 101, signed(sid, csrf))
    assert big.status == 400 and big.header("x-amzn-errortype") == "ValidationError:"
    assert len(h.invocations) == 2


async def test_invoke_async_forwards_only_the_sagemaker_headers_with_the_session_and_csrf(h: Harness) -> None:
    sid, csrf = await h.sign_in()
    params = {
        "x-amzn-sagemaker-inputlocation": "s3://bucket/in.json",
        "x-amzn-sagemaker-content-type": "application/json",
        "content-type": "text/plain",
    }
    refused = await h.request("POST", "/console/api/invoke-async/demo", b"", signed(sid, **params))
    assert refused.status == 403 and not h.async_invocations
    resp = await h.request("POST", "/console/api/invoke-async/demo", b"", signed(sid, csrf, **params))
    assert resp.status == 202 and resp.json() == {"InferenceId": "i-1"}
    endpoint, forwarded = h.async_invocations[-1]
    assert endpoint == "demo"
    assert dict(forwarded) == {  # no cookie, no CSRF token, no plain Content-Type
        b"x-amzn-sagemaker-inputlocation": b"s3://bucket/in.json",
        b"x-amzn-sagemaker-content-type": b"application/json",
    }
    wrong = await h.request("POST", "/console/api/invoke-async/not-async", b"", signed(sid, csrf))
    assert wrong.status == 400 and wrong.header("x-amzn-errortype") == "ValidationError:"
    assert wrong.json()["message"] == "Endpoint not-async is not asynchronous."
    unserved = (("GET", "invoke-async/demo"), ("POST", "invoke-async/"), ("POST", "invoke-async/a/b"))
    for method, path in unserved:
        other = await h.request(method, "/console/api/" + path, b"", signed(sid, csrf))
        assert other.status == 400 and other.json()["__type"] == "UnknownOperationException", path
    assert len(h.async_invocations) == 2
