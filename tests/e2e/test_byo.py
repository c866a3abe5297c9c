"""Bring-your-own images end to end: push the example image with the CLI, deploy it with boto3 by
``name:tag``, invoke it, watch it scale to zero (SIGTERM) and back, and fail clearly when it never pings."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from botocore.exceptions import ClientError

from zeroscale.testing import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    ServerProcess,
    deploy,
    make_tar,
    wait_final,
    wait_for,
)
from zeroscale.workers.capture import strip_stamps
from zeroscale.workers.cgroups import own_memory_group
from zeroscale.workers.memory import tree_pids

ZEROSCALE = Path(sys.executable).parent / "zeroscale"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "byo-image"
IMAGE = "byo-linear:1.0"
STARTUP_TIMEOUT_S = 4
BWRAP = shutil.which("bwrap") is not None


@pytest.fixture(scope="module")
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    return server_factory(startup_timeout_s=STARTUP_TIMEOUT_S)


@pytest.fixture(scope="module")
def zs(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Run ``zeroscale ARGS --endpoint-url <server>`` as a user would."""
    home = tmp_path_factory.mktemp("byo-home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZEROSCALE_"))}
    env.update(
        HOME=str(home),
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        COLUMNS="200",
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(ZEROSCALE), *args, "--endpoint-url", server.url],
            env=env,
            cwd=home,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def pushed(zs: Any) -> str:
    return ok(zs("images", "push", IMAGE, str(EXAMPLE)))


def linear_model(root: Path, name: str, weights: list[float], bias: float) -> str:
    model = root / name
    model.write_text(json.dumps({"weights": weights, "bias": bias}))
    return f"file://{make_tar(root / f'{name}.tar.gz', {name: model})}"


def worker_logs(server: ServerProcess, endpoint: str) -> str:
    logs = sorted((server.data_dir / "logs" / endpoint.lower() / "AllTraffic").glob("*.log"))
    return "\n".join(f"== {p.name}\n{strip_stamps(p.read_bytes()).decode()}" for p in logs)


def invoke(smr: Any, endpoint: str, body: bytes, content_type: str, accept: str | None = None) -> bytes:
    kwargs = {"EndpointName": endpoint, "Body": body, "ContentType": content_type}
    if accept:
        kwargs["Accept"] = accept
    return bytes(smr.invoke_endpoint(**kwargs)["Body"].read())


def test_images_lists_builtins_and_the_pushed_image(zs: Any, pushed: str) -> None:
    assert f"pushed {IMAGE}  sha256:" in pushed
    assert "(2 files," in pushed
    assert f"Image='{IMAGE}'" in pushed
    lines = ok(zs("images")).strip().splitlines()
    assert lines[0].split() == ["NAME", "KIND", "VERSION/TAG", "PUSHED", "BY", "CONTENT", "TYPES"]
    rows = {line.split()[0]: line.split(None, 4) for line in lines[1:]}
    assert rows["sklearn"][1] == "builtin"
    assert rows["sklearn"][2][0].isdigit()  # scikit-learn's installed version
    assert rows["sklearn"][3] == "-"
    assert "text/csv" in rows["sklearn"][4]
    assert rows["byo-linear"][1:] == ["image", "1.0", "(admin)", "text/csv, application/json"]
    doc = json.loads(ok(zs("images", "--json")))
    mine = [i for i in doc["Images"] if i["Name"] == "byo-linear"]
    assert mine[0]["Entrypoint"] == ["./serve"] and mine[0]["EnvNames"] == ["MODEL_FILE", "PYTHONUNBUFFERED"]


def test_push_errors_are_clear(zs: Any, tmp_path: Path) -> None:
    proc = zs("images", "push", "sklearn:1", str(EXAMPLE))
    assert proc.returncode == 1
    assert "Image name 'sklearn' is a built-in framework image" in proc.stderr
    (tmp_path / "manifest.json").write_text('{"entrypoint": "./serve"}')
    proc = zs("images", "push", "broken:1", str(tmp_path))
    assert proc.returncode == 1
    assert "manifest.json: 'entrypoint' must be a list of strings" in proc.stderr
    proc = zs("images", "push", "Bad Name", str(EXAMPLE))
    assert "Image name 'Bad Name' is not valid" in proc.stderr


def test_delete_forgets_an_image_and_a_deploy_naming_it_fails(
    sm: Any, zs: Any, server: ServerProcess
) -> None:
    ok(zs("images", "push", "doomed:1", str(EXAMPLE)))
    out = ok(zs("images", "delete", "doomed:1"))
    assert out.startswith("deleted doomed:1  sha256:") and "stay" not in out
    assert not (server.data_dir / "images" / "doomed").exists()  # nothing ran it: its files are gone
    proc = zs("images", "delete", "doomed:1")
    assert proc.returncode == 1 and "Image doomed:1 is not registered" in proc.stderr
    desc = deploy(sm, "byo-doomed", "", image="doomed:1")
    assert desc["EndpointStatus"] == "Failed" and "is not a known zeroscale image" in desc["FailureReason"]
    sm.delete_endpoint(EndpointName="byo-doomed")


def test_deploy_invoke_scale_to_zero_and_back(
    server: ServerProcess, sm: Any, smr: Any, pushed: str, tmp_path: Path
) -> None:
    url = linear_model(tmp_path, "model.json", [2.0, -1.0, 0.5], 1.0)
    idle = [{"Key": "zeroscale:idle-timeout-s", "Value": "1"}]
    desc = deploy(sm, "byo", url, image=IMAGE, tags=idle)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resolved = desc["ProductionVariants"][0]["DeployedImages"][0]
    assert resolved["SpecifiedImage"] == IMAGE
    assert resolved["ResolvedImage"].startswith(f"zeroscale/byo/{IMAGE}@sha256:")

    assert invoke(smr, "byo", b"1,2,3\n0,0,0\n", "text/csv", "text/csv") == b"2.5\n1.0\n"
    assert json.loads(invoke(smr, "byo", b'{"instances": [[1, 1, 2]]}', "application/json")) == {
        "predictions": [3.0]
    }
    model_path = "/opt/ml/model/model.json" if BWRAP else "/model/model.json"
    assert model_path in worker_logs(server, "byo")

    # Idle for a second: the worker gets SIGTERM (and exits cleanly), the endpoint is at zero.
    wait_for(lambda: server.workers("byo") == 0, timeout_s=15)
    logs = worker_logs(server, "byo")
    assert "received SIGTERM, shutting down\nstopped\n" in logs  # a clean exit, not a SIGKILL

    # And back: the next request starts a worker again.
    assert invoke(smr, "byo", b"0,0,2\n", "text/csv", "text/csv") == b"2.0\n"
    assert server.workers("byo") == 1
    assert worker_logs(server, "byo").count("serving on port") == 2
    sm.delete_endpoint(EndpointName="byo")


def test_the_models_environment_overrides_the_images(sm: Any, smr: Any, pushed: str, tmp_path: Path) -> None:
    # The manifest says MODEL_FILE=model.json; the model's Environment points it elsewhere.
    url = linear_model(tmp_path, "other.json", [10.0], 0.0)
    desc = deploy(sm, "byo-env", url, image=f"123456789012.dkr.ecr.us-east-1.amazonaws.com/{IMAGE}",
                  environment={"MODEL_FILE": "other.json"})  # fmt: skip
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert invoke(smr, "byo-env", b"3\n", "text/csv", "text/csv") == b"30.0\n"
    sm.delete_endpoint(EndpointName="byo-env")


def push_script(zs: Any, tmp_path: Path, name: str, serve: str) -> None:
    """Push an image whose entrypoint is the script ``serve`` as ``name`` (tag latest)."""
    image = tmp_path / name
    image.mkdir()
    (image / "manifest.json").write_text('{"entrypoint": ["./serve"]}')
    (image / "serve").write_text(serve)
    (image / "serve").chmod(0o755)
    ok(zs("images", "push", name, str(image)))


HANGS = """#!/bin/sh
echo "loading a very large model..."
exec sleep 600
"""


def test_an_image_that_never_answers_ping_fails_the_endpoint(
    server: ServerProcess, sm: Any, zs: Any, tmp_path: Path
) -> None:
    push_script(zs, tmp_path, "hangs", HANGS)  # tag: latest
    desc = deploy(sm, "byo-hangs", "", image="hangs")
    assert desc["EndpointStatus"] == "Failed"
    reason = desc["FailureReason"]
    assert f"Worker did not answer /ping within {STARTUP_TIMEOUT_S} seconds" in reason
    assert "loading a very large model..." in reason
    registry = (server.data_dir / "images" / "hangs").resolve()
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(str(registry)):
                left.append(pid)
        except OSError:
            continue
    assert left == [], "the image's processes outlived the failed deployment"
    sm.delete_endpoint(EndpointName="byo-hangs")


GARBLES = """#!/usr/bin/env python3
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.wfile.write(b"THIS IS NOT HTTP\\r\\n\\r\\n")
        self.wfile.flush()


HTTPServer(("127.0.0.1", int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))), Handler).serve_forever()
"""


def test_an_image_answering_something_not_http_is_stopped_and_told_so(
    sm: Any, smr: Any, zs: Any, tmp_path: Path
) -> None:
    """The error says what the worker answered, not the signal the server stopped it with."""
    push_script(zs, tmp_path, "garbles", GARBLES)
    desc = deploy(sm, "byo-garbles", "", image="garbles")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    with pytest.raises(smr.exceptions.ModelError) as err:
        smr.invoke_endpoint(EndpointName="byo-garbles", Body=b"1\n", ContentType="text/csv")
    message = err.value.response["Error"]["Message"]
    assert "was stopped: its answer is not HTTP" in message, message
    assert "signal" not in message
    sm.delete_endpoint(EndpointName="byo-garbles")


INFORMS = """#!/usr/bin/env python3
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps the connection open after its answer

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"prediction": 1}'
        self.send_response(199)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


HTTPServer(("127.0.0.1", int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))), Handler).serve_forever()
"""


def test_an_image_answering_an_informational_status_with_a_body_is_refused_at_once(
    server: ServerProcess, sm: Any, smr: Any, zs: Any, tmp_path: Path
) -> None:
    """A probe's finding: an image answering status 199 with a body made the invocation wait out the whole
    invocation timeout (the body was taken for the 1xx's, and the answer waited for after it). It is
    refused at once as a ModelError that says why, and the worker is stopped, as for any malformed answer;
    the next invocation gets a new worker."""
    push_script(zs, tmp_path, "informs", INFORMS)
    desc = deploy(sm, "byo-informs", "", image="informs")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    began = time.monotonic()
    with pytest.raises(smr.exceptions.ModelError) as err:
        smr.invoke_endpoint(EndpointName="byo-informs", Body=b"1\n", ContentType="text/csv")
    assert time.monotonic() - began < 10
    message = err.value.response["Error"]["Message"]
    assert "was stopped: its answer has status 199 with a body" in message, message
    assert "answer with a final status" in message
    assert err.value.response["OriginalStatusCode"] == 0
    first = re.search(r"Worker (\S+) was stopped", message)
    with pytest.raises(smr.exceptions.ModelError) as again:
        smr.invoke_endpoint(EndpointName="byo-informs", Body=b"1\n", ContentType="text/csv")
    second = re.search(r"Worker (\S+) was stopped", again.value.response["Error"]["Message"])
    assert first and second and first[1] != second[1], "the refused worker served again"
    sm.delete_endpoint(EndpointName="byo-informs")


def test_a_digest_in_the_image_pins_the_push_it_names(sm: Any, pushed: str, tmp_path: Path) -> None:
    """``name:tag@sha256:...`` runs that push only: a tag pushed over since fails the deployment, naming
    both digests; a digest of another form is refused at CreateModel (it was ignored before)."""
    digest = re.search(r"sha256:([0-9a-f]{64})", pushed)
    assert digest is not None, pushed
    url = linear_model(tmp_path, "model.json", [1.0, 2.0], 0.5)
    desc = deploy(sm, "byo-pinned", url, image=f"{IMAGE}@sha256:{digest.group(1)}")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    sm.delete_endpoint(EndpointName="byo-pinned")
    other = "0" * 64
    desc = deploy(sm, "byo-stale-pin", url, image=f"{IMAGE}@sha256:{other}")
    assert desc["EndpointStatus"] == "Failed"
    assert f"pins sha256:{other}, but {IMAGE} is sha256:{digest.group(1)} now" in desc["FailureReason"]
    sm.delete_endpoint(EndpointName="byo-stale-pin")
    with pytest.raises(ClientError) as err:
        sm.create_model(ModelName="byo-md5", PrimaryContainer={"Image": f"{IMAGE}@md5:abc"})
    assert "a digest is sha256: and 64 lower-case hex digits" in err.value.response["Error"]["Message"]


def test_an_unknown_image_says_where_images_come_from_not_which_are_pushed(sm: Any, pushed: str) -> None:
    """Which images are pushed is ListImages' to tell (a caller may not be allowed it)."""
    desc = deploy(sm, "byo-unknown", "", image="nope:1")
    assert desc["EndpointStatus"] == "Failed"
    reason = desc["FailureReason"]
    assert "Image 'nope:1' is not a known zeroscale image" in reason
    assert "sagemaker-scikit-learn" in reason and "`zeroscale images list`" in reason
    assert IMAGE.split(":")[0] not in reason
    sm.delete_endpoint(EndpointName="byo-unknown")


MME_SERVE = r"""#!/usr/bin/env python3
# SageMaker's multi-model container API, standard library only: at most MAX_MODELS loaded (507 past it).
import json, os, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

if os.environ.get("SAGEMAKER_MULTI_MODEL") != "true":
    sys.exit("not started as a multi-model container")
MAX = int(os.environ.get("MAX_MODELS", "2"))
models = {}


class Handler(BaseHTTPRequestHandler):
    def answer(self, status, doc):
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_GET(self):
        if self.path == "/ping":
            return self.answer(200, {})
        if self.path == "/models":
            return self.answer(200, {"models": [{"modelName": n} for n in models]})
        name = self.path.removeprefix("/models/")
        return self.answer(200, {"modelName": name}) if name in models else self.answer(404, {})

    def do_POST(self):
        body = self.body()
        if self.path == "/models":
            doc = json.loads(body)
            if doc["model_name"] in models:
                return self.answer(409, {"message": "already loaded"})
            if len(models) >= MAX:
                return self.answer(507, {"message": "out of memory"})
            with open(os.path.join(doc["url"], "value.json")) as f:
                models[doc["model_name"]] = json.load(f)
            return self.answer(200, {"message": "loaded"})
        name = self.path.removeprefix("/models/").removesuffix("/invoke")
        if name not in models:
            return self.answer(404, {"message": name + " is not loaded"})
        return self.answer(200, {"value": models[name], "loaded": sorted(models)})

    def do_DELETE(self):
        name = self.path.removeprefix("/models/")
        return self.answer(200, {}) if models.pop(name, None) is not None else self.answer(404, {})

    def log_message(self, *args):
        pass


port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def test_a_multi_model_image_gets_the_container_api(
    sm: Any, smr: Any, zs: Any, tmp_path: Path, server: ServerProcess
) -> None:
    image = tmp_path / "image"
    image.mkdir()
    (image / "serve").write_text(MME_SERVE)
    (image / "serve").chmod(0o755)
    (image / "manifest.json").write_text(json.dumps({"entrypoint": ["./serve"], "env": {"MAX_MODELS": "2"}}))
    ok(zs("images", "push", "mme-byo:1", str(image)))
    prefix = tmp_path / "models"
    prefix.mkdir()
    for i in range(4):
        (tmp_path / "value.json").write_text(json.dumps(i))
        make_tar(prefix / f"v{i}.tar.gz", {"value.json": tmp_path / "value.json"})
    sm.create_model(
        ModelName="byo-mme",
        PrimaryContainer={"Image": "mme-byo:1", "Mode": "MultiModel", "ModelDataUrl": f"file://{prefix}/"},
    )
    sm.create_endpoint_config(
        EndpointConfigName="byo-mme",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "byo-mme",
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 1},
            }
        ],
    )
    sm.create_endpoint(EndpointName="byo-mme", EndpointConfigName="byo-mme")
    desc = wait_final(sm, "byo-mme")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    def call(target: str) -> Any:
        resp = smr.invoke_endpoint(
            EndpointName="byo-mme", TargetModel=target, Body=b"{}", ContentType="application/json"
        )
        return json.loads(resp["Body"].read())

    # four models, two fit in the container (it answers 507 past that): every answer from the model asked
    for _ in range(2):
        for i in range(4):
            answer = call(f"v{i}.tar.gz")
            assert answer["value"] == i
            assert len(answer["loaded"]) <= 2
    assert call("v3.tar.gz")["value"] == 3  # loaded: a cache hit
    labels = '{endpoint_name="byo-mme",variant_name="AllTraffic"}'
    metrics = server.metrics()
    assert f"zeroscale_model_cache_lookups_total{labels} 9.0" in metrics
    assert f"zeroscale_model_cache_hits_total{labels} 1.0" in metrics
    # each model was downloaded once: the later loads used its copy staged in the models directory
    assert f"zeroscale_model_downloading_seconds_count{labels} 4.0" in metrics
    with pytest.raises(smr.exceptions.ClientError) as err:
        call("missing.tar.gz")
    assert err.value.response["Error"]["Code"] == "ValidationError"
    assert "missing.tar.gz" in err.value.response["Error"]["Message"]
    # the models directory (staged models: hard links to the artifact cache's files) goes with the endpoint
    [models_dir] = (server.data_dir / "mme").iterdir()
    assert len(list(models_dir.iterdir())) == 4
    sm.delete_endpoint(EndpointName="byo-mme")
    wait_for(lambda: not (server.data_dir / "mme").exists() or not any((server.data_dir / "mme").iterdir()))


def test_an_images_whole_process_tree_is_in_its_memory_cgroup(
    server: ServerProcess, sm: Any, smr: Any, pushed: str, tmp_path: Path
) -> None:
    """Where the host has memory cgroups (root, cgroup v1: these machines), the image's server and every
    process it runs are in its worker's group, limited to MemorySizeInMB (``workers/cgroups.py``; processes
    started before the group was joined are moved by the once-a-second pass)."""
    url = linear_model(tmp_path, "model.json", [1.0, 1.0, 1.0], 0.0)
    desc = deploy(sm, "byo-cgroup", url, image=IMAGE, memory_mb=2048)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert invoke(smr, "byo-cgroup", b"1,2,3\n", "text/csv", "text/csv") == b"6.0\n"
    own = own_memory_group()
    assert server.proc is not None
    if not isinstance(own, Path) or os.geteuid() != 0:
        assert "WARNING: memory" in server.log_path.read_text()
        return
    groups = own / f"zeroscale-{server.proc.pid}"

    def tree_in_its_group() -> bool:
        for group in groups.glob("w-*"):
            if (group / "memory.limit_in_bytes").read_text().strip() != str(2048 << 20):
                continue
            inside = {int(p) for p in (group / "cgroup.procs").read_text().split()}
            roots = [p for p in inside if not any(p in tree_pids(q)[1:] for q in inside)]
            if inside and len(roots) == 1 and set(tree_pids(roots[0])) == inside:
                return True  # the image's server (bwrap's child, or the process itself) and its children
        return False

    wait_for(tree_in_its_group, timeout_s=10)
    sm.delete_endpoint(EndpointName="byo-cgroup")


@pytest.mark.skipif(not BWRAP or os.geteuid() != 0, reason="needs bubblewrap and a root server")
def test_an_image_server_left_by_a_killed_server_is_ended_by_the_next_start(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """An audit's SIGKILLed server took its zygotes and forked workers with it, but each image's server
    lived on (reparented to init, its parent-death signal never delivered), kept its port, its uid and its
    memory cgroup, and a restart on the same data directory left it running."""
    server = server_factory(startup_timeout_s=STARTUP_TIMEOUT_S)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZEROSCALE_"))}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_DEFAULT_REGION=REGION)
    pushed = subprocess.run(
        [str(ZEROSCALE), "images", "push", IMAGE, str(EXAMPLE), "--endpoint-url", server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pushed.returncode == 0, pushed.stderr
    url = linear_model(tmp_path, "model.json", [1.0], 0.0)
    desc = deploy(server.client("sagemaker"), "left-behind", url, image=IMAGE)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")

    def predict(x: bytes) -> Any:
        answer = invoke(server.client("sagemaker-runtime"), "left-behind", x, "text/csv")
        return json.loads(answer)["predictions"]

    assert predict(b"2\n") == [2.0]

    def image_servers() -> list[psutil.Process]:
        found = []
        for proc in psutil.process_iter(["uids", "cwd"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["uids"].real >= 1_000_000_000 and str(server.data_dir) in (
                    proc.info["cwd"] or ""
                ):
                    found.append(proc)
        return found

    running = image_servers()
    assert running, "no image server found"
    server.stop(signal.SIGKILL)
    time.sleep(1.0)
    server.start()
    wait_for(
        lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in running), timeout_s=10
    )
    assert predict(b"3\n") == [3.0]
