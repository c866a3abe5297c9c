"""What users see when things go wrong: model errors, crashes, memory, timeouts, broken and hostile
artifacts. Real server, real boto3, real worker processes; every failure must leave the server serving."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import re
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest
from botocore.exceptions import ClientError, WaiterError

from e2e.conftest import handler_model
from zeroscale.testing import ServerProcess, deploy, wait_for

MB = 1024 * 1024

# One handler whose behaviour the request body picks: {"raise": 1}, {"exit": 1}, {"sysexit": 1}, {"kill": 1},
# {"sleep": s}, {"alloc": 1}, {"big": n} (an answer of n + 9 bytes),
# {"shout": n} (an error of n characters); anything else answers {"ok": true, "pid": <worker pid>}.
BEHAVIOURS = """
import os
import signal
import time


def model_fn(model_dir):
    return "model"


def predict_fn(data, model):
    if isinstance(data, dict):
        if data.get("raise"):
            raise ValueError("bad input here")
        if data.get("exit"):
            os._exit(1)
        if data.get("sysexit"):
            raise SystemExit(5)  # on the connection's thread: the worker ends with it, not the thread alone
        if data.get("kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        if data.get("sleep"):
            time.sleep(data["sleep"])
        if data.get("shout"):
            raise ValueError("E" * data["shout"])
        if data.get("big"):
            return {"s": "y" * data["big"]}
        if data.get("alloc"):
            import numpy as np

            big = np.ones(250_000_000)  # ~2 GB, every page touched
            return {"sum": float(big.sum())}
    return {"ok": True, "pid": os.getpid()}
"""

BROKEN_LOAD = """
def model_fn(model_dir):
    raise RuntimeError("cannot load weights")
"""

ARN_RE = re.compile(
    r"^arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/(?P<endpoint>[^:]+)"
    r":log-stream:AllTraffic/(?P<worker>[A-Za-z0-9-]+)$"
)
OK = json.dumps({"hello": "world"}).encode()


@pytest.fixture(scope="module")
def behaviours_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return handler_model(tmp_path_factory.mktemp("behaviours"), BEHAVIOURS)


def invoke(smr: Any, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
    resp = smr.invoke_endpoint(
        EndpointName=endpoint,
        Body=json.dumps(payload).encode(),
        ContentType="application/json",
        Accept="application/json",
    )
    out: dict[str, Any] = json.loads(resp["Body"].read())
    return out


def model_error(smr: Any, endpoint: str, payload: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as err:
        invoke(smr, endpoint, payload)
    response: dict[str, Any] = err.value.response
    assert response["Error"]["Code"] == "ModelError", response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    return response


def deployed(sm: Any, name: str, url: str, **kw: Any) -> str:
    desc = deploy(sm, name, url, **kw)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return name


def failed(sm: Any, name: str, url: str, **kw: Any) -> str:
    desc = deploy(sm, name, url, **kw)
    assert desc["EndpointStatus"] == "Failed", desc
    reason: str = desc["FailureReason"]
    return reason


# ---- errors while serving ----
def test_user_exception_is_a_model_error_with_its_log(
    server: ServerProcess, sm: Any, smr: Any, behaviours_url: str
) -> None:
    name = deployed(sm, "Raises-Value-Error", behaviours_url)
    response = model_error(smr, name, {"raise": 1})
    assert response["OriginalStatusCode"] == 500
    assert "bad input here" in response["OriginalMessage"]
    assert "bad input here" in response["Error"]["Message"]
    match = ARN_RE.match(response["LogStreamArn"])
    assert match, response["LogStreamArn"]
    assert match["endpoint"] == name
    log_file = server.data_dir / "logs" / name.lower() / "AllTraffic" / f"{match['worker']}.log"
    # The zygote records the worker's output as it reads it: a moment after the worker printed it.
    wait_for(lambda: "ValueError: bad input here" in log_file.read_text(), timeout_s=10)
    text = log_file.read_text()
    assert "Traceback (most recent call last)" in text
    assert "ValueError: bad input here" in text
    assert "predict_fn" in text
    assert invoke(smr, name, {"fine": 1})["ok"] is True


def test_an_answer_over_6_mb_is_a_model_error_and_the_worker_serves_on(
    server: ServerProcess, sm: Any, smr: Any, behaviours_url: str
) -> None:
    # The server read a model's whole answer into memory, however large (700 MB: the server at 2.2 GB).
    name = deployed(sm, "Answers-Too-Much", behaviours_url, max_concurrency=1)
    pid = invoke(smr, name, {"fine": 1})["pid"]
    limit = 6 * 1024 * 1024
    assert len(invoke(smr, name, {"big": limit - 9})["s"]) == limit - 9  # an answer of exactly the limit
    response = model_error(smr, name, {"big": 64 * 1024 * 1024})
    assert f"larger than the {limit} bytes InvokeEndpoint returns" in response["Error"]["Message"]
    assert "InvokeEndpointAsync" in response["Error"]["Message"]
    assert invoke(smr, name, {"fine": 1})["pid"] == pid  # the same worker, on a new connection
    response = model_error(smr, name, {"shout": 2 * 1024 * 1024})  # cut, not sent twice whole
    assert len(response["OriginalMessage"]) < 10_000 and len(response["Error"]["Message"]) < 11_000
    assert response["OriginalMessage"].endswith("more characters)")
    assert server.proc is not None
    assert psutil.Process(server.proc.pid).memory_info().rss < 512 * 1024 * 1024


CONTENT_TYPES = """
def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    return b"answer", body.decode()  # the request names the answer's content type
"""


def test_an_answer_whose_content_type_breaks_the_header_shape_is_a_model_error(
    sm: Any, smr: Any, tmp_path: Path
) -> None:
    name = deployed(sm, "Content-Types", handler_model(tmp_path, CONTENT_TYPES))

    def answer(kind: str) -> Any:
        return smr.invoke_endpoint(EndpointName=name, Body=kind.encode(), ContentType="text/plain")

    assert answer("text/plain; q=" + "a" * 1000)["ContentType"] == "text/plain; q=" + "a" * 1000
    for kind in ("text/plain; q=" + "a" * 1011, "text/plain; charset=\u00e9"):
        with pytest.raises(ClientError) as err:
            answer(kind)
        assert err.value.response["Error"]["Code"] == "ModelError"
        assert "not at most 1024 ASCII characters" in err.value.response["Error"]["Message"]
    # the same for a streamed answer, whose worker is handed back for the next request
    stream = smr.invoke_endpoint_with_response_stream
    for _ in range(3):  # more than MaxConcurrency: a worker kept by a refused stream would throttle one
        with pytest.raises(ClientError) as err:
            stream(EndpointName=name, Body=("text/plain; q=" + "a" * 1011).encode(), ContentType="text/plain")
        assert err.value.response["Error"]["Code"] == "ModelError"
    answer = stream(EndpointName=name, Body=b"text/csv", ContentType="text/plain")
    assert answer["ContentType"] == "text/csv"
    assert b"".join(e["PayloadPart"]["Bytes"] for e in answer["Body"] if "PayloadPart" in e) == b"answer"


@pytest.mark.parametrize("how", ["exit", "sysexit", "kill"])
def test_a_crashing_worker_is_replaced(sm: Any, smr: Any, behaviours_url: str, how: str) -> None:
    name = deployed(sm, f"crashes-by-{how}", behaviours_url)
    first = invoke(smr, name, {})["pid"]
    response = model_error(smr, name, {how: 1})
    assert response["OriginalStatusCode"] == 0
    expected = {"exit": "exited with code 1", "sysexit": "exited with code 5", "kill": "killed by signal 9"}
    assert expected[how] in response["OriginalMessage"], response["OriginalMessage"]
    assert ARN_RE.match(response["LogStreamArn"])
    after = invoke(smr, name, {})
    assert after["ok"] is True
    assert after["pid"] != first


KILLS_ITS_GROUP = """
import os
import signal


def model_fn(model_dir):
    return "model"


def predict_fn(data, model):
    if data.get("killpg"):
        os.killpg(os.getpgid(0), signal.SIGKILL)
    return {"pid": os.getpid(), "pgid": os.getpgid(0), "ppid": os.getppid()}
"""


def test_a_model_that_kills_its_process_group_kills_only_its_worker(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    """A probe's report: a predict_fn running os.killpg(os.getpgid(0), SIGKILL) made the next request
    fail. A worker's process group is its own (each fork calls setsid): the zygote, the model's template
    and its parked replica survive it, and the next request gets a new worker, whichever way that worker
    came (forked by the zygote, by the template, or parked beside the template at zero)."""
    url = handler_model(tmp_path, KILLS_ITS_GROUP)
    name = deployed(sm, "kills-its-group", url, tags=[{"Key": "zeroscale:idle-timeout-s", "Value": "1"}])

    def killed() -> None:
        response = model_error(smr, name, {"killpg": 1})
        assert "killed by signal 9" in response["OriginalMessage"], response["OriginalMessage"]

    first = invoke(smr, name, {})
    assert first["pgid"] == first["pid"]  # its own group: nothing else is in it
    killed()
    served = invoke(smr, name, {})
    assert served["pid"] != first["pid"]
    deadline = time.monotonic() + 30
    while served["ppid"] == first["ppid"]:  # until a worker is a replica of the model's template
        assert time.monotonic() < deadline, "no worker came from a template"
        killed()
        time.sleep(0.2)
        served = invoke(smr, name, {})
    template = served["ppid"]
    for _ in range(2):  # a replica it forked, then (at zero, its pool idle) the replica parked beside it
        killed()
        after = invoke(smr, name, {})
        assert after["pid"] != served["pid"] and after["pid"] == after["pgid"], after
        assert after["ppid"] == template, "the template did not survive its replica's killpg"
        served = after
        time.sleep(3)  # idle past its timeout: the pool goes to zero, the template to the warm cache
    assert psutil.pid_exists(template) and psutil.pid_exists(first["ppid"])


def test_requests_queued_on_an_endpoint_being_deleted_are_told_it_is_gone(
    server: ServerProcess, sm: Any, behaviours_url: str
) -> None:
    """A probe's finding: a request queued (MaxConcurrency 1) when its endpoint was deleted got "the worker
    process exited with code 0" as a ModelError (the drain stopped the worker it was handed), and those
    still queued a bare 500. The deletion serves what it accepted for 5 s: past that, a request still
    queued, or still being served, gets InvokeEndpoint's not-found error, saying it was deleted."""
    name = deployed(sm, "deleted-while-queued", behaviours_url, max_concurrency=1)
    outcomes: dict[int, dict[str, Any]] = {}

    def call(i: int) -> None:
        client = server.client("sagemaker-runtime")
        try:
            outcomes[i] = {"ok": invoke(client, name, {"sleep": 4})}
        except ClientError as exc:
            outcomes[i] = exc.response

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:  # one served at a time, 4 s each: the deletion's 5 s end in the second
        thread.start()
        time.sleep(0.2)
    sm.delete_endpoint(EndpointName=name)
    for thread in threads:
        thread.join()
    assert outcomes[0] == {"ok": {"ok": True, "pid": outcomes[0]["ok"]["pid"]}}
    for i in (1, 2, 3):
        error = outcomes[i]["Error"]
        assert error["Code"] == "ValidationError", outcomes[i]
        assert outcomes[i]["ResponseMetadata"]["HTTPStatusCode"] == 400
        assert error["Message"] == (
            f"Endpoint {name} of account 000000000000 not found: it was deleted before this request "
            "was answered."
        )


def test_memory_over_memory_size_is_stopped_others_keep_serving(
    server: ServerProcess, sm: Any, smr: Any, behaviours_url: str
) -> None:
    hog = deployed(sm, "memory-hog", behaviours_url, memory_mb=1024)
    calm = deployed(sm, "memory-calm", behaviours_url, memory_mb=1024)
    outcome: dict[str, Any] = {}

    def allocate() -> None:
        try:
            outcome["result"] = invoke(smr, hog, {"alloc": 1})
        except ClientError as exc:
            outcome["error"] = exc.response

    thread = threading.Thread(target=allocate)
    thread.start()
    served = 0
    while thread.is_alive() or served < 3:
        assert invoke(smr, calm, {})["ok"] is True
        served += 1
        time.sleep(0.02)
    thread.join()
    assert "error" in outcome, f"the allocation was allowed: {outcome}"
    response = outcome["error"]
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert "MemorySizeInMB" in response["Error"]["Message"]
    assert "1024 MB" in response["Error"]["Message"]
    assert "MemorySizeInMB" in response["OriginalMessage"]
    assert server.proc is not None and server.proc.poll() is None
    assert invoke(smr, hog, {})["ok"] is True
    assert invoke(smr, calm, {})["ok"] is True


# ---- deploy-time failures ----
def test_model_fn_failure_fails_the_endpoint(sm: Any, smr: Any, tmp_path: Path) -> None:
    url = handler_model(tmp_path, BROKEN_LOAD)
    deploy(sm, "broken-load", url, wait=False)
    with pytest.raises(WaiterError):
        sm.get_waiter("endpoint_in_service").wait(
            EndpointName="broken-load", WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
    desc = sm.describe_endpoint(EndpointName="broken-load")
    assert desc["EndpointStatus"] == "Failed"
    assert "cannot load weights" in desc["FailureReason"]
    assert "RuntimeError" in desc["FailureReason"]
    with pytest.raises(ClientError) as err:
        invoke(smr, "broken-load", {})
    assert err.value.response["Error"]["Code"] == "ValidationError"
    sm.delete_endpoint(EndpointName="broken-load")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="broken-load", WaiterConfig={"Delay": 1})


def test_unknown_image_fails_naming_known_images(sm: Any, behaviours_url: str) -> None:
    reason = failed(sm, "unknown-image", behaviours_url, image="example.com/foo:1")
    assert "example.com/foo:1" in reason
    assert "sagemaker-scikit-learn" in reason
    sm.delete_endpoint(EndpointName="unknown-image")


def test_no_model_file_and_no_handler_fails_clearly(sm: Any, tmp_path: Path) -> None:
    url = _tar(tmp_path / "model.tar.gz", [_file("README.txt", b"nothing to load here")])
    reason = failed(sm, "no-model-file", url)
    assert "No model.joblib or model.pkl found" in reason
    assert "code/inference.py defines no model_fn" in reason


# ---- hostile and broken artifacts ----
Member = tuple[tarfile.TarInfo, bytes | None]


def _file(name: str, data: bytes = b"x") -> Member:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def _symlink(name: str, target: str) -> Member:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info, None


def _tar(path: Path, members: list[Member]) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return f"file://{path}"


def _escape(root: Path) -> str:
    return _tar(root / "model.tar.gz", [_file("model.joblib"), _file("../escape.txt", b"escaped")])


def _absolute(root: Path) -> str:
    return _tar(root / "model.tar.gz", [_file("model.joblib"), _file(f"{root}/absolute.txt", b"escaped")])


def _passwd_link(root: Path) -> str:
    return _tar(root / "model.tar.gz", [_file("model.joblib"), _symlink("passwd", "/etc/passwd")])


def _deep(root: Path) -> str:
    """Nested past PATH_MAX and Python's recursion limit: the endpoint stayed Creating (audit finding 5)."""
    return _tar(root / "model.tar.gz", [_file("model.joblib"), _file("d/" * 2100 + "f")])


def _not_a_tarball(root: Path) -> str:
    path = root / "model.tar.gz"
    path.write_bytes(b"this is not a tarball at all\n" * 100)
    return f"file://{path}"


HOSTILE: dict[str, tuple[Callable[[Path], str], str]] = {
    "dotdot": (_escape, "escapes the model directory"),
    "absolute": (_absolute, "has an absolute path"),
    "symlink": (_passwd_link, "is a symlink to '/etc/passwd', which escapes the model directory"),
    "deep": (_deep, "is nested 2101 levels deep (the limit is 128)"),
    "not-tar": (_not_a_tarball, "is not a valid tar.gz archive"),
}


@pytest.fixture(scope="module")
def healthy(sm: Any, sklearn_model: Any) -> str:
    return deployed(sm, "healthy", sklearn_model.url)


@pytest.mark.parametrize("kind", list(HOSTILE))
def test_hostile_archive_fails_and_server_keeps_serving(
    server: ServerProcess, sm: Any, smr: Any, sklearn_model: Any, healthy: str, tmp_path: Path, kind: str
) -> None:
    make, expected = HOSTILE[kind]
    root = tmp_path / "artifact"
    root.mkdir()
    url = make(root)
    name = f"hostile-{kind}"
    reason = failed(sm, name, url)
    assert expected in reason, reason
    assert url in reason, reason  # names the artifact
    assert not (root / "escape.txt").exists()
    assert not (root / "absolute.txt").exists()
    assert not list(server.data_dir.rglob("escape.txt"))
    assert not list(server.data_dir.rglob("absolute.txt"))
    assert not list((server.data_dir / "artifacts" / "tmp").iterdir())  # no staging directory left
    rows = sklearn_model.X[:5]
    resp = smr.invoke_endpoint(
        EndpointName=healthy, Body=sklearn_model.json_body(rows), ContentType="application/json"
    )
    assert json.loads(resp["Body"].read()) == sklearn_model.expected(rows)
    sm.delete_endpoint(EndpointName=name)
    sm.get_waiter("endpoint_deleted").wait(EndpointName=name, WaiterConfig={"Delay": 1})


def test_model_data_missing_at_create_or_gone_by_deployment(
    sm: Any, sklearn_model: Any, tmp_path: Path
) -> None:
    """Model data on the server's disk that is not there: CreateModel refuses it, as SageMaker refuses an
    S3 object it cannot find; one deleted after CreateModel fails its endpoint, naming it."""
    url = f"file://{tmp_path}/does-not-exist/model.tar.gz"
    with pytest.raises(ClientError) as err:
        sm.create_model(ModelName="nothing-there", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": url})
    assert err.value.response["Error"] == {
        "Code": "ValidationException",
        "Message": f"Could not find model data at {url}.",
    }
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(Path(sklearn_model.url.removeprefix("file://")).read_bytes())
    sm.create_model(
        ModelName="gone", PrimaryContainer={"Image": "sklearn", "ModelDataUrl": f"file://{archive}"}
    )
    archive.unlink()
    serverless = {"MemorySizeInMB": 1024, "MaxConcurrency": 1}
    variant = {"VariantName": "AllTraffic", "ModelName": "gone", "ServerlessConfig": serverless}
    sm.create_endpoint_config(EndpointConfigName="gone", ProductionVariants=[variant])
    sm.create_endpoint(EndpointName="gone", EndpointConfigName="gone")
    with pytest.raises(WaiterError):
        sm.get_waiter("endpoint_in_service").wait(EndpointName="gone", WaiterConfig={"Delay": 1})
    reason = sm.describe_endpoint(EndpointName="gone")["FailureReason"]
    assert "not found" in reason and f"file://{archive}" in reason, reason
    sm.delete_endpoint(EndpointName="gone")


# ---- a decompression bomb over --max-extracted-mb (its own server) ----
def _bomb(path: Path, size: int) -> str:
    """A tar.gz holding one file of ``size`` zero bytes: about a thousandth of that compressed."""
    info = tarfile.TarInfo("model.joblib")
    info.size = size
    with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9) as gz:
        gz.write(info.tobuf(format=tarfile.PAX_FORMAT))
        zeros = bytes(MB)
        for _ in range(size // MB):
            gz.write(zeros)
        gz.write(bytes(1024))  # the end-of-archive blocks (size is a multiple of 512)
    return f"file://{path}"


def _cache_listing(data_dir: Path) -> tuple[list[str], int]:
    """Every path under the artifact cache, and their bytes."""
    root = data_dir / "artifacts"
    paths = sorted(root.rglob("*"))
    return [str(p.relative_to(root)) for p in paths], sum(p.stat().st_size for p in paths if p.is_file())


def test_bomb_over_the_extraction_limit_fails_and_leaves_nothing_in_the_cache(
    server_factory: Callable[..., ServerProcess], sklearn_model: Any, tmp_path: Path
) -> None:
    small = server_factory(max_extracted_mb=8)
    sm = small.client("sagemaker")
    deployed(sm, "under-the-limit", sklearn_model.url)  # a real model (well under 8 MB) still deploys
    before = _cache_listing(small.data_dir)
    url = _bomb(tmp_path / "bomb.tar.gz", 64 * MB)
    assert (tmp_path / "bomb.tar.gz").stat().st_size < 200_000
    reason = failed(sm, "bomb", url)
    assert (
        "Model archive member 'model.joblib' would bring the extracted size over the limit of 8 MB "
        "(8388608 bytes, zeroscale serve --max-extracted-mb)"
    ) in reason, reason
    assert url in reason
    assert _cache_listing(small.data_dir) == before  # no entry, no staging directory, no download copy
    assert not list((small.data_dir / "artifacts" / "tmp").iterdir())


# ---- invocation timeout (its own server) ----
def test_invocation_timeout(server_factory: Callable[..., ServerProcess], behaviours_url: str) -> None:
    fast = server_factory(invocation_timeout_s=1)
    sm, smr = fast.client("sagemaker"), fast.client("sagemaker-runtime")
    name = deployed(sm, "sleepy", behaviours_url)
    started = time.monotonic()
    response = model_error(smr, name, {"sleep": 3})
    assert time.monotonic() - started < 2.9
    message = response["Error"]["Message"]
    assert message.startswith('Received server error (0) from primary with message "Your invocation timed')
    assert "longer than 1 s" in message and message.endswith(
        f"See {response['LogStreamArn']} for more information."
    )
    assert ARN_RE.match(response["LogStreamArn"])
    assert invoke(smr, name, {"sleep": 0.01})["ok"] is True
    assert invoke(smr, name, {})["ok"] is True


def test_a_database_that_refuses_writes_answers_503_saying_why(tmp_path: Path) -> None:
    """An audit's server whose SQLite database's disk filled: CreateModel said ServiceUnavailable, naming the
    reason, but IAM's CreateUser answered a bare InternalFailure (500). Every call the database fails answers
    503 with its reason."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    server = ServerProcess(disk / "data").start()
    try:
        iam = server.client("iam")
        iam.create_user(UserName="before")
        with open(disk / "filler", "wb", buffering=0) as f:
            for size in (1 << 20, 4096):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * size)
        refused = None
        for n in range(2000):  # until a write needs a page the file system has not
            try:
                iam.create_user(UserName=f"while-full-{n}", Path="/" + "p" * 400 + "/")
            except ClientError as err:
                refused = err.response
                break
        assert refused is not None
        assert refused["ResponseMetadata"]["HTTPStatusCode"] == 503, refused
        assert "The database is unreachable" in refused["Error"]["Message"], refused
        (disk / "filler").unlink()
        iam.create_user(UserName="after")
    finally:
        server.stop()
        subprocess.run(["umount", "--lazy", str(disk)], check=False)


# ---- a worker that ends while idle, with a request on its way ----
ENDS_ITSELF = """
import os
import signal


def model_fn(model_dir):
    return "model"


def predict_fn(data, model):
    if data.get("killpg"):
        os.killpg(0, signal.SIGTERM)
    if data.get("term"):
        os.kill(os.getpid(), signal.SIGTERM)
    return {"pid": os.getpid(), "after": "killpg"}
"""


@pytest.mark.parametrize("how", ["killpg", "term"])
def test_a_worker_that_terminates_itself_answers_and_the_next_request_goes_to_a_new_one(
    sm: Any, smr: Any, tmp_path: Path, how: str
) -> None:
    """A probe's report: a predict_fn sending SIGTERM to its own process (group) is answered (the worker
    drains: it answers the request in flight, then exits 0), but the request sent right after it went to
    that worker, still idle in the pool, and failed as a ModelError ("exited with code 0"). The model never
    saw it: it is served by another worker. (Or, when the worker's signal handler has not run yet as the
    request comes, by the same worker, which then answers it before it stops: a race the worker may win;
    either way the request is answered.)"""
    url = handler_model(tmp_path, ENDS_ITSELF)
    name = deployed(sm, f"terminates-itself-by-{how}", url)
    enders = set()
    for _ in range(8):  # the next request races the worker's exit: several times, both ways
        answer = invoke(smr, name, {how: 1})
        assert answer["after"] == "killpg"
        enders.add(answer["pid"])
        invoke(smr, name, {})  # answered, never a ModelError (``invoke`` raises on any error)
    # workers that ended themselves were replaced (not every one before the next round: a worker whose
    # signal handler waits for the interpreter under load may still answer it, which CI saw)
    assert len(enders) > 1


def test_a_worker_killed_while_idle_with_a_request_on_its_way_is_replaced_for_it(
    sm: Any, smr: Any, behaviours_url: str
) -> None:
    """An idle worker that dies (the OOM killer, a crash in a thread of its own) as a request reaches it:
    the request lies unread in its socket when it goes, so the router's connection is reset before any
    answer; the request goes to a new worker. The worker is stopped first, so that the request surely
    reaches it before it dies."""
    name = deployed(sm, "killed-while-idle", behaviours_url)
    first = invoke(smr, name, {})["pid"]
    worker = psutil.Process(first)
    worker.suspend()
    answer: list[dict[str, Any]] = []
    caller = threading.Thread(target=lambda: answer.append(invoke(smr, name, {})))
    try:
        caller.start()
        time.sleep(0.5)  # the request is written to the stopped worker's socket, unread
        assert not answer
    finally:
        worker.kill()
    caller.join(30)
    assert answer and answer[0]["ok"] is True
    assert answer[0]["pid"] != first


RUNS_THEN_EXITS = """
import os


def model_fn(model_dir):
    return "model"


def predict_fn(data, model):
    print("running the request", flush=True)
    if data.get("exit"):
        os._exit(1)
    return {"pid": os.getpid()}
"""


def test_a_worker_that_read_the_request_then_exited_is_a_model_error_run_once(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    """The other side of the line: a worker that read its request (its model ran it) and then exited
    ends the connection with an EOF, not a reset: that request is a ModelError and runs nowhere else."""
    url = handler_model(tmp_path, RUNS_THEN_EXITS)
    name = deployed(sm, "runs-then-exits", url)
    response = model_error(smr, name, {"exit": 1})
    assert "exited with code 1" in response["OriginalMessage"], response["OriginalMessage"]
    logs = server.data_dir / "logs" / name.lower() / "AllTraffic"

    def runs() -> int:
        return sum(p.read_text().count("running the request") for p in logs.glob("*.log"))

    wait_for(lambda: runs() >= 1, timeout_s=10)
    time.sleep(0.5)
    assert runs() == 1
    assert invoke(smr, name, {})["pid"]
