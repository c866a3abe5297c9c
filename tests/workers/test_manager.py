"""The worker manager with real zygotes and real forked workers (no server)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from zeroscale.errors import DeployError
from zeroscale.workers.manager import WorkerHandle, WorkerManager, WorkerSpec

HANDLER = """
import json, os, random
import numpy as np

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    if body == b"grow":
        hog = np.ones(200_000_000)  # 1.6 GB, touched
        return str(hog.sum()), "text/plain"
    return json.dumps({"pid": os.getpid(), "random": random.random(), "np": float(np.random.rand()),
                       "omp": os.environ.get("OMP_NUM_THREADS"), "cwd": os.getcwd()}), "application/json"
"""


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(HANDLER)
    return root


@pytest.fixture
async def manager(tmp_path: Path) -> AsyncIterator[WorkerManager]:
    m = WorkerManager(tmp_path / "run", startup_timeout_s=60, memory_poll_interval_s=0.02)
    await m.open()
    yield m
    await m.close()


def spec(model_dir: Path, tmp_path: Path, memory_mb: int = 1024) -> WorkerSpec:
    return WorkerSpec(
        runtime="sklearn", model_dir=str(model_dir), memory_mb=memory_mb, log_dir=tmp_path / "logs"
    )


async def ask(handle: WorkerHandle, body: bytes = b"{}") -> dict[str, object]:
    assert handle.conn is not None
    resp = await handle.conn.request(b"POST", b"/invocations", [(b"Content-Type", b"application/json")], body)
    assert resp.status == 200, resp.body
    return dict(json.loads(resp.body))


async def test_forked_workers_do_not_share_random_state(
    manager: WorkerManager, model_dir: Path, tmp_path: Path
) -> None:
    a, b = await asyncio.gather(
        manager.start(spec(model_dir, tmp_path)), manager.start(spec(model_dir, tmp_path))
    )
    ra, rb = await ask(a), await ask(b)
    assert ra["pid"] != rb["pid"]
    assert ra["random"] != rb["random"]
    assert ra["np"] != rb["np"]
    assert ra["omp"] == "1"  # one BLAS/OpenMP thread per worker: no pool exists to break across fork()
    assert ra["cwd"] == str(model_dir)


TORCH_HANDLER = """
import json, os
import torch

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    return json.dumps({"pid": os.getpid(), "torch": torch.rand(4).tolist()}), "application/json"
"""


async def test_workers_of_the_torch_zygote_draw_their_own_torch_random_numbers(
    manager: WorkerManager, tmp_path: Path
) -> None:
    """The PyTorch zygote imported torch, whose CPU generator a fork copies: each worker reseeds it (the
    zygote's spare before it waits, a worker forked for its request on its way up), so no two workers draw
    the same numbers. Three workers: the first from a fresh fork or spare, the others from spares."""
    root = tmp_path / "model"
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(TORCH_HANDLER)
    torch_spec = WorkerSpec(runtime="pytorch", model_dir=str(root), memory_mb=1024, log_dir=tmp_path / "logs")
    first = await manager.start(torch_spec)
    answers = [await ask(first)]
    zygote = psutil.Process(first.pid).parent()
    assert zygote is not None
    for _ in range(2):
        await _until(lambda: len(_spares(zygote)) == 1, timeout_s=30)
        answers.append(await ask(await manager.start(torch_spec)))
    assert len({a["pid"] for a in answers}) == 3
    draws = [tuple(a["torch"]) for a in answers]  # type: ignore[arg-type]
    assert len(set(draws)) == 3, draws


async def test_stop_reports_exit_once(manager: WorkerManager, model_dir: Path, tmp_path: Path) -> None:
    exits: list[str] = []
    handle = await manager.start(spec(model_dir, tmp_path), on_exit=lambda h: exits.append(h.worker_id))
    await manager.stop(handle)
    assert not handle.alive
    assert exits == [handle.worker_id]
    assert not os.path.exists(handle.socket_path)


async def test_memory_limit_kills_the_worker_and_says_why(
    manager: WorkerManager, model_dir: Path, tmp_path: Path
) -> None:
    handle = await manager.start(spec(model_dir, tmp_path, memory_mb=1024))
    with pytest.raises(Exception):  # noqa: B017 - the connection drops when the worker is killed
        await ask(handle, b"grow")
    await asyncio.wait_for(handle.exited.wait(), 10)
    assert handle.kill_reason is not None
    assert "1024 MB of its MemorySizeInMB" in handle.death_reason()


async def test_zygote_death_takes_its_workers_and_is_reported(
    manager: WorkerManager, model_dir: Path, tmp_path: Path
) -> None:
    handle = await manager.start(spec(model_dir, tmp_path))
    exited: list[WorkerHandle] = []
    handle.on_exit = exited.append
    zygote_pid = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _is_zygote(int(p), handle.pid))
    os.kill(zygote_pid, signal.SIGKILL)
    await asyncio.wait_for(handle.exited.wait(), 10)
    assert exited == [handle]
    # The worker itself is gone too (parent-death signal).
    await asyncio.sleep(0.2)
    assert not _alive(handle.pid)
    # A new zygote is started on demand, and serves.
    again = await manager.start(spec(model_dir, tmp_path))
    assert (await ask(again))["pid"] == again.pid


async def test_broken_model_fails_start_with_its_output(manager: WorkerManager, tmp_path: Path) -> None:
    root = tmp_path / "broken"
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(
        "def model_fn(d):\n    raise RuntimeError('weights are corrupt')\n"
    )
    with pytest.raises(DeployError, match="weights are corrupt"):
        await manager.start(spec(root, tmp_path))


def _is_zygote(pid: int, child: int) -> bool:
    try:
        with open(f"/proc/{child}/stat") as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return False
    return pid == ppid


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


async def test_an_exit_handler_that_raises_does_not_break_the_zygote(
    manager: WorkerManager, model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in whoever owns a worker must not take down the reader that reports every worker's exit."""

    def broken(handle: WorkerHandle) -> None:
        raise RuntimeError("owner bug")

    first = await manager.start(spec(model_dir, tmp_path), on_exit=broken)
    os.kill(first.pid, signal.SIGKILL)
    await asyncio.wait_for(first.exited.wait(), 10)
    assert "exit handler of worker" in caplog.text and "owner bug" in caplog.text
    exits: list[str] = []
    second = await manager.start(spec(model_dir, tmp_path), on_exit=lambda h: exits.append(h.worker_id))
    assert (await ask(second))["pid"] == second.pid  # the zygote still forks
    os.kill(second.pid, signal.SIGKILL)
    await asyncio.wait_for(second.exited.wait(), 10)
    assert exits == [second.worker_id]  # and still reports exits


SLOW_LOAD = """
import time


def model_fn(model_dir):
    time.sleep(0.3)
    return None


def transform_fn(model, body, content_type, accept):
    return body, content_type
"""


async def test_the_zygote_says_when_a_worker_listens_so_nothing_polls_its_socket(
    manager: WorkerManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker writes a byte on a pipe once its socket listens (its zygote's, which tells the server; a
    spare's is the server's own): the server connects once, then: a model that loads for 0.3 s costs one
    connect(), not a poll loop."""
    root = tmp_path / "slow"
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(SLOW_LOAD)
    connects: list[str] = []
    original = WorkerHandle.connect

    async def counted(self: WorkerHandle) -> object:
        connects.append(self.worker_id)
        return await original(self)

    monkeypatch.setattr(WorkerHandle, "connect", counted)
    handle = await manager.start(spec(root, tmp_path))
    assert handle.up.is_set() and handle.alive
    assert connects == [handle.worker_id]
    assert handle.ready_s >= 0.3
    assert handle.conn is not None
    resp = await handle.conn.request(b"POST", b"/invocations", [(b"Content-Type", b"text/plain")], b"hi")
    assert (resp.status, resp.body) == (200, b"hi")
    await manager.stop(handle)


def _spares(zygote: psutil.Process) -> list[int]:
    """The zygote's children waiting for a request (named ``zs-spare`` while they wait)."""
    found = []
    for child in zygote.children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.name() == "zs-spare":
                found.append(child.pid)
    return found


def _held(manager: WorkerManager, pid: int) -> bool:
    """The server heard of the spare ``pid`` (its ``spare`` message): the next start writes to it. Until
    then a start goes through the zygote as a fork request, and the spare waits for the one after."""
    spare = manager._zygotes["sklearn"]._spare
    return spare is not None and spare.pid == pid


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_the_zygote_keeps_a_spare_forked_and_the_next_cold_start_is_that_spare(
    manager: WorkerManager, model_dir: Path, tmp_path: Path
) -> None:
    """A spare did the set-up every child does and waits; the next request goes to it (no fork() on the cold
    start's path), it serves like any worker with its own output stream, and the zygote forks the next spare
    once requests pause."""
    first = await manager.start(spec(model_dir, tmp_path))
    zygote = psutil.Process(first.pid).parent()
    assert zygote is not None
    await _until(lambda: len(_spares(zygote)) == 1)
    (spare,) = _spares(zygote)
    await _until(lambda: _held(manager, spare))
    second = await manager.start(spec(model_dir, tmp_path))
    assert second.pid == spare
    answer = await ask(second)
    assert answer["pid"] == spare and answer["cwd"] == str(model_dir)
    assert answer["random"] != (await ask(first))["random"]  # seeded its own (before it waited)
    assert psutil.Process(spare).name() != "zs-spare"  # its own name again
    # its output reaches its log through the zygote's capture, after the answer: waited for
    await _until(lambda: "zeroscale worker ready" in second.log_path.read_text())
    await _until(lambda: len(_spares(zygote)) == 1 and _spares(zygote) != [spare])  # the next one
    (following,) = _spares(zygote)
    await manager.close()
    await _until(lambda: not _alive(following))  # a spare ends with its zygote, never left behind


async def test_a_spare_that_dies_waiting_is_replaced_and_its_exit_is_no_workers(
    manager: WorkerManager, model_dir: Path, tmp_path: Path
) -> None:
    first = await manager.start(spec(model_dir, tmp_path))
    zygote = psutil.Process(first.pid).parent()
    assert zygote is not None
    await _until(lambda: len(_spares(zygote)) == 1)
    (spare,) = _spares(zygote)
    os.kill(spare, signal.SIGKILL)
    await _until(lambda: _spares(zygote) not in ([], [spare]))  # another, on the pipes the server gave
    (following,) = _spares(zygote)
    assert spare not in manager._early_exits  # no worker's exit waits for its start
    await _until(lambda: _held(manager, following))
    second = await manager.start(spec(model_dir, tmp_path))
    assert second.pid == following
    assert (await ask(second))["pid"] == following


WHO = """
import os

def model_fn(model_dir):
    print("who=" + os.environ["WHO"], flush=True)

def transform_fn(model, body, content_type, accept):
    return os.environ["WHO"], "text/plain"
"""


async def test_fork_requests_larger_than_the_socket_buffer_keep_their_order_and_log_files(
    manager: WorkerManager, tmp_path: Path
) -> None:
    """A stopped zygote reads nothing: requests of 300 KB each (a large Environment) fill its control
    socket, the rest of each waits in the server, and each goes whole, in order (none interleaves with the
    rest of another), with its own log file."""
    root = tmp_path / "who"
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(WHO)
    base = spec(root, tmp_path)
    first = await manager.start(dataclasses.replace(base, env={"WHO": "first"}))
    zygote = psutil.Process(first.pid).parent()
    assert zygote is not None
    zygote.suspend()
    try:
        starts = [
            asyncio.ensure_future(
                manager.start(dataclasses.replace(base, env={"BIG": "x" * 300_000, "WHO": str(i)}))
            )
            for i in range(6)
        ]
        await asyncio.sleep(0.5)
        assert not any(s.done() for s in starts)
    finally:
        zygote.resume()
    for i, handle in enumerate(await asyncio.gather(*starts)):
        assert handle.conn is not None
        resp = await handle.conn.request(b"POST", b"/invocations", [(b"Content-Type", b"text/plain")], b"")
        assert resp.body == str(i).encode()
        await _until(lambda: f"who={i}\n" in handle.log_path.read_text())  # noqa: B023 (awaited here)


async def test_a_start_from_a_template_takes_its_parked_replica_even_one_on_its_way(
    manager: WorkerManager, model_dir: Path, tmp_path: Path
) -> None:
    """``park`` forks a replica of a template ahead of need; a start from that template with the same spec
    takes it rather than forking (waiting for it when it is still on its way), and its hidden log file
    becomes the worker's stream. A start with another spec does not take it."""
    s = spec(model_dir, tmp_path)
    template = await manager.start_template(s)
    tpl = psutil.Process(template.pid)
    parking = asyncio.ensure_future(manager.park(s, template))
    await asyncio.sleep(0)  # under way, not ready yet
    worker = await manager.start(s, worker_id="taker", template=template)
    assert await parking > 0  # what the cache holds for both
    assert [p.pid for p in tpl.children()] == [worker.pid]  # no second fork
    assert (await ask(worker))["pid"] == worker.pid
    assert worker.log_path == s.log_dir / "taker.log"
    await _until(lambda: "zeroscale worker ready" in worker.log_path.read_text())
    assert not list(s.log_dir.glob(".parked-*"))
    await manager.stop(worker)
    await manager.park(s, template)
    (parked,) = [p.pid for p in tpl.children()]
    other = await manager.start(spec(model_dir, tmp_path, memory_mb=2048), template=template)
    assert other.pid != parked  # parked for another spec: discarded, not used
    await _until(lambda: not _alive(parked))
    assert not list(s.log_dir.glob(".parked-*"))
    await template.close()


async def test_a_template_begins_loading_once_worker_starts_pause(
    manager: WorkerManager, model_dir: Path, tmp_path: Path
) -> None:
    """A template's load (a fork of the zygote, the model's imports and model_fn) takes the cores that cold
    starts one after another need: ``start_template`` begins once starts pause for ``TEMPLATE_AFTER_S``
    (without the pause, back-to-back first invocations of endpoints with inference.py took ~50 ms, not
    ~15, in ``make bench ARGS="--only scale --quick"``)."""
    from zeroscale.workers import manager as manager_module

    s = spec(model_dir, tmp_path)
    begun: list[float] = []
    real = manager._zygote

    async def noted(runtime: str) -> Any:
        begun.append(time.monotonic())
        return await real(runtime)

    manager._zygote = noted  # type: ignore[method-assign]
    worker = await manager.start(s)
    manager._last_start = time.monotonic()  # another start began just now (another pool's cold start, say)
    template = await manager.start_template(s)
    assert begun[-1] >= manager._last_start + manager_module.TEMPLATE_AFTER_S  # its load came after a pause
    await template.close()
    await manager.stop(worker)


async def test_a_start_given_up_before_the_worker_is_ready_leaves_no_worker_running(
    manager: WorkerManager, tmp_path: Path
) -> None:
    """A start cancelled while its worker loads (its pool drained, say) kills that worker: nobody would own
    it, and it would hold its memory and its model's files."""
    root = tmp_path / "slow"
    (root / "code").mkdir(parents=True)
    slow = "import time\n\ndef model_fn(model_dir):\n    time.sleep(60)\n"
    (root / "code" / "inference.py").write_text(slow)
    task = asyncio.create_task(manager.start(spec(root, tmp_path)))
    deadline = time.monotonic() + 30
    while not manager.live and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    (loading,) = manager.live
    assert loading.pid and psutil.pid_exists(loading.pid)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(loading.exited.wait(), 10)
    assert loading.kill_reason == "its start was given up before it was ready"
    assert manager.live == []


async def test_a_model_that_fails_to_load_says_its_error_on_the_first_line(
    manager: WorkerManager, tmp_path: Path
) -> None:
    """The FailureReason keeps a long message's first line whole and only the end of the rest: the error
    a traceback ends with is on that first line too, not only after a frame cut in the middle."""
    root = tmp_path / "broken"
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text("def model_fn(model_dir):\n    return {}[110]\n")
    with pytest.raises(DeployError) as err:
        await manager.start(spec(root, tmp_path))
    first, _, rest = str(err.value).partition("\n")
    assert (
        first
        == "Worker failed to start: the worker process exited with code 3; its last line: KeyError: 110."
    )
    assert "Traceback" in rest and rest.rstrip().endswith("KeyError: 110")
