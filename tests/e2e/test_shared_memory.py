"""Memory no resident set shows, held by a hostile model on a 1024 MB serverless endpoint: a memfd it
fallocates, a SysV segment, a shared anonymous mapping it fills and then drops from its page tables
(MADV_DONTNEED keeps a shared mapping's pages), a file in /dev/shm. Each is refused, or the worker is
stopped and replaced, and the host's shared memory does not keep it. Real server, real boto3, real workers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from e2e.conftest import handler_model
from zeroscale.testing import ServerProcess, deploy, wait_for

HOG_MB = 1536  # over the endpoint's 1024 MB, never more than this at once on the host

HOGS = """
import ctypes
import mmap
import os
import time

HOG_MB = @HOG_MB@
HELD = []


def model_fn(model_dir):
    return "model"


def predict_fn(data, model):
    how = data.get("how")
    if how == "memfd":
        fd = os.memfd_create("hog")
        os.posix_fallocate(fd, 0, HOG_MB << 20)  # tmpfs pages, never mapped
        HELD.append(fd)
    elif how == "shmget":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.shmget(0, HOG_MB << 20, 0o1600) < 0:  # IPC_PRIVATE, IPC_CREAT | 0600
            raise OSError(ctypes.get_errno(), "shmget: " + os.strerror(ctypes.get_errno()))
    elif how == "dev_shm":
        with open("/dev/shm/hog", "wb") as f:
            f.truncate(1 << 20)
    elif how == "shared_anon":
        area = mmap.mmap(-1, HOG_MB << 20)  # MAP_SHARED: shmem pages
        chunk = 128 << 20
        for start in range(0, len(area), chunk):  # never more than 128 MB resident at once
            for i in range(start, start + chunk, 4096):
                area[i] = 1
            area.madvise(mmap.MADV_DONTNEED, start, chunk)  # out of the RSS, still held
        HELD.append(area)
        time.sleep(data.get("hold", 0))
    return {"pid": os.getpid()}
""".replace("@HOG_MB@", str(HOG_MB))


def shmem_mb() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Shmem:"):
                return int(line.split()[1]) // 1024
    raise AssertionError("no Shmem in /proc/meminfo")


@pytest.fixture(scope="module")
def hogs(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = handler_model(tmp_path_factory.mktemp("hogs"), HOGS)
    desc = deploy(
        sm, "shmem-hogs", url, memory_mb=1024, max_concurrency=1
    )  # one worker: a new pid, a new one
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return "shmem-hogs"


def invoke(smr: Any, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    resp = smr.invoke_endpoint(
        EndpointName=name, Body=json.dumps(payload).encode(), ContentType="application/json"
    )
    out: dict[str, Any] = json.loads(resp["Body"].read())
    return out


def model_error(smr: Any, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(ClientError) as err:
        invoke(smr, name, payload)
    response: dict[str, Any] = err.value.response
    assert response["Error"]["Code"] == "ModelError", response
    return response


@pytest.mark.parametrize(
    ("how", "refusal"),
    [
        ("memfd", "Function not implemented"),
        ("shmget", "Function not implemented"),
        ("dev_shm", "Permission"),
    ],
)
def test_unmapped_shared_memory_is_refused(smr: Any, hogs: str, how: str, refusal: str) -> None:
    before = shmem_mb()
    response = model_error(smr, hogs, {"how": how})
    assert refusal in response["OriginalMessage"], response["OriginalMessage"]
    assert shmem_mb() < before + 256
    assert "pid" in invoke(smr, hogs, {})


def test_a_shared_mapping_out_of_the_resident_set_is_counted(
    server: ServerProcess, smr: Any, hogs: str
) -> None:
    """Filled 128 MB at a time and dropped from the page tables each time: the RSS never passes ~150 MB, the
    memory stays. The watchdog counts the mapping's object (``workers/shmem.py``): the worker is stopped
    while it holds it, and a new one serves."""
    first = invoke(smr, hogs, {})["pid"]
    before = shmem_mb()
    response = model_error(smr, hogs, {"how": "shared_anon", "hold": 10})
    assert "MemorySizeInMB" in response["OriginalMessage"], response["OriginalMessage"]
    assert "1024 MB" in response["Error"]["Message"]
    wait_for(lambda: shmem_mb() < before + 256, timeout_s=10)
    assert invoke(smr, hogs, {})["pid"] != first
    assert server.proc is not None and server.proc.poll() is None


def test_a_shared_mapping_kept_after_the_answer_stops_the_worker(smr: Any, hogs: str) -> None:
    """The same, answered at once: the worker keeps the mapping past its answer and is stopped then (or
    while it fills it, where the watchdog's pass comes first: filling 1.5 GB takes about a second)."""
    first = invoke(smr, hogs, {})["pid"]
    before = shmem_mb()
    try:
        assert invoke(smr, hogs, {"how": "shared_anon"})["pid"] == first
    except ClientError as exc:
        assert "MemorySizeInMB" in exc.response["Error"]["Message"], exc.response
    wait_for(lambda: shmem_mb() < before + 256, timeout_s=10)

    def replaced() -> bool:
        try:
            return bool(invoke(smr, hogs, {})["pid"] != first)
        except ClientError:  # the watchdog stopped the worker just as this request reached it
            return False

    wait_for(replaced, timeout_s=15)
