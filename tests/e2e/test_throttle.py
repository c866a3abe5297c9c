"""Each access key's control-plane calls held to --api-rate-per-key: a real server, real boto3. An IAM user's
key past its burst gets SageMaker's ThrottlingException (HTTP 400, "Rate exceeded"; the query protocols'
"Throttling"), which boto3 retries until it passes; the admin's key and invocations are never throttled;
throttled calls are in the audit trail."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from zeroscale.testing import ServerProcess

from .test_audit_bounds import trail

RATE, BURST = 5, 5


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(api_rate_per_key=RATE, api_burst_per_key=BURST)


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> dict[str, str]:
    iam = server.client("iam")
    iam.create_user(UserName="busy")
    policy = {"Statement": [{"Effect": "Allow", "Action": ["sagemaker:*", "iam:Get*"], "Resource": "*"}]}
    iam.put_user_policy(UserName="busy", PolicyName="p", PolicyDocument=json.dumps(policy))
    created: dict[str, str] = iam.create_access_key(UserName="busy")["AccessKey"]
    return created


def client(server: ServerProcess, service: str, key: dict[str, str], **retries: Any) -> Any:
    return server.client(service, key=key, **({"retries": retries} if retries else {}))


def calls_until_throttled(call: Callable[[], Any], most: int) -> tuple[int, dict[str, Any]]:
    for made in range(most):
        try:
            call()
        except ClientError as err:
            return made, dict(err.response)
    raise AssertionError(f"{most} calls, none throttled")


def test_past_its_burst_a_key_is_throttled_and_the_admin_is_not(
    server: ServerProcess, key: dict[str, str]
) -> None:
    time.sleep(BURST / RATE)  # the fixture's calls were the admin's; a full bucket either way
    sm = client(server, "sagemaker", key)
    made, response = calls_until_throttled(sm.list_endpoints, 3 * BURST)
    drained = time.monotonic()
    assert BURST <= made <= BURST + 1  # a call's time may add a token
    assert response["Error"]["Code"] == "ThrottlingException"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 400  # SageMaker's control plane: 400
    assert response["Error"]["Message"].startswith(
        f"Rate exceeded: access key {key['AccessKeyId']} may make {RATE} control-plane calls a second"
    )
    # IAM's query protocol says "Throttling", from the same bucket: it holds only what refilled since.
    made, response = calls_until_throttled(client(server, "iam", key).get_user, 3 * BURST)
    assert response["Error"]["Code"] == "Throttling"
    assert made <= RATE * (time.monotonic() - drained) + 1, made
    # The admin's key at many times the rate; invocations of the throttled key are not held back.
    admin = server.client("sagemaker")
    for _ in range(6 * BURST):
        admin.list_endpoints()
    smr = client(server, "sagemaker-runtime", key)
    with pytest.raises(ClientError) as err:
        smr.invoke_endpoint(EndpointName="missing", Body=b"{}", ContentType="application/json")
    assert err.value.response["Error"]["Code"] != "ThrottlingException"


def test_boto3_retries_until_its_calls_pass_at_the_rate(server: ServerProcess, key: dict[str, str]) -> None:
    time.sleep(BURST / RATE)
    sm = client(server, "sagemaker", key, mode="standard", total_max_attempts=10)
    started = time.monotonic()
    for _ in range(3 * BURST):
        sm.list_endpoints()  # each throttled attempt retried with a backoff until a token is there
    took = time.monotonic() - started
    assert took >= (2 * BURST - 1) / RATE * 0.9  # what passed the burst came at the rate


def test_throttled_calls_are_in_the_audit_trail(server: ServerProcess, key: dict[str, str]) -> None:
    time.sleep(BURST / RATE)
    sm = client(server, "sagemaker", key)
    calls_until_throttled(sm.list_models, 3 * BURST)
    time.sleep(1.0)  # the writer's next batch
    rows = [e for e in trail(server) if e["access_key_id"] == key["AccessKeyId"]]
    assert any(e["error_code"] == "ThrottlingException" for e in rows)
    assert any(e["action"] == "sagemaker:ListModels" and e["outcome"] == "Success" for e in rows)


def test_the_console_spends_the_same_keys_calls(server: ServerProcess, key: dict[str, str]) -> None:
    """Signed in to the console with the key, its control-plane calls come from the same bucket."""
    doc = {"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}
    status, headers, body = console(server, "session", json.dumps(doc).encode(), {})
    assert status == 200, body
    session = {"Cookie": headers["Set-Cookie"].split(";")[0], "X-CSRF-Token": json.loads(body)["CsrfToken"]}
    sm = client(server, "sagemaker", key)  # made first: on a loaded machine making it took a call's refill
    time.sleep(BURST / RATE)
    answers = []
    for _ in range(2 * BURST):
        status, _, body = console(server, "sagemaker/ListEndpoints", b"{}", session)
        answers.append((status, json.loads(body).get("__type")))
    emptied = time.monotonic()
    assert answers[0] == (200, None)
    assert (400, "ThrottlingException") in answers
    # and boto3 finds the bucket the console emptied: throttled after no more calls than refilled since
    # (a bucket of its own would give it BURST at once)
    made, response = calls_until_throttled(sm.list_endpoints, 3 * BURST)
    assert response["Error"]["Code"] == "ThrottlingException"
    assert made <= int(RATE * (time.monotonic() - emptied)) + 1, made


def test_signing_in_to_the_console_spends_the_keys_calls(server: ServerProcess, key: dict[str, str]) -> None:
    """An audit's key signed in 400 times a second (each a session written), eight times its rate."""
    doc = json.dumps({"AccessKeyId": key["AccessKeyId"], "SecretAccessKey": key["SecretAccessKey"]}).encode()
    time.sleep(BURST / RATE)
    answers = [console(server, "session", doc, {})[0] for _ in range(2 * BURST)]
    assert answers[0] == 200 and 400 in answers, answers


def console(
    server: ServerProcess, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, http.client.HTTPMessage, bytes]:
    """A POST to the console's API: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        headers = {"Content-Type": "application/json", **headers}
        conn.request("POST", f"/console/api/{path}", body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.headers, answer.read()
    finally:
        conn.close()
