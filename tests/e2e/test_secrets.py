"""A model looks for secrets that are not its own, the way a hostile one would: in ``/proc/self/environ``
(the strings its process was exec'd with, which clearing ``os.environ`` after a fork does not remove) and
in every readable mapping of its own memory (``/proc/self/maps`` + ``/proc/self/mem``).

- the server's: its admin secret key, an AWS secret and a marker variable, all in the server's environment;
- another endpoint's: a value of another tenant's model ``Environment``, which the zygote this model's
  worker is forked from was given for that endpoint's template.

None is found. The model's own ``Environment`` value is, in its memory: the scan does see what is there.
A needle is sent in two halves and never joined in the worker (its request body would hold it otherwise)."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zeroscale.testing import SECRET_KEY, ServerProcess, deploy, wait_for

from .conftest import handler_model

S3_SECRET = "zeroscale-test-aws-secret-" + secrets.token_hex(8)
MARKER = "zeroscale-test-server-marker-" + secrets.token_hex(8)
OTHER_TENANT = "zeroscale-test-tenant-a-" + secrets.token_hex(8)
OWN = "zeroscale-test-own-value-" + secrets.token_hex(8)

SCANNER = r"""
import json


def model_fn(model_dir):
    return None


_STEP = 8 << 20


def _joined(data, head, tail):
    i = data.find(head)
    while i >= 0:
        if data[i + len(head) : i + len(head) + len(tail)] == tail:
            return True
        i = data.find(head, i + 1)
    return False


def _in_memory(head, tail):
    # the mappings where head+tail lies, read in steps that overlap by more than a needle
    found = []
    with open("/proc/self/maps") as maps:
        lines = maps.read().splitlines()
    with open("/proc/self/mem", "rb", 0) as mem:
        for line in lines:
            parts = line.split()
            if "r" not in parts[1]:
                continue
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            pos = lo
            while pos < hi:
                try:
                    mem.seek(pos)
                    chunk = mem.read(min(_STEP + 512, hi - pos))
                except (OSError, ValueError, OverflowError):
                    break
                if _joined(chunk, head, tail):
                    found.append(parts[5] if len(parts) > 5 else "[anon]")
                    break
                pos += _STEP
    return found


def transform_fn(model, body, content_type, accept):
    with open("/proc/self/environ", "rb") as f:
        environ = f.read()
    out = {}
    for name, (head, tail) in json.loads(body).items():
        h, t = head.encode(), tail.encode()
        out[name] = {"environ": _joined(environ, h, t), "memory": _in_memory(h, t)}
    return json.dumps(out), "application/json"
"""

PLAIN = """
def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    return b"ok", "text/plain"
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose environment holds its credentials (the README's way: ``ZEROSCALE_*``, set by
    ServerProcess), an AWS secret (the standard chain for ``s3://`` model data) and a marker."""
    env = {"AWS_SECRET_ACCESS_KEY": S3_SECRET, "ZEROSCALE_TEST_MARKER": MARKER}
    srv = ServerProcess(tmp_path_factory.mktemp("data"), env=env).start()
    yield srv
    srv.stop()


def _split(value: str) -> list[str]:
    return [value[: len(value) // 2], value[len(value) // 2 :]]


def scan(smr: Any, endpoint: str) -> dict[str, dict[str, Any]]:
    needles = {
        "admin secret": SECRET_KEY,
        "aws secret": S3_SECRET,
        "marker": MARKER,
        "other tenant": OTHER_TENANT,
        "own": OWN,
    }
    body = json.dumps({name: _split(value) for name, value in needles.items()})
    resp = smr.invoke_endpoint(EndpointName=endpoint, ContentType="application/json", Body=body)
    result: dict[str, dict[str, Any]] = json.loads(resp["Body"].read())
    return result


def test_a_model_finds_no_secret_of_the_server_nor_of_another_endpoint(
    server: ServerProcess, tmp_path: Path
) -> None:
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # Another tenant's endpoint of the same runtime. Once its worker answered, its pool asks the zygote
    # for a template of its model (with its Environment); the scanner's worker is forked after that.
    tenant = deploy(
        sm, "tenant-a", handler_model(tmp_path / "a", PLAIN), environment={"TENANT_TOKEN": OTHER_TENANT}
    )
    assert tenant["EndpointStatus"] == "InService", tenant.get("FailureReason")
    smr.invoke_endpoint(EndpointName="tenant-a", ContentType="text/plain", Body=b"x")
    wait_for(lambda: any(server.data_dir.glob("**/template-*.log")), timeout_s=30)
    # The zygote's spare was forked before that: another endpoint takes it, and the scanner gets the next.
    time.sleep(0.3)
    filler = deploy(sm, "filler", handler_model(tmp_path / "a", PLAIN))
    assert filler["EndpointStatus"] == "InService", filler.get("FailureReason")
    time.sleep(0.5)  # the zygote forks its next spare once requests pause
    scanner = deploy(sm, "scanner", handler_model(tmp_path / "b", SCANNER), environment={"OWN_TOKEN": OWN})
    assert scanner["EndpointStatus"] == "InService", scanner.get("FailureReason")

    found = scan(smr, "scanner")
    assert found["own"]["memory"], found  # the scan sees what is there
    for name in ("other tenant", "admin secret", "aws secret", "marker"):
        assert found[name] == {"environ": False, "memory": []}, (name, found)
