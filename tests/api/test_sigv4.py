"""SigV4 verification against requests that botocore itself signed."""

from __future__ import annotations

import datetime
import hashlib
import time
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials as BotoCredentials

from zeroscale.api import sigv4
from zeroscale.errors import InvalidSignature, MissingAuthenticationToken, UnrecognizedClient

AKID = "AKIAZEROSCALETEST001"
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEYS = {AKID: SECRET}
ENDPOINT = "http://localhost:8080"


def lookup(akid: str) -> str | None:
    return KEYS.get(akid)


def to_asgi(url: str, method: str, headers: Any, body: bytes | str | None) -> dict[str, Any]:
    """An AWSRequest/AWSPreparedRequest as the ASGI server would hand it over."""
    parts = urlsplit(url)
    pairs: list[tuple[bytes, bytes]] = []
    for name, value in headers.items():
        raw = value if isinstance(value, bytes) else value.encode("latin-1")
        pairs.append((name.lower().encode("latin-1"), raw))
    if not any(n == b"host" for n, _ in pairs):  # http.client adds Host from the URL
        pairs.append((b"host", parts.netloc.encode("ascii")))
    if isinstance(body, str):
        body = body.encode("utf-8")
    return {
        "method": method,
        "raw_path": parts.path.encode("ascii"),
        "query_string": parts.query.encode("ascii"),
        "headers": pairs,
        "body": body or b"",
    }


def sign(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    service: str = "sagemaker",
    region: str = "us-east-1",
    secret: str = SECRET,
    akid: str = AKID,
) -> dict[str, Any]:
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    SigV4Auth(BotoCredentials(akid, secret), service, region).add_auth(req)
    prepared = req.prepare()
    return to_asgi(prepared.url, prepared.method, prepared.headers, prepared.body)


def control_request(**kw: Any) -> dict[str, Any]:
    return sign(
        "POST",
        ENDPOINT + "/",
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "SageMaker.DescribeEndpoint",
        },
        body=b'{"EndpointName": "my-ep"}',
        **kw,
    )


def runtime_request(**kw: Any) -> dict[str, Any]:
    return sign(
        "POST",
        ENDPOINT + "/endpoints/my-ep/invocations",
        headers={"Content-Type": "application/octet-stream", "Accept": "application/json"},
        body=bytes(range(256)) * 4,
        **kw,
    )


def verify(req: dict[str, Any], **kw: Any) -> str:
    return sigv4.verify(lookup=lookup, **req, **kw)


# ---- accepted


def test_control_plane_json_request_verifies() -> None:
    req = control_request()
    names = {n for n, _ in req["headers"]}
    assert {b"authorization", b"x-amz-date", b"x-amz-target", b"content-type"} <= names
    assert verify(req) == AKID


def test_runtime_binary_request_verifies() -> None:
    assert verify(runtime_request()) == AKID


def test_the_servers_region_in_scope_is_accepted() -> None:
    assert verify(control_request(region="eu-west-3"), region="eu-west-3") == AKID
    assert verify(control_request(), region="us-east-1") == AKID


@pytest.mark.parametrize("signed_for", ["us-west-2", "mars-1", "US-EAST-1"])
def test_another_region_in_scope_is_refused(signed_for: str) -> None:
    """A us-east-1 server refuses a request signed for another region (audit finding 11), as AWS does."""
    with pytest.raises(InvalidSignature) as exc:
        verify(control_request(region=signed_for), region="us-east-1")
    assert exc.value.message.startswith(f"Credential should be scoped to a valid region, not '{signed_for}'.")
    assert exc.value.code == "InvalidSignatureException"


def test_header_names_any_case_and_order() -> None:
    req = runtime_request()
    req["headers"] = [(n.upper(), v) for n, v in reversed(req["headers"])]
    assert verify(req) == AKID


def test_extra_unsigned_headers_are_ignored() -> None:
    req = runtime_request()
    # botocore's UNSIGNED_HEADERS (user-agent, expect, transfer-encoding, x-amzn-trace-id), what the HTTP
    # stack and proxies add, and botocore's own amz-sdk-* retry headers: none need be signed.
    for name, value in [
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"user-agent", b"Boto3/1.34"),
        (b"expect", b"100-continue"),
        (b"x-amzn-trace-id", b"Root=1-5759e988-bd862e3fe1be46a994272793"),
        (b"amz-sdk-invocation-id", b"e1d1b2c3"),
        (b"accept-encoding", b"identity"),
    ]:
        req["headers"].append((name, value))
    assert verify(req) == AKID


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Amz-Target", "SageMaker.ListModels"),
        ("Content-Type", "application/x-amz-json-1.1"),
        ("X-Amzn-SageMaker-Target-Variant", "canary"),
        ("X-Amzn-SageMaker-Custom-Attributes", "admin=1"),
        ("X-Amz-Security-Token", "token"),
        ("x-amz-meta-anything", "1"),
    ],
)
def test_unsigned_amz_header_or_content_type_is_refused(name: str, value: str) -> None:
    """Signed over host;x-amz-date only, then sent with the header (audit finding 8, related): refused,
    naming it."""
    req = sign("POST", ENDPOINT + "/", body=b"{}")
    assert b"SignedHeaders=host;x-amz-date," in dict(req["headers"])[b"authorization"]
    assert verify(req) == AKID
    req["headers"].append((name.encode(), value.encode()))
    with pytest.raises(InvalidSignature, match=rf"not signed: '{name.lower()}'") as exc:
        verify(req)
    assert exc.value.code == "InvalidSignatureException"


def test_unsigned_header_changes_the_operation_no_more() -> None:
    """A signed ListEndpoints whose X-Amz-Target was left out of SignedHeaders cannot become ListModels."""
    req = sign("POST", ENDPOINT + "/", headers={"Content-Type": "application/x-amz-json-1.1"}, body=b"{}")
    req["headers"].append((b"x-amz-target", b"SageMaker.ListModels"))
    with pytest.raises(InvalidSignature, match="'x-amz-target'"):
        verify(req)
    # Signed, the same header is fine.
    signed = sign(
        "POST",
        ENDPOINT + "/",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "SageMaker.ListModels"},
        body=b"{}",
    )
    assert verify(signed) == AKID


def test_header_whitespace_is_trimmed_and_duplicates_joined() -> None:
    req = sign(
        "POST",
        ENDPOINT + "/",
        headers={"X-Amz-Target": "  SageMaker.ListEndpoints  ", "X-Custom": "a   b\tc"},
        body=b"{}",
    )
    assert verify(req) == AKID
    # botocore joins repeated header values with ','; the server sees two header lines.
    req = sign("POST", ENDPOINT + "/", headers={"X-Custom": "a,b"}, body=b"{}")
    hdrs = [(n, v) for n, v in req["headers"] if n != b"x-custom"]
    hdrs += [(b"x-custom", b"a"), (b"X-Custom", b"b")]
    req["headers"] = hdrs
    assert verify(req) == AKID


def test_matching_content_sha256_header_verifies() -> None:
    # S3-style clients send the body's hash in a signed X-Amz-Content-SHA256: fine when it is the body's.
    body = b'{"a": 1}'
    req = sign(
        "POST",
        ENDPOINT + "/endpoints/e/invocations",
        headers={"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()},
        body=body,
    )
    assert verify(req) == AKID


def test_content_sha256_header_does_not_stand_in_for_the_body() -> None:
    """A captured request replayed with another body and the original body's hash in an unsigned
    X-Amz-Content-SHA256 (audit finding 8): the server hashes the body it received."""
    original = b"Action=ListUsers&Version=2010-05-08"
    req = sign(
        "POST",
        ENDPOINT + "/",
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
        body=original,
        service="iam",
    )
    assert sigv4.verify(lookup=lookup, service="iam", **req) == AKID
    req["body"] = b"Action=CreateUser&UserName=eve&Version=2010-05-08"
    req["headers"].append((b"x-amz-content-sha256", hashlib.sha256(original).hexdigest().encode()))
    with pytest.raises(InvalidSignature) as exc:
        sigv4.verify(lookup=lookup, service="iam", **req)
    assert exc.value.code == "InvalidSignatureException"


def test_signed_content_sha256_header_of_another_body_is_refused() -> None:
    original = b'{"a": 1}'
    req = sign(
        "POST",
        ENDPOINT + "/endpoints/e/invocations",
        headers={"X-Amz-Content-SHA256": hashlib.sha256(original).hexdigest()},
        body=original,
    )
    req["body"] = b'{"a": "tampered"}'
    with pytest.raises(
        InvalidSignature,
        match=r"^The provided 'x-amz-content-sha256' header does not match what was computed",
    ):
        verify(req)


def test_unsigned_payload_is_refused() -> None:
    req = sign(
        "POST",
        ENDPOINT + "/endpoints/e/invocations",
        headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"},
        body=b"anything",
    )
    with pytest.raises(InvalidSignature, match="UNSIGNED-PAYLOAD"):
        verify(req)
    req["body"] = b"something else entirely"
    with pytest.raises(InvalidSignature, match="UNSIGNED-PAYLOAD"):
        verify(req)


def prepare(req: dict[str, Any]) -> sigv4.Signed:
    return sigv4.prepare(lookup=lookup, **{k: v for k, v in req.items() if k != "body"})


def test_prepare_refuses_what_the_head_alone_refuses() -> None:
    """Before any body: no signature, an unknown key, a stale date, an unsigned payload, and a signature that
    does not hold over the hash the head declares."""
    req = runtime_request()
    unsigned = {**req, "headers": [(n, v) for n, v in req["headers"] if n != b"authorization"]}
    with pytest.raises(MissingAuthenticationToken):
        prepare(unsigned)
    with pytest.raises(UnrecognizedClient):
        prepare(runtime_request(akid="AKIANOBODYKNOWS00001"))
    with pytest.raises(InvalidSignature, match="Signature expired"):
        sigv4.prepare(lookup=lookup, now=time.time() + 3600, **{k: v for k, v in req.items() if k != "body"})
    payload = sign("POST", ENDPOINT + "/", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}, body=b"x")
    with pytest.raises(InvalidSignature, match="UNSIGNED-PAYLOAD"):
        prepare(payload)
    body = b'{"a": 1}'
    declared = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    wrong = sign("POST", ENDPOINT + "/endpoints/e/invocations", headers=declared, body=body, secret="nope")
    with pytest.raises(InvalidSignature, match="does not match the signature you provided"):
        prepare(wrong)


def test_prepare_then_finish_checks_the_body() -> None:
    """Without a declared hash the signature waits for the body; with one it is checked at the head and the
    body must then hash to what was declared."""
    req = runtime_request()
    signed = prepare(req)
    assert not signed.verified and signed.finish(req["body"]) == AKID
    with pytest.raises(InvalidSignature, match="does not match the signature you provided"):
        prepare(req).finish(req["body"] + b"!")
    body = b'{"a": 1}'
    declared = {"X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
    req = sign("POST", ENDPOINT + "/endpoints/e/invocations", headers=declared, body=body)
    signed = prepare(req)
    assert signed.verified and signed.finish(body) == AKID
    with pytest.raises(InvalidSignature, match="XAmzContentSHA256Mismatch"):
        signed.finish(b'{"a": 2}')


def test_path_needing_percent_encoding() -> None:
    # The wire path is already percent-encoded once; SigV4 (non-S3) encodes it again.
    url = ENDPOINT + "/endpoints/my%20ep%2Fx%C3%BC~(1)/invocations"
    req = sign("POST", url, headers={"Content-Type": "text/csv"}, body=b"1,2,3")
    assert req["raw_path"] == b"/endpoints/my%20ep%2Fx%C3%BC~(1)/invocations"
    assert verify(req) == AKID


def test_dot_segments_and_double_slashes_are_normalised() -> None:
    req = sign("GET", ENDPOINT + "/a//b/./c/../d/")
    assert verify(req) == AKID


def test_query_string_is_canonicalised() -> None:
    req = sign("GET", ENDPOINT + "/things?b=2&a=%2F%20x&a=1&empty=&flag")
    assert verify(req) == AKID


def test_raw_path_with_query_attached_still_verifies() -> None:
    req = sign("GET", ENDPOINT + "/things?b=2&a=1")
    req["raw_path"] = req["raw_path"] + b"?" + req["query_string"]
    assert verify(req) == AKID


def test_real_boto3_clients_verify() -> None:
    """Capture what unmodified boto3 clients really put on the wire and verify it."""
    captured: list[Any] = []

    class Stop(Exception):
        pass

    def before_send(request: Any, **_: Any) -> None:
        captured.append(request)
        raise Stop

    session = boto3.session.Session(
        aws_access_key_id=AKID, aws_secret_access_key=SECRET, region_name="us-east-1"
    )
    cfg = Config(retries={"max_attempts": 1})
    sm = session.client("sagemaker", endpoint_url=ENDPOINT, config=cfg)
    rt = session.client("sagemaker-runtime", endpoint_url=ENDPOINT, config=cfg)
    for client in (sm, rt):
        client.meta.events.register("before-send", before_send)

    with pytest.raises(Stop):
        sm.create_endpoint_config(
            EndpointConfigName="cfg",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "m",
                    "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 5},
                }
            ],
        )
    with pytest.raises(Stop):
        rt.invoke_endpoint(EndpointName="my ep+ü", Body=b"\x00\x01payload", ContentType="text/csv")
    # Every runtime header boto3 can send (each an x-amzn-*, so each must be signed, and is), plus the
    # X-Amzn-Trace-Id botocore adds unsigned inside a traced Lambda function.
    traced = {
        "AWS_LAMBDA_FUNCTION_NAME": "fn",
        "_X_AMZN_TRACE_ID": "Root=1-5759e988-bd862e3fe1be46a994272793",
    }
    with mock.patch.dict("os.environ", traced), pytest.raises(Stop):
        rt.invoke_endpoint(
            EndpointName="my-ep",
            Body=b"[1]",
            ContentType="application/json",
            Accept="application/json",
            CustomAttributes="trace=1",
            TargetModel="m.tar.gz",
            TargetVariant="canary",
            TargetContainerHostname="c1",
            InferenceId="id-1",
            EnableExplanations="`true`",
            InferenceComponentName="ic",
            SessionId="NEW_SESSION",
        )
    with pytest.raises(Stop):
        rt.invoke_endpoint_async(
            EndpointName="my-ep",
            InputLocation="s3://b/k",
            ContentType="text/csv",
            Accept="text/csv",
            CustomAttributes="a=1",
            InferenceId="id-2",
            RequestTTLSeconds=600,
            InvocationTimeoutSeconds=600,
        )
    with pytest.raises(Stop):
        rt.invoke_endpoint_with_response_stream(
            EndpointName="my-ep",
            Body=b"[1]",
            ContentType="application/json",
            CustomAttributes="a=1",
            TargetVariant="v",
            InferenceId="id-3",
        )

    assert len(captured) == 5
    assert "X-Amzn-Trace-Id" in captured[2].headers
    for prepared in captured:
        req = to_asgi(prepared.url, prepared.method, prepared.headers, prepared.body)
        assert verify(req) == AKID
    assert b"%20" in to_asgi(captured[1].url, "POST", {}, b"")["raw_path"]


def test_presigned_url_verifies() -> None:
    req = AWSRequest(method="GET", url=ENDPOINT + "/endpoints/my-ep/thing?x=1&y=a%20b")
    SigV4QueryAuth(BotoCredentials(AKID, SECRET), "sagemaker", "us-east-1", expires=300).add_auth(req)
    prepared = req.prepare()
    asgi = to_asgi(prepared.url, prepared.method, {}, b"")
    assert b"X-Amz-Signature=" in asgi["query_string"]
    assert not any(n == b"authorization" for n, _ in asgi["headers"])
    assert verify(asgi) == AKID

    later = time.time() + 301
    with pytest.raises(InvalidSignature, match="Signature expired"):
        verify(asgi, now=later)

    tampered = dict(asgi, query_string=asgi["query_string"].replace(b"x=1", b"x=2"))
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(tampered)


def test_date_header_instead_of_x_amz_date() -> None:
    req = sign("POST", ENDPOINT + "/", headers={"Date": "Mon, 01 Jan 2024 00:00:00 GMT"}, body=b"{}")
    assert not any(n == b"x-amz-date" for n, _ in req["headers"])
    assert verify(req) == AKID


# ---- rejected


def test_no_auth_is_missing_authentication_token() -> None:
    req = control_request()
    req["headers"] = [(n, v) for n, v in req["headers"] if n != b"authorization"]
    with pytest.raises(MissingAuthenticationToken) as exc:
        verify(req)
    assert exc.value.code == "MissingAuthenticationToken"
    assert exc.value.status == 403


def test_unknown_access_key_is_unrecognized_client() -> None:
    with pytest.raises(
        UnrecognizedClient, match=r"^The security token included in the request is invalid\.$"
    ):
        verify(control_request(akid="AKIAUNKNOWN000000000"))


def test_tampered_body_is_invalid_signature() -> None:
    req = runtime_request()
    req["body"] = req["body"][:-1] + b"X"
    with pytest.raises(InvalidSignature) as exc:
        verify(req)
    assert exc.value.message == sigv4.MSG_MISMATCH
    assert exc.value.message.startswith("The request signature we calculated does not match")
    assert exc.value.code == "InvalidSignatureException"


def test_tampered_header_is_invalid_signature() -> None:
    req = control_request()
    req["headers"] = [
        (n, b"SageMaker.DeleteEndpoint" if n == b"x-amz-target" else v) for n, v in req["headers"]
    ]
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(req)


def test_missing_signed_header_is_invalid_signature() -> None:
    req = control_request()
    req["headers"] = [(n, v) for n, v in req["headers"] if n != b"x-amz-target"]
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(req)


def test_tampered_path_or_method_is_invalid_signature() -> None:
    req = runtime_request()
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(dict(req, raw_path=b"/endpoints/other-ep/invocations"))
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(dict(req, method="PUT"))


def test_wrong_secret_is_invalid_signature() -> None:
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(control_request(secret="not-the-secret"))


@pytest.mark.parametrize(
    "authorization",
    [
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AKIAZEROSCALETEST001/20240101/us-east-1/sagemaker/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIAZEROSCALETEST001/20240101/us-east-1/sagemaker/aws4_request, "
        "SignedHeaders=host;x-amz-date",
        "AWS4-HMAC-SHA256 Credential=AKID/us-east-1/sagemaker/aws4_request, SignedHeaders=host, Signature=ab",
        "AWS4-HMAC-SHA256 Credential=AKIAZEROSCALETEST001/20240101/us-east-1/sagemaker/aws5_request, "
        "SignedHeaders=host, Signature=ab",
        "AWS4-HMAC-SHA256 Credential=AKIAZEROSCALETEST001/20240101/us-east-1/sagemaker/aws4_request, "
        "SignedHeaders=x-amz-date, Signature=ab",
        "AWS4-HMAC-SHA256 garbage",
        "Bearer abc",
        "AWS AKIAZEROSCALETEST001:c2lnbmF0dXJl",
    ],
)
def test_malformed_authorization_is_invalid_signature(authorization: str) -> None:
    req = control_request()
    req["headers"] = [(n, authorization.encode() if n == b"authorization" else v) for n, v in req["headers"]]
    with pytest.raises(InvalidSignature):
        verify(req)


def test_malformed_x_amz_date_is_invalid_signature() -> None:
    req = control_request()
    req["headers"] = [(n, b"2024-01-01T00:00:00Z" if n == b"x-amz-date" else v) for n, v in req["headers"]]
    with pytest.raises(InvalidSignature):
        verify(req)


def test_wrong_service_in_scope_is_invalid_signature() -> None:
    with pytest.raises(InvalidSignature, match="correct service: 'sagemaker'"):
        verify(control_request(service="s3"))
    # ... and the same request verifies when the server expects that service.
    req = sign("POST", ENDPOINT + "/", headers={"X-Amz-Target": "x"}, body=b"{}", service="execute-api")
    assert sigv4.verify(lookup=lookup, service="execute-api", **req) == AKID


def test_old_x_amz_date_is_signature_expired() -> None:
    old = datetime.datetime(2024, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    with mock.patch("botocore.auth.get_current_datetime", return_value=old):
        req = control_request()
    assert (b"x-amz-date", b"20240101T120000Z") in req["headers"]
    with pytest.raises(InvalidSignature, match=r"^Signature expired: 20240101T120000Z is now earlier than"):
        verify(req)
    # Within the allowed skew it is fine.
    assert verify(req, now=old.timestamp() + 899) == AKID
    assert verify(req, now=old.timestamp() - 899) == AKID
    with pytest.raises(InvalidSignature, match=r"^Signature not yet current"):
        verify(req, now=old.timestamp() - 901)


def test_both_header_and_query_auth_is_rejected() -> None:
    req = AWSRequest(method="GET", url=ENDPOINT + "/x")
    SigV4QueryAuth(BotoCredentials(AKID, SECRET), "sagemaker", "us-east-1").add_auth(req)
    asgi = to_asgi(req.prepare().url, "GET", {}, b"")
    header_auth = dict(control_request()["headers"])[b"authorization"]
    asgi["headers"].append((b"authorization", header_auth))
    with pytest.raises(InvalidSignature, match="Only one auth mechanism"):
        verify(asgi)


def test_signing_keys_are_cached() -> None:
    sigv4._signing_key.cache_clear()
    req = control_request()
    verify(req)
    verify(req)
    info = sigv4._signing_key.cache_info()
    assert info.misses == 1
    assert info.hits == 1


def test_verify_is_fast() -> None:
    req = sign(
        "POST",
        ENDPOINT + "/endpoints/my-ep/invocations",
        headers={"Content-Type": "application/json"},
        body=b'{"x": 1}',
    )
    verify(req)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        verify(req)
    per_call_us = (time.perf_counter() - start) / n * 1e6
    # Target is < 30 us on a quiet machine; the bound leaves room for loaded CI hosts.
    assert per_call_us < 300, per_call_us
