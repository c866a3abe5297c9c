"""The pieces of SigV4 verification on their own: the claim a request makes (either auth form), and the
canonical request and string to sign, which must be byte for byte what botocore's signer built."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from zeroscale.api import sigv4
from zeroscale.errors import InvalidSignature, MissingAuthenticationToken

from .test_sigv4 import AKID, ENDPOINT, SECRET, to_asgi


class RecordingSigner(SigV4Auth):
    """botocore's signer, keeping the canonical request and string to sign it computed."""

    canonical = ""
    sts = ""

    def canonical_request(self, request: Any) -> str:
        self.canonical = str(super().canonical_request(request))
        return self.canonical

    def string_to_sign(self, request: Any, canonical_request: str) -> str:
        self.sts = str(super().string_to_sign(request, canonical_request))
        return self.sts


def signed(url: str, body: bytes, headers: dict[str, str]) -> tuple[RecordingSigner, dict[str, Any]]:
    req = AWSRequest(method="POST", url=url, data=body, headers=headers)
    signer = RecordingSigner(BotoCredentials(AKID, SECRET), "sagemaker", "eu-west-1")
    signer.add_auth(req)
    prepared = req.prepare()
    return signer, to_asgi(prepared.url, prepared.method, prepared.headers, prepared.body)


def test_header_claim() -> None:
    _, asgi = signed(ENDPOINT + "/", b"{}", {"X-Amz-Target": "SageMaker.ListModels"})
    claim = sigv4.parse_claim(sigv4.header_map(asgi["headers"]), asgi["query_string"])
    assert claim.credential.startswith(f"{AKID}/") and claim.credential.endswith(
        "/eu-west-1/sagemaker/aws4_request"
    )
    assert "host" in claim.signed_headers.split(";") and "x-amz-target" in claim.signed_headers.split(";")
    assert len(claim.signature) == 64
    assert len(claim.amz_date) == 16 and claim.amz_date.endswith("Z")
    assert (claim.presigned, claim.expires, claim.pairs) == (False, 0, [])


def test_presigned_claim_leaves_the_signature_out_of_the_signed_pairs() -> None:
    req = AWSRequest(method="GET", url=ENDPOINT + "/thing?x=1&y=a%20b")
    SigV4QueryAuth(BotoCredentials(AKID, SECRET), "sagemaker", "us-east-1", expires=120).add_auth(req)
    asgi = to_asgi(req.prepare().url, "GET", {}, b"")
    claim = sigv4.parse_claim(sigv4.header_map(asgi["headers"]), asgi["query_string"])
    assert claim.presigned and claim.expires == 120
    assert claim.signed_headers == "host"
    names = [k for k, _ in claim.pairs]
    assert "X-Amz-Signature" not in names
    assert {"x", "y", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires"} <= set(names)


def test_no_claim_at_all_is_missing_authentication_token() -> None:
    with pytest.raises(MissingAuthenticationToken):
        sigv4.parse_claim({"host": ["localhost"]}, b"x=1")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        (b"X-Amz-Signature=ab", "must include 'X-Amz-Algorithm'"),
        (
            b"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a&X-Amz-Date=b&X-Amz-SignedHeaders=host"
            b"&X-Amz-Signature=ab",
            "must include 'X-Amz-Expires'",
        ),
        (
            b"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a&X-Amz-Date=b&X-Amz-SignedHeaders=host"
            b"&X-Amz-Expires=604801&X-Amz-Signature=ab",
            "less than a week",
        ),
    ],
)
def test_malformed_presigned_claims(query: bytes, message: str) -> None:
    with pytest.raises(InvalidSignature, match=message):
        sigv4.parse_claim({}, query)


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/", b'{"EndpointName": "e"}', {"X-Amz-Target": "SageMaker.DescribeEndpoint"}),
        ("/endpoints/my-ep/invocations", bytes(range(256)), {"Content-Type": "application/x-npy"}),
        ("/endpoints/a%20b/invocations", b"1,2", {"Content-Type": "text/csv", "Accept": "  text/csv  "}),
    ],
)
def test_canonical_request_and_string_to_sign_are_botocores(
    path: str, body: bytes, headers: dict[str, str]
) -> None:
    signer, asgi = signed(ENDPOINT + path, body, headers)
    hmap = sigv4.header_map(asgi["headers"])
    claim = sigv4.parse_claim(hmap, asgi["query_string"])
    names = sorted(claim.signed_headers.split(";"))
    creq = sigv4.canonical_request(
        "POST",
        sigv4._canonical_uri(asgi["raw_path"], True),
        "",
        sigv4._canonical_headers(names, hmap),
        names,
        sigv4._payload_hash(hmap, body),
    )
    assert creq == signer.canonical
    scope = claim.credential.split("/", 1)[1]
    assert sigv4.string_to_sign(claim.amz_date, scope, creq) == signer.sts
