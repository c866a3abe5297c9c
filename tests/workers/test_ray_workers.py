"""The router's side of workers on Ray, without a cluster: what it makes of its agents' reports, a lost node,
and what it refuses to send to a node. (tests/e2e/test_ray_cluster.py runs it against a real cluster.)"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from zeroscale.artifacts.cache import ArtifactCache
from zeroscale.artifacts.holds import Hold
from zeroscale.config import MB, Settings
from zeroscale.errors import DeployError, WorkersUnavailable
from zeroscale.images.registry import ImageRegistry, write_archive
from zeroscale.server import _workers as server_workers
from zeroscale.workers.manager import WorkerHandle, WorkerSpec
from zeroscale.workers.nodeimages import KEEP_S, NodeImagesFull
from zeroscale.workers.ray_agent import AgentConfig, NodeAgent
from zeroscale.workers.ray_workers import Node, NodeLost, RayWorkers
from zeroscale.workers.zygotes import TemplateRefused

EXAMPLE_IMAGE = Path(__file__).resolve().parents[2] / "examples" / "byo-image"


def _workers() -> RayWorkers:
    return RayWorkers("127.0.0.1:6379", node_root="/tmp/unused")


def _spec(tmp_path: Path, model_dir: str = "", memory_mb: int = 1024) -> WorkerSpec:
    return WorkerSpec("sklearn", model_dir, memory_mb, tmp_path / "logs" / "ep" / "AllTraffic")


def _node(workers: RayWorkers, node_id: str, capacity_mb: int = 4096) -> Node:
    node = Node(node_id, "127.0.0.1", capacity_mb, agent=None, name=f"host/{node_id[:8]}")
    workers._nodes[node_id] = node
    return node


def _handle(tmp_path: Path, node: Node, wid: str, exits: list[WorkerHandle]) -> WorkerHandle:
    spec = _spec(tmp_path)
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    handle = WorkerHandle(wid, spec, "", spec.log_dir / f"{wid}.log", started_at=0.0, node=node.name)
    handle.on_exit = exits.append
    node.workers[wid] = handle
    return handle


async def test_a_report_appends_output_before_the_exit_it_explains(tmp_path: Path) -> None:
    workers = _workers()
    node = _node(workers, "a" * 40)
    tails: list[str] = []
    handle = _handle(tmp_path, node, "0001-x", [])
    handle.on_exit = lambda h: tails.append(h.log_tail())
    report = {
        "output": {"0001-x": b"1\tloading\n2\tTraceback: boom\n"},
        "rss_mb": {"0001-x": 123.0},
        "templates": {},
        "exits": [{"worker_id": "0001-x", "exit_code": 1, "kill_reason": None, "kill_kind": None}],
    }
    workers._apply(node, report)
    assert handle.exit_code == 1 and handle.exited.is_set()
    assert handle.rss_mb == 123.0
    assert tails == ["loading\nTraceback: boom"]  # the exit handler saw the last lines
    assert "0001-x" not in node.workers and node.reserved_mb == 0


async def test_a_kill_on_the_node_keeps_its_reason(tmp_path: Path) -> None:
    workers = _workers()
    node = _node(workers, "a" * 40)
    handle = _handle(tmp_path, node, "0001-x", [])
    reason = "Worker 0001-x used 1100 MB of memory, more than the 1024 MB of its MemorySizeInMB"
    exit_ = {"worker_id": "0001-x", "exit_code": -9, "kill_reason": reason, "kill_kind": "memory_killed"}
    workers._apply(node, {"output": {}, "rss_mb": {}, "templates": {}, "exits": [exit_]})
    assert (handle.kill_reason, handle.kill_kind) == (reason, "memory_killed")
    assert handle.death_reason() == reason


async def test_a_lost_node_ends_its_workers_like_crashes_and_is_not_used_again(tmp_path: Path) -> None:
    workers = _workers()
    lost, kept = _node(workers, "a" * 40), _node(workers, "b" * 40)
    capacity: list[int] = []
    workers.on_capacity = capacity.append
    exits: list[WorkerHandle] = []
    handles = [_handle(tmp_path, lost, f"000{i}-x", exits) for i in range(2)]
    waiter = asyncio.ensure_future(lost.call(asyncio.get_running_loop().create_future()))
    await asyncio.sleep(0)
    workers._lose(lost, "node host/aaaaaaaa was lost (ActorDiedError)")
    assert exits == handles
    assert all(h.exit_code == -9 and "was lost" in h.death_reason() and h.kill_kind is None for h in handles)
    with pytest.raises(NodeLost):  # a call under way to its agent ends too
        await waiter
    assert capacity == [kept.capacity_mb]
    assert list(workers._nodes) == [kept.node_id] and lost.node_id in workers._lost
    assert workers.nodes() == [(kept.name, 4096, 0, 0, 0)]


def test_placement_refuses_when_no_node_has_room(tmp_path: Path) -> None:
    workers = _workers()
    _node(workers, "a" * 40, capacity_mb=1000)
    with pytest.raises(DeployError, match="No node of the Ray cluster has 1024 MB free"):
        workers._place(_spec(tmp_path), "sha", None, set())


def test_what_a_node_is_sent_is_the_artifacts_source_not_a_local_path(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.joblib").write_bytes(b"w")
    entry = ArtifactCache(tmp_path / "cache").prepare(f"file://{model}")
    sha, request = _workers()._request(_spec(tmp_path, str(entry)))
    assert entry.parent.name == sha
    assert request["model_source"] == f"file://{model}" and request["memory_mb"] == 1024


def test_directories_outside_the_cache_or_the_image_registry_are_refused(tmp_path: Path) -> None:
    workers = _workers()
    with pytest.raises(DeployError, match="not in the artifact cache"):
        workers._request(_spec(tmp_path, str(tmp_path)))
    registry = RayWorkers("127.0.0.1:6379", node_root="/tmp/unused", images_root=tmp_path / "images")
    image = WorkerSpec("byo/x", str(tmp_path), 1024, tmp_path, command=("serve",), workdir=str(tmp_path))
    with pytest.raises(DeployError, match="not in the image registry"):
        asyncio.run(registry._image(image))
    root = tmp_path / "images" / "linear" / "1.0" / ("d" * 64)
    assert registry._image_parts(str(root / "app")) == ("d" * 64, root, "app")
    assert registry._image_parts(str(root)) == ("d" * 64, root, "")


def test_a_node_registers_an_image_once_and_runs_only_the_content_deployed(tmp_path: Path) -> None:
    """The agent's side of ``RayWorkers._image``: the tar.gz registered in the node's own registry (the same
    checks as a push), once per digest, and held while a worker runs it; another content, or a workdir out
    of the image, is refused. An image no worker holds, unused for an hour, is removed, and registered
    again at its next start."""
    pushed = ImageRegistry(tmp_path / "front").push("linear", "1.0", EXAMPLE_IMAGE)
    buffer = io.BytesIO()
    write_archive(pushed.root, buffer)
    agent = NodeAgent(AgentConfig(node_id="n" * 16, root=str(tmp_path / "node"), host="127.0.0.1"))

    async def workdir(digest: str, hold: Hold, within: str = "", data: bytes = buffer.getvalue()) -> str:
        archive = asyncio.get_running_loop().create_future()  # awaited as the ObjectRef is on a cluster
        archive.set_result(data)
        image = {"digest": digest, "archive": archive, "bytes": pushed.size, "workdir": within, "command": []}
        return await agent._image_workdir(image, hold)

    running = agent._artifacts.hold()
    first = asyncio.run(workdir(pushed.digest, running))
    assert Path(first, "serve").read_bytes() == (EXAMPLE_IMAGE / "serve").read_bytes()
    assert Path(first).parent.parent == tmp_path / "node" / ("n" * 16) / "images" / "image"
    with agent._artifacts.hold() as other:  # registered once: what is sent again is not read
        assert asyncio.run(workdir(pushed.digest, other, data=b"not an archive")) == first
    with pytest.raises(DeployError, match="not sha256:" + "0" * 64), agent._artifacts.hold() as hold:
        asyncio.run(workdir("0" * 64, hold))
    assert agent._images.registry.get("image", "0" * 64) is None  # not kept under the name it claimed
    with pytest.raises(DeployError, match="outside the image"), agent._artifacts.hold() as hold:
        asyncio.run(workdir(pushed.digest, hold, "../.."))
    an_hour_ago = time.time() - KEEP_S - 1
    os.utime(first, (an_hour_ago, an_hour_ago))
    agent._images.trim()
    assert Path(first).is_dir()  # a worker runs it
    running.close()
    agent._images.trim()
    assert not Path(first).exists()
    with agent._artifacts.hold() as hold:
        assert asyncio.run(workdir(pushed.digest, hold)) == first
    assert Path(first, "serve").is_file()


def _padded_image(tmp_path: Path, name: str, pad: int) -> tuple[str, bytes, int]:
    """A pushed image of the example's files and ``pad`` bytes more: (digest, its tar.gz, its bytes)."""
    source = tmp_path / "sources" / name
    source.mkdir(parents=True)
    for member in EXAMPLE_IMAGE.iterdir():
        (source / member.name).write_bytes(member.read_bytes())
        (source / member.name).chmod(member.stat().st_mode)
    (source / "pad").write_bytes(name.encode() * (pad // len(name)))
    pushed = ImageRegistry(tmp_path / "front").push(name, "1", source)
    buffer = io.BytesIO()
    write_archive(pushed.root, buffer)
    return pushed.digest, buffer.getvalue(), pushed.size


def test_a_nodes_images_are_held_to_its_cap_least_recently_used_first_and_never_one_in_use(
    tmp_path: Path,
) -> None:
    """Two agents (two front ends) on one node, a cap of about two images: a third image makes room by
    removing the least recently used image no worker holds (another agent's worker's image stays); an image
    that cannot fit beside those in use is refused by name, nothing unpacked for it, and fits once a worker
    ends; a periodic trim removes what a lowered cap no longer holds, except what is in use."""
    node = str(tmp_path / "node")
    a, b, c, d = (_padded_image(tmp_path, name, 40_000) for name in ("alpha", "bravo", "charlie", "delta"))
    cap = a[2] + b[2] + 1000  # two images, not three

    def agent() -> NodeAgent:
        return NodeAgent(AgentConfig(node_id="n" * 16, root=node, host="127.0.0.1", images_cap_bytes=cap))

    one, other = agent(), agent()

    def start(on: NodeAgent, image: tuple[str, bytes, int]) -> tuple[Hold, Path]:
        hold = on._artifacts.hold()

        async def run() -> str:
            data = asyncio.get_running_loop().create_future()
            data.set_result(image[1])
            request = {"digest": image[0], "archive": data, "bytes": image[2], "workdir": "", "command": []}
            return await on._image_workdir(request, hold)

        return hold, Path(asyncio.run(run()))

    def unpacked() -> set[str]:
        return {record.tag for record in one._images.registry.list()}

    held_a, root_a = start(one, a)  # one's worker runs alpha
    held_b, root_b = start(other, b)  # the other agent's runs bravo, then ends
    held_b.close()
    assert unpacked() == {a[0], b[0]}
    held_c, _ = start(one, c)  # bravo, unused, makes room; alpha is in use
    assert unpacked() == {a[0], c[0]} and not root_b.exists() and root_a.is_dir()
    with pytest.raises(NodeImagesFull) as full:
        start(other, d)
    message = str(full.value)
    assert "--ray-node-images-mb" in message and f"cap of {cap / 1024**2:.0f} MB" in message
    assert unpacked() == {a[0], c[0]}  # nothing of delta unpacked, nothing in use removed
    held_a.close()  # alpha's worker ends: delta fits in its place
    held_d, root_d = start(other, d)
    assert unpacked() == {c[0], d[0]} and not root_a.exists()

    lowered = NodeAgent(AgentConfig(node_id="n" * 16, root=node, host="127.0.0.1", images_cap_bytes=d[2]))
    held_c.close()
    lowered._images.trim()  # one image's room: charlie, unused, goes; delta is in use
    assert unpacked() == {d[0]} and root_d.is_dir()
    held_d.close()
    lowered._images.trim()
    assert unpacked() == {d[0]}  # within the cap, used within the hour
    smaller = NodeAgent(AgentConfig(node_id="n" * 16, root=node, host="127.0.0.1", images_cap_bytes=1))
    held_d = smaller._artifacts.hold()
    assert smaller._images.use(d[0], held_d) is not None
    smaller._images.trim()
    assert unpacked() == {d[0]}  # past the cap alone, but in use
    held_d.close()
    smaller._images.trim()
    assert unpacked() == set()


def test_a_start_whose_image_does_not_fit_the_node_says_so_for_the_router(tmp_path: Path) -> None:
    """The agent's answer to a start whose image does not fit beside those in use: the cap's message, marked
    for the router to try another node; the worker's holds are released."""
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.joblib").write_bytes(b"w")
    digest, archive, size = _padded_image(tmp_path, "alpha", 4000)
    config = AgentConfig(
        node_id="n" * 16,
        root=str(tmp_path / "node"),
        host="127.0.0.1",
        sandbox=False,
        cgroups=False,
        images_cap_bytes=size - 1,
    )
    agent = NodeAgent(config)

    async def start() -> dict[str, Any]:
        data = asyncio.get_running_loop().create_future()
        data.set_result(archive)
        image = {"digest": digest, "archive": data, "bytes": size, "workdir": "", "command": ["./serve"]}
        request = {
            "worker_id": "0001-x",
            "runtime": "byo/alpha",
            "model_source": f"file://{model}",
            "memory_mb": 256,
            "env": {},
            "image": image,
        }
        try:
            return await agent.start(request)
        finally:
            await agent.close()

    answer = asyncio.run(start())
    assert answer["no_room"] is True
    assert "it alone is larger than the node's cap for images" in answer["error"]
    assert "--ray-node-images-mb" in answer["error"]
    assert agent._holds == {} and agent._images.registry.list() == []


class _Agent:
    """A node's agent as the router calls it (``agent.start.remote(request)``, awaited): ``answer``."""

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer
        self.asked = 0
        self.start = self

    async def _answer(self) -> dict[str, Any]:
        self.asked += 1
        return self.answer

    def remote(self, _request: dict[str, Any]) -> Any:
        return self._answer()


async def test_a_node_without_room_for_the_image_sends_the_worker_to_another(tmp_path: Path) -> None:
    """A node that answers its images have no room is not the model's fault: the worker goes to the next
    node, and when none has room the start fails as unavailable (a request waiting for it answers
    ServiceUnavailable), with the last node's words naming the cap."""
    pytest.importorskip("ray")
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.joblib").write_bytes(b"w")
    entry = ArtifactCache(tmp_path / "cache").prepare(f"file://{model}")
    full = {"error": "The image's 9.0 MB do not fit on this node: ... --ray-node-images-mb", "no_room": True}
    workers = _workers()
    first, second = _node(workers, "a" * 40), _node(workers, "b" * 40)
    first.agent, second.agent = _Agent(full), _Agent({"pid": 1, "port": 1, "ready_s": 0.1})
    handle = await workers.start(_spec(tmp_path, str(entry)), worker_id="0001-x")
    assert handle.node == second.name and (first.agent.asked, second.agent.asked) == (1, 1)
    assert list(second.workers) == ["0001-x"] and not first.workers

    second.agent = _Agent(full)
    with pytest.raises(WorkersUnavailable, match=r"--ray-node-images-mb \(node host/"):
        await workers.start(_spec(tmp_path, str(entry)), worker_id="0002-x")
    assert (first.agent.asked, second.agent.asked) == (2, 1)
    assert "0002-x" not in first.workers and "0002-x" not in second.workers


def test_the_node_images_cap_goes_from_the_settings_to_every_agent(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, ray_address="127.0.0.1:6379", ray_node_images_bytes=7 * MB)
    workers = server_workers(settings, cast(Any, None), None)
    assert isinstance(workers, RayWorkers) and workers._agent_config.images_cap_bytes == 7 * MB
    agent = NodeAgent(dataclasses.replace(workers._agent_config, node_id="n" * 16, root=str(tmp_path)))
    assert agent._images._cap_bytes == 7 * MB


def test_other_front_ends_workers_on_a_node_count_against_it(tmp_path: Path) -> None:
    """An agent's ledger on the node: the other live agents' workers are reported (a dead agent's file is
    removed), and placement and the memory budget count them."""
    agent = NodeAgent(AgentConfig(node_id="n" * 16, root=str(tmp_path), host="127.0.0.1"))
    ledger = tmp_path / ("n" * 16) / "reserved"
    ledger.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    (ledger / "live-one").write_text(f"{os.getpid()} 2048\n")
    (ledger / "dead-one").write_text(f"{int(dead.stdout)} 1024\n")
    (ledger / ".half-written").write_text("garbage")
    assert agent._others_mb() == 2048
    assert not (ledger / "dead-one").exists()

    workers = _workers()
    told: list[int] = []
    workers.on_capacity = told.append
    node = _node(workers, "a" * 16, capacity_mb=4096)
    _node(workers, "b" * 16, capacity_mb=4096)
    workers._apply(node, {"output": {}, "rss_mb": {}, "templates": {}, "exits": [], "others_mb": 3072})
    assert told == [8192 - 3072]
    assert node.reserved_mb == 3072
    # 1024 MB left on node a, 4096 on b: a 2048 MB worker goes to b, and 4096 fits nowhere else.
    assert workers._place(_spec(tmp_path, memory_mb=2048), "sha", None, set()).node_id == "b" * 16
    with pytest.raises(DeployError, match="No node of the Ray cluster has 4096 MB free"):
        workers._place(_spec(tmp_path, memory_mb=4096), "sha", None, {"b" * 16})


async def test_a_node_that_missed_a_poll_still_takes_a_worker_when_no_other_answers(tmp_path: Path) -> None:
    """One late poll (a loaded machine) marks a node not answering: a new worker goes to an answering node
    with room, but where there is none it goes to the late one (its start waits for an answer or the loss
    of the node) rather than failing the deploy with 'unavailable'."""
    workers = _workers()
    late = _node(workers, "a" * 16)
    late.reachable = False
    assert workers._place(_spec(tmp_path), "sha", None, set()) is late
    other = _node(workers, "b" * 16, capacity_mb=1024)
    assert workers._place(_spec(tmp_path), "sha", None, set()) is other
    assert workers._place(_spec(tmp_path, memory_mb=2048), "sha", None, set()) is late
    with pytest.raises(WorkersUnavailable, match="no node of it is live"):
        workers._place(_spec(tmp_path), "sha", None, {"a" * 16, "b" * 16})


async def test_a_node_is_lost_node_timeout_s_after_its_last_answer(tmp_path: Path) -> None:
    """A node whose agent stops answering is lost node_timeout_s after its last answer, not after the first
    poll that timed out plus node_timeout_s more (a poll's wait is cut at the deadline): with a poll of 1 s,
    a lost node counted from its first failed poll went after ~4 s here, and the requests sent to its workers
    meanwhile waited."""
    pytest.importorskip("ray")
    answers = [{"output": {}, "rss_mb": {}, "templates": {}, "exits": []}] * 2
    last: list[float] = []

    class Agent:  # answers its first two polls, then never again
        class poll:
            @staticmethod
            async def remote(wait_s: float) -> dict[str, object]:
                if answers:
                    last.append(time.monotonic())
                    return answers.pop()
                await asyncio.sleep(3600)
                raise AssertionError("unreachable")

    workers = RayWorkers("127.0.0.1:6379", node_root="/tmp/unused", poll_s=1.0, node_timeout_s=0.3)
    node = _node(workers, "a" * 16)
    node.agent = Agent()
    await asyncio.wait_for(workers._poll(node), timeout=10)
    lost_after = time.monotonic() - last[-1]
    assert not node.alive and len(last) == 2
    assert 0.3 <= lost_after < 1.0, lost_after


async def test_a_head_that_does_not_answer_is_lost_and_a_start_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ray.nodes() waits for a lost head: after node_timeout_s the head counts as lost (the call is waited
    on again, not started anew); with no node left a start fails at once with WorkersUnavailable naming the
    cluster, and the memory budget is not zeroed; the head answering again ends it."""
    ray = pytest.importorskip("ray")
    answer = threading.Event()
    calls: list[int] = []

    def nodes() -> list[dict[str, object]]:
        calls.append(1)
        answer.wait(10)
        return []

    monkeypatch.setattr(ray, "nodes", nodes)
    workers = RayWorkers("127.0.0.1:6379", node_root="/tmp/unused", node_timeout_s=0.2)
    told: list[int] = []
    workers.on_capacity = told.append
    node = _node(workers, "a" * 16)
    workers._capacity_changed()
    await workers._refresh()
    await workers._refresh()
    assert workers.head_lost and len(calls) == 1
    workers._lose(node, "node a did not answer")
    assert told == [4096]  # not 0: a start fails at once rather than waiting for memory
    with pytest.raises(WorkersUnavailable, match=r"Ray cluster at 127.0.0.1:6379 is unavailable: its head"):
        workers._place(_spec(tmp_path), "sha", None, set())
    answer.set()
    await workers._refresh()
    assert not workers.head_lost
    with pytest.raises(WorkersUnavailable, match="no node of it is live"):
        workers._place(_spec(tmp_path), "sha", None, set())


async def test_a_template_a_node_refuses_to_fork_is_refused_here_too(tmp_path: Path) -> None:
    """A node's template whose model left threads running: the agent says so, and the router raises
    TemplateRefused as a local manager does (the pool then tries no other template of that model), not a
    DeployError it would retry."""

    class Refusing:
        async def start_template(self, spec: WorkerSpec) -> None:
            raise TemplateRefused("no template of this model: loading it left 2 threads")

    agent = NodeAgent(AgentConfig(node_id="n" * 16, root=str(tmp_path), host="127.0.0.1"))
    agent._manager = Refusing()  # type: ignore[assignment]
    request = {"runtime": "sklearn", "env": {}, "model_source": None, "memory_mb": 1024}
    answer = await agent.start_template(request)
    assert answer == {"error": "no template of this model: loading it left 2 threads", "refused": True}

    class Agent:  # the node's agent, answering what the real one answered
        class start_template:  # an actor method's shape: .remote(...)
            @staticmethod
            async def remote(req: dict[str, object]) -> dict[str, object]:
                return answer

    model = tmp_path / "m"
    model.mkdir()
    (model / "model.joblib").write_bytes(b"w")
    entry = ArtifactCache(tmp_path / "cache").prepare(f"file://{model}")
    workers = _workers()
    node = _node(workers, "a" * 40)
    node.agent = Agent()
    with pytest.raises(TemplateRefused, match="left 2 threads"):
        await workers.start_template(_spec(tmp_path, str(entry)))
    assert not node.templates
