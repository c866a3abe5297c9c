"""Authentication on the wire: SigV4 on the control plane and the runtime, the unsigned /ping and /metrics,
and the credentials a server generates for itself when none are configured."""

from __future__ import annotations

import configparser
import json
import stat
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy

NO_RETRIES = Config(retries={"total_max_attempts": 1})


def raw_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


def client(server: ServerProcess, service: str, key: str, secret: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=NO_RETRIES,
    )


def call(service: str, c: Any) -> None:
    if service == "sagemaker":
        c.list_endpoints()
    else:
        c.invoke_endpoint(EndpointName="any-endpoint", Body=b"[[1, 2]]", ContentType="application/json")


# ---- a server with configured credentials ----
def test_unsigned_control_plane_request_is_rejected(server: ServerProcess) -> None:
    status, headers, body = raw_post(
        f"{server.url}/",
        b"{}",
        {"X-Amz-Target": "SageMaker.ListEndpoints", "Content-Type": "application/x-amz-json-1.1"},
    )
    assert status == 403
    doc = json.loads(body)
    assert doc["__type"] == "MissingAuthenticationToken"
    assert doc["message"] == "Missing Authentication Token"
    assert {k.lower(): v for k, v in headers.items()}.get("x-amzn-requestid")


def test_unsigned_invocation_is_rejected(server: ServerProcess) -> None:
    status, headers, body = raw_post(
        f"{server.url}/endpoints/any-endpoint/invocations", b"[[1, 2]]", {"Content-Type": "application/json"}
    )
    assert status == 403
    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["x-amzn-errortype"].split(":", 1)[0] == "MissingAuthenticationToken"
    assert json.loads(body)["Message"] == "Missing Authentication Token"


@pytest.mark.parametrize("service", ["sagemaker", "sagemaker-runtime"])
def test_unknown_access_key(server: ServerProcess, service: str) -> None:
    with pytest.raises(ClientError) as err:
        call(service, client(server, service, "AKIDNOTKNOWNHERE0001", SECRET_KEY))
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.parametrize("service", ["sagemaker", "sagemaker-runtime"])
def test_wrong_secret(server: ServerProcess, service: str) -> None:
    with pytest.raises(ClientError) as err:
        call(service, client(server, service, ACCESS_KEY, SECRET_KEY[::-1]))
    assert err.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


@pytest.mark.parametrize("service", ["sagemaker", "sagemaker-runtime"])
def test_right_credentials_pass(server: ServerProcess, service: str) -> None:
    c = client(server, service, ACCESS_KEY, SECRET_KEY)
    if service == "sagemaker":
        assert "Endpoints" in c.list_endpoints()
        return
    with pytest.raises(ClientError) as err:  # past authentication: the endpoint simply does not exist
        call(service, c)
    assert err.value.response["Error"]["Code"] == "ValidationError"


def test_ping_and_metrics_need_no_signature(server: ServerProcess) -> None:
    for path in ("/ping", "/metrics"):
        with urllib.request.urlopen(f"{server.url}{path}", timeout=5) as resp:
            assert resp.status == 200
    assert "# TYPE" in server.metrics()


def test_configured_credentials_write_no_file(server: ServerProcess) -> None:
    assert not (server.data_dir / "credentials").exists()


# ---- a server that generates its own credentials ----
@pytest.fixture
def keyless(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path / "data", env={"ZEROSCALE_ACCESS_KEY_ID": None, "ZEROSCALE_SECRET_ACCESS_KEY": None}
    )
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def shared_credentials_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Only the shared-credentials file may give boto3 its keys."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    yield


def test_generated_credentials_file(
    keyless: ServerProcess, sklearn_model: Any, shared_credentials_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = keyless.data_dir / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    parser = configparser.ConfigParser()
    parser.read(path)
    key, secret = parser["default"]["aws_access_key_id"], parser["default"]["aws_secret_access_key"]
    assert key and secret and key != ACCESS_KEY
    before = path.read_bytes()

    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(path))
    session = boto3.session.Session(region_name=REGION)
    creds = session.get_credentials()
    assert creds is not None and creds.access_key == key
    sm = session.client("sagemaker", endpoint_url=keyless.url, config=NO_RETRIES)
    smr = session.client("sagemaker-runtime", endpoint_url=keyless.url, config=NO_RETRIES)
    desc = deploy(sm, "own-keys", sklearn_model.url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    rows = sklearn_model.X[:4]
    resp = smr.invoke_endpoint(
        EndpointName="own-keys", Body=sklearn_model.json_body(rows), ContentType="application/json"
    )
    assert json.loads(resp["Body"].read()) == sklearn_model.expected(rows)
    # The test suite's usual keys mean nothing to this server.
    with pytest.raises(ClientError) as err:
        client(keyless, "sagemaker", ACCESS_KEY, SECRET_KEY).list_endpoints()
    assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"

    keyless.restart()
    assert path.read_bytes() == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sm.describe_endpoint(EndpointName="own-keys")["EndpointStatus"] == "InService"
    resp = smr.invoke_endpoint(
        EndpointName="own-keys", Body=sklearn_model.json_body(rows), ContentType="application/json"
    )
    assert json.loads(resp["Body"].read()) == sklearn_model.expected(rows)


def _get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


def test_metrics_with_a_token_file_need_its_bearer_token(
    server_factory: Any, server: ServerProcess, tmp_path: Path
) -> None:
    """/metrics names every endpoint and its traffic: with --metrics-token-file, only a scraper holding the
    token reads it (Prometheus: authorization.credentials_file); /ping stays unsigned for health checks."""
    token = "3f1c" * 16
    (tmp_path / "metrics.token").write_text(token + "\n")
    guarded = server_factory(metrics_token_file=tmp_path / "metrics.token")
    url = guarded.url + "/metrics"
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {token}x"},
    ):
        status, answer_headers, body = _get(url, headers)
        assert status == 401, (headers, status)
        assert {k.lower(): v for k, v in answer_headers.items()}["www-authenticate"] == (
            'Bearer realm="zeroscale metrics"'
        )
        assert b"--metrics-token-file" in body and token.encode() not in body
    status, _, body = _get(url, {"Authorization": f"Bearer {token}"})
    assert status == 200 and b"zeroscale_" in body
    assert _get(guarded.url + "/ping", {})[0] == 200
    assert _get(server.url + "/metrics", {})[0] == 200  # without the flag: unsigned, as before
