"""Workers on a Ray cluster (``zeroscale serve --ray-address``): the router's ``Workers`` for many machines.

Ray places and supervises one agent per node (``ray_agent.NodeAgent``, an actor pinned to its node with a
hard node-affinity strategy); the agent keeps the runtimes' zygotes and forks workers there, so a cold
start on a node is the same fork as on one machine plus one actor call. Ray is used for what it is good at:
knowing the nodes, starting and supervising one process per node, calls to it. The requests do not go
through Ray: the router talks HTTP/1.1 to each worker over TCP, through the agent's relay on the node.

- Placement (``placement.choose``): the node's memory (its Ray ``memory`` resource) less the MemorySizeInMB
  of the workers this front end placed there and of the other front ends' workers there (their agents'
  ledger on the node, as the node's agent last reported it); an endpoint variant's workers spread; then a
  node holding the pool's template, then one holding the model's artifact. The router's memory budget is
  the sum over live nodes of their memory less the other front ends' workers.
- Artifacts: a worker's model directory here is an entry of the front end's artifact cache; the node is
  sent the entry's source (S3, or a file URL on a shared path) and fills its own cache from it.
- Logs: each node's agent ships its workers' stream records back with every poll (half a second, or at
  once on an exit); they are appended to the same stream files the single-machine workers write, so log
  groups, the CloudWatch Logs API and death messages are the same.
- Faults: an agent that dies (its node lost) ends every worker it held, each reported like a crash (only
  their in-flight requests fail); the pools start replacements, which go to the nodes left. Nodes that
  join later get an agent at the next look at the cluster (every ``refresh_s``).
- The head lost: the agents are called directly, so the nodes keep serving and starting workers until
  their own raylets give up on the head. A look at the cluster that gets no answer within
  ``node_timeout_s`` marks the head lost (logged once, and once more when it answers again). With no live
  node left, a start fails at once with ``WorkersUnavailable`` naming the cluster (the request answers
  ServiceUnavailable), and the memory budget is left as it was so requests do not wait for memory no node
  offers. Nothing here calls Ray in a way that waits for the head on the event loop. Ray's own client ends
  a driver that cannot reach the head for ``gcs_rpc_server_reconnect_timeout_s`` (60 s by default): the
  front end raises it to a day (``RAY_GCS_RECONNECT_S``) unless the operator set it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import itertools
import logging
import os
import signal
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zeroscale.artifacts.cache import entry_source
from zeroscale.config import (
    DEFAULT_MAX_EXTRACTED_MB,
    DEFAULT_RAY_NODE_IMAGES_MB,
    DEFAULT_WORKER_LOG_MB_PER_MINUTE,
    MB,
)
from zeroscale.errors import DeployError, WorkersUnavailable
from zeroscale.fstree import tree_bytes
from zeroscale.images.registry import write_archive
from zeroscale.runtimes.usercode import PYTHONPATH, SUBMIT_DIRECTORY
from zeroscale.workers.client import Body, WorkerConnection, WorkerResponse
from zeroscale.workers.manager import WorkerHandle, WorkerSpec
from zeroscale.workers.placement import NodeView, choose
from zeroscale.workers.ray_agent import AgentConfig, NodeAgent
from zeroscale.workers.stream import WorkerStream, open_stream
from zeroscale.workers.zygotes import TemplateRefused, Zygote

log = logging.getLogger("zeroscale.workers.ray")
IMAGE_REFS_BYTES = 1024 * MB  # bring-your-own images' archives this front end keeps in Ray's object store
NAMESPACE = "zeroscale"
# How long Ray's client in this process keeps trying to reach a lost head before it ends the process (Ray's
# default, 60 s, would end the front end with the head): a day, unless the environment says otherwise.
RAY_GCS_RECONNECT_ENV = "RAY_gcs_rpc_server_reconnect_timeout_s"
RAY_GCS_RECONNECT_S = 24 * 3600


@dataclass
class Node:
    node_id: str
    host: str  # the node's address (NodeManagerAddress)
    capacity_mb: int
    agent: Any  # the actor handle
    name: str = ""  # <hostname>/<node id prefix>: what `zeroscale workers` and /metrics show
    alive: bool = True
    reachable: bool = True  # its last poll answered (new workers go elsewhere while another node does)
    workers: dict[str, WorkerHandle] = field(default_factory=dict)
    templates: dict[str, RemoteTemplate] = field(default_factory=dict)
    artifacts: set[str] = field(default_factory=set)  # sha256 of the models in its cache
    cache_bytes: int = 0  # what its artifact cache holds (its agent's last report)
    others_mb: int = 0  # MemorySizeInMB of other front ends' workers there (its agent's last report)
    poller: asyncio.Task[None] | None = None
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set when the node is lost

    async def call(self, ref: Any, timeout_s: float | None = None) -> Any:
        """The answer of one call to its agent; NodeLost when the node is lost first (a call to an agent
        on a machine that went away may not fail before Ray notices, tens of seconds later)."""
        answer = asyncio.ensure_future(_resolve(ref))
        lost = asyncio.ensure_future(self.gone.wait())
        try:
            done, _ = await asyncio.wait(
                {answer, lost}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            lost.cancel()
        if answer in done:
            return answer.result()
        answer.cancel()
        if lost in done:
            raise NodeLost(self.name)
        raise TimeoutError

    @property
    def reserved_mb(self) -> int:
        """This front end's workers and the others' (as the node's agent last reported them)."""
        return sum(h.spec.memory_mb for h in self.workers.values()) + self.others_mb


class NodeLost(Exception):
    pass


async def _resolve(ref: Any) -> Any:
    return await ref


class RemoteTemplate(Zygote):
    """A template (a zygote's child holding one loaded model) on a node: what the router keeps of it."""

    def __init__(self, owner: RayWorkers, node: Node, tid: str, runtime: str, pool: str) -> None:
        super().__init__(runtime, Path(os.devnull), lambda pid, status: None)
        self._owner = owner
        self.node = node
        self.tid = tid
        self.pool = pool
        self.private_bytes = 0
        self._closed = False

    @property
    def alive(self) -> bool:
        return not self._closed and self.node.alive and self.tid in self.node.templates

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.node.templates.pop(self.tid, None)
        if self.node.alive:
            with contextlib.suppress(Exception):
                await self.node.call(self.node.agent.close_template.remote(self.tid), 10.0)


class RayWorkers:
    """``Workers`` (router/spec.py) on the nodes of the Ray cluster at ``address``."""

    def __init__(
        self,
        address: str,
        *,
        node_root: str,
        startup_timeout_s: float = 180.0,
        memory_poll_interval_s: float = 0.05,
        s3_endpoint_url: str | None = None,
        max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_MB * MB,
        max_extracted_files: int = 100_000,
        sandbox: bool = True,
        outbound: bool = False,
        max_processes: int = 64,
        max_open_files: int = 1024,
        max_disk_bytes: int = 0,
        writable: tuple[str, ...] = (),
        log_limit: int = DEFAULT_WORKER_LOG_MB_PER_MINUTE * MB,
        cgroups: bool = True,
        artifact_cache_bytes: int | None = None,
        requirements_cache_bytes: int | None = None,
        refresh_s: float = 2.0,
        poll_s: float = 0.5,
        node_timeout_s: float = 10.0,
        temp_dir: str | None = None,
        images_root: Path | None = None,
        node_images_bytes: int = DEFAULT_RAY_NODE_IMAGES_MB * MB,
    ) -> None:
        """``images_root``: the front end's image registry (bring-your-own images' workers run on the nodes
        from a copy of the image's files, ``_image``); ``node_images_bytes``: what those copies may take on
        a node (0: no cap)."""
        self._address = address
        self._images_root = images_root
        # content digest -> (the image's tar.gz in Ray's object store, its size, its files' bytes), least
        # recently used first
        self._image_refs: OrderedDict[str, tuple[Any, int, int]] = OrderedDict()
        self._image_lock = asyncio.Lock()
        self._temp_dir = temp_dir  # the local Ray node to attach to (its --temp-dir); None: Ray's choice
        self._agent_config = AgentConfig(
            node_id="",
            host="",
            root=node_root,
            startup_timeout_s=startup_timeout_s,
            memory_poll_interval_s=memory_poll_interval_s,
            s3_endpoint_url=s3_endpoint_url,
            max_extracted_bytes=max_extracted_bytes,
            max_extracted_files=max_extracted_files,
            sandbox=sandbox,
            outbound=outbound,
            max_processes=max_processes,
            max_open_files=max_open_files,
            max_disk_bytes=max_disk_bytes,
            writable=writable,
            log_limit=log_limit,
            cgroups=cgroups,
            artifact_cache_bytes=artifact_cache_bytes,
            requirements_cache_bytes=requirements_cache_bytes,
            images_cap_bytes=node_images_bytes,
        )
        self._startup_timeout_s = startup_timeout_s
        self._refresh_s = refresh_s
        self._poll_s = poll_s
        self._node_timeout_s = node_timeout_s
        self._lost: set[str] = set()  # nodes whose agent is gone: never used again (a restart is a new node)
        self._nodes: dict[str, Node] = {}
        self._handles: dict[str, WorkerHandle] = {}
        self._ids = itertools.count(1)
        self._prewarmed: tuple[str, ...] = ()
        self._refresher: asyncio.Task[None] | None = None
        self._agent_cls: Any = None
        self._joining: dict[str, asyncio.Task[None]] = {}
        self._listing: asyncio.Future[list[dict[str, Any]]] | None = None  # ray.nodes() under way
        self._head_lost_since = 0.0  # monotonic; 0: the head answers
        self._capacity_mb = 0  # last told to on_capacity
        # Told the cluster's memory for workers (the sum over live nodes) whenever a node joins or is lost:
        # the router's memory budget is the cluster's, not this machine's.
        self.on_capacity: Callable[[int], None] | None = None

    # ---- lifecycle ----
    async def open(self) -> None:
        """Connect to the cluster (a clear error when its head does not answer) and start every agent."""
        import ray

        if self._address != "auto":  # "auto": the cluster this machine is a node of
            await _reachable(self._address)
        os.environ.setdefault(RAY_GCS_RECONNECT_ENV, str(RAY_GCS_RECONNECT_S))
        extra: dict[str, Any] = {"_temp_dir": self._temp_dir} if self._temp_dir else {}
        try:
            await asyncio.to_thread(
                ray.init,
                address=self._address,
                **extra,
                namespace=NAMESPACE,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except Exception as exc:  # ConnectionError, or Ray's own when the head does not answer
            raise RuntimeError(f"Could not connect to the Ray cluster at {self._address}: {exc}") from exc
        _restore_signal_handlers()
        self._agent_cls = ray.remote(NodeAgent)
        await self._refresh(wait=True)
        if not self._nodes:
            raise RuntimeError(f"The Ray cluster at {self._address} has no node that runs an agent")
        self._refresher = asyncio.create_task(self._refresh_loop())

    async def close(self) -> None:
        import ray

        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        for task in self._joining.values():
            task.cancel()
        nodes = [n for n in self._nodes.values() if n.alive]
        await asyncio.gather(*(self._close_node(n) for n in nodes), return_exceptions=True)
        for node in nodes:
            self._lose(node, "the server is shutting down")
        await asyncio.to_thread(ray.shutdown)

    async def _close_node(self, node: Node) -> None:
        if node.poller is not None:
            node.poller.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(node.agent.close.remote(), 10.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.to_thread(_kill_actor, node.agent), 10.0)

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self._refresh()
            except Exception:
                log.exception("looking at the Ray cluster's nodes failed")

    async def _refresh(self, *, wait: bool = False) -> None:
        """Agents for nodes that joined (``wait``: until they are up); nodes Ray reports dead are lost. The
        head lost: ``ray.nodes()`` waits for it; after ``node_timeout_s`` the head counts as lost (the call
        stays under way, and is waited on again at the next look rather than started anew)."""
        import ray

        if self._listing is None:
            self._listing = asyncio.ensure_future(asyncio.to_thread(ray.nodes))
        try:
            # At start (``wait``) the head just answered ray.init: no limit (a slow machine is no lost head).
            timeout_s = None if wait else self._node_timeout_s
            listed = await asyncio.wait_for(asyncio.shield(self._listing), timeout_s)
        except Exception as exc:  # TimeoutError: no answer; or Ray's error for a head it cannot reach
            if self._listing.done():
                self._listing = None
            self._head_lost(exc)
            return
        self._listing = None
        if self._head_lost_since:
            log.warning(
                "The Ray cluster's head at %s answers again (after %.0f s)",
                self._address,
                time.monotonic() - self._head_lost_since,
            )
            self._head_lost_since = 0.0
        alive = {n["NodeID"]: n for n in listed if n.get("Alive")}
        for node_id, node in list(self._nodes.items()):
            if node_id not in alive:
                self._lose(node, f"node {node.name} left the Ray cluster")
        for node_id, info in alive.items():
            if node_id not in self._nodes and node_id not in self._joining and node_id not in self._lost:
                # In the background: an agent that takes long to come up holds up no other node.
                self._joining[node_id] = asyncio.create_task(self._join(info))
        if wait:
            await asyncio.gather(*self._joining.values(), return_exceptions=True)

    def _head_lost(self, exc: BaseException) -> None:
        if self._head_lost_since:
            return
        self._head_lost_since = time.monotonic()
        live = sum(1 for n in self._nodes.values() if n.alive)
        log.error(
            "The Ray cluster's head at %s does not answer (%s): %d node(s) still serve; with none left, "
            "invocations that need a new worker answer ServiceUnavailable until it is back",
            self._address,
            type(exc).__name__,
            live,
        )

    @property
    def head_lost(self) -> bool:
        return bool(self._head_lost_since)

    async def _join(self, info: dict[str, Any]) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        node_id = str(info["NodeID"])
        host = str(info.get("NodeManagerAddress") or "127.0.0.1")
        memory = int(float(info.get("Resources", {}).get("memory", 0)) // MB)
        config = dataclasses.replace(self._agent_config, node_id=node_id, host=host)
        agent = self._agent_cls.options(
            num_cpus=0,
            max_restarts=0,
            max_concurrency=10_000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            name=f"zeroscale-agent-{node_id[:16]}-{uuid.uuid4().hex[:8]}",
        ).remote(config)
        try:
            hello = await asyncio.wait_for(agent.hello.remote(), self._startup_timeout_s)
            if self._prewarmed:
                await agent.prewarm.remote(list(self._prewarmed))
        except Exception as exc:  # tried again at the next look at the cluster, with a new agent
            log.warning("no agent on Ray node %s (%s): %s", node_id[:16], host, exc)
            _kill_later(agent)
            return
        finally:
            self._joining.pop(node_id, None)
        node = Node(node_id, host, memory, agent, name=f"{hello['hostname']}/{node_id[:8]}")
        self._nodes[node_id] = node
        node.poller = asyncio.create_task(self._poll(node))
        self._capacity_changed()
        log.info("Ray node %s at %s: %d MB for workers", node.name, host, memory)

    # ---- what the operator sees ----
    def nodes(self) -> list[tuple[str, int, int, int, int]]:
        """Each live node: (name, memory MB, MB reserved by workers, live workers, artifact cache bytes)."""
        return [
            (n.name, n.capacity_mb, n.reserved_mb, len(n.workers), n.cache_bytes)
            for n in self._nodes.values()
            if n.alive
        ]

    # ---- Workers ----
    def new_worker_id(self) -> str:
        return f"{next(self._ids):04d}-{uuid.uuid4().hex[:8]}"

    async def prewarm(self, runtimes: tuple[str, ...]) -> None:
        self._prewarmed = tuple(dict.fromkeys((*self._prewarmed, *runtimes)))
        nodes = [n for n in self._nodes.values() if n.alive]
        await asyncio.gather(*(n.agent.prewarm.remote(list(runtimes)) for n in nodes), return_exceptions=True)

    def _request(self, spec: WorkerSpec) -> tuple[str, dict[str, Any]]:
        """The model's sha256 and what an agent needs to run ``spec`` (sources, not this machine's paths)."""
        entry = entry_source(spec.model_dir)
        if entry is None:
            raise DeployError(f"The model directory {spec.model_dir} is not in the artifact cache.")
        sha, source = entry
        env = dict(spec.env)
        # Installed on the front end, in its data directory: the node installs them itself (ray_agent.py).
        requirements = bool(env.pop(PYTHONPATH, ""))
        env_sources: dict[str, tuple[str, str | None]] = {}  # name -> (sha256, source), as the model's
        submit = env.get(SUBMIT_DIRECTORY, "")
        if submit:
            sub = entry_source(submit)
            if sub is not None:
                env_sources[SUBMIT_DIRECTORY] = sub
        return sha, {
            "runtime": spec.runtime,
            # the node fetches the source again, and runs it only if it is what this front end read
            "model_source": source,
            "model_sha": sha,
            "memory_mb": spec.memory_mb,
            "env": env,
            "env_sources": env_sources,
            "requirements": requirements,
        }

    async def _image(self, spec: WorkerSpec) -> dict[str, Any]:
        """What a node needs to run a bring-your-own image's worker: the image's files, as a tar.gz put in
        Ray's object store once per content digest (the node registers it through the same checks as a
        push, and runs it only if its digest is the one deployed), and the command and workdir in them."""
        digest, root, workdir = self._image_parts(spec.workdir)
        async with self._image_lock:
            kept = self._image_refs.get(digest)
            if kept is None:

                def put() -> tuple[Any, int, int]:
                    import ray

                    buffer = io.BytesIO()
                    write_archive(root, buffer)
                    return ray.put(buffer.getvalue()), buffer.tell(), tree_bytes(root)

                kept = self._image_refs[digest] = await asyncio.to_thread(put)
            self._image_refs.move_to_end(digest)
            # the object store holds the most recently started images up to IMAGE_REFS_BYTES (at least one):
            # a node that has registered an image no longer needs it, one that has not gets it put again
            total = sum(size for _, size, _ in self._image_refs.values())
            while len(self._image_refs) > 1 and total > IMAGE_REFS_BYTES:
                total -= self._image_refs.popitem(last=False)[1][1]
        return {
            "digest": digest,
            "archive": kept[0],
            "bytes": kept[2],  # what the node makes room for before it unpacks the archive
            "workdir": workdir,
            "command": list(spec.command),
        }

    def _image_parts(self, workdir: str) -> tuple[str, Path, str]:
        """A worker's workdir in this front end's registry (``<root>/<name>/<tag>/<digest>/<workdir>``) ->
        (digest, the image's directory, the workdir within it)."""
        if self._images_root is None:
            raise DeployError("This front end was given no image registry for its cluster's workers.")
        root = self._images_root.resolve()  # as the registry names its directories
        try:
            name, tag, digest, *within = Path(workdir).resolve().relative_to(root).parts
        except ValueError:
            raise DeployError(f"The image directory {workdir} is not in the image registry.") from None
        return digest, root / name / tag / digest, "/".join(within)

    def _place(self, spec: WorkerSpec, sha: str, template: RemoteTemplate | None, exclude: set[str]) -> Node:
        """The node for a new worker (``placement.choose``). A node whose last poll did not answer (a
        loaded machine, or one going away) is chosen only where no answering one has room: a start sent
        there waits for its answer or for the node to be lost (``node_timeout_s``), then tries the next
        node, so one slow poll does not fail a deploy."""
        pool = str(spec.log_dir)  # one directory per endpoint variant
        views = [
            NodeView(
                node_id=n.node_id,
                capacity_mb=n.capacity_mb,
                reserved_mb=n.reserved_mb,
                pool_workers=sum(1 for h in n.workers.values() if str(h.spec.log_dir) == pool),
                has_template=template is not None and template.node is n and template.alive,
                has_artifact=sha in n.artifacts,
                answering=n.reachable,
            )
            for n in self._nodes.values()
            if n.alive and n.node_id not in exclude
        ]
        if not views:  # none live, or the last ones failed this start: not the model's fault
            raise self._unavailable()
        chosen = choose(views, spec.memory_mb)
        if chosen is None:
            room = ", ".join(f"{v.node_id[:8]}: {v.free_mb} MB free" for v in views) or "no live node"
            raise DeployError(
                f"No node of the Ray cluster has {spec.memory_mb} MB free for a worker ({room})."
            )
        return self._nodes[chosen.node_id]

    def _unavailable(self) -> WorkersUnavailable:
        if self._head_lost_since:
            since = time.monotonic() - self._head_lost_since
            why = f"its head has not answered for {since:.0f} s and no node is left for new workers"
        else:
            why = "no node of it is live"
        return WorkersUnavailable(f"The Ray cluster at {self._address} is unavailable: {why}; retry later.")

    async def start(
        self,
        spec: WorkerSpec,
        *,
        worker_id: str | None = None,
        on_exit: Callable[[WorkerHandle], None] | None = None,
        template: Zygote | None = None,
    ) -> WorkerHandle:
        from ray.exceptions import RayActorError

        wid = worker_id or self.new_worker_id()
        sha, request = self._request(spec)
        if spec.command:
            request["image"] = await self._image(spec)
        remote = template if isinstance(template, RemoteTemplate) and template.alive else None
        spec.log_dir.mkdir(parents=True, exist_ok=True)
        handle = WorkerHandle(wid, spec, "", spec.log_dir / f"{wid}.log", started_at=time.monotonic())
        tried: set[str] = set()
        no_room = ""  # the last node's answer that the image did not fit there
        while True:
            try:
                node = self._place(spec, sha, remote, tried)
            except DeployError:
                if no_room:  # not the model's fault: a retry may find a node with room
                    raise WorkersUnavailable(no_room) from None
                raise
            handle.node = node.name
            node.workers[wid] = handle  # reserves its memory while it starts
            self._handles[wid] = handle
            use = remote.tid if remote is not None and remote.node is node else ""
            try:
                call = node.agent.start.remote({**request, "worker_id": wid, "template": use})
                answer = await node.call(call)
            except (RayActorError, NodeLost) as exc:  # the agent died (its node is gone): try the next node
                node.workers.pop(wid, None)
                self._handles.pop(wid, None)
                log.warning("starting worker %s on node %s failed: %s", wid, node.name, exc)
                tried.add(node.node_id)
                continue
            if "error" in answer:
                node.workers.pop(wid, None)
                self._handles.pop(wid, None)
                if answer.get("no_room"):  # its images are full: another node may have room
                    no_room = f"{answer['error']} (node {node.name})"
                    tried.add(node.node_id)
                    continue
                raise DeployError(f"{answer['error']} (node {node.name})")
            break
        node.artifacts.add(sha)
        handle.pid, handle.port = int(answer["pid"]), int(answer["port"])
        handle.host = node.host
        if handle.alive:
            try:
                handle.conn = await WorkerConnection.open_tcp(node.host, handle.port)
            except OSError:
                handle.conn = None  # it exited meanwhile: the exit report follows
        handle.ready_s = time.monotonic() - handle.started_at
        handle.on_exit = on_exit
        if not handle.alive and on_exit is not None:
            on_exit(handle)
        return handle

    async def start_template(self, spec: WorkerSpec) -> Zygote:
        from ray.exceptions import RayActorError

        sha, request = self._request(spec)
        pool = str(spec.log_dir)
        # Where the pool's workers are (the first one is why the template is wanted), else by placement.
        holders = [n for n in self._nodes.values() if n.alive and n.reachable]
        holders.sort(key=lambda n: -sum(1 for h in n.workers.values() if str(h.spec.log_dir) == pool))
        node = holders[0] if holders else self._place(spec, sha, None, set())
        try:
            answer = await node.call(node.agent.start_template.remote(request))
        except (RayActorError, NodeLost) as exc:
            raise DeployError(f"node {node.name} is gone: {exc}") from exc
        if answer.get("refused"):
            raise TemplateRefused(str(answer["error"]))
        if "error" in answer:
            raise DeployError(str(answer["error"]))
        template = RemoteTemplate(self, node, str(answer["template"]), spec.runtime, pool)
        template.pid = int(answer["pid"])
        node.templates[template.tid] = template
        node.artifacts.add(sha)
        return template

    def template_bytes(self, template: Zygote) -> int:
        return template.private_bytes if isinstance(template, RemoteTemplate) and template.alive else 0

    async def park(self, spec: WorkerSpec, template: Zygote) -> int:
        """A replica of ``template`` forked ahead of need on its node and parked there (the agent's ``park``):
        the next cold start from it on that node takes the replica. What keeping both costs, in bytes (the
        template's alone when the node could not park one)."""
        from ray.exceptions import RayActorError

        if not isinstance(template, RemoteTemplate) or not template.alive:
            return 0
        _, request = self._request(spec)
        node = template.node
        try:
            answer = await node.call(node.agent.park.remote({**request, "template": template.tid}))
        except (RayActorError, NodeLost) as exc:
            log.warning("parking a replica on node %s failed: %s", node.name, exc)
            return self.template_bytes(template)
        if "error" in answer:
            log.warning("parking a replica on node %s failed: %s", node.name, answer["error"])
            return self.template_bytes(template)
        template.private_bytes = int(answer["bytes"]) or template.private_bytes
        return self.template_bytes(template)

    async def stop(self, handle: WorkerHandle, *, grace_s: float | None = None) -> None:
        if handle.conn is not None:
            handle.conn.close()
        node = self._node_of(handle)
        if not handle.alive or node is None:
            return
        with contextlib.suppress(Exception):  # a lost node ends its workers itself
            await node.call(node.agent.stop.remote(handle.worker_id, grace_s))
        await handle.exited.wait()

    def kill(self, handle: WorkerHandle, reason: str, kind: str = "killed") -> None:
        if handle.kill_reason is None:
            handle.kill_reason, handle.kill_kind = reason, kind
        node = self._node_of(handle)
        if handle.alive and node is not None:
            node.agent.kill.remote(handle.worker_id, reason, kind)

    async def request(
        self,
        handle: WorkerHandle,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Body,
        timeout_s: float | None = None,
        max_answer: int | None = None,
    ) -> WorkerResponse:
        """One request over the worker's keep-alive TCP connection (through its node's relay)."""
        return await handle.request(method, path, headers, body, timeout_s, max_answer)

    async def stream(
        self,
        handle: WorkerHandle,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> WorkerStream:
        """A request whose answer is read as it comes, over the worker's TCP connection (as locally)."""
        return await open_stream(await handle.connection(), method, path, headers, body)

    def _node_of(self, handle: WorkerHandle) -> Node | None:
        for node in self._nodes.values():
            if handle.worker_id in node.workers:
                return node if node.alive else None
        return None

    # ---- reports from the nodes ----
    async def _poll(self, node: Node) -> None:
        """Reports from the node's agent until it is lost: its agent died, or it did not answer a poll
        within ``node_timeout_s`` (a machine that went away; meanwhile new workers go to a node that answers,
        where one has room)."""
        from ray.exceptions import ActorUnavailableError

        answered = time.monotonic()
        while node.alive:
            # A poll answers within poll_s; one that has not within a second more marks the node late, and
            # the node is lost once node_timeout_s have passed since its last answer (counted from that
            # answer, not from the first poll that failed: a poll's wait is cut short at the deadline).
            wait_s = min(self._poll_s + 1.0, max(0.05, answered + self._node_timeout_s - time.monotonic()))
            try:
                report = await node.call(node.agent.poll.remote(self._poll_s), wait_s)
            except (TimeoutError, ActorUnavailableError) as exc:
                node.reachable = False
                if time.monotonic() - answered >= self._node_timeout_s:
                    self._lose(node, f"node {node.name} did not answer ({type(exc).__name__})")
                    return
                await asyncio.sleep(0.1)
                continue
            except NodeLost:
                return
            except Exception as exc:  # ActorDiedError: the agent, or its node, is gone
                self._lose(node, f"node {node.name} was lost ({type(exc).__name__})")
                return
            answered, node.reachable = time.monotonic(), True
            self._apply(node, report)

    def _apply(self, node: Node, report: dict[str, Any]) -> None:
        others = int(report.get("others_mb", 0))
        if others != node.others_mb:
            node.others_mb = others
            self._capacity_changed()
        for wid, chunk in report["output"].items():
            handle = node.workers.get(wid)
            if handle is not None:
                _append(handle.log_path, chunk)
        for wid, rss in report["rss_mb"].items():
            handle = node.workers.get(wid)
            if handle is not None:
                handle.rss_mb = float(rss)
        for tid, size in report["templates"].items():
            template = node.templates.get(tid)
            if template is not None:
                template.private_bytes = int(size)
        node.artifacts.difference_update(report.get("evicted", ()))  # placement prefers nodes holding them
        node.cache_bytes = int(report.get("cache_bytes", 0))
        for exit_ in report["exits"]:
            handle = node.workers.get(exit_["worker_id"])
            if handle is None:
                continue
            if handle.kill_reason is None and exit_["kill_reason"]:
                handle.kill_reason, handle.kill_kind = exit_["kill_reason"], exit_["kill_kind"]
            self._ended(node, handle, int(exit_["exit_code"]))

    def _ended(self, node: Node, handle: WorkerHandle, status: int) -> None:
        node.workers.pop(handle.worker_id, None)
        self._handles.pop(handle.worker_id, None)
        handle.exit_code = status
        if handle.conn is not None:
            handle.conn.close()
        handle.exited.set()
        if handle.on_exit is not None:
            try:
                handle.on_exit(handle)
            except Exception:
                log.exception("exit handler of worker %s failed", handle.worker_id)

    def _lose(self, node: Node, reason: str) -> None:
        """The node's agent is gone: so are its workers (each reported like a crash) and templates."""
        if not node.alive:
            return
        node.alive = False
        node.gone.set()
        self._nodes.pop(node.node_id, None)
        self._lost.add(node.node_id)
        _kill_later(node.agent)  # what may be left of it ends with it (its zygotes, workers)
        if node.poller is not None and node.poller is not asyncio.current_task():
            node.poller.cancel()
        if node.workers:
            log.warning("%s: %d worker(s) ended", reason, len(node.workers))
        for handle in list(node.workers.values()):
            if handle.kill_reason is None:
                handle.kill_reason = f"The worker's {reason}"
            self._ended(node, handle, -9)
        node.templates.clear()
        self._capacity_changed()

    def _capacity_changed(self) -> None:
        """Tell the router the cluster's memory; with no live node the budget is left as it was: a start
        then fails at once naming the cluster (``_unavailable``) rather than waiting for memory."""
        total = sum(max(0, n.capacity_mb - n.others_mb) for n in self._nodes.values() if n.alive)
        if total and total != self._capacity_mb and self.on_capacity is not None:
            self._capacity_mb = total
            self.on_capacity(total)


def _restore_signal_handlers() -> None:
    """Ray's client installs a C++ handler of its own for SIGTERM and SIGINT, which ends the process at once
    (no graceful stop: in-flight requests cut, the front end's row left to expire). Put back the ones
    Python keeps (the server's graceful stop); only the main thread may set them."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        handler = signal.getsignal(sig)
        if handler is not None:
            signal.signal(sig, handler)


def _kill_actor(agent: Any) -> None:
    import ray

    if not ray.is_initialized():  # never ray.kill's auto-init: it would join whatever cluster it finds
        return
    with contextlib.suppress(Exception):
        ray.kill(agent)


def _kill_later(agent: Any) -> None:
    """``ray.kill`` in a thread: it asks the head, which may be the part that is lost (never on the loop)."""
    threading.Thread(target=_kill_actor, args=(agent,), name="ray-kill", daemon=True).start()


async def _reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fail fast with a clear error when nothing answers at the head's HOST:PORT (ray.init would wait on)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RuntimeError(f"--ray-address must be the Ray head's HOST:PORT, not {address!r}")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout_s)
    except (OSError, TimeoutError) as exc:
        raise RuntimeError(
            f"Could not connect to the Ray cluster at {address}: {exc or 'timed out'}"
        ) from None
    writer.close()


def _append(path: Path, data: bytes) -> None:
    try:
        with open(path, "ab") as f:
            f.write(data)
    except OSError as exc:
        log.warning("could not append a node's output to %s: %s", path, exc)
