"""The per-node agent of workers on a Ray cluster: one Ray actor pinned to each node (``ray_workers.py``
creates it with a hard node-affinity strategy) that does on its node what ``WorkerManager`` does on one
machine, through a ``WorkerManager`` of its own: it holds each runtime's zygote and the pools' templates,
forks workers (so a cold start stays a fork, no Ray task or actor per worker), confines them with the same
sandbox, and watches their memory.

What the node adds:
- artifacts: the model comes from its source (S3, or a file URL on a shared path) into the node's own
  content-addressed cache (``ArtifactCache``), once per node; past ``artifact_cache_bytes`` (the front end's
  ``--artifact-cache-mb``) the entries no agent's worker or template uses go, least recently used first. The
  cache is shared by every front end's agent on the node, so each holds a lock on every entry its workers
  and templates use (a ``Hold`` from a book ``across_processes``, one per worker and per template, closed
  when it ends), and an eviction takes only entries nobody holds;
- requirements: a model's ``code/requirements.txt`` is installed on the node from the node's own copy of
  the model (``PythonEnvs`` under ``<root>/<node id>/pyenvs``, held and evicted as the artifacts are, up
  to ``requirements_cache_bytes``), once per node, at its first worker there; the front end's own install
  (its data directory) is not a path the node has;
- images: a bring-your-own image's files, registered on the node from the front end's copy at its first
  worker there, held while workers run them, kept up to ``images_cap_bytes`` (``nodeimages.py``);
- TCP: a worker serves on a Unix socket as everywhere; the agent listens on a TCP port of the node's address
  for each worker and relays bytes both ways, so the router reaches it over the network;
- reports: ``poll`` long-polls for the router, answering with what the workers printed since the last poll
  (their stream records, verbatim: the router appends them to the same log streams), each worker's sampled
  memory, the templates' private memory, and the exits (a worker's last output comes before its exit);
- several front ends on one node: each has an agent of its own (its run and log directories are the
  agent's own, under ``<root>/<node id>/``). Each agent keeps the MemorySizeInMB of its workers in
  ``<root>/<node id>/reserved/<agent>`` (with its pid) and reports the sum of the other live agents'
  files, so each front end places against the node's memory less every front end's workers.

Nothing here imports Ray: the router's side wraps this class in an actor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeroscale.artifacts.cache import ArtifactCache, entry_source
from zeroscale.artifacts.holds import Hold, Holds
from zeroscale.artifacts.pyenv import PythonEnvs
from zeroscale.config import (
    DEFAULT_MAX_EXTRACTED_MB,
    DEFAULT_RAY_NODE_IMAGES_MB,
    DEFAULT_WORKER_LOG_MB_PER_MINUTE,
    MB,
)
from zeroscale.errors import DeployError, ZeroscaleError
from zeroscale.runtimes.usercode import PYTHONPATH, requirements_file
from zeroscale.workers.cgroups import MemoryGroups, memory_line
from zeroscale.workers.confinement import Confinement, SandboxSettings
from zeroscale.workers.manager import WorkerHandle, WorkerManager, WorkerSpec
from zeroscale.workers.memory import private_bytes
from zeroscale.workers.nodeimages import NodeImages, NodeImagesFull
from zeroscale.workers.outputcap import first_record_at
from zeroscale.workers.zygotes import TemplateRefused, Zygote, ZygoteError

log = logging.getLogger("zeroscale.workers.node")
_RELAY_CHUNK = 256 * 1024
_LOG_CHUNK = 1024 * 1024  # the most of one worker's output shipped per poll
# The node's caches (artifacts, requirements) are trimmed after each new entry, at the poll after a worker or
# template ends (what it used may be unused now), and this often (what other agents' ended).
TRIM_EVERY_S = 60.0


@dataclass(frozen=True)
class AgentConfig:
    """What every node's agent is told by the router (plain values: it crosses the network)."""

    node_id: str
    root: str  # the node's directory for zeroscale: <root>/<node id>/ (artifacts, workers, logs)
    host: str  # the node's address: the TCP ports for the workers listen on it
    startup_timeout_s: float = 180.0
    memory_poll_interval_s: float = 0.05
    s3_endpoint_url: str | None = None
    max_extracted_bytes: int = DEFAULT_MAX_EXTRACTED_MB * MB
    max_extracted_files: int = 100_000
    sandbox: bool = True  # confine workers (workers/confinement.py) as on a single machine
    outbound: bool = False
    max_processes: int = 64
    max_open_files: int = 1024
    max_disk_bytes: int = 0  # what a worker may write to its scratch directory (0: no limit)
    writable: tuple[str, ...] = ()
    log_limit: int = DEFAULT_WORKER_LOG_MB_PER_MINUTE * MB  # bytes of a worker's output a minute kept
    cgroups: bool = True  # a memory cgroup per worker where the node lets its agent make them
    artifact_cache_bytes: int | None = None  # the node's artifact cache past which unused entries go
    requirements_cache_bytes: int | None = None  # the same for its installed requirements
    images_cap_bytes: int = DEFAULT_RAY_NODE_IMAGES_MB * MB  # its unpacked images, every agent's (0: no cap)


@dataclass
class _Relay:
    server: asyncio.Server
    port: int


class NodeAgent:
    def __init__(self, config: AgentConfig) -> None:
        self._config = config
        self._root = Path(config.root) / config.node_id[:16]
        self._instance = uuid.uuid4().hex[:8]  # this agent's run directory (several front ends share a node)
        holds = Holds(across_processes=True)  # one hold keeps a worker's artifacts and requirements
        self._artifacts = ArtifactCache(
            self._root / "artifacts",
            s3_endpoint_url=config.s3_endpoint_url,
            max_extracted_bytes=config.max_extracted_bytes,
            max_extracted_files=config.max_extracted_files,
            capacity_bytes=config.artifact_cache_bytes,
            holds=holds,
            protected=(self._root,),  # the node's own directory: no file:// model reads it
        )
        self._pyenvs = PythonEnvs(
            self._root / "pyenvs", capacity_bytes=config.requirements_cache_bytes, holds=holds
        )
        # Bring-your-own images' files, registered again here from a front end's copy: one entry per content
        # digest (its tag), through the checks of any push, up to ``images_cap_bytes``.
        self._images = NodeImages(
            self._root / "images",
            cap_bytes=config.images_cap_bytes,
            max_bytes=config.max_extracted_bytes,
            max_files=config.max_extracted_files,
        )
        self._image_locks: dict[str, asyncio.Lock] = {}
        # Every worker's and template's directories are held (locked) for as long as it lives, so this agent
        # has nothing else in use to name.
        self._artifacts.in_use = self._pyenvs.in_use = tuple
        self._holds: dict[str, Hold] = {}  # worker or template id -> what it holds in the cache
        self._trim_due = True  # at the first poll (what gone agents left), after a worker or template ends
        self._trimmed_at = time.monotonic()
        self._logs_dir = self._root / "logs" / self._instance
        self._manager: WorkerManager | None = None
        self._workers: dict[str, WorkerHandle] = {}
        self._relays: dict[str, _Relay] = {}
        self._templates: dict[str, Zygote] = {}
        # A template's cost as ``park`` measured it (its private memory before the fork, and its replica's),
        # while a replica is parked beside it: the two share their pages after the fork, counted as neither's.
        self._kept: dict[str, int] = {}
        self._offsets: dict[str, int] = {}  # worker id -> bytes of its log already shipped
        self._exits: list[dict[str, Any]] = []
        self._wake: asyncio.Event | None = None
        self._ledger = self._root / "reserved"  # one file per agent on the node: "<pid> <MB>"
        self._reserved_mb = -1  # last written to the ledger

    # ---- lifecycle ----
    async def _opened(self) -> WorkerManager:
        if self._manager is None:
            cfg = self._config
            run_dir = self._root / "workers" / self._instance
            confinement = None
            if cfg.sandbox:
                confinement = Confinement(
                    SandboxSettings(
                        self._root,
                        outbound=cfg.outbound,
                        max_processes=cfg.max_processes,
                        max_open_files=cfg.max_open_files,
                        writable=tuple(Path(p) for p in cfg.writable),
                        max_disk_bytes=cfg.max_disk_bytes,
                    ),
                    run_dir,
                )
            groups = MemoryGroups.open(enabled=cfg.cgroups)
            line = memory_line(groups)
            (log.warning if line.startswith("WARNING") else log.info)("node %s: %s", cfg.node_id, line)
            manager = WorkerManager(
                run_dir,
                startup_timeout_s=cfg.startup_timeout_s,
                memory_poll_interval_s=cfg.memory_poll_interval_s,
                confinement=confinement,
                log_limit=cfg.log_limit,
                memory_groups=groups if isinstance(groups, MemoryGroups) else None,
            )
            await manager.open()
            self._wake = asyncio.Event()
            self._manager = manager
        return self._manager

    async def hello(self) -> dict[str, Any]:
        """Open the node's manager; what the router shows of the node."""
        await self._opened()
        return {"hostname": socket.gethostname(), "pid": os.getpid(), "root": str(self._root)}

    async def prewarm(self, runtimes: list[str]) -> None:
        manager = await self._opened()
        await manager.prewarm(tuple(runtimes))

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            (self._ledger / self._instance).unlink()
        for relay in self._relays.values():
            relay.server.close()
        self._relays.clear()
        try:
            for template in self._templates.values():
                with contextlib.suppress(Exception):
                    await template.close()
            self._templates.clear()
            if self._manager is not None:
                await self._manager.close()
                self._manager = None
        finally:  # once the workers that read them are gone
            for hold in self._holds.values():
                hold.close()
            self._holds.clear()

    # ---- artifacts ----
    async def _model_dir(self, source: str | None, hold: Hold, sha: str | None) -> str:
        """The model's directory in this node's cache, fetched from its source the first time; held by
        ``hold``. ``sha``: the entry the front end deployed (its content's sha256, which every cache names
        its entry by); DeployError when the source gives this node something else (it changed since: an
        object rewritten in place, a local file swapped for another), which the front end did not check."""
        model_dir = await asyncio.to_thread(self._artifacts.prepare_source, source, hold)
        found = entry_source(model_dir)
        if sha is not None and (found is None or found[0] != sha):
            raise DeployError(
                f"Model data {source} is not what the endpoint deployed: this node read sha256 "
                f"{found[0] if found else '?'}, the front end {sha}. It changed since the endpoint was "
                "deployed; update the endpoint to deploy it as it is now."
            )
        return str(model_dir)

    async def _image_workdir(self, image: dict[str, Any], hold: Hold) -> str:
        """A bring-your-own image's workdir on this node, held by ``hold`` (so no agent's trim removes it
        while the worker runs): its files registered here from the front end's tar.gz (``RayWorkers._image``)
        the first time, room made for them (``NodeImagesFull`` when there is none), checked to be the
        content the endpoint deployed."""
        digest = str(image["digest"])
        async with self._image_locks.setdefault(digest, asyncio.Lock()):
            record = await asyncio.to_thread(self._images.use, digest, hold)
            if record is None:
                archive = await image["archive"]  # from Ray's object store
                size = int(image["bytes"])
                record = await asyncio.to_thread(self._images.add, digest, archive, size, hold)
        workdir = (record.root / str(image["workdir"])).resolve()
        if workdir != record.root and record.root not in workdir.parents:
            raise DeployError(f"The image's workdir {image['workdir']!r} is outside the image.")
        return str(workdir)

    async def _spec(self, req: dict[str, Any], hold: Hold) -> WorkerSpec:
        env = dict(req["env"])
        for name, (sha, source) in dict(req.get("env_sources") or {}).items():  # the SDK's code directory
            env[name] = await self._model_dir(source, hold, sha)
        model_dir = await self._model_dir(req["model_source"], hold, req.get("model_sha"))
        if req.get("requirements"):  # the front end installed them: so does this node, from its copy
            found = requirements_file(model_dir, env)
            lib = await self._pyenvs.prepare(found, hold) if found is not None else None
            if lib is not None:
                env[PYTHONPATH] = str(lib)
        image = req.get("image")
        return WorkerSpec(
            runtime=req["runtime"],
            model_dir=model_dir,
            memory_mb=int(req["memory_mb"]),
            log_dir=self._logs_dir,
            env=env,
            command=tuple(image["command"]) if image else (),
            workdir=await self._image_workdir(image, hold) if image else "",
        )

    # ---- workers ----
    async def start(self, req: dict[str, Any]) -> dict[str, Any]:
        """Fork a worker (from a template of this node when ``template`` names a live one), wait for its
        /ping, open its TCP relay. Answers {pid, port, ready_s} or {error}."""
        manager = await self._opened()
        wid = str(req["worker_id"])
        hold = self._holds[wid] = self._artifacts.hold()  # released when it exits (``_exited``)
        try:
            spec = await self._spec(req, hold)
            tid = str(req.get("template") or "")
            template = self._templates.get(tid)
            self._kept.pop(tid, None)  # its parked replica, if any, is this worker now
            handle = await manager.start(spec, worker_id=wid, on_exit=self._exited, template=template)
        except BaseException as exc:
            self._release(wid)
            if isinstance(exc, NodeImagesFull):  # the router tries another node
                return {"error": str(exc), "no_room": True}
            if isinstance(exc, ZeroscaleError):
                return {"error": exc.message}
            if isinstance(exc, DeployError | ZygoteError | OSError):
                return {"error": str(exc)}
            raise
        if handle.conn is not None:  # the readiness check's: the front end talks to it through the relay
            handle.conn.close()  # (a server that takes one connection at a time would wait on this idle one)
            handle.conn = None
        self._workers[wid] = handle
        self._offsets.setdefault(wid, 0)
        self._write_ledger()
        try:
            relay = await self._relay(handle)
        except OSError as exc:
            manager.kill(handle, f"no TCP port for worker {wid}: {exc}")
            return {"error": f"no TCP port for the worker on this node: {exc}"}
        self._relays[wid] = relay
        if not handle.alive:
            self._close_relay(wid)
        return {"pid": handle.pid, "port": relay.port, "ready_s": handle.ready_s}

    async def _relay(self, handle: WorkerHandle) -> _Relay:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                if handle.port:  # a bring-your-own image's server, on a port of this node's loopback
                    to = await asyncio.open_connection(handle.host, handle.port, limit=_RELAY_CHUNK)
                else:
                    to = await asyncio.open_unix_connection(handle.socket_path, limit=_RELAY_CHUNK)
            except OSError:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, to[1]), _pipe(to[0], writer))

        server = await asyncio.start_server(serve, self._config.host, 0, limit=_RELAY_CHUNK)
        port = int(server.sockets[0].getsockname()[1])
        return _Relay(server, port)

    def _close_relay(self, wid: str) -> None:
        relay = self._relays.pop(wid, None)
        if relay is not None:
            relay.server.close()

    def _release(self, owner: str) -> None:
        hold = self._holds.pop(owner, None)
        if hold is not None:
            hold.close()
            self._trim_due = True

    def _exited(self, handle: WorkerHandle) -> None:
        self._close_relay(handle.worker_id)
        self._release(handle.worker_id)
        self._exits.append(
            {
                "worker_id": handle.worker_id,
                "exit_code": handle.exit_code,
                "kill_reason": handle.kill_reason,
                "kill_kind": handle.kill_kind,
            }
        )
        if self._wake is not None:
            self._wake.set()

    async def stop(self, wid: str, grace_s: float | None = None) -> None:
        handle = self._workers.get(wid)
        if handle is not None and self._manager is not None:
            await self._manager.stop(handle, grace_s=grace_s)

    def kill(self, wid: str, reason: str, kind: str = "killed") -> None:
        handle = self._workers.get(wid)
        if handle is not None and self._manager is not None:
            self._manager.kill(handle, reason, kind)

    # ---- templates ----
    async def start_template(self, req: dict[str, Any]) -> dict[str, Any]:
        manager = await self._opened()
        tid = uuid.uuid4().hex[:12]
        hold = self._holds[tid] = self._artifacts.hold()  # released when it closes
        try:
            template = await manager.start_template(await self._spec(req, hold))
        except BaseException as exc:
            self._release(tid)
            if isinstance(exc, TemplateRefused):  # its model left threads: the router tries no other template
                return {"error": str(exc), "refused": True}
            if isinstance(exc, ZeroscaleError):
                return {"error": exc.message}
            if isinstance(exc, DeployError | ZygoteError | OSError):
                return {"error": str(exc)}
            raise
        self._templates[tid] = template
        return {"template": tid, "pid": template.pid}

    async def park(self, req: dict[str, Any]) -> dict[str, Any]:
        """Fork a replica of template ``req["template"]`` ahead of need for the spec in ``req``, set up to its
        listening socket and given no request (``WorkerManager.park``): the next ``start`` from that template
        with the same spec takes it. Answers {bytes}: what keeping both costs (0: no such template)."""
        manager = await self._opened()
        tid = str(req["template"])
        template = self._templates.get(tid)
        if template is None:
            return {"bytes": 0}
        try:
            with self._artifacts.hold() as hold:  # the template's own hold keeps the replica's directories
                kept = await manager.park(await self._spec(req, hold), template)
        except (ZeroscaleError, DeployError, ZygoteError, OSError) as exc:
            return {"error": str(exc)}
        if tid in self._templates:
            self._kept[tid] = kept
        return {"bytes": kept}

    async def close_template(self, tid: str) -> None:
        self._kept.pop(tid, None)
        template = self._templates.pop(tid, None)
        if template is not None:
            await template.close()
        self._release(tid)

    # ---- reports ----
    async def poll(self, wait_s: float) -> dict[str, Any]:
        """Wait up to ``wait_s`` for an exit, then report: new output per worker, memory, exits."""
        await self._opened()
        assert self._wake is not None
        if not self._exits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait_s)
        self._wake.clear()
        if self._trim_due or time.monotonic() - self._trimmed_at >= TRIM_EVERY_S:
            self._trim_due, self._trimmed_at = False, time.monotonic()
            for root, trim in (
                (self._artifacts.root, self._artifacts.trim),
                (self._pyenvs.root, self._pyenvs.trim),
                (self._images.root, self._images.trim),
            ):
                try:
                    await asyncio.to_thread(trim)
                except Exception:  # the report goes out anyway; the next trim tries again
                    log.exception("node %s: trimming %s failed", self._config.node_id, root)
        exits, self._exits = self._exits, []
        gone = {e["worker_id"] for e in exits}
        output: dict[str, bytes] = {}
        for wid in list(self._offsets):
            handle = self._workers.get(wid)
            if handle is None:
                continue
            start, chunk = _read_records(handle.log_path, self._offsets[wid], final=wid in gone)
            if chunk:
                output[wid] = chunk
            self._offsets[wid] = start + len(chunk)
        for wid in gone:
            self._offsets.pop(wid, None)
            self._workers.pop(wid, None)
            with contextlib.suppress(OSError):
                (self._logs_dir / f"{wid}.log").unlink()
        self._write_ledger()
        return {
            "output": output,
            "rss_mb": {wid: h.rss_mb for wid, h in self._workers.items()},
            "templates": {
                tid: (self._kept.get(tid) or private_bytes(t.pid)) if t.alive and t.pid else 0
                for tid, t in self._templates.items()
            },
            "exits": exits,
            "others_mb": self._others_mb(),
            "evicted": self._artifacts.take_evictions(),  # sha256s no longer in the node's cache
            "cache_bytes": self._artifacts.load().bytes,  # every agent's entries as of its last trim
            "at": time.time(),
        }

    # ---- the node's ledger of reservations (several front ends' agents) ----
    def _write_ledger(self) -> None:
        mb = sum(h.spec.memory_mb for h in self._workers.values())
        if mb == self._reserved_mb:
            return
        try:
            self._ledger.mkdir(parents=True, exist_ok=True)
            tmp = self._ledger / f".{self._instance}"
            tmp.write_text(f"{os.getpid()} {mb}\n")
            os.replace(tmp, self._ledger / self._instance)
            self._reserved_mb = mb
        except OSError as exc:
            log.warning("could not write the node's ledger %s: %s", self._ledger, exc)

    def _others_mb(self) -> int:
        """MemorySizeInMB of the other live agents' workers on this node (a dead agent's file is removed)."""
        total = 0
        with contextlib.suppress(OSError):
            for entry in self._ledger.iterdir():
                if entry.name == self._instance or entry.name.startswith("."):
                    continue
                try:
                    pid, mb = (int(x) for x in entry.read_text().split())
                except (OSError, ValueError):
                    continue
                if not _alive(pid):
                    with contextlib.suppress(OSError):
                        entry.unlink()
                    continue
                total += mb
        return total


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_records(path: Path, offset: int, *, final: bool) -> tuple[int, bytes]:
    """What a worker's stream file gained since ``offset``: whole records only, unless it exited; and where
    they start (past ``offset`` when the stream's head was punched out beyond it, ``StreamBound``)."""
    try:
        with open(path, "rb") as f:
            offset = first_record_at(f, offset)
            f.seek(offset)
            data = f.read(_LOG_CHUNK)
    except OSError:
        return offset, b""
    if final or not data:
        return offset, data
    end = data.rfind(b"\n")
    return offset, (data[: end + 1] if end >= 0 else b"")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()
