"""A memory cgroup per worker and per template (``workers/cgroups.py``), on a real server with real boto3:
each worker reads its own group and limit from inside its sandbox, the template of its model is in one of
its own, a model that holds memory no resident set shows (page tables: the watchdog never counts them) is
stopped by the kernel at its MemorySizeInMB, and every group goes with its worker.

The project's machines (and CI) run as root with cgroup v1's memory controller; on a host without it the
same tests check that the banner says so and that the watchdog alone is what workers get."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from e2e.conftest import SklearnModel, handler_model
from zeroscale.testing import ServerProcess, deploy, wait_for
from zeroscale.workers.cgroups import own_group, own_memory_group

HOG_MB = 1536  # over the endpoint's 1024 MB

MODEL = """
import mmap
import os
import time


HELD = []


def model_fn(model_dir):
    return "model"


def _group():
    try:  # a template's replica may not read its own /proc (its template's Landlock layer names the
        lines = open("/proc/self/cgroup").read().splitlines()  # template's)
    except PermissionError:
        return ""
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return ""


def predict_fn(data, model):
    if data.get("how") == "page_tables":
        # Memory only the kernel sees: one read every 2 MB of a vast read-only mapping maps the shared zero
        # page (no resident set) and makes the kernel a page of page tables (4 KB) for each: @HOG_MB@ MB
        # of them, a resident set near 15 MB and no shared memory. The watchdog never counts it.
        span = (@HOG_MB@ << 20) * 512
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | 0x4000  # MAP_NORESERVE
        area = mmap.mmap(-1, span, flags=flags, prot=mmap.PROT_READ)
        area.madvise(mmap.MADV_NOHUGEPAGE)  # one huge zero page would need no page table
        for offset in range(0, span, 2 << 20):
            area[offset]
        HELD.append(area)
        time.sleep(data.get("hold", 0))  # held while a once-a-second pass looks, however fast it was made
    group = _group()
    limit = ""
    if group:
        with open("/sys/fs/cgroup/memory" + group + "/memory.limit_in_bytes") as f:
            limit = f.read().strip()
    return {"pid": os.getpid(), "group": group, "limit": limit}
""".replace("@HOG_MB@", str(HOG_MB))

# Whether this host lets a root server make memory groups (this project's machines and CI do): the tests
# check the groups where it does, and the banner's warning where it does not.
_OWN = own_memory_group()
AVAILABLE = os.geteuid() == 0 and isinstance(_OWN, Path) and os.access(_OWN, os.W_OK)


@pytest.fixture(scope="module")
def groups_dir(server: ServerProcess) -> Path | None:
    """The server's directory of groups (None where the host has no memory cgroups for it)."""
    server_pid = server.proc.pid if server.proc else 0
    found = own_memory_group()  # this test process's: the server's is the same
    return found / f"zeroscale-{server_pid}" if isinstance(found, Path) and AVAILABLE else None


def banner(server: ServerProcess) -> str:
    return next(line for line in server.log_path.read_text().splitlines() if "memory:" in line)


def invoke(smr: Any, name: str, payload: dict[str, Any]) -> dict[str, Any]:
    resp = smr.invoke_endpoint(
        EndpointName=name, Body=json.dumps(payload).encode(), ContentType="application/json"
    )
    out: dict[str, Any] = json.loads(resp["Body"].read())
    return out


@pytest.fixture(scope="module")
def hog(sm: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = handler_model(tmp_path_factory.mktemp("cgroup-hog"), MODEL)
    desc = deploy(sm, "cgroup-hog", url, memory_mb=1024, max_concurrency=1)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return "cgroup-hog"


def groups_of(root: Path, prefix: str) -> list[Path]:
    return sorted(p for p in root.glob(f"{prefix}*") if p.is_dir()) if root.is_dir() else []


def test_the_banner_says_what_holds_workers_to_their_memory(
    server: ServerProcess, groups_dir: Path | None
) -> None:
    line = banner(server)
    if AVAILABLE:
        assert groups_dir is not None
        assert "a memory cgroup per worker and template" in line, line
        assert str(groups_dir) in line, line
        assert "WARNING" not in line
    else:
        assert "WARNING" in line and "no memory cgroups" in line, line


def test_each_worker_is_in_a_group_of_its_own_limited_to_its_memory_size(
    smr: Any, hog: str, groups_dir: Path | None
) -> None:
    first = invoke(smr, hog, {})
    if groups_dir is None:
        assert not AVAILABLE
        return
    # The move is made a grace period after the fork, off the cold start's path.
    wait_for(lambda: "/w-" in invoke(smr, hog, {})["group"], timeout_s=5)
    seen = invoke(smr, hog, {})
    assert seen["pid"] == first["pid"]
    assert seen["group"].rsplit("/", 2)[-2] == groups_dir.name, seen
    assert int(seen["limit"]) == 1024 << 20  # read by the worker itself, inside its sandbox
    group = groups_dir / seen["group"].rsplit("/", 1)[-1]
    assert seen["pid"] in {int(p) for p in (group / "cgroup.procs").read_text().split()}
    # and in a cpu group of the same name weighted by its memory size (the server's: read from outside)
    cpu = own_group("cpu")
    assert isinstance(cpu, Path)  # mounted on this project's machines and in CI
    twin = cpu / groups_dir.name / group.name
    assert (twin / "cpu.shares").read_text().strip() == "1024"
    assert seen["pid"] in {int(p) for p in (twin / "cgroup.procs").read_text().split()}


def test_a_template_is_in_a_group_of_its_own(
    sm: Any, smr: Any, sklearn_model: SklearnModel, groups_dir: Path | None
) -> None:
    desc = deploy(sm, "cgroup-rf", sklearn_model.url, memory_mb=2048, max_concurrency=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    body = sklearn_model.json_body(sklearn_model.X[:3])
    smr.invoke_endpoint(EndpointName="cgroup-rf", Body=body, ContentType="application/json")
    if groups_dir is None:
        assert not AVAILABLE
        return

    # The pool's first answer starts a template of its model in the background (router/template.py).
    def template_held() -> bool:
        return any(
            (g / "memory.limit_in_bytes").read_text().strip() == str(2048 << 20)
            and (g / "cgroup.procs").read_text().strip()
            for g in groups_of(groups_dir, "t-")
        )

    wait_for(template_held, timeout_s=30)
    sm.delete_endpoint(EndpointName="cgroup-rf")


def test_memory_no_resident_set_shows_is_stopped_by_the_kernel(
    server: ServerProcess, smr: Any, hog: str, groups_dir: Path | None
) -> None:
    """1.5 GB of page tables held with a resident set near 15 MB: the watchdog (resident sets, shared
    memory) never sees them; the worker's group is charged for every page and the kernel stops the worker
    at its 1024 MB."""
    first = invoke(smr, hog, {})["pid"]
    began = time.monotonic()
    try:
        answer = invoke(smr, hog, {"how": "page_tables"})
    except ClientError as exc:
        message = exc.response["Error"]["Message"]
        assert AVAILABLE, message
        assert "MemorySizeInMB" in message and "kernel" in message, message
        assert "1024 MB" in message, message
        assert time.monotonic() - began < 60
    else:
        assert not AVAILABLE, f"the worker held {HOG_MB} MB on a 1024 MB endpoint: {answer}"
        return

    def replaced() -> bool:
        try:
            return bool(invoke(smr, hog, {})["pid"] != first)
        except ClientError:
            return False

    wait_for(replaced, timeout_s=15)
    assert server.proc is not None and server.proc.poll() is None
    # Its replacement (a replica of the model's template, by now) is in a group of its own.
    assert groups_dir is not None
    pid = invoke(smr, hog, {})["pid"]
    wait_for(lambda: f"/{groups_dir.name}/w-" in Path(f"/proc/{pid}/cgroup").read_text(), timeout_s=5)


def test_a_group_goes_with_its_worker(sm: Any, smr: Any, hog: str, groups_dir: Path | None) -> None:
    """The endpoint's worker's group goes with it; every group left holds a live process (a template the
    warm-model cache keeps, and the replica parked beside it, are workers too): none is leaked."""
    pid = invoke(smr, hog, {})["pid"]
    if groups_dir is None:
        assert not AVAILABLE
        sm.delete_endpoint(EndpointName=hog)
        return
    cgroup_of = Path(f"/proc/{pid}/cgroup")
    wait_for(lambda: f"/{groups_dir.name}/w-" in cgroup_of.read_text(), timeout_s=5)
    line = next(x for x in cgroup_of.read_text().splitlines() if f"/{groups_dir.name}/" in x)
    group = groups_dir / line.rsplit("/", 1)[-1]
    assert group.is_dir()
    sm.delete_endpoint(EndpointName=hog)

    def gone_and_none_leaked() -> bool:
        assert groups_dir is not None
        held = groups_of(groups_dir, "w-") + groups_of(groups_dir, "t-")
        return not group.exists() and all((g / "cgroup.procs").read_text().strip() for g in held)

    wait_for(gone_and_none_leaked, timeout_s=30)
    # Groups kept for the next workers hold nothing.
    assert all(not (g / "cgroup.procs").read_text().strip() for g in groups_of(groups_dir, "spare-"))


def test_without_cgroups_the_watchdog_counts_page_tables(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A host without memory cgroups (or ``--no-worker-cgroups``): the watchdog's once-a-second pass adds
    the worker's page tables (``VmPTE``) to what it counts, so the same model is stopped at its 1024 MB
    (it held 1,536 MB of page tables and answered before)."""
    server = ServerProcess(tmp_path_factory.mktemp("no-cgroups"), env={"ZEROSCALE_WORKER_CGROUPS": "false"})
    server.start()
    try:
        assert "no memory cgroups: turned off" in banner(server)
        sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
        url = handler_model(tmp_path_factory.mktemp("pte-hog"), MODEL)
        desc = deploy(sm, "pte-hog", url, memory_mb=1024, max_concurrency=1)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        assert invoke(smr, "pte-hog", {})["group"].rsplit("/", 1)[-1].startswith("w-") is False
        with pytest.raises(ClientError) as err:
            invoke(smr, "pte-hog", {"how": "page_tables", "hold": 3})
        message = err.value.response["Error"]["Message"]
        assert "more than the 1024 MB of its MemorySizeInMB" in message and "kernel" not in message, message
    finally:
        server.stop()
