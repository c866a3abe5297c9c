"""DNS rebinding: a page that points its own name at the server's address reads, as its own origin, what the
server answers without a signature. A real server refuses those requests (421) unless their Host names it
(localhost, an IP address, its hostname, --allowed-host), while API calls signed with SigV4 (boto3 with any
endpoint_url) and the front ends' peer calls (their own MAC) work by any name."""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess

REBOUND = "rebound.example"  # the attacker's name, resolving to the server's address


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        tmp_path_factory.mktemp("hosts") / "data", {"allowed_host": ["proxy.example.com", "Second.Example."]}
    ).start()
    yield proc
    proc.stop()


def call(
    server: ServerProcess, method: str, path: str, host: str, body: bytes | None = None, **headers: str
) -> tuple[int, bytes]:
    """A request to the server's address whose Host header is ``host`` (as a rebound browser sends it)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Host": host, **headers})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _refused(status: int, body: bytes) -> None:
    assert status == 421, (status, body[:300])
    text = body.decode()
    assert "is not a name of this server" in text and "--allowed-host" in text


def test_what_is_served_unsigned_is_refused_for_a_foreign_host(server: ServerProcess) -> None:
    host = f"{REBOUND}:{server.port}"
    for path in (
        "/metrics",
        "/ping",
        "/healthz",
        "/console/",
        "/console/signin",
        "/console/static/favicon.svg",
    ):
        _refused(*call(server, "GET", path, host))
    _refused(*call(server, "GET", "/", host, Accept="text/html"))  # the redirect to the console
    # the console's sign-in, as the rebound page would send it: its Origin matches its (foreign) Host
    sign_in = json.dumps({"AccessKeyId": ACCESS_KEY, "SecretAccessKey": SECRET_KEY}).encode()
    status, body = call(
        server,
        "POST",
        "/console/api/session",
        host,
        sign_in,
        **{"Content-Type": "application/json", "Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"},
    )
    _refused(status, body)
    # SNS's confirmation link (unsigned), and an unsigned API call
    _refused(*call(server, "GET", "/?Action=ConfirmSubscription&TopicArn=x&Token=y", host))
    _refused(*call(server, "POST", "/", host, b"{}", **{"X-Amz-Target": "SageMaker.ListModels"}))
    # a forged "signature" does not open what is never signed
    forged = (
        "AWS4-HMAC-SHA256 Credential=AKID/20240101/us-east-1/sagemaker/aws4_request, SignedHeaders=host, "
    )
    _refused(*call(server, "GET", "/metrics", host, Authorization=forged + "Signature=00"))


def test_the_servers_own_names_and_the_allowed_ones_are_answered(server: ServerProcess) -> None:
    port = server.port
    for name in (
        "localhost",
        "LOCALHOST.",
        "127.0.0.1",
        "[::1]",
        socket.gethostname(),
        "proxy.example.com",
        "second.example",
    ):
        status, body = call(server, "GET", "/metrics", f"{name}:{port}")
        assert status == 200 and b"zeroscale_" in body, name
        assert call(server, "GET", "/ping", name) == (200, b"ok\n")
        status, _ = call(server, "GET", "/console/", f"{name}:{port}")
        assert status == 303, name  # to the sign-in page
    status, body = call(server, "GET", "/metrics", f"10.1.2.3:{port}")  # any IP address: it cannot rebind
    assert status == 200


def _through(server: ServerProcess, service: str, host: str) -> Any:
    """A boto3 client whose endpoint_url names ``host`` (signed for it), reaching the server through it as
    an HTTP proxy: the request goes to the server's address with ``Host: host:port``."""
    return boto3.client(
        service,
        endpoint_url=f"http://{host}:{server.port}",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}, proxies={"http": server.url}),
    )


def test_signed_calls_work_by_any_name_and_a_wrong_signature_is_refused_as_before(
    server: ServerProcess,
) -> None:
    sm = _through(server, "sagemaker", REBOUND)
    assert sm.list_models()["Models"] == []
    with pytest.raises(ClientError) as missing:
        sm.describe_endpoint(EndpointName="nowhere")
    assert missing.value.response["Error"]["Code"] == "ValidationException"
    runtime = _through(server, "sagemaker-runtime", "another.rebound.example")
    with pytest.raises(ClientError) as not_found:  # the runtime's own answer: the call was let through
        runtime.invoke_endpoint(EndpointName="nowhere", Body=b"1", ContentType="text/csv")
    assert "nowhere" in not_found.value.response["Error"]["Message"]
    logs = _through(server, "logs", REBOUND)
    assert "logGroups" in logs.describe_log_groups()
    wrong = boto3.client(
        "sagemaker",
        endpoint_url=f"http://{REBOUND}:{server.port}",
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key="not-the-secret",
        config=Config(retries={"total_max_attempts": 1}, proxies={"http": server.url}),
    )
    with pytest.raises(ClientError) as refused:
        wrong.list_models()
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_peer_call_by_any_name_meets_its_own_check(server: ServerProcess) -> None:
    """Front ends call each other at --advertise-url, by name or address: their calls carry a MAC, which
    the peer route checks whatever the Host (403 for one without it), never the Host check (421)."""
    status, body = call(server, "POST", "/zeroscale/peer/v1", f"frontend-2.internal:{server.port}", b"{}")
    assert status == 403 and b"message" in body


def test_a_star_answers_any_host_and_a_metrics_token_any_host_that_gives_it(
    tmp_path: Path, server_factory: Callable[..., ServerProcess]
) -> None:
    token = tmp_path / "metrics.token"
    token.write_text("s3cret-scrape-token\n")
    scraped = server_factory(tmp_path / "token", metrics_token_file=token)  # stopped with the module
    anyone = server_factory(tmp_path / "any", allowed_host="*")
    host = f"{REBOUND}:{scraped.port}"
    status, body = call(scraped, "GET", "/metrics", host, Authorization="Bearer s3cret-scrape-token")
    assert status == 200 and b"zeroscale_" in body  # Prometheus by a name it was not told of
    _refused(*call(scraped, "GET", "/metrics", host))
    _refused(*call(scraped, "GET", "/metrics", host, Authorization="Bearer wrong"))
    assert call(anyone, "GET", "/ping", f"{REBOUND}:{anyone.port}") == (200, b"ok\n")
    assert call(anyone, "GET", "/metrics", REBOUND)[0] == 200
