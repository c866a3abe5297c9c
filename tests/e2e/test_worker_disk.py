"""A worker's scratch directory (TMPDIR) is held to --worker-disk-mb, through a real server, real boto3 and a
real model that writes: one file past the limit fails to write (the kernel's RLIMIT_FSIZE) and the worker
serves on; many files past it in all stop the worker within a second or two, and the next request gets a
new worker with an empty scratch directory; sparse files count what they hold."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from zeroscale.testing import ServerProcess, deploy, wait_for
from zeroscale.workers.diskuse import MAX_ENTRIES

from .conftest import handler_model

WRITER = """
import os


def model_fn(model_dir):
    return "writer"


def input_fn(body, content_type):
    return json.loads(body)


HELD = []  # files removed from the scratch directory and kept open


def predict_fn(data, model):
    tmp = os.environ["TMPDIR"]
    for i in range(data.get("hold", 0)):  # each within the limit, removed, its blocks still taken
        path = os.path.join(tmp, f"held-{i}.bin")
        f = open(path, "wb")
        f.write(os.urandom(data.get("mb", 1) << 20))
        f.flush()
        os.remove(path)
        HELD.append(f)
    for i in range(data.get("files", 0)):
        write(os.path.join(tmp, f"part-{data.get('tag', '')}{i}.bin"), 0, os.urandom(data.get("mb", 1) << 20))
    if data.get("sparse"):
        write(os.path.join(tmp, "sparse.bin"), (data["sparse"] << 20) - 1, b"x")
    return {"pid": os.getpid(), "files": sorted(os.listdir(tmp))}


def write(path, offset, data):  # a careful model: what a failed write left goes before the error
    try:
        with open(path, "wb") as f:
            f.seek(offset)
            f.write(data)
    except OSError:
        os.remove(path)
        raise


import json  # noqa: E402
"""
LIMIT_MB = 40


@pytest.fixture(scope="module")
def writer(server_factory: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = server_factory(worker_disk_mb=LIMIT_MB)
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    url = handler_model(tmp_path_factory.mktemp("writer"), WRITER)
    desc = deploy(sm, "disk-writer", url, max_concurrency=1)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return server, smr


def write(smr: Any, **payload: Any) -> Any:
    body = json.dumps(payload).encode()
    resp = smr.invoke_endpoint(EndpointName="disk-writer", Body=body, ContentType="application/json")
    return json.loads(resp["Body"].read())


def stream_text(server: ServerProcess) -> str:
    return "".join(p.read_text() for p in (server.data_dir / "logs" / "disk-writer").rglob("*.log"))


def test_the_banner_says_the_limit(writer: Any) -> None:
    server, _ = writer
    assert f"scratch disk <= {LIMIT_MB} MB" in server.log()


def test_one_file_past_the_limit_fails_to_write_and_the_worker_serves_on(writer: Any) -> None:
    _, smr = writer
    before = write(smr)["pid"]
    with pytest.raises(smr.exceptions.ModelError) as err:
        write(smr, files=1, mb=LIMIT_MB + 10, tag="big")
    assert "File too large" in err.value.response["Error"]["Message"]
    after = write(smr)
    assert after["pid"] == before  # the same worker: only the write failed
    # a sparse file far past the limit in length is refused too (its length is the file's size)
    with pytest.raises(smr.exceptions.ModelError) as err:
        write(smr, sparse=10 * LIMIT_MB)
    assert "File too large" in err.value.response["Error"]["Message"]
    assert write(smr)["pid"] == before


def test_many_files_past_the_limit_stop_the_worker_and_a_new_one_starts_empty(writer: Any) -> None:
    server, smr = writer
    why = f"to its scratch directory (TMPDIR), more than the {LIMIT_MB} MB a worker may write"
    writer_pid = write(smr)["pid"]
    try:  # 60 MB in 10 MB files, each one within the limit
        first = write(smr, files=6, mb=10, tag="many")
        assert len([f for f in first["files"] if f.startswith("part-many")]) == 6
    except smr.exceptions.ModelError as err:  # a look came while it wrote: stopped mid-request, and told so
        assert why in err.response["Error"]["Message"]
    wait_for(lambda: "was killed for disk" in stream_text(server), timeout_s=20)
    text = stream_text(server)
    assert why in text and "zeroscale serve --worker-disk-mb" in text

    def fresh() -> bool:
        return write(smr)["pid"] != writer_pid

    wait_for(fresh, timeout_s=20)
    assert not [f for f in write(smr)["files"] if f.startswith("part-")]  # a new, empty scratch directory
    assert 'reason="disk_killed"' in server.metrics()


def test_files_removed_but_kept_open_count_until_they_are_closed(writer: Any) -> None:
    """A model writing files within the limit, removing each and keeping it open, holds their blocks with
    an empty directory (it held 1.3 GB under a 200 MB limit): they count, and the worker is stopped."""
    server, smr = writer
    before = stream_text(server).count("removed but still open")
    holder = write(smr)["pid"]
    try:  # 60 MB in 10 MB files, none left in the directory
        assert not [f for f in write(smr, hold=6, mb=10)["files"] if f.startswith("held-")]
    except smr.exceptions.ModelError as err:  # a look came while it wrote
        assert "removed but still open" in err.response["Error"]["Message"]
    wait_for(lambda: stream_text(server).count("removed but still open") > before, timeout_s=20)
    wait_for(lambda: write(smr)["pid"] != holder, timeout_s=20)


def test_more_files_than_the_walk_takes_stop_the_worker(writer: Any) -> None:
    """Empty files cost no blocks, but each costs the server's once-a-second walk: past MAX_ENTRIES the
    worker is stopped (a model kept just under it costs the server ~30 ms a second, not more)."""
    server, smr = writer
    before = stream_text(server).count("files and directories in its scratch directory")
    first = write(smr, files=MAX_ENTRIES + 1, mb=0, tag="empty")
    wait_for(
        lambda: stream_text(server).count("files and directories in its scratch directory") > before,
        timeout_s=20,
    )
    wait_for(lambda: write(smr)["pid"] != first["pid"], timeout_s=20)


def test_without_a_limit_nothing_is_stopped(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(worker_disk_mb=0)
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    desc = deploy(sm, "disk-writer", handler_model(tmp_path, WRITER), max_concurrency=1)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    first = write(smr, files=1, mb=LIMIT_MB + 10, tag="big")
    assert "part-big0.bin" in first["files"]
    assert "scratch disk" not in server.log()
