"""The ``zeroscale`` command line as a user runs it: a subprocess against a real server."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zeroscale.testing import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    ServerProcess,
    free_port,
    make_tar,
    wait_final,
    wait_for,
)

ZEROSCALE = Path(sys.executable).parent / "zeroscale"


def _base_env(home: Path) -> dict[str, str]:
    """No AWS_* variables from the outer environment, an empty HOME (no ~/.aws), a wide terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZEROSCALE_"))}
    env.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        AWS_EC2_METADATA_DISABLED="true",
        COLUMNS="120",
    )
    return env


def _run(
    args: list[str], env: dict[str, str], cwd: Path, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ZEROSCALE), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-home")


@pytest.fixture(scope="module")
def zs(server: ServerProcess, home: Path) -> Any:
    """Run ``zeroscale ARGS --endpoint-url <server>`` with the admin credentials in AWS_* variables."""
    env = _base_env(home)
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return _run([*args, "--endpoint-url", server.url], env, home)

    return run


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def _table(stdout: str) -> dict[str, list[str]]:
    lines = stdout.strip().splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "CAPACITY", "WORKERS", "WARM", "CACHE", "CREATED"]
    return {line.split()[0]: line.split() for line in lines[1:]}


def test_deploy_invoke_list_delete(
    zs: Any, server: ServerProcess, sklearn_model: Any, tmp_path: Path
) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes((sklearn_model.tar.parent / "model.joblib").read_bytes())  # a bare model file
    out = _ok(
        zs(
            "deploy",
            "--name",
            "cli-model",
            "--model",
            str(model),
            "--image",
            "sklearn",
            "--memory",
            "1024",
            "--max-concurrency",
            "2",
        )
    )
    assert "cli-model: InService" in out
    assert "zeroscale invoke cli-model" in out
    desc = server.client("sagemaker").describe_endpoint(EndpointName="cli-model")
    assert desc["ProductionVariants"][0]["CurrentServerlessConfig"] == {
        "MemorySizeInMB": 1024,
        "MaxConcurrency": 2,
    }

    rows = sklearn_model.X[:5]
    out = _ok(zs("invoke", "cli-model", "--body", json.dumps(rows.tolist())))
    assert json.loads(out) == sklearn_model.expected(rows)
    csv = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    out = _ok(zs("invoke", "cli-model", "--body", csv, "--content-type", "text/csv", "--accept", "text/csv"))
    assert [int(float(x)) for x in out.split()] == sklearn_model.expected(rows)

    table = _table(_ok(zs("endpoints")))
    assert table["cli-model"][1:4] == ["InService", "1024", "MB"]
    assert int(table["cli-model"][5]) >= 1  # WORKERS: the one that just answered

    out = _ok(zs("delete", "cli-model"))
    assert "cli-model: deleted" in out
    assert "cli-model" not in _table(_ok(zs("endpoints")))
    sm = server.client("sagemaker")
    assert sm.list_models(NameContains="cli-model")["Models"] == []
    assert sm.list_endpoint_configs(NameContains="cli-model")["EndpointConfigs"] == []


def test_deploy_of_a_broken_model_prints_the_failure_reason(
    zs: Any, server: ServerProcess, tmp_path: Path
) -> None:
    """The reason is printed; then what the deploy made is removed, so that the same command runs again once
    the model is mended; --keep-failed keeps it all to look at."""
    broken = tmp_path / "model.joblib"
    broken.write_bytes(b"this is not a joblib file")
    deploy = ("deploy", "--name", "cli-broken", "--model", str(broken), "--memory", "1024")
    proc = zs(*deploy, "--keep-failed")
    assert proc.returncode != 0
    assert "cli-broken: Failed" in proc.stderr
    reason = proc.stderr.split("cli-broken: Failed", 1)[1].strip()
    assert reason.startswith("Worker failed to start"), proc.stderr
    assert "joblib" in reason  # the model's own load error is in the FailureReason
    sm = server.client("sagemaker")
    desc = sm.describe_endpoint(EndpointName="cli-broken")
    assert desc["EndpointStatus"] == "Failed"
    assert reason == desc["FailureReason"].strip()
    table = _table(_ok(zs("endpoints")))
    assert table["cli-broken"][1] == "Failed"
    _ok(zs("delete", "cli-broken"))

    proc = zs(*deploy)
    assert proc.returncode == 1 and "cli-broken: Failed" in proc.stderr
    assert (
        "deploy failed: removed the endpoint, endpoint configuration and model cli-broken it had created."
        in proc.stderr
    )
    wait_for(lambda: "cli-broken" not in _table(_ok(zs("endpoints"))), timeout_s=10)
    assert sm.list_models(NameContains="cli-broken")["Models"] == []
    assert sm.list_endpoint_configs(NameContains="cli-broken")["EndpointConfigs"] == []


def test_code_beside_a_packaged_model_is_refused_not_dropped(zs: Any, tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    proc = zs(
        "deploy", "--name", "x", "--model", str(tmp_path / "m.tar.gz"), "--code", str(tmp_path / "code")
    )
    assert proc.returncode == 2 and "--code goes beside a bare model file" in proc.stderr


def test_invoke_errors_are_one_line(zs: Any) -> None:
    proc = zs("invoke", "no-such-endpoint", "--body", "[[1,2,3,4]]")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "Error: ValidationError: Endpoint no-such-endpoint of account 000000000000 not found. "
        "`zeroscale endpoints` lists them."
    )
    proc = zs("invoke", "no-such-endpoint")
    assert proc.returncode == 2
    assert "give exactly one of --body or --file" in proc.stderr


def test_no_server_there(home: Path) -> None:
    env = _base_env(home)
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["endpoints"], ["invoke", "x", "--body", "[[1]]"], ["delete", "x"]):
        proc = _run([*args, "--endpoint-url", url], env, home, timeout=60)
        assert proc.returncode == 1, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert "Could not connect to the endpoint URL" in proc.stderr
        assert url in proc.stderr
        assert "Is `zeroscale serve` running there?" in proc.stderr
        assert "--endpoint-url http://HOST:PORT, or export ZEROSCALE_ENDPOINT_URL" in proc.stderr


def test_help(home: Path) -> None:
    env = _base_env(home)
    out = _ok(_run(["--help"], env, home))
    for command in ("serve", "deploy", "invoke", "endpoints", "traffic", "delete"):
        assert f"  {command} " in out
    out = " ".join(_ok(_run(["serve", "--help"], env, home)).split())  # help text wraps
    for option, var in [
        ("--host", "ZEROSCALE_HOST"),
        ("--port", "ZEROSCALE_PORT"),
        ("--data-dir", "ZEROSCALE_DATA_DIR"),
        ("--database-url", "ZEROSCALE_DATABASE_URL"),
        ("--idle-timeout-s", "ZEROSCALE_IDLE_TIMEOUT_S"),
        ("--s3-endpoint-url", "ZEROSCALE_S3_ENDPOINT_URL"),
        ("--memory-budget-mb", "ZEROSCALE_MEMORY_BUDGET_MB"),
    ]:
        assert option in out
        assert f"env var: {var}" in out
    assert "ZEROSCALE_ACCESS_KEY_ID" in out
    out = " ".join(_ok(_run(["deploy", "--help"], env, home)).split())
    for option in ("--name", "--model", "--image", "--memory", "--max-concurrency", "--endpoint-url"):
        assert option in out
    assert "ZEROSCALE_ENDPOINT_URL" in out


# ---- credentials from the server's data directory ----------------------------------------------------------


@pytest.fixture(scope="module")
def generated_creds_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server given no admin credentials: it writes DATA_DIR/credentials on first start."""
    data_dir = tmp_path_factory.mktemp("gen-creds") / "data"
    server = ServerProcess(data_dir, env={"ZEROSCALE_ACCESS_KEY_ID": "", "ZEROSCALE_SECRET_ACCESS_KEY": ""})
    server.start()
    yield server
    server.stop()


def test_credentials_from_the_data_dir(generated_creds_server: ServerProcess, tmp_path: Path) -> None:
    data_dir = generated_creds_server.data_dir
    creds_file = data_dir / "credentials"
    assert creds_file.exists()
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    assert "aws_access_key_id = ZS" in creds_file.read_text()
    home = tmp_path / "home"
    home.mkdir()
    env = _base_env(home)
    url = ["--endpoint-url", generated_creds_server.url]

    out = _ok(_run(["endpoints", "--data-dir", str(data_dir), *url], env, home))
    assert out.split() == ["NAME", "STATUS", "CAPACITY", "WORKERS", "WARM", "CACHE", "CREATED"]
    # ZEROSCALE_DATA_DIR works the same
    _ok(_run(["endpoints", *url], {**env, "ZEROSCALE_DATA_DIR": str(data_dir)}, home))

    # without it there are no credentials at all: a clear message, not a traceback
    proc = _run(["endpoints", *url], env, home)
    assert proc.returncode == 1
    assert "No AWS credentials found" in proc.stderr
    assert "--data-dir" in proc.stderr
    assert "(looked in .zeroscale/credentials)" in proc.stderr
    assert "Traceback" not in proc.stderr

    # the admin key pair of another server is refused by this one
    wrong = {**env, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    proc = _run(["endpoints", "--data-dir", str(data_dir), *url], wrong, home)
    assert proc.returncode == 1
    assert "UnrecognizedClientException" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_real_time_deploy_and_traffic_shift(
    zs: Any, server: ServerProcess, sklearn_model: Any, tmp_path: Path
) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes((sklearn_model.tar.parent / "model.joblib").read_bytes())
    _ok(
        zs(
            "deploy",
            "--name",
            "cli-rt",
            "--model",
            str(model),
            "--instance-type",
            "ml.t2.medium",
            "--instance-count",
            "1",
        )
    )
    variant = server.client("sagemaker").describe_endpoint(EndpointName="cli-rt")["ProductionVariants"][0]
    assert variant["CurrentInstanceCount"] == 1 and "CurrentServerlessConfig" not in variant
    out = _ok(zs("traffic", "cli-rt", "AllTraffic=1:2"))
    assert "AllTraffic: weight 1, 2 instance(s)" in out
    proc = zs("traffic", "cli-rt", "Nope=1")
    assert proc.returncode == 1 and "The variant(s) [Nope] are not present" in proc.stderr
    proc = zs("traffic", "cli-tr", "AllTraffic=1")  # a typo'd endpoint
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: Endpoint cli-tr does not exist (`zeroscale endpoints` lists them)."
    proc = zs("traffic", "cli-rt", "AllTraffic=heavy")
    assert proc.returncode == 2 and "VARIANT=WEIGHT" in proc.stderr
    table = _table(_ok(zs("endpoints")))
    assert table["cli-rt"][2:5] == ["2", "x", "ml.t2.medium"]  # CAPACITY: instances x type
    _ok(zs("delete", "cli-rt"))


def test_real_time_deploy_options_are_checked_before_anything_is_made(
    zs: Any, server: ServerProcess, sklearn_model: Any
) -> None:
    """An instance type zeroscale does not serve is named with the families it does (not botocore's list of
    some 300 types), and a serverless sizing option beside --instance-type is refused, not ignored."""
    deploy = ("deploy", "--name", "cli-rt-bad", "--model", str(sklearn_model.tar))
    proc = zs(*deploy, "--instance-type", "ml.t3.medium")
    assert proc.returncode == 2, proc.stderr
    assert "ml.t3.medium is not an instance type zeroscale serves" in proc.stderr
    assert "ml.m5.*" in proc.stderr and "ml.t2.*" in proc.stderr
    assert "ml.p6-b200" not in proc.stderr
    proc = zs(*deploy, "--instance-type", "ml.m5.large", "--memory", "1024", "--max-concurrency", "3")
    assert proc.returncode == 2, proc.stderr
    assert "--memory and --max-concurrency size a serverless endpoint" in proc.stderr
    assert server.client("sagemaker").list_models(NameContains="cli-rt-bad")["Models"] == []


def test_invoke_of_an_asynchronous_endpoint_says_how(
    zs: Any, server: ServerProcess, sklearn_model: Any
) -> None:
    sm = server.client("sagemaker")
    sm.create_model(
        ModelName="cli-async", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": sklearn_model.url}
    )
    sm.create_endpoint_config(
        EndpointConfigName="cli-async",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "cli-async",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
        AsyncInferenceConfig={"OutputConfig": {"S3OutputPath": "s3://bucket/out"}},
    )
    sm.create_endpoint(EndpointName="cli-async", EndpointConfigName="cli-async")
    proc = zs("invoke", "cli-async", "--body", "[[1,2,3,4]]")
    assert proc.returncode == 1, proc.stderr
    assert "is an asynchronous endpoint" in proc.stderr
    assert "invoke_endpoint_async" in proc.stderr and "zeroscale async status" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    _ok(zs("delete", "cli-async"))


# ---- usage errors before any call --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["localhost:18731", "127.0.0.1:18731", "ftp://localhost:1", "http://", "http://h:x"]
)
def test_an_endpoint_url_without_a_scheme_is_a_usage_error(home: Path, url: str) -> None:
    env = _base_env(home)
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
    for args in (["endpoints", "--endpoint-url", url], ["invoke", "x", "--body", "1", "--endpoint-url", url]):
        proc = _run(args, env, home)
        assert proc.returncode == 2, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert "--endpoint-url" in proc.stderr and "http://" in proc.stderr, proc.stderr
    # the same from the environment variable
    proc = _run(["workers"], {**env, "ZEROSCALE_ENDPOINT_URL": url}, home)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "ZEROSCALE_ENDPOINT_URL" in proc.stderr or "--endpoint-url" in proc.stderr


# ---- a deploy that fails halfway, and delete of what is left -----------------------------------------------


def test_a_deploy_that_fails_after_creating_the_model_removes_it(
    zs: Any, server: ServerProcess, sklearn_model: Any
) -> None:
    sm = server.client("sagemaker")
    proc = zs("deploy", "--name", "cli-half", "--model", str(sklearn_model.tar), "--idle-timeout-s", "-5")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Value '-5' of tag 'zeroscale:idle-timeout-s'" in proc.stderr
    assert "removed the model cli-half" in proc.stderr, proc.stderr
    assert sm.list_models(NameContains="cli-half")["Models"] == []
    assert sm.list_endpoint_configs(NameContains="cli-half")["EndpointConfigs"] == []
    # the name is free again: no `zeroscale delete` needed
    _ok(zs("deploy", "--name", "cli-half", "--model", str(sklearn_model.tar), "--no-wait"))
    _ok(zs("delete", "cli-half"))


def test_delete_without_an_endpoint_removes_the_config_and_model(
    zs: Any, server: ServerProcess, sklearn_model: Any
) -> None:
    sm = server.client("sagemaker")
    container = {"Image": "sklearn", "ModelDataUrl": sklearn_model.url}
    sm.create_model(ModelName="cli-orphan", PrimaryContainer=container)
    sm.create_endpoint_config(
        EndpointConfigName="cli-orphan",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "cli-orphan",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    out = _ok(zs("delete", "cli-orphan"))
    assert "no endpoint" in out
    assert "deleted endpoint configuration, model" in out, out
    assert sm.list_models(NameContains="cli-orphan")["Models"] == []
    assert sm.list_endpoint_configs(NameContains="cli-orphan")["EndpointConfigs"] == []

    sm.create_model(ModelName="cli-orphan", PrimaryContainer=container)  # a model alone
    assert "deleted model" in _ok(zs("delete", "cli-orphan"))

    proc = zs("delete", "cli-orphan")  # nothing of that name: an error
    assert proc.returncode == 1
    assert proc.stderr.strip() == "Error: No endpoint, endpoint configuration or model named cli-orphan."
    proc = zs("delete", "cli-orphan", "--endpoint-only")
    assert proc.returncode == 1 and "Could not find endpoint" in proc.stderr


# ---- invoke's targets: a multi-model endpoint, a Direct pipeline, variants, custom attributes --------------

ECHO = """
import json


def model_fn(model_dir):
    return {name!r}


def transform_fn(model, body, content_type, accept, context):
    headers = context.get_all_request_header(0)
    answer = {{
        "model": model,
        "attributes": headers.get("x-amzn-sagemaker-custom-attributes"),
        "inference_id": headers.get("x-amzn-sagemaker-inference-id"),
    }}
    return json.dumps(answer), "application/json"
"""


def _echo_tar(path: Path, name: str) -> Path:
    return make_tar(path, {"code/inference.py": ECHO.format(name=name).encode()})


def test_invoke_targets_a_model_a_container_and_a_variant(
    zs: Any, server: ServerProcess, tmp_path: Path
) -> None:
    sm = server.client("sagemaker")
    models = tmp_path / "models"
    models.mkdir()
    for name in ("a", "b"):
        _echo_tar(models / f"{name}.tar.gz", name)
    mme = {"Image": "sklearn", "ModelDataUrl": f"file://{models}/", "Mode": "MultiModel"}
    sm.create_model(ModelName="cli-mme", PrimaryContainer=mme)
    sm.create_model(
        ModelName="cli-direct",
        Containers=[
            {"ContainerHostname": name, "Image": "sklearn", "ModelDataUrl": f"file://{models}/{name}.tar.gz"}
            for name in ("a", "b")
        ],
        InferenceExecutionConfig={"Mode": "Direct"},
    )
    for name in ("cli-mme", "cli-direct"):
        serverless = {"MemorySizeInMB": 1024, "MaxConcurrency": 2}
        variant = {"VariantName": "AllTraffic", "ModelName": name, "ServerlessConfig": serverless}
        sm.create_endpoint_config(EndpointConfigName=name, ProductionVariants=[variant])
        sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
        assert wait_final(sm, name)["EndpointStatus"] == "InService"

    out = _ok(zs("invoke", "cli-mme", "--body", "{}", "--target-model", "b.tar.gz"))
    assert json.loads(out) == {"model": "b", "attributes": None, "inference_id": None}
    (models / "sub").mkdir()  # a TargetModel names an archive, as an S3 key names an object: a 400
    proc = zs("invoke", "cli-mme", "--body", "{}", "--target-model", "sub")
    assert proc.returncode == 1 and "ValidationError" in proc.stderr, proc.stderr
    assert "sub is a directory, not a model archive" in proc.stderr
    out = _ok(
        zs(
            "invoke",
            "cli-direct",
            "--body",
            "{}",
            "--target-container-hostname",
            "a",
            "--custom-attributes",
            "trace=7",
            "--inference-id",
            "req-1",
            "--target-variant",
            "AllTraffic",
        )
    )
    assert json.loads(out) == {"model": "a", "attributes": "trace=7", "inference_id": "req-1"}
    proc = zs(
        "invoke", "cli-direct", "--body", "{}", "--target-container-hostname", "a", "--target-variant", "Nope"
    )
    assert proc.returncode == 1 and "Nope" in proc.stderr and "Traceback" not in proc.stderr
    for name in ("cli-mme", "cli-direct"):
        _ok(zs("delete", name))


def test_deploy_of_a_bare_file_of_another_name(zs: Any, sklearn_model: Any, tmp_path: Path) -> None:
    model = tmp_path / "clf.joblib"
    model.write_bytes((sklearn_model.tar.parent / "model.joblib").read_bytes())
    proc = zs("deploy", "--name", "cli-clf", "--model", str(model), "--memory", "1024")
    out = _ok(proc)
    assert "clf.joblib as model.joblib" in proc.stderr
    assert "cli-clf: InService" in out
    rows = sklearn_model.X[:3]
    assert json.loads(
        _ok(zs("invoke", "cli-clf", "--body", json.dumps(rows.tolist())))
    ) == sklearn_model.expected(rows)
    proc = zs("deploy", "--name", "cli-clf2", "--model", str(model), "--image", "onnx")
    assert proc.returncode == 1 and "--image sklearn" in proc.stderr, proc.stderr
    _ok(zs("delete", "cli-clf"))


# ---- polish: --env, unknown endpoints, help text ----------------------------------------------------------


def test_env_without_equals_is_a_usage_error(zs: Any, server: ServerProcess, sklearn_model: Any) -> None:
    for env in ("FOO", "=bar"):
        proc = zs("deploy", "--name", "cli-env", "--model", str(sklearn_model.tar), "--env", env)
        assert proc.returncode == 2, proc.stderr
        assert "--env" in proc.stderr and "KEY=VALUE" in proc.stderr
    assert server.client("sagemaker").list_models(NameContains="cli-env")["Models"] == []


def test_workers_and_metrics_of_an_unknown_endpoint(zs: Any) -> None:
    for command in ("workers", "metrics"):
        proc = zs(command, "cli-nosuch")
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert "Endpoint cli-nosuch does not exist" in proc.stderr, proc.stderr


def test_help_of_every_deploy_and_invoke_option(home: Path) -> None:
    env = _base_env(home)
    for command in ("deploy", "invoke", "package", "delete"):
        out = _ok(_run([command, "--help"], env, home))
        options = out.split("Options:", 1)[1]
        # every option line (two spaces, a dash) is followed by its help on the same line or the next
        lines = options.splitlines()
        for i, line in enumerate(lines):
            if line.startswith("  -"):
                text = line.strip().split("  ", 1)
                following = lines[i + 1].strip() if i + 1 < len(lines) else ""
                helped = text[1].strip() if len(text) == 2 else following
                assert helped and not helped.startswith(("-", "[")), (command, line)
    deploy_help = " ".join(_ok(_run(["deploy", "--help"], env, home)).split())
    for alias in ("sklearn", "xgboost", "pytorch", "onnx", "zeroscale images"):
        assert alias in deploy_help
