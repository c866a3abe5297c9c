"""Tampered SigV4, generated: a request signed by botocore, then changed one way at a time (every signed
header changed and dropped, the body, the method and path, each part of the Authorization header, the
clock skew, a signature replayed onto another request), for each protocol zeroscale serves. The untouched
request is accepted; no changed one is, each is refused in its protocol's error shape, and none of the
refused CreateModel calls created anything."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import http.client
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess

JSON_11 = "application/x-amz-json-1.1"
AUTH_CODES = {
    "InvalidSignatureException",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "InvalidClientTokenId",
}


@dataclass(frozen=True)
class Call:
    kind: str  # sagemaker | logs | runtime | iam
    service: str  # the signing name
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    skew_s: float = 0.0
    signed: dict[str, str] = field(default_factory=dict)


def base_calls(serial: int) -> list[Call]:
    model = json.dumps(
        {
            "ModelName": f"tampered-{serial}",
            "PrimaryContainer": {"Image": "sklearn", "ModelDataUrl": "s3://bucket/model.tar.gz"},
        }
    ).encode()
    return [
        Call(
            "sagemaker",
            "sagemaker",
            "POST",
            "/",
            {"X-Amz-Target": "SageMaker.CreateModel", "Content-Type": JSON_11},
            model,
        ),
        Call(
            "logs",
            "logs",
            "POST",
            "/",
            {"X-Amz-Target": "Logs_20140328.DescribeLogGroups", "Content-Type": JSON_11},
            b"{}",
        ),
        Call(
            "runtime",
            "sagemaker",
            "POST",
            "/endpoints/no-such-endpoint/invocations",
            {"Content-Type": "application/json", "X-Amzn-SageMaker-Custom-Attributes": "a=1"},
            b"[[1, 2]]",
        ),
        Call(
            "iam",
            "iam",
            "POST",
            "/",
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            b"Action=ListUsers&Version=2010-05-08",
        ),
    ]


def sign(
    server: ServerProcess, call: Call, secret: str = SECRET_KEY, key: str = ACCESS_KEY, region: str = REGION
) -> Call:
    request = AWSRequest(
        method=call.method, url=f"{server.url}{call.path}", data=call.body, headers=call.headers
    )
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    with mock.patch(
        "botocore.auth.get_current_datetime", return_value=now + datetime.timedelta(seconds=call.skew_s)
    ):
        SigV4Auth(Credentials(key, secret), call.service, region).add_auth(request)
    signed = dict(request.headers.items())
    if not any(
        k.lower() == "host" for k in signed
    ):  # signed from the URL; sent explicitly, so it can be changed
        signed["Host"] = server.url.split("://", 1)[1]
    return replace(call, signed=signed)


def send(server: ServerProcess, call: Call) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            # exactly these headers: http.client adds no Host of its own (a dropped Host stays dropped)
            conn.putrequest(call.method, call.path, skip_host=True, skip_accept_encoding=True)
            for name, value in call.signed.items():
                if name.lower() != "content-length":
                    conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(call.body)))
            conn.endheaders(call.body)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def auth_part(call: Call, name: str, value: str) -> Call:
    """The Authorization header with one of its parts (Credential, SignedHeaders, Signature) replaced."""
    auth = call.signed["Authorization"]
    changed = re.sub(rf"{name}=[^,]*", f"{name}={value}", auth)
    return replace(call, signed={**call.signed, "Authorization": changed})


def parts(call: Call) -> dict[str, str]:
    auth = call.signed["Authorization"]
    return dict(re.findall(r"(Credential|SignedHeaders|Signature)=([^,]*)", auth))


def with_header(call: Call, name: str, value: str | None) -> Call:
    headers = {k: v for k, v in call.signed.items() if k.lower() != name.lower()}
    if value is not None:
        headers[name] = value
    return replace(call, signed=headers)


def tampered(server: ServerProcess, signed: Call) -> Iterator[tuple[str, Call]]:
    found = parts(signed)
    key, date, region, service, terminator = found["Credential"].split("/")
    signature = found["Signature"]
    for name in found["SignedHeaders"].split(";"):
        value = next(v for k, v in signed.signed.items() if k.lower() == name)
        yield f"header {name} changed", with_header(signed, name, value + "0")
        yield f"header {name} dropped", with_header(signed, name, None)
    yield "body: one more byte", replace(signed, body=signed.body + b" ")
    yield "body: one byte changed", replace(signed, body=bytes([signed.body[0] ^ 1]) + signed.body[1:])
    yield "body: empty", replace(signed, body=b"")
    yield "body hash header, false", with_header(signed, "X-Amz-Content-Sha256", "0" * 64)
    # Another body, with the signed body's hash in X-Amz-Content-SHA256 (audit finding 8): the server hashes
    # what it received. IAM's becomes CreateUser; the others' an edited call.
    other_body = {
        "iam": b"Action=CreateUser&UserName=evil&Version=2010-05-08",
        "sagemaker": signed.body.replace(b"tampered-", b"evil-"),
    }.get(signed.kind, signed.body[:-1] + b" " + signed.body[-1:])
    original_hash = hashlib.sha256(signed.body).hexdigest()
    yield (
        "body replaced, its hash sent in x-amz-content-sha256",
        with_header(replace(signed, body=other_body), "X-Amz-Content-Sha256", original_hash),
    )
    # Headers added unsigned: each changes what the call means (its operation, the variant or model an
    # invocation reaches, what its body is), so each must be among the SignedHeaders when present.
    for name, value in [
        ("X-Amz-Target", "SageMaker.DeleteModel"),
        ("X-Amzn-SageMaker-Target-Variant", "canary"),
        ("X-Amz-Security-Token", "token"),
    ]:
        if name.lower() not in found["SignedHeaders"].split(";"):
            yield f"unsigned header added: {name}", with_header(signed, name, value)
    yield (
        "body hash header, UNSIGNED-PAYLOAD",
        with_header(signed, "X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD"),
    )
    yield "method", replace(signed, method="PUT")
    yield "path", replace(signed, path=signed.path + "x" if signed.path != "/" else "/x")
    yield (
        "signature: a digit changed",
        auth_part(signed, "Signature", signature[:-1] + ("0" if signature[-1] != "0" else "1")),
    )
    yield "signature: truncated", auth_part(signed, "Signature", signature[:32])
    yield "signature: empty", auth_part(signed, "Signature", "")
    yield "signature: not hex", auth_part(signed, "Signature", "z" * 64)
    yield (
        "key: unknown",
        auth_part(signed, "Credential", f"AKIAUNKNOWNKEY000000/{date}/{region}/{service}/{terminator}"),
    )
    yield (
        "scope: another day",
        auth_part(signed, "Credential", f"{key}/20200101/{region}/{service}/{terminator}"),
    )
    yield "scope: another service", auth_part(signed, "Credential", f"{key}/{date}/{region}/s3/{terminator}")
    yield "scope: terminator", auth_part(signed, "Credential", f"{key}/{date}/{region}/{service}/aws4_other")
    yield "scope: missing parts", auth_part(signed, "Credential", f"{key}/{date}")
    yield (
        "signed headers: one fewer",
        auth_part(
            signed,
            "SignedHeaders",
            ";".join(h for h in found["SignedHeaders"].split(";") if h != "x-amz-date"),
        ),
    )
    yield "signed headers: one more", auth_part(signed, "SignedHeaders", found["SignedHeaders"] + ";x-extra")
    yield (
        "algorithm",
        with_header(
            signed,
            "Authorization",
            signed.signed["Authorization"].replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA1"),
        ),
    )
    yield "authorization: junk", with_header(signed, "Authorization", "%=,;/" * 60)
    yield "authorization: no parts", with_header(signed, "Authorization", "AWS4-HMAC-SHA256 Credential=/,,==")
    yield "authorization: huge", with_header(signed, "Authorization", signed.signed["Authorization"] * 40)
    yield "x-amz-date: not a date", with_header(signed, "X-Amz-Date", "yesterday")
    # Replays: this signature on another operation, another endpoint, another body.
    other_target = {"sagemaker": "SageMaker.DeleteModel", "logs": "Logs_20140328.DeleteLogGroup"}
    if signed.kind in other_target:
        yield (
            "replayed onto another operation",
            with_header(signed, "X-Amz-Target", other_target[signed.kind]),
        )
    if signed.kind == "runtime":
        yield "replayed onto another endpoint", replace(signed, path="/endpoints/another/invocations")
    if signed.kind == "iam":
        yield (
            "replayed onto another action",
            replace(signed, body=b"Action=CreateUser&UserName=evil&Version=2010-05-08"),
        )
    # The clock: signed 16 minutes off either way (AWS allows 15).
    for skew in (-16 * 60, 16 * 60):
        yield f"clock skew {skew:+d} s", sign(server, replace(signed, skew_s=skew))
    yield "wrong secret", sign(server, signed, secret=SECRET_KEY[::-1])
    # Signed, correctly, for a region that is not the server's (audit finding 11).
    for other in ("us-west-2", "mars-1"):
        yield f"signed for region {other}", sign(server, signed, region=other)


def refused_in_shape(kind: str, status: int, headers: dict[str, str], body: bytes) -> str:
    """The error code, after checking the answer is its protocol's error shape."""
    assert status in (400, 403), (status, body[:300])
    if kind in ("sagemaker", "logs"):
        doc = json.loads(body)
        assert set(doc) == {"__type", "message"}, doc
        return str(doc["__type"])
    if kind == "runtime":
        assert "x-amzn-errortype" in headers, headers
        assert "Message" in json.loads(body) or "message" in json.loads(body)
        return headers["x-amzn-errortype"].split(":", 1)[0]
    found = re.search(rb"<Code>([^<]+)</Code>", body)
    assert body.lstrip().startswith(b"<") and found, body[:300]
    return found.group(1).decode()


@pytest.mark.parametrize("kind", ["sagemaker", "logs", "runtime", "iam"])
def test_no_tampered_request_is_accepted(server: ServerProcess, kind: str) -> None:
    serial = iter(range(10_000))
    call = next(c for c in base_calls(next(serial)) if c.kind == kind)
    status, _, body = send(server, sign(server, call))
    # Untouched, it passes authentication (the runtime's endpoint simply does not exist).
    assert status == (400 if kind == "runtime" else 200), body[:300]
    failures: list[Any] = []
    count = 0
    fresh = next(c for c in base_calls(next(serial)) if c.kind == kind)
    for name, bad in tampered(server, sign(server, fresh)):
        count += 1
        status, headers, body = send(server, bad)
        # an IAM call sent with another method or path, or with an X-Amz-Target, is no IAM call any more:
        # SageMaker's shape answers
        moved = name in ("method", "path", "unsigned header added: X-Amz-Target")
        shape = "sagemaker" if kind == "iam" and moved else kind
        try:
            code = refused_in_shape(shape, status, headers, body)
            assert code in AUTH_CODES, code
        except (AssertionError, ValueError) as exc:
            failures.append((name, status, body[:200], str(exc)[:200]))
    assert count >= 30
    assert failures == [], "\n".join(map(str, failures))
    if kind == "sagemaker":  # only the untouched call created its model
        names = [m["ModelName"] for m in server.client("sagemaker").list_models()["Models"]]
        assert [n for n in names if n.startswith("tampered-")] == ["tampered-0"]
        assert [n for n in names if n.startswith("evil-")] == []
    if kind == "iam":
        users = server.client("iam").list_users()["Users"]
        assert all(u["UserName"] != "evil" for u in users)


def test_a_signature_is_accepted_within_the_skew_aws_allows(server: ServerProcess) -> None:
    for skew in (-14 * 60, 14 * 60):
        call = next(c for c in base_calls(99) if c.kind == "logs")
        status, _, body = send(server, sign(server, replace(call, skew_s=skew)))
        assert status == 200, body[:300]


def test_headers_left_out_of_the_signature_are_refused(server: ServerProcess) -> None:
    """A request signed over host;x-amz-date only (audit finding 8, related): sent with an X-Amz-Target or
    Content-Type it did not sign it is refused, naming the header, before any operation runs."""
    call = Call("sagemaker", "sagemaker", "POST", "/", {}, b"{}")
    signed = sign(server, call)
    assert parts(signed)["SignedHeaders"] == "host;x-amz-date"
    for name, value in [("X-Amz-Target", "SageMaker.ListModels"), ("Content-Type", JSON_11)]:
        status, _, body = send(server, with_header(signed, name, value))
        assert status in (400, 403), body[:300]
        doc = json.loads(body)
        assert doc["__type"] == "InvalidSignatureException", doc
        assert f"not signed: '{name.lower()}'" in doc["message"], doc
    # The runtime: a variant header added to a signed invocation.
    call = next(c for c in base_calls(0) if c.kind == "runtime")
    status, headers, body = send(
        server, with_header(sign(server, call), "X-Amzn-SageMaker-Target-Variant", "canary")
    )
    assert refused_in_shape("runtime", status, headers, body) == "InvalidSignatureException"
    assert b"x-amzn-sagemaker-target-variant" in body


def test_headers_botocore_leaves_unsigned_are_accepted(server: ServerProcess) -> None:
    call = next(c for c in base_calls(0) if c.kind == "logs")
    signed = sign(server, call)
    for name, value in [
        ("X-Amzn-Trace-Id", "Root=1-5759e988-bd862e3fe1be46a994272793"),
        ("User-Agent", "Boto3/1.34.0 md/Botocore#1.34.0"),
        ("amz-sdk-invocation-id", "0e3c4bd0-8a2d-4c0e-9f38-1d1f5a0f4f10"),
        ("amz-sdk-request", "attempt=1; max=3"),
    ]:
        signed = with_header(signed, name, value)
    status, _, body = send(server, signed)
    assert status == 200, body[:300]


def test_a_boto3_client_of_another_region_is_told_which(server: ServerProcess) -> None:
    """boto3 signs for its own region_name even with an endpoint_url: one set to another region than the
    server's is refused, and told so."""
    for service, call in [("sagemaker", "list_models"), ("iam", "list_users")]:
        client = boto3.client(
            service,
            endpoint_url=server.url,
            region_name="eu-west-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"total_max_attempts": 1}),
        )
        with pytest.raises(ClientError) as exc:
            getattr(client, call)()
        error = exc.value.response["Error"]
        assert error["Code"] == "InvalidSignatureException", error
        assert error["Message"].startswith("Credential should be scoped to a valid region, not 'eu-west-1'.")
    assert server.client("sagemaker").list_models()["Models"] is not None  # the server's own region: fine
