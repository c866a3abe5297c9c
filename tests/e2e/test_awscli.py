"""The real AWS CLI (v1, the ``aws`` installed beside this Python) against a real server: deploy, wait,
list, describe and invoke exactly as a user's shell scripts would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import botocore
import pytest

from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, SKLEARN_IMAGE, ServerProcess

AWS = Path(sys.executable).parent / "aws"
NAME = "cli-sklearn"


@pytest.fixture(scope="module")
def fast_waiters(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AWS_DATA_PATH holding sagemaker's own waiters with a 1 s delay instead of 30 s.

    Only the polling interval changes: acceptors (InService succeeds, Failed / ValidationException fail or
    succeed) are botocore's, so the CLI's waiter logic runs unchanged, just without 30 s sleeps."""
    service_dir = Path(botocore.__file__).parent / "data" / "sagemaker"
    versions = sorted(p for p in service_dir.iterdir() if (p / "waiters-2.json").exists())
    source = versions[-1]
    waiters = json.loads((source / "waiters-2.json").read_text())
    for waiter in waiters["waiters"].values():
        waiter["delay"] = 1
    root = tmp_path_factory.mktemp("aws-data")
    target = root / "sagemaker" / source.name
    target.mkdir(parents=True)
    (target / "waiters-2.json").write_text(json.dumps(waiters))
    return root


@pytest.fixture(scope="module")
def aws(server: ServerProcess, fast_waiters: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("aws-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HOME=str(home),
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(home / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
        AWS_DATA_PATH=str(fast_waiters),
        AWS_EC2_METADATA_DISABLED="true",
    )

    def run(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        cmd = [str(AWS), *args, "--endpoint-url", server.url]
        proc = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stderr}\n{server.log()}")
        return proc

    return run


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def endpoint(aws: Any, sklearn_model: Any) -> str:
    container = {"Image": SKLEARN_IMAGE, "ModelDataUrl": sklearn_model.url}
    out = _json(
        aws("sagemaker", "create-model", "--model-name", NAME, "--primary-container", json.dumps(container))
    )
    assert out["ModelArn"] == f"arn:aws:sagemaker:us-east-1:000000000000:model/{NAME}"
    variants = [
        {
            "VariantName": "AllTraffic",
            "ModelName": NAME,
            "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 2},
        }
    ]
    out = _json(
        aws(
            "sagemaker",
            "create-endpoint-config",
            "--endpoint-config-name",
            NAME,
            "--production-variants",
            json.dumps(variants),
        )
    )
    assert out["EndpointConfigArn"].endswith(f":endpoint-config/{NAME}")
    out = _json(aws("sagemaker", "create-endpoint", "--endpoint-name", NAME, "--endpoint-config-name", NAME))
    assert out["EndpointArn"] == f"arn:aws:sagemaker:us-east-1:000000000000:endpoint/{NAME}"
    proc = aws("sagemaker", "wait", "endpoint-in-service", "--endpoint-name", NAME)
    assert proc.stdout == ""
    return NAME


def test_wait_list_and_describe(aws: Any, server: ServerProcess, endpoint: str) -> None:
    listed = _json(aws("sagemaker", "list-endpoints"))["Endpoints"]
    mine = [e for e in listed if e["EndpointName"] == endpoint]
    assert len(mine) == 1
    assert mine[0]["EndpointStatus"] == "InService"
    desc = _json(aws("sagemaker", "describe-endpoint", "--endpoint-name", endpoint))
    assert desc["EndpointStatus"] == "InService"
    assert desc["EndpointConfigName"] == endpoint
    variant = desc["ProductionVariants"][0]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["CurrentServerlessConfig"] == {"MemorySizeInMB": 1024, "MaxConcurrency": 2}
    assert variant["DeployedImages"][0]["SpecifiedImage"] == SKLEARN_IMAGE
    # awscli v1 prints timestamps as epoch seconds
    assert isinstance(desc["CreationTime"], float)
    assert desc["CreationTime"] <= desc["LastModifiedTime"]
    # the CLI's own list filters reach the server
    filtered = _json(
        aws("sagemaker", "list-endpoints", "--name-contains", "cli-", "--status-equals", "InService")
    )
    assert [e["EndpointName"] for e in filtered["Endpoints"]] == [endpoint]
    # the CLI follows NextToken through every page by itself
    server_models = server.client("sagemaker").list_models(MaxResults=100)["Models"]
    paged = _json(
        aws("sagemaker", "list-models", "--page-size", "1", "--sort-by", "Name", "--sort-order", "Ascending")
    )
    assert [m["ModelName"] for m in paged["Models"]] == sorted(m["ModelName"] for m in server_models)


def test_invoke_csv_from_file(aws: Any, endpoint: str, sklearn_model: Any, tmp_path: Path) -> None:
    rows = sklearn_model.X[:10]
    body = tmp_path / "rows.csv"
    body.write_text("\n".join(",".join(repr(float(v)) for v in row) for row in rows))
    out = tmp_path / "out.json"
    meta = _json(
        aws(
            "sagemaker-runtime",
            "invoke-endpoint",
            "--endpoint-name",
            endpoint,
            "--body",
            f"fileb://{body}",
            "--content-type",
            "text/csv",
            "--accept",
            "application/json",
            str(out),
        )
    )
    assert meta["ContentType"] == "application/json"
    assert meta["InvokedProductionVariant"] == "AllTraffic"
    assert json.loads(out.read_text()) == sklearn_model.expected(rows)


def test_invoke_body_given_inline(aws: Any, endpoint: str, sklearn_model: Any, tmp_path: Path) -> None:
    """awscli v1 sends a blob given as a plain string as its bytes (no base64)."""
    rows = sklearn_model.X[10:13]
    out = tmp_path / "out.json"
    aws(
        "sagemaker-runtime",
        "invoke-endpoint",
        "--endpoint-name",
        endpoint,
        "--body",
        json.dumps(rows.tolist()),
        "--content-type",
        "application/json",
        str(out),
    )
    assert json.loads(out.read_text()) == sklearn_model.expected(rows)


def test_errors_are_reported_by_the_cli(aws: Any, tmp_path: Path) -> None:
    proc = aws("sagemaker", "describe-endpoint", "--endpoint-name", "nope", check=False)
    assert proc.returncode != 0
    assert "ValidationException" in proc.stderr
    assert 'Could not find endpoint "arn:aws:sagemaker:us-east-1:000000000000:endpoint/nope"' in proc.stderr
    proc = aws(
        "sagemaker-runtime",
        "invoke-endpoint",
        "--endpoint-name",
        "nope",
        "--body",
        "1,2,3,4",
        "--content-type",
        "text/csv",
        str(tmp_path / "out"),
        check=False,
    )
    assert proc.returncode != 0
    assert "ValidationError" in proc.stderr
    assert "Endpoint nope of account 000000000000 not found." in proc.stderr


def test_waiters_on_failure_and_deletion(aws: Any, tmp_path: Path) -> None:
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar.gz archive\n")  # fails its deployment
    container = {"Image": "sklearn", "ModelDataUrl": f"file://{tmp_path}/broken.tar.gz"}
    variants = [
        {
            "VariantName": "A",
            "ModelName": "cli-broken",
            "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
        }
    ]
    aws(
        "sagemaker",
        "create-model",
        "--model-name",
        "cli-broken",
        "--primary-container",
        json.dumps(container),
    )
    aws(
        "sagemaker",
        "create-endpoint-config",
        "--endpoint-config-name",
        "cli-broken",
        "--production-variants",
        json.dumps(variants),
    )
    aws(
        "sagemaker",
        "create-endpoint",
        "--endpoint-name",
        "cli-broken",
        "--endpoint-config-name",
        "cli-broken",
    )
    proc = aws("sagemaker", "wait", "endpoint-in-service", "--endpoint-name", "cli-broken", check=False)
    assert proc.returncode != 0
    assert "terminal failure state" in proc.stderr
    desc = _json(aws("sagemaker", "describe-endpoint", "--endpoint-name", "cli-broken"))
    assert desc["EndpointStatus"] == "Failed"
    assert f"file://{tmp_path}/broken.tar.gz" in desc["FailureReason"]
    aws("sagemaker", "delete-endpoint", "--endpoint-name", "cli-broken")
    aws("sagemaker", "wait", "endpoint-deleted", "--endpoint-name", "cli-broken")
    names = [e["EndpointName"] for e in _json(aws("sagemaker", "list-endpoints"))["Endpoints"]]
    assert "cli-broken" not in names


def test_application_autoscaling_through_the_cli(aws: Any, endpoint: str) -> None:
    """The CLI signs as application-autoscaling and speaks its JSON 1.1; refusals reach it by name."""
    proc = aws(
        "application-autoscaling",
        "register-scalable-target",
        "--service-namespace",
        "sagemaker",
        "--resource-id",
        f"endpoint/{endpoint}/variant/AllTraffic",
        "--scalable-dimension",
        "sagemaker:variant:DesiredInstanceCount",
        "--min-capacity",
        "1",
        "--max-capacity",
        "2",
        check=False,
    )
    assert proc.returncode != 0
    assert "ValidationException" in proc.stderr and "is serverless" in proc.stderr
    listed = aws("application-autoscaling", "describe-scalable-targets", "--service-namespace", "sagemaker")
    assert _json(listed) == {"ScalableTargets": []}
