"""The audit trail cannot be grown without end: requests refused before their caller is known (anyone can
send them) are recorded at most 60 a minute, and rows older than --audit-retention-days are deleted. A real
server, real boto3, the trail read back through its signed REST route."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from zeroscale.audit.budget import PER_MINUTE
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, wait_for

STRANGER = "AKIASTRANGER11111111"


def trail(server: ServerProcess) -> list[dict[str, Any]]:
    url = f"{server.url}/zeroscale/v1/audit?limit=10000"
    request = AWSRequest("GET", url)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(request)
    with urllib.request.urlopen(urllib.request.Request(url, headers=dict(request.headers)), timeout=30) as r:
        events: list[dict[str, Any]] = json.loads(r.read())["Events"]
    return events


def test_refused_strangers_are_recorded_at_most_sixty_a_minute(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory()
    stranger = boto3.client(
        "sagemaker",
        endpoint_url=server.url,
        region_name=REGION,
        aws_access_key_id=STRANGER,
        aws_secret_access_key="x" * 40,
        config=Config(retries={"total_max_attempts": 1}),
    )
    for _ in range(PER_MINUTE + 40):
        with pytest.raises(ClientError) as err:
            stranger.list_models()
        assert err.value.response["Error"]["Code"] == "UnrecognizedClientException"
    server.client("sagemaker").list_models()  # the admin's calls are all recorded, whatever the strangers
    time.sleep(1.0)  # the writer's next batch
    events = trail(server)
    refused = [e for e in events if e["access_key_id"] == STRANGER]
    assert len(refused) == PER_MINUTE, len(refused)
    assert all(e["error_code"] == "UnrecognizedClientException" for e in refused)
    assert any(e["user"] == "admin" and e["action"] == "sagemaker:ListModels" for e in events)


def test_rows_older_than_the_retention_are_deleted(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(audit_retention_days=0.00005)  # 4.3 s
    sm = server.client("sagemaker")
    sm.list_models()
    wait_for(lambda: any(e["action"] == "sagemaker:ListModels" for e in trail(server)), timeout_s=10)
    wait_for(lambda: not any(e["action"] == "sagemaker:ListModels" for e in trail(server)), timeout_s=20)
