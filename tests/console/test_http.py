"""The console on a real server, over plain HTTP (no browser): the session cookie's flags, no data or
operation without a session, CSRF refusals, and that the console reaches the very operation tables boto3
does (same validation, same errors, same resources)."""

from __future__ import annotations

import http.client
import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.exceptions import ClientError

from zeroscale.testing import ACCESS_KEY, SECRET_KEY, ServerProcess


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(
    server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return Answer(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


@dataclass
class Signed:
    cookie: str
    csrf: str

    def headers(self, csrf: bool = True, **extra: str) -> dict[str, str]:
        out = {"Cookie": self.cookie, **extra}
        if csrf:
            out["X-CSRF-Token"] = self.csrf
        return out


def sign_in(server: ServerProcess, secret: str = SECRET_KEY) -> tuple[Answer, Signed | None]:
    body = json.dumps({"AccessKeyId": ACCESS_KEY, "SecretAccessKey": secret}).encode()
    answer = call(server, "POST", "/console/api/session", body, {"Content-Type": "application/json"})
    if answer.status != 200:
        return answer, None
    cookie = answer.headers["Set-Cookie"].split(";")[0]
    return answer, Signed(cookie, answer.json()["CsrfToken"])


@pytest.fixture(scope="module")
def secret_model(console_server: ServerProcess, model_url: str) -> str:
    """A resource that must never show up in an answer without a session."""
    sm = console_server.client("sagemaker")
    sm.create_model(
        ModelName="unseen-model", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": model_url}
    )
    return "unseen-model"


def test_sign_in_cookie_is_httponly_strict_and_scoped(console_server: ServerProcess) -> None:
    answer, signed = sign_in(console_server)
    assert answer.status == 200 and signed is not None
    cookie = answer.headers["Set-Cookie"]
    attributes = {a.strip().split("=")[0] for a in cookie.split(";")[1:]}
    assert {"HttpOnly", "SameSite", "Path", "Max-Age"} <= attributes
    assert "SameSite=Strict" in cookie and "Path=/console" in cookie
    assert SECRET_KEY not in answer.body.decode()
    me = call(console_server, "GET", "/console/api/session", headers=signed.headers(csrf=False))
    assert me.status == 200 and me.json()["AccessKeyId"] == ACCESS_KEY


def test_wrong_secret_is_refused_with_a_clear_message(console_server: ServerProcess) -> None:
    answer, signed = sign_in(console_server, secret="not-the-secret")
    assert signed is None and answer.status == 401
    assert answer.json()["message"] == "The access key ID or the secret access key is not correct."
    assert "Set-Cookie" not in answer.headers


PAGES = [
    "/console",
    "/console/",
    "/console/models",
    "/console/models/unseen-model",
    "/console/models/create",
    "/console/endpoint-configs",
    "/console/endpoint-configs/x",
    "/console/endpoints",
    "/console/endpoints/x",
    "/console/endpoints/create",
    "/console/usage",
]
APIS = [
    ("GET", "/console/api/session"),
    ("POST", "/console/api/sagemaker/ListModels"),
    ("POST", "/console/api/sagemaker/DescribeModel"),
    ("POST", "/console/api/sagemaker/CreateModel"),
    ("POST", "/console/api/logs/DescribeLogGroups"),
    ("GET", "/console/api/v1/usage"),
    ("GET", "/console/api/v1/metrics?endpoint=x"),
    ("GET", "/console/api/v1/images"),
    ("GET", "/console/api/load?endpoint=x"),
    ("POST", "/console/api/invoke/x"),
    ("DELETE", "/console/api/session"),
]


def test_no_page_and_no_api_answers_without_a_session(
    console_server: ServerProcess, secret_model: str
) -> None:
    bogus = {"Cookie": "zeroscale_console=forged-session-id"}
    for headers in ({}, bogus):
        for page in PAGES:
            answer = call(console_server, "GET", page, headers=headers)
            assert answer.status == 303, page
            location = answer.headers["Location"]
            assert location == "/console/signin?" + urllib.parse.urlencode({"next": page})
            assert answer.body == b""
        for method, path in APIS:
            body = json.dumps({"ModelName": secret_model}).encode()
            answer = call(console_server, method, path, body, headers)
            assert answer.status == 401, (method, path)
            assert answer.json()["__type"] == "NotSignedIn"
            assert secret_model.encode() not in answer.body
    # the sign-in page and the static files hold no data
    page = call(console_server, "GET", "/console/signin")
    assert page.status == 200 and secret_model.encode() not in page.body
    assert call(console_server, "GET", "/console/static/js/api.js").status == 200
    # nothing was created on the way
    sm = console_server.client("sagemaker")
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == [secret_model]


def test_changes_without_the_csrf_token_are_refused(console_server: ServerProcess, model_url: str) -> None:
    _, signed = sign_in(console_server)
    assert signed is not None
    body = json.dumps(
        {"ModelName": "csrf-model", "PrimaryContainer": {"Image": "sklearn", "ModelDataUrl": model_url}}
    ).encode()
    path = "/console/api/sagemaker/CreateModel"
    no_token = call(console_server, "POST", path, body, signed.headers(csrf=False))
    wrong = call(console_server, "POST", path, body, {"Cookie": signed.cookie, "X-CSRF-Token": "guess"})
    cross = call(console_server, "POST", path, body, signed.headers(Origin="http://attacker.example"))
    for answer in (no_token, wrong, cross):
        assert answer.status == 403 and answer.json()["__type"] == "InvalidCsrfToken"
    sm = console_server.client("sagemaker")
    with pytest.raises(ClientError):
        sm.describe_model(ModelName="csrf-model")
    made = call(console_server, "POST", path, body, signed.headers(Origin=console_server.url))
    assert made.status == 200
    assert sm.describe_model(ModelName="csrf-model")["ModelArn"] == made.json()["ModelArn"]
    call(
        console_server,
        "POST",
        "/console/api/sagemaker/DeleteModel",
        b'{"ModelName": "csrf-model"}',
        signed.headers(),
    )


def test_same_validation_and_errors_as_boto3(console_server: ServerProcess) -> None:
    _, signed = sign_in(console_server)
    assert signed is not None
    params = {
        "EndpointConfigName": "bad-memory",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": "m",
                "ServerlessConfig": {"MemorySizeInMB": 1500, "MaxConcurrency": 1},
            }
        ],
    }
    answer = call(
        console_server,
        "POST",
        "/console/api/sagemaker/CreateEndpointConfig",
        json.dumps(params).encode(),
        signed.headers(),
    )
    with pytest.raises(ClientError) as boto_error:
        console_server.client("sagemaker").create_endpoint_config(**params)
    assert answer.status == 400
    assert answer.json()["__type"] == boto_error.value.response["Error"]["Code"]
    assert answer.json()["message"] == boto_error.value.response["Error"]["Message"]


def test_sign_out_ends_the_session(console_server: ServerProcess) -> None:
    _, signed = sign_in(console_server)
    assert signed is not None
    out = call(console_server, "DELETE", "/console/api/session", headers=signed.headers())
    assert out.status == 204 and "Max-Age=0" in out.headers["Set-Cookie"]
    again = call(console_server, "POST", "/console/api/sagemaker/ListModels", b"{}", signed.headers())
    assert again.status == 401
    assert call(console_server, "GET", "/console/models", headers=signed.headers()).status == 303


def test_a_scoped_user_sees_and_does_what_its_policies_allow(
    console_server: ServerProcess, secret_model: str
) -> None:
    """Once IAM users exist, the console follows the signed-in key's policies, as boto3 does."""
    iam = console_server.client("iam")
    iam.create_user(UserName="viewer")
    key = iam.create_access_key(UserName="viewer")["AccessKey"]
    iam.put_user_policy(
        UserName="viewer",
        PolicyName="read-models",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "sagemaker:List*", "Resource": "*"}],
            }
        ),
    )
    body = json.dumps({"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}).encode()
    answer = call(console_server, "POST", "/console/api/session", body, {"Content-Type": "application/json"})
    assert answer.status == 200
    signed = Signed(answer.headers["Set-Cookie"].split(";")[0], answer.json()["CsrfToken"])
    listed = call(console_server, "POST", "/console/api/sagemaker/ListModels", b"{}", signed.headers())
    assert listed.status == 200 and secret_model in listed.body.decode()
    create = json.dumps({"ModelName": "not-allowed", "PrimaryContainer": {"Image": "sklearn"}}).encode()
    refused = call(console_server, "POST", "/console/api/sagemaker/CreateModel", create, signed.headers())
    assert refused.status == 400 and refused.json()["__type"] == "AccessDeniedException"
    assert "user/viewer is not authorized to perform: sagemaker:CreateModel" in refused.json()["message"]
    described = call(
        console_server,
        "POST",
        "/console/api/sagemaker/DescribeModel",
        json.dumps({"ModelName": secret_model}).encode(),
        signed.headers(),
    )
    assert described.status == 400 and described.json()["__type"] == "AccessDeniedException"
    usage = call(console_server, "GET", "/console/api/v1/usage", None, signed.headers(csrf=False))
    assert usage.status == 400 and "zeroscale:GetUsage" in usage.json()["message"]
    invoked = call(console_server, "POST", "/console/api/invoke/anything", b"{}", signed.headers())
    assert invoked.status in (400, 403) and b"sagemaker:InvokeEndpoint" in invoked.body
    # The trail records what was done through the console as what is done through boto3, refusals too.
    _, admin = sign_in(console_server)
    assert admin is not None
    trail = call(console_server, "GET", "/console/api/v1/audit?user=viewer", None, admin.headers(csrf=False))
    seen = {(e["action"], e["outcome"]) for e in trail.json()["Events"]}
    assert {
        ("sagemaker:ListModels", "Success"),
        ("sagemaker:CreateModel", "Denied"),
        ("sagemaker:DescribeModel", "Denied"),
        ("zeroscale:GetUsage", "Denied"),
    } <= seen, seen


def test_the_servers_address_in_a_browser_leads_to_the_console(console_server: ServerProcess) -> None:
    browser = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    answer = call(console_server, "GET", "/", headers=browser)
    assert (answer.status, answer.headers["Location"]) == (302, "/console/")
    # an API's GET is not a browser's: an unsigned one still gets the API's own refusal
    assert call(console_server, "GET", "/?Action=ListTopics", headers=browser).status == 403
    assert call(console_server, "GET", "/").status != 302


def test_a_console_path_with_an_empty_part_is_refused_as_the_api_refuses_it(
    console_server: ServerProcess,
) -> None:
    """A security review's finding: the API refused images//prod-base/v1 (the policy check would read the
    image name "", the handler prod-base), the console's route to the same handlers did not, so a user
    denied image/prod-* could push over or delete it through the console."""
    iam = console_server.client("iam")
    iam.create_user(UserName="dave")
    arn = "arn:aws:zeroscale:us-east-1:000000000000:image"
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["zeroscale:PushImage", "zeroscale:DeleteImage"],
                "Resource": f"{arn}/*",
            },
            {"Effect": "Deny", "Action": "zeroscale:*", "Resource": f"{arn}/prod-*"},
        ]
    }
    iam.put_user_policy(UserName="dave", PolicyName="images", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName="dave")["AccessKey"]
    body = json.dumps({"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}).encode()
    answer = call(console_server, "POST", "/console/api/session", body, {"Content-Type": "application/json"})
    assert answer.status == 200, answer.body
    dave = Signed(answer.headers["Set-Cookie"].split(";")[0], answer.json()["CsrfToken"])
    for method in ("PUT", "DELETE"):
        path = "/console/api/v1/images//prod-base/v1"
        answer = call(console_server, method, path, b"x" if method == "PUT" else None, dave.headers())
        assert answer.status == 400 and b"a path has no empty parts" in answer.body, (method, answer)
        denied = call(console_server, method, path.replace("//", "/"), None, dave.headers())
        assert denied.status in (400, 403) and b"explicit deny" in denied.body, (method, denied.body)


def test_a_key_no_user_can_have_is_refused_without_being_remembered(console_server: ServerProcess) -> None:
    """An audit's 15,000 failed sign-ins with keys of 60 KB, each remembered a minute for the throttle, held a
    gigabyte of the server's memory: a key longer than IAM's 128 characters is refused as wrong at once, and
    never counted (so never throttled either: it can never be right)."""
    body = json.dumps({"AccessKeyId": "K" * 60_000, "SecretAccessKey": "x"}).encode()
    for _ in range(15):  # more than the throttle's 10 a minute
        answer = call(
            console_server, "POST", "/console/api/session", body, {"Content-Type": "application/json"}
        )
        assert answer.status == 401, answer
        assert answer.json()["message"] == "The access key ID or the secret access key is not correct."


def test_a_session_of_a_key_made_inactive_ends_then_not_at_its_next_use(
    console_server: ServerProcess,
) -> None:
    """An audit's session, unused while its key was inactive, answered again once the key was made active
    again: a key that stops signing ends its sessions at once."""
    iam = console_server.client("iam")
    iam.create_user(UserName="returning")
    key = iam.create_access_key(UserName="returning")["AccessKey"]
    body = json.dumps({"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}).encode()
    answer = call(console_server, "POST", "/console/api/session", body, {"Content-Type": "application/json"})
    assert answer.status == 200, answer
    cookie = answer.headers["Set-Cookie"].split(";")[0]
    assert call(console_server, "GET", "/console/api/session", headers={"Cookie": cookie}).status == 200
    for status in ("Inactive", "Active"):  # and nothing signed with it meanwhile
        iam.update_access_key(UserName="returning", AccessKeyId=key["AccessKeyId"], Status=status)
    assert call(console_server, "GET", "/console/api/session", headers={"Cookie": cookie}).status == 401
