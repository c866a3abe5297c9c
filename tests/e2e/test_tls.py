"""HTTPS: ``--tls-cert``/``--tls-key``, with boto3 and the zeroscale CLI verifying the server's certificate
(a self-signed one made with openssl, trusted through boto3's ``verify=`` and the CLI's ``AWS_CA_BUNDLE``);
a client that does not trust it is refused, and plain HTTP on the port gets nowhere."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import SSLError
from click.testing import CliRunner

from e2e.conftest import handler_model
from e2e.test_streaming import STREAMING
from pgserver import PostgresServer
from zeroscale.cli.main import cli
from zeroscale.testing import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    ServerProcess,
    deploy,
    self_signed_certificate,
    wait_for,
)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess], certificate: tuple[Path, Path]) -> ServerProcess:
    cert, key = certificate
    return server_factory(tls_cert=cert, tls_key=key)


def test_boto3_verifies_the_certificate_and_serves(server: ServerProcess, sklearn_model: Any) -> None:
    assert server.url.startswith("https://")
    sm = server.client("sagemaker")  # verify= the certificate
    assert deploy(sm, "tls", sklearn_model.url)["EndpointStatus"] == "InService"
    rows = sklearn_model.X[:3]
    resp = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="tls", Body=sklearn_model.json_body(rows), ContentType="application/json"
    )
    assert json.loads(resp["Body"].read()) == sklearn_model.expected(rows)


def test_a_client_that_does_not_trust_it_is_refused(server: ServerProcess) -> None:
    untrusting = boto3.client(
        "sagemaker",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}),
    )
    with pytest.raises(SSLError):
        untrusting.list_endpoints()


def test_plain_http_on_the_port_gets_nowhere(server: ServerProcess) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    assert b"HTTP/1.1 200" not in data


def test_the_cli_verifies_it_through_aws_ca_bundle(server: ServerProcess) -> None:
    zeroscale = Path(sys.executable).parent / "zeroscale"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    env["AWS_CA_BUNDLE"] = str(server.ca_file)
    out = subprocess.run(
        [str(zeroscale), "endpoints", "--endpoint-url", server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    context = ssl.create_default_context(cafile=server.ca_file)
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_front_ends_call_each_other_over_https(
    server_factory: Callable[..., ServerProcess],
    certificate: tuple[Path, Path],
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    """Two front ends serving HTTPS on one PostgreSQL database call each other over HTTPS, trusting the
    certificate they share (--tls-cert): the one without a share of a MaxConcurrency 1 endpoint forwards
    its invocations and response streams to the other (h11 over TLS), and lists the other's workers."""
    cert, key = certificate
    flags = {"tls_cert": cert, "tls_key": key, "database_url": postgres.create_database("tlspeers")}
    a = server_factory(**flags, frontend_ttl_s=2.0)
    b = server_factory(**flags, frontend_ttl_s=2.0)
    url = handler_model(tmp_path, STREAMING)
    assert (
        deploy(a.client("sagemaker"), "tls-single", url, max_concurrency=1)["EndpointStatus"] == "InService"
    )
    no_share = 'zeroscale_max_concurrency{endpoint_name="tls-single",variant_name="AllTraffic"} 0'
    wait_for(lambda: no_share in b.metrics(), timeout_s=10)
    smr = b.client("sagemaker-runtime")
    body = json.dumps({"parts": 2}).encode()
    resp = smr.invoke_endpoint(EndpointName="tls-single", Body=body, ContentType="application/json")
    assert [json.loads(line)["part"] for line in resp["Body"].read().splitlines()] == [0, 1]
    stream = smr.invoke_endpoint_with_response_stream(
        EndpointName="tls-single", Body=body, ContentType="application/json"
    )
    assert [json.loads(e["PayloadPart"]["Bytes"])["part"] for e in stream["Body"]] == [0, 1]
    assert b.workers("tls-single") == 0 and a.workers("tls-single") == 1
    env = {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_CA_BUNDLE": str(cert),
    }
    out = CliRunner().invoke(cli, ["workers", "tls-single", "--json", "--endpoint-url", b.url], env=env)
    assert out.exit_code == 0, out.output
    listed = json.loads(out.stdout)
    assert len(listed["Workers"]) == 1 and listed["Unreachable"] == []


def test_a_server_stops_at_once_while_tls_clients_keep_connections_and_answers_what_it_had(
    server_factory: Callable[..., ServerProcess], certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    """SIGTERM with TLS clients holding kept-alive connections between requests, and one invocation in
    flight: the invocation is answered whole, and the server closes every connection without waiting long
    for the client's own TLS close, which a client between requests never sends (the stop used to wait for
    the 30-s TLS shutdown timeout, past which ServerProcess.stop kills it)."""
    cert, key = certificate
    server = server_factory(tls_cert=cert, tls_key=key)
    smr = server.client("sagemaker-runtime")
    url = handler_model(tmp_path, STREAMING)
    assert deploy(server.client("sagemaker"), "stopping", url)["EndpointStatus"] == "InService"

    def invoke(body: dict[str, Any]) -> list[int]:
        resp = smr.invoke_endpoint(
            EndpointName="stopping", Body=json.dumps(body).encode(), ContentType="application/json"
        )
        return [json.loads(line)["part"] for line in resp["Body"].read().splitlines()]

    assert invoke({"parts": 1}) == [0]  # warm, and its connection kept
    context = ssl.create_default_context(cafile=server.ca_file)
    held = []
    for _ in range(2):
        tls = context.wrap_socket(
            socket.create_connection(("127.0.0.1", server.port), timeout=5), server_hostname="127.0.0.1"
        )
        tls.sendall(b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert tls.recv(4096).startswith(b"HTTP/1.1 200")
        held.append(tls)  # kept alive, idle: neither reads nor closes
    with ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(invoke, {"parts": 3, "delay": 0.5})
        time.sleep(0.3)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(10)
        finally:
            for tls in held:
                tls.close()
        assert in_flight.result() == [0, 1, 2]
    # uvicorn raises the signal again once its graceful stop is done
    assert server.proc.returncode in (0, -signal.SIGTERM), server.log()
