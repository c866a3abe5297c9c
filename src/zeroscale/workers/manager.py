"""Start, watch and stop worker processes; nothing outside ``workers/`` starts or signals one (the only
other process zeroscale starts is ``pip install``, at deploy time, in ``artifacts/pyenv.py``).

A worker is forked by its runtime's zygote and becomes ready when the zygote reports its Unix socket listens
(it binds only once its model is loaded, and answers ``GET /ping`` from then on); it is watched for memory:
one whose resident set passes its MemorySizeInMB is killed, and ``kill_reason`` says so. Where the host has
a memory cgroup controller, each worker and each template is also in a group of its own that the kernel
holds to its MemorySizeInMB (``cgroups.py``): what no resident set shows counts too, stopped at once.
A bring-your-own image's worker (a spec with a ``command``) is a plain process instead (``process.py``),
reached over TCP, measured with its descendants, and otherwise treated the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
import signal
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from zeroscale.errors import DeployError
from zeroscale.workers import extramem, sockdir
from zeroscale.workers.capture import encode
from zeroscale.workers.capture import open_stream as open_log
from zeroscale.workers.cgroups import MemoryGroups
from zeroscale.workers.client import (
    Body,
    NotDelivered,
    WorkerConnection,
    WorkerConnectionError,
    WorkerResponse,
)
from zeroscale.workers.confinement import Confinement, processes_of
from zeroscale.workers.diskuse import DiskTarget, DiskWatch
from zeroscale.workers.forkserver import EXIT_UNFORKABLE_TEMPLATE, THREAD_ENV
from zeroscale.workers.memory import ResidentSets, private_bytes, rss_mb, tree_pids
from zeroscale.workers.process import CONTAINER_MODEL_DIR, ProcessLauncher
from zeroscale.workers.sockdir import socket_dir, socket_name
from zeroscale.workers.stream import WorkerStream, open_stream
from zeroscale.workers.zygotes import TemplateRefused, Zygote, ZygoteError, tail

log = logging.getLogger("zeroscale.workers")
RESTOCK_AFTER_S = 0.05  # scratch directories are made ahead once cold starts pause this long
TEMPLATE_AFTER_S = 0.1  # a template starts loading once worker starts pause this long
TEMPLATE_MIN_OPEN_FILES = 4096
PARKED_LOG = ".parked-"  # a parked replica's log file: hidden (a dot file is no log stream) until it is taken
_RELEASE_TRIES = 20  # passes, 50 ms apart, for a dead worker's killed processes to go
_EXTRA_EVERY_TICKS = 20  # one pass over /proc a second (at 50 ms) for the workers' other processes
GROUP_AFTER_S = 0.05  # memory cgroup calls wait this long (a cold start's first request goes first)
_GroupCall = tuple[Callable[..., object], tuple[object, ...]]  # a MemoryGroups method and its arguments


@dataclass(frozen=True)
class WorkerSpec:
    runtime: str
    model_dir: str
    memory_mb: int
    log_dir: Path  # the worker writes stdout and stderr to <log_dir>/<worker_id>.log
    env: Mapping[str, str] = field(default_factory=dict)
    # A bring-your-own image: run ``<command> serve`` in ``workdir`` as a plain process, not a zygote's fork.
    command: tuple[str, ...] = ()
    workdir: str = ""
    # Measure its private memory once a second (``WorkerHandle.private_mb``): a multi-model variant's worker,
    # whose model's share of the variant's memory is what it really holds beyond the zygote's pages.
    measure_private: bool = False


@dataclass(eq=False)
class WorkerHandle:
    worker_id: str
    spec: WorkerSpec
    socket_path: str
    log_path: Path
    started_at: float
    pid: int = 0
    ready_s: float = 0.0
    exit_code: int | None = None
    kill_reason: str | None = None
    kill_kind: str | None = None  # memory_killed | disk_killed | timed_out: the manager killed it on purpose
    rss_mb: float = 0.0  # the resident set the memory watchdog sampled last (0 before the first sample)
    private_mb: float = 0.0  # with ``spec.measure_private``: its private memory, measured once a second
    conn: WorkerConnection | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when its zygote reports that the socket listens (or when it exited): ready then, without polling.
    up: asyncio.Event = field(default_factory=asyncio.Event)
    on_exit: Callable[[WorkerHandle], None] | None = None
    port: int = 0  # a process worker's TCP port on 127.0.0.1 (zygote workers use socket_path)
    scratch: str = ""  # its sandbox's writable directory (removed when it exits)
    uid: int = 0  # its own uid (what is left with it is killed when it exits)
    model_dir_seen: str = ""  # an image's model directory as its server sees it ($SM_MODEL_DIR)
    host: str = "127.0.0.1"  # where ``port`` listens (a cluster node's address for a worker on Ray)
    node: str = ""  # the cluster node it runs on ("": this machine)
    parked_by: int = 0  # while it is parked (``WorkerManager.park``): its template's pid
    cgroup: Path | None = None  # its memory cgroup (``cgroups.py``), where the host has them

    @property
    def alive(self) -> bool:
        return self.exit_code is None

    async def connect(self) -> WorkerConnection:
        """A new keep-alive connection to the worker's server."""
        if self.port:
            return await WorkerConnection.open_tcp(self.host, self.port)
        return await WorkerConnection.open_unix(self.socket_path)

    async def connection(self) -> WorkerConnection:
        """Its keep-alive connection, opened again if it was closed. NotDelivered where nothing listens
        (refused, or its socket is gone): the worker's server stopped, or it exited."""
        conn = self.conn
        if conn is None or conn.closed:
            try:
                conn = self.conn = await self.connect()
            except (ConnectionRefusedError, FileNotFoundError) as exc:
                raise NotDelivered(str(exc) or type(exc).__name__) from exc
        return conn

    async def request(
        self,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: Body,
        timeout_s: float | None = None,
        max_answer: int | None = None,
    ) -> WorkerResponse:
        """One request over its keep-alive connection; one closed is opened again, within ``timeout_s``."""
        conn = self.conn
        if conn is None or conn.closed:
            if timeout_s is None:
                conn = await self.connection()
            else:
                loop = asyncio.get_running_loop()
                began = loop.time()
                conn = await asyncio.wait_for(self.connection(), timeout_s)
                timeout_s = max(0.0, timeout_s - (loop.time() - began))
        return await conn.request(method, path, headers, body, timeout_s, max_answer)

    def log_tail(self, lines: int = 20) -> str:
        return tail(self.log_path, lines)

    def start_failure(self) -> str:
        """Why it never became ready: how it ended and, on the same first line, the last line it printed
        (a traceback's error, which the lines after show in context: the FailureReason keeps the first
        line whole, and only the end of the rest)."""
        output = self.log_tail()
        last = next((line.strip() for line in reversed(output.splitlines()) if line.strip()), "")
        said = f"; its last line: {last[:300]}" if last else ""
        return f"Worker failed to start: {self.death_reason()}{said}.\n{output}"

    def death_reason(self) -> str:
        """Why the process is gone (or going), for error messages."""
        if self.kill_reason:
            return self.kill_reason
        if self.exit_code is None:
            return "the worker closed its connection"
        if self.exit_code < 0:
            return f"the worker process was killed by signal {-self.exit_code}{_signal_name(-self.exit_code)}"
        return f"the worker process exited with code {self.exit_code}"


def _signal_name(number: int) -> str:
    """`` (SIGKILL)`` for 9: what the number means, for a reader who does not know it."""
    try:
        return f" ({signal.Signals(number).name})"
    except ValueError:
        return ""


class WorkerManager:
    def __init__(
        self,
        run_dir: Path,
        *,
        startup_timeout_s: float = 180.0,
        memory_poll_interval_s: float = 0.05,
        stop_grace_s: float = 30.0,
        sandbox: bool | None = None,  # bring-your-own images: map /opt/ml/model with bwrap (None: if usable)
        confinement: Confinement | None = None,  # confine every worker (None: run them unconfined)
        log_limit: int = 0,  # bytes of a worker's output a minute kept in its log stream (0: all of it)
        memory_groups: MemoryGroups | None = None,  # a memory cgroup per worker and template (None: none)
    ) -> None:
        self._run_dir = run_dir
        self._sock_dir = socket_dir(run_dir)  # the workers' and templates' sockets (``open`` makes it)
        self._startup_timeout_s = startup_timeout_s
        self._poll_s = memory_poll_interval_s
        self._stop_grace_s = stop_grace_s
        self._zygotes: dict[str, Zygote] = {}
        self._zygote_locks: dict[str, asyncio.Lock] = {}
        self._by_pid: dict[int, WorkerHandle] = {}
        self._rss = ResidentSets()  # the watchdog's reads of each worker's resident set
        self._early_exits: dict[int, int] = {}
        self._early_up: set[int] = set()  # workers up before their fork() call returned to start()
        self._template_pids: set[int] = set()
        # templates that exited EXIT_UNFORKABLE_TEMPLATE, until heard
        self._refused_templates: set[int] = set()
        self._ids = itertools.count(1)
        self._watchdog: asyncio.Task[None] | None = None
        # The watchdog's once-a-second pass (``_measure_extra``): its own thread, so that it never queues
        # behind the database calls of the default executor, and its own task, so that the 50-ms samples
        # never wait for it.
        self._pass: asyncio.Task[None] | None = None
        self._pass_thread = ThreadPoolExecutor(1, thread_name_prefix="zeroscale-memory-pass")
        self._log_limit = log_limit
        self._processes = ProcessLauncher(self._exited, sandbox=sandbox, log_limit=log_limit)
        self._confinement = confinement
        self._template_scratch: dict[int, str] = {}  # template pid -> its scratch directory
        self._template_logs: dict[int, Path] = {}  # template pid -> its log stream
        self._template_blocks: dict[int, tuple[int, int]] = {}  # template pid -> its block of uids
        self._parked: dict[int, WorkerHandle] = {}  # template pid -> its parked replica (``park``)
        self._parking: dict[int, asyncio.Future[None]] = {}  # template pid -> its replica on its way
        self._extra_mb: dict[int, float] = {}  # worker uid -> private MB of its other processes
        self._uid_pids: dict[int, list[int]] = {}  # confined worker uid -> its pids, at the last pass
        self._trees: dict[int, list[int]] = {}  # image worker pid -> its process tree, at the last pass
        self._shmem_mb: dict[int, float] = {}  # worker pid -> MB of shared memory its resident sets miss
        self._pte_mb: dict[int, float] = {}  # worker pid -> MB of its processes' page tables (no cgroups)
        self._releasing: list[tuple[str, int, int]] = []  # (scratch, uid, tries left) of exited workers
        self._release_timer: asyncio.Handle | None = None
        self._restock_timer: asyncio.TimerHandle | None = None  # the scratch directories made ahead
        self._groups = memory_groups
        # Every cgroup write, in order, off the loop: joining a group waits for an RCU grace period.
        self._group_thread = (
            ThreadPoolExecutor(1, thread_name_prefix="zeroscale-cgroups") if memory_groups else None
        )
        self._template_groups: dict[int, Path] = {}  # template pid -> its memory cgroup
        self._group_calls: list[_GroupCall] = []  # queued for the thread (``_in_group_thread``)
        self._group_timer: asyncio.TimerHandle | None = None
        self._adopted: dict[int, frozenset[int]] = {}  # worker pid -> its processes last moved into its group
        self._last_start = 0.0  # when a worker's start last began (``start_template`` waits for a pause)
        self._ticks = 0
        # Scratch directories past --worker-disk-mb: looked at once a second, off the loop.
        self._disk: DiskWatch[int] = DiskWatch(
            confinement.settings.max_disk_bytes if confinement is not None else 0,
            self._over_disk,
        )

    # ---- lifecycle ----
    async def open(self) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._sock_dir = sockdir.prepare(self._run_dir)
        for stale in self._sock_dir.glob("*.sock"):  # left by a server that was killed
            stale.unlink(missing_ok=True)
        self._restock_now()
        self._watchdog = asyncio.create_task(self._watch_memory())

    async def prewarm(self, runtimes: tuple[str, ...]) -> None:
        """Start these runtimes' zygotes now, so the first cold start does not pay for framework imports."""
        for runtime in runtimes:
            with contextlib.suppress(ZygoteError):
                await self._zygote(runtime)

    async def close(self) -> None:
        for task in (self._watchdog, self._pass):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._pass_thread.shutdown(wait=True)
        await self._disk.close()
        await asyncio.gather(*(self.stop(h, grace_s=2.0) for h in list(self._by_pid.values())))
        self._rss.close()
        await self._processes.close()
        for zygote in self._zygotes.values():
            await zygote.close()
        self._zygotes.clear()
        if self._release_timer is not None:
            self._release_timer.cancel()
            self._release_timer = None
        if self._restock_timer is not None:
            self._restock_timer.cancel()
            self._restock_timer = None
        if self._confinement is not None:
            self._release_now()
            self._confinement.close()
        if self._group_thread is not None and self._groups is not None:
            if self._group_timer is not None:
                self._group_timer.cancel()
            self._flush_group_calls()
            await asyncio.get_running_loop().run_in_executor(self._group_thread, self._groups.close)
            self._group_thread.shutdown(wait=True)
            self._group_thread = None
        if self._sock_dir != self._run_dir:  # a short one of its own in the temporary directory
            # Its processes are gone; a socket one of them had no time to remove (a template still loading
            # when the server stopped) would keep the directory in the temporary directory for ever.
            for left in (*self._sock_dir.glob("*.sock"), *self._sock_dir.glob("*.ctl")):
                with contextlib.suppress(OSError):
                    left.unlink()
            with contextlib.suppress(OSError):
                self._sock_dir.rmdir()

    @property
    def live(self) -> list[WorkerHandle]:
        return list(self._by_pid.values())

    # ---- start ----
    def new_worker_id(self) -> str:
        """A worker id unique on this server (its log stream's name): a sequence number and a random tag."""
        return f"{next(self._ids):04d}-{uuid.uuid4().hex[:8]}"

    async def start(
        self,
        spec: WorkerSpec,
        *,
        worker_id: str | None = None,
        on_exit: Callable[[WorkerHandle], None] | None = None,
        template: Zygote | None = None,
    ) -> WorkerHandle:
        """Fork a worker and wait until it is ready (a forked worker: its socket listens, its model loaded; an
        image's server: it answers /ping). Raises DeployError with the worker's output tail.

        ``on_exit`` is called once the process is gone, whatever the cause, if the start succeeded.
        With a live ``template`` (see ``start_template``) the worker is a replica of its loaded model: the
        one ``park`` forked ahead of need, when it was parked for the same spec."""
        if template is not None:
            parking = self._parking.get(template.pid)
            if parking is not None:  # a replica of it is being parked: nearer than a fork of our own
                await asyncio.shield(parking)
            parked = self._unpark(template)
            if parked is not None and parked.spec == spec and template.alive and parked.log_path.exists():
                return self._adopt(parked, worker_id or self.new_worker_id(), on_exit)
            if parked is not None:  # for another spec (its endpoint's logs, its memory size), or its log
                self._discard_parked(parked)  # was removed while it waited
        wid = worker_id or self.new_worker_id()
        return await self._launch(spec, wid, on_exit, template, spec.log_dir / f"{wid}.log")

    async def _launch(
        self,
        spec: WorkerSpec,
        wid: str,
        on_exit: Callable[[WorkerHandle], None] | None,
        template: Zygote | None,
        log_path: Path,
        rehearse: bool = False,
    ) -> WorkerHandle:
        self._last_start = time.monotonic()
        socket_path = str(self._sock_dir / socket_name(wid, ".sock"))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(socket_path)
        handle = WorkerHandle(wid, spec, socket_path, log_path, started_at=time.monotonic())
        conf = self._confinement
        try:
            if spec.command:
                policy = None
                if conf is not None:
                    handle.scratch, handle.uid = conf.worker_scratch(wid), conf.uid()
                    policy = conf.image_policy(
                        spec.model_dir, spec.workdir, spec.env, handle.scratch, handle.uid
                    )
                started = await self._processes.start(
                    spec.command,
                    workdir=spec.workdir,
                    model_dir=spec.model_dir,
                    env={**spec.env, "TMPDIR": handle.scratch} if handle.scratch else spec.env,
                    log_path=handle.log_path,
                    policy=policy,
                )
                handle.pid, handle.port = started.pid, started.port
                handle.model_dir_seen = CONTAINER_MODEL_DIR if started.sandboxed else spec.model_dir
            else:
                live_template = template is not None and template.alive
                zygote = (
                    template if template is not None and live_template else await self._zygote(spec.runtime)
                )
                env = {**THREAD_ENV, "PATH": os.environ.get("PATH", ""), **spec.env}
                request: dict[str, object] = {
                    "model_dir": spec.model_dir,
                    "socket_path": socket_path,
                    "log_path": str(handle.log_path),
                    "env": env,
                }
                if rehearse and live_template:  # parked: its model answers a sample before it is up
                    request["rehearse"] = True
                replica_of = self._template_scratch.get(zygote.pid) if live_template else None
                if conf is not None:
                    # A template's replica is already confined: it adds a layer for its own scratch directory
                    # (inside the template's) and takes its own uid.
                    handle.scratch = (
                        conf.scratch(wid, parent=replica_of) if replica_of else conf.worker_scratch(wid)
                    )
                    handle.uid = conf.uid(self._template_blocks.get(zygote.pid) if live_template else None)
                    # A replica also reads its template's scratch directory: what the model's load wrote
                    # there (a file its model_fn extracted, say) is the replicas' as it was the template's.
                    policy = conf.policy(
                        model_dir=spec.model_dir,
                        env=env,
                        scratch=handle.scratch,
                        uid=handle.uid,
                        extra_read=(replica_of,) if replica_of else (),
                    )
                    if replica_of is not None:
                        policy = dataclasses.replace(policy, layer_only=True)
                    request["sandbox"] = policy.to_dict()
                    env["TMPDIR"] = handle.scratch
                handle.pid = await self._fork(zygote, request, handle.log_path)
            handle.cgroup = self._group(f"w-{wid}", spec.memory_mb, handle.pid)
            self._restock()
        except ZygoteError as exc:
            self._release_sandbox(handle.scratch, handle.uid)
            raise DeployError(str(exc)) from exc
        except BaseException:
            self._release_sandbox(handle.scratch, handle.uid)
            raise
        self._by_pid[handle.pid] = handle
        if handle.pid in self._early_up:
            self._early_up.discard(handle.pid)
            handle.up.set()
        if handle.pid in self._early_exits:
            self._exited(handle.pid, self._early_exits.pop(handle.pid))
        try:
            handle.conn = await asyncio.wait_for(self._until_ready(handle), self._startup_timeout_s)
        except TimeoutError:
            await self.stop(handle, grace_s=1.0)
            waited = f"{self._startup_timeout_s:g}"
            output = handle.log_tail()
            what = "answer /ping" if handle.port else "load its model and listen"
            raise DeployError(f"Worker did not {what} within {waited} seconds.\n{output}") from None
        except DeployError:
            await self.stop(handle, grace_s=1.0)
            raise
        except BaseException:  # cancelled (the start was given up) or a failure of its connection: no worker
            self.kill(handle, "its start was given up before it was ready")  # is left that nobody owns
            raise
        handle.ready_s = time.monotonic() - handle.started_at
        handle.on_exit = on_exit
        if not handle.alive and on_exit is not None:
            on_exit(handle)
        return handle

    async def park(self, spec: WorkerSpec, template: Zygote) -> int:
        """Fork a replica of ``template`` ahead of need and hold it, ready (its socket listens) but
        given no request: the next ``start`` from this template with the same spec takes it, and that cold
        start skips the fork and the child's set-up. At most one per template; it ends with the template
        (its parent-death signal). Returns what keeping both costs, in bytes: the template's private memory
        measured before the fork (after it, the pages the two share count as neither's), plus the pages the
        replica's set-up made its own."""
        kept = self.template_bytes(template)
        if not template.alive or not template.pid:
            return kept
        if template.pid in self._parked:
            return kept + private_bytes(self._parked[template.pid].pid)
        if template.pid in self._parking:
            await asyncio.shield(self._parking[template.pid])
            return kept + (private_bytes(p.pid) if (p := self._parked.get(template.pid)) else 0)
        wid = self.new_worker_id()
        on_its_way = self._parking[template.pid] = asyncio.get_running_loop().create_future()
        try:  # its log is a hidden file (no stream) until a start takes it and names it for its worker
            handle = await self._launch(
                spec, wid, None, template, spec.log_dir / f"{PARKED_LOG}{wid}.log", rehearse=True
            )
            if not template.alive or template.pid in self._parked or not handle.alive:
                self._discard_parked(handle)  # not needed after all
                return kept
            self._parked[template.pid] = handle
            handle.parked_by = template.pid
            return kept + private_bytes(handle.pid)
        except DeployError:
            return kept  # the next cold start forks the template as it would have
        finally:
            del self._parking[template.pid]
            on_its_way.set_result(None)  # a start waiting for it takes it now (``start``)

    def _discard_parked(self, handle: WorkerHandle) -> None:
        """End a replica never handed a request (SIGKILL loses nothing), and its log (its ready line)."""
        self._signal(handle, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.unlink(handle.log_path)

    def _unpark(self, template: Zygote) -> WorkerHandle | None:
        handle = self._parked.pop(template.pid, None) if template.pid else None
        if handle is not None:
            handle.parked_by = 0
        return handle

    def _adopt(
        self, handle: WorkerHandle, worker_id: str, on_exit: Callable[[WorkerHandle], None] | None
    ) -> WorkerHandle:
        """A parked replica becomes the worker ``worker_id``: its hidden log file becomes that worker's stream
        (a rename in the same directory: the template's capture keeps writing to it), its ready time is the
        hand-over's."""
        adopted = time.monotonic()
        log_path = handle.spec.log_dir / f"{worker_id}.log"
        with contextlib.suppress(OSError):
            os.replace(handle.log_path, log_path)
            handle.log_path = log_path
        handle.worker_id = worker_id
        handle.ready_s = time.monotonic() - adopted
        handle.started_at = adopted
        handle.on_exit = on_exit
        if not handle.alive and on_exit is not None:
            on_exit(handle)
        return handle

    def _restock(self) -> None:
        """Make the scratch directories the next cold starts take (``Confinement.stock_scratch``) once
        starts pause for ``RESTOCK_AFTER_S``: not while this one's worker sets up (on a machine of two
        cores the making took the core the spare needed). On the loop: a mkdir or two, no thread."""
        conf = self._confinement
        if conf is None or not conf.stock_low:
            return
        if self._restock_timer is not None:
            self._restock_timer.cancel()
        self._restock_timer = asyncio.get_running_loop().call_later(RESTOCK_AFTER_S, self._restock_now)

    def _restock_now(self) -> None:
        self._restock_timer = None
        if self._confinement is not None:
            try:
                self._confinement.stock_scratch()
            except OSError as exc:
                log.warning("cannot make scratch directories ahead (%s): cold starts make their own", exc)

    @staticmethod
    async def _fork(zygote: Zygote, request: dict[str, object], log_path: Path, op: str = "fork") -> int:
        """Ask ``zygote`` for a child whose output goes to ``log_path``, opened here and passed along."""
        log_fd = open_log(str(log_path))
        try:
            return await zygote.fork(request, log_fd, op=op)
        finally:
            os.close(log_fd)

    async def _until_ready(self, handle: WorkerHandle) -> WorkerConnection:
        # A forked worker's zygote says when its socket listens (``_up``): connect then, and that is all: it
        # binds only once its model is loaded, and its server answers /ping with 200 from then on, so a
        # /ping would only cost the cold start a round trip. A bring-your-own process cannot say: poll its
        # port and /ping every millisecond or two for the first second (a cold start takes tens of
        # milliseconds; a miss is one failed connect()).
        if not handle.port:
            await handle.up.wait()
            if handle.alive:
                with contextlib.suppress(FileNotFoundError, ConnectionRefusedError, ConnectionResetError):
                    return await handle.connect()
        delay = 0.0005
        while True:
            if not handle.alive:
                raise DeployError(handle.start_failure())
            try:
                conn = await handle.connect()
            except (FileNotFoundError, ConnectionRefusedError, ConnectionResetError):
                await asyncio.sleep(delay)
                early = time.monotonic() - handle.started_at < 1.0
                delay = min(delay * 2, 0.002 if early else 0.02)
                continue
            try:
                resp = await conn.request(b"GET", b"/ping")
            except WorkerConnectionError:  # it accepted, then closed: back off as for any other miss
                conn.close()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            if resp.status == 200:
                return conn
            conn.close()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.05)

    async def _zygote(self, runtime: str) -> Zygote:
        lock = self._zygote_locks.setdefault(runtime, asyncio.Lock())
        async with lock:
            zygote = self._zygotes.get(runtime)
            if zygote is None or not zygote.alive:
                zygote = Zygote(
                    runtime,
                    self._run_dir / f"zygote-{runtime}.log",
                    self._exited,
                    self._up,
                    log_limit=self._log_limit,
                )
                await zygote.start(self._startup_timeout_s)
                self._zygotes[runtime] = zygote
            return zygote

    # ---- exit and stop ----
    async def start_template(self, spec: WorkerSpec) -> Zygote:
        """A template for ``spec``'s model: a child of the runtime's zygote that loaded the model and forks
        replicas of it (``start(..., template=...)``); closing it ends it and every replica it forked.
        Raises ZygoteError when the model does not load, TemplateRefused when loading it left other threads
        running (forking it is not safe). It begins once worker starts pause for ``TEMPLATE_AFTER_S``: a
        model's load (its fork from the zygote, its imports, its model_fn) takes the cores that cold starts
        of other pools in flight, one after another, would have."""
        while (pause := self._last_start + TEMPLATE_AFTER_S - time.monotonic()) > 0:
            await asyncio.sleep(pause)
        zygote = await self._zygote(spec.runtime)
        tid = uuid.uuid4().hex[:8]
        ctl_path = str(self._sock_dir / f"template-{tid}.ctl")
        spec.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = spec.log_dir / f"template-{tid}.log"
        env = {**THREAD_ENV, "PATH": os.environ.get("PATH", ""), **spec.env}
        request: dict[str, object] = {
            "model_dir": spec.model_dir,
            "ctl_path": ctl_path,
            "log_path": str(log_path),
            "env": env,
        }
        scratch = ""
        block: tuple[int, int] | None = None
        conf = self._confinement
        if conf is not None:
            # A root server's template takes the first uid of a block of its own and keeps only the right
            # to give its replicas the others (a seccomp filter holds it to the block): user code in it (a
            # pickle is code) can do no more than a worker.
            block = conf.template_block()
            if block is None and os.geteuid() == 0:
                raise ZygoteError("no template: this host cannot hold one to its uids (no seccomp filters)")
            scratch = conf.scratch(f"template-{tid}")
            env["TMPDIR"] = scratch
            policy = conf.policy(
                model_dir=spec.model_dir,
                env=env,
                scratch=scratch,
                uid=block[0] if block else 0,
                uid_block=block,
            )
            # Its fork loop holds a pipe and a log file per replica it runs.
            policy = dataclasses.replace(policy, nofile=max(policy.nofile, TEMPLATE_MIN_OPEN_FILES))
            request["sandbox"] = policy.to_dict()
        group = await self._template_group(f"t-{tid}", spec.memory_mb, request)
        try:
            pid = await self._fork(zygote, request, log_path, op="template")
        except BaseException:
            self._end_template(scratch, block)
            self._remove_group(group)
            raise
        early_exit = self._early_exits.pop(pid, None)  # its exit may already have been reported
        if early_exit is None:
            self._template_pids.add(pid)
            if group is not None:
                self._template_groups[pid] = group
            self._template_scratch[pid] = scratch
            self._template_logs[pid] = log_path
            if block is not None:
                self._template_blocks[pid] = block
        else:
            self._end_template(scratch, block)
            self._remove_group(group)
            if early_exit == EXIT_UNFORKABLE_TEMPLATE:
                self._refused_templates.add(pid)
        template = Zygote(spec.runtime, log_path, self._exited, self._up)
        template.pid = pid
        try:
            await template.attach(
                ctl_path, self._startup_timeout_s, gone=lambda: pid not in self._template_pids
            )
        except ZygoteError as exc:
            with contextlib.suppress(ProcessLookupError):
                if pid in self._template_pids:
                    os.kill(pid, signal.SIGKILL)
            if pid in self._refused_templates:
                self._refused_templates.discard(pid)
                raise TemplateRefused(str(exc)) from exc
            raise
        if block is not None and (left := await asyncio.to_thread(_left_running, block, pid)):
            # Started by its model's load and not its child (forked twice, or under another uid of its
            # block): not the fork loop's to see, and no replica's. The template ends, and they with it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            why = (
                f"no template of this model: loading it left {left} other process"
                f"{'es' if left > 1 else ''} running; its workers load the model themselves"
            )
            _say(log_path, f"zeroscale: {why}")  # in its log stream, as the fork loop's own refusals are
            raise TemplateRefused(why)
        return template

    async def _template_group(self, name: str, limit_mb: int, request: dict[str, object]) -> Path | None:
        """A template's memory cgroup (and cpu twin), made before its fork for it to join first thing
        (``request["cgroups"]``); None without cgroups (or when they cannot be made: said in the log)."""
        if self._groups is None or self._group_thread is None:
            return None
        made = self._group_thread.submit(self._groups.prepare, name, limit_mb)
        try:
            groups = await asyncio.wrap_future(made)
        except OSError as exc:
            log.warning("memory cgroup for template %s: %s (it runs without one)", name, exc)
            return None
        request["cgroups"] = [str(g) for g in groups]
        return groups[0]

    def template_bytes(self, template: Zygote) -> int:
        """A template's private memory in bytes: what keeping it costs beyond the pages it shares with its
        zygote (0 when it is gone)."""
        return private_bytes(template.pid) if template.pid else 0

    def _up(self, pid: int) -> None:
        handle = self._by_pid.get(pid)
        if handle is None:
            self._early_up.add(pid)
        else:
            handle.up.set()

    def _exited(self, pid: int, status: int) -> None:
        if pid in self._template_pids:  # a template ended (closed, its model failed to load, or it refused)
            self._template_pids.discard(pid)
            if status == EXIT_UNFORKABLE_TEMPLATE:
                self._refused_templates.add(pid)
            self._template_logs.pop(pid, None)
            self._end_template(self._template_scratch.pop(pid, ""), self._template_blocks.pop(pid, None))
            self._remove_group(self._template_groups.pop(pid, None))
            return
        self._early_up.discard(pid)
        self._rss.forget(pid)
        self._trees.pop(pid, None)
        self._shmem_mb.pop(pid, None)
        self._pte_mb.pop(pid, None)
        handle = self._by_pid.pop(pid, None)
        if handle is None:
            self._early_exits[pid] = status
            return
        handle.exit_code = status
        self._adopted.pop(pid, None)
        if handle.cgroup is not None:
            self._group_ended(handle, status)
        handle.up.set()  # stop waiting for it: _until_ready sees it gone
        if handle.parked_by:  # it never served: its log holds its ready line and no more
            self._parked.pop(handle.parked_by, None)
            with contextlib.suppress(OSError):
                os.unlink(handle.log_path)
        self._release_sandbox(handle.scratch, handle.uid)
        if handle.conn is not None:
            handle.conn.close()
        handle.exited.set()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(handle.socket_path)
        if handle.on_exit is not None:
            try:
                handle.on_exit(handle)
            except Exception:  # a bug in the owner must not take down the reader that reports exits
                log.exception("exit handler of worker %s failed", handle.worker_id)

    # ---- memory cgroups ----
    def _group(self, name: str, limit_mb: int, pid: int) -> Path | None:
        """Put ``pid`` in a memory cgroup ``name`` of its own, limited to ``limit_mb`` (the group thread
        makes it and moves the process a grace period later; the caller goes on at once)."""
        if self._groups is None:
            return None
        self._in_group_thread(self._groups.start, name, limit_mb, pid)
        return self._groups.root / name

    def _in_group_thread(self, call: Callable[..., object], *args: object) -> None:
        """Queue a cgroup call for the group thread; the queue goes ``GROUP_AFTER_S`` after its first call:
        making and joining a group cost the host ~0.6 ms of CPU, which a cold start's first request, on a
        machine of two cores, would otherwise share (measured: +1.3 ms on a 7 ms cold start)."""
        if self._group_thread is None:
            return
        self._group_calls.append((call, args))
        if self._group_timer is None:
            self._group_timer = asyncio.get_running_loop().call_later(GROUP_AFTER_S, self._flush_group_calls)

    def _flush_group_calls(self) -> None:
        self._group_timer = None
        calls, self._group_calls = self._group_calls, []
        if self._group_thread is not None:
            for call, args in calls:
                self._group_thread.submit(call, *args).add_done_callback(_group_failure)

    def _group_ended(self, handle: WorkerHandle, status: int) -> None:
        """A worker in a memory cgroup exited: if the kernel killed it for the group's limit, its error says
        so (as the watchdog's kill would); its group goes."""
        group, groups = handle.cgroup, self._groups
        assert group is not None and groups is not None
        if status == -signal.SIGKILL and handle.kill_reason is None and groups.oom_kills(group):
            handle.kill_reason, handle.kill_kind = _oom_reason(handle), "memory_killed"
        self._remove_group(group)

    def _remove_group(self, group: Path | None) -> None:
        if group is not None and self._groups is not None:
            self._in_group_thread(self._groups.remove, group)

    def _adopt_strays(self, handle: WorkerHandle, pids: list[int]) -> None:
        """Processes a worker forked before it joined its group are moved into it (once each)."""
        if handle.cgroup is None or self._groups is None or len(pids) < 2:
            return
        seen = frozenset(pids)
        if self._adopted.get(handle.pid) == seen:
            return
        self._adopted[handle.pid] = seen
        self._in_group_thread(self._groups.adopt, handle.cgroup, pids)

    def _end_template(self, scratch: str, block: tuple[int, int] | None) -> None:
        """A template is gone: what is left with its uid dies, and with any uid of its block that no replica
        holds (a process its model started may have taken one: the template may change uids within its
        block); its block is free again, each of those uids once nothing has it (its replicas' uids are
        released as each of them exits)."""
        self._release_sandbox(scratch, block[0] if block else 0)
        if block is not None and self._confinement is not None:
            for uid in self._confinement.retire_block(block):
                self._release_sandbox("", uid)

    def _release_sandbox(self, scratch: str, uid: int) -> None:
        """Kill what a worker left behind (every process with its uid), then free the uid and remove its
        scratch directory. Batched: workers that exit together (a scale-in) cost one pass over /proc."""
        conf = self._confinement
        if conf is None:
            return
        self._extra_mb.pop(uid, None)
        if not uid:
            conf.remove_scratch(scratch)
            return
        self._releasing.append((scratch, uid, _RELEASE_TRIES))
        if self._release_timer is None:
            self._release_timer = asyncio.get_running_loop().call_soon(self._release_now)

    def _release_now(self) -> None:
        self._release_timer = None
        conf = self._confinement
        batch, self._releasing = self._releasing, []
        if conf is None or not batch:
            return
        alive = conf.release({uid for _, uid, _ in batch})
        for scratch, uid, tries in batch:
            if uid in alive and tries > 0:  # killed processes take a moment to go
                self._releasing.append((scratch, uid, tries - 1))
            else:
                conf.remove_scratch(scratch)
        if self._releasing:
            self._release_timer = asyncio.get_running_loop().call_later(0.05, self._release_now)

    async def stop(self, handle: WorkerHandle, *, grace_s: float | None = None) -> None:
        """SIGTERM, then SIGKILL after the grace period (SageMaker's 30 s by default)."""
        if handle.conn is not None:
            handle.conn.close()
        if not handle.alive or not handle.pid:
            return
        self._signal(handle, signal.SIGTERM)
        try:
            await asyncio.wait_for(handle.exited.wait(), self._stop_grace_s if grace_s is None else grace_s)
        except TimeoutError:
            self._signal(handle, signal.SIGKILL)
            await handle.exited.wait()

    # ---- requests ----
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
        """One request over the worker's keep-alive connection (opened again if it was closed)."""
        return await handle.request(method, path, headers, body, timeout_s, max_answer)

    async def stream(
        self,
        handle: WorkerHandle,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> WorkerStream:
        """A request whose answer is read as it comes (``stream.py``), over the same connection."""
        return await open_stream(await handle.connection(), method, path, headers, body)

    def kill(self, handle: WorkerHandle, reason: str, kind: str = "killed") -> None:
        if handle.kill_reason is None:
            handle.kill_reason, handle.kill_kind = reason, kind
        self._signal(handle, signal.SIGKILL)

    def _signal(self, handle: WorkerHandle, sig: int) -> None:
        if handle.alive and handle.pid in self._by_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(handle.pid, sig)

    # ---- memory ----
    async def _watch_memory(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            self._ticks += 1
            if self._ticks % _EXTRA_EVERY_TICKS == 0 and (self._pass is None or self._pass.done()):
                self._pass = asyncio.create_task(self._measure_extra())  # not awaited: samples go on
            for handle in list(self._by_pid.values()):
                used_mb = self._tree_mb(handle) if handle.port else self._rss.mb(handle.pid)
                if used_mb is not None and not handle.port:
                    used_mb += self._extra_mb.get(handle.uid, 0.0) if handle.uid else 0.0
                    used_mb += self._shmem_mb.get(handle.pid, 0.0)
                if used_mb is not None:
                    used_mb += self._pte_mb.get(handle.pid, 0.0)
                if used_mb is not None:
                    handle.rss_mb = used_mb
                if used_mb is not None and used_mb > handle.spec.memory_mb:
                    self.kill(
                        handle,
                        f"Worker {handle.worker_id} used {used_mb:.0f} MB of memory, more than the "
                        f"{handle.spec.memory_mb} MB of its MemorySizeInMB, and was stopped",
                        kind="memory_killed",
                    )

    def _tree_mb(self, handle: WorkerHandle) -> float | None:
        """An image worker's resident memory: its process tree's. Walked at each sample while the worker
        starts (its server may start its processes and load the model then); once it is ready, the tree as
        the last once-a-second pass found it (``workers/extramem.py``). None once the worker is gone."""
        pids = self._trees.get(handle.pid)
        if pids is None or not handle.ready_s:
            pids = self._trees[handle.pid] = tree_pids(handle.pid)
        own = self._rss.mb(handle.pid)
        if own is None:
            return None
        return own + sum(rss_mb(pid) or 0.0 for pid in pids[1:])

    async def _measure_extra(self) -> None:
        """What confined forked workers' other processes (children, orphans: anything with the worker's uid)
        hold privately, and the shared memory their resident sets miss (``workers/shmem.py``), in MB;
        counted against the worker's MemorySizeInMB until the next pass. Read in a thread
        (``workers/extramem.py``); a worker one of whose processes the kernel stopped at its group's limit
        is stopped here, as the watchdog stops one whose processes together pass it. Then the scratch
        directories' look (``_look_at_disks``), with the processes this pass found."""
        handles = list(self._by_pid.values())
        seen = [_seen(h) for h in handles]
        groups = self._groups
        oom_kills = None if groups is None else groups.oom_kills
        loop = asyncio.get_running_loop()
        unheld = self._unheld()
        try:
            reading = await loop.run_in_executor(self._pass_thread, extramem.read, seen, oom_kills, unheld)
        except OSError as exc:  # e.g. out of file descriptors: the next pass reads again
            log.warning("memory watchdog: the pass over /proc failed: %s", exc)
            return
        self._end_templates_with_strays(reading.unheld)
        self._uid_pids = reading.uid_pids  # for the scratch directories' look that follows (_look_at_disks)
        self._trees = reading.images
        if groups is not None:
            for handle in handles:
                if self._by_pid.get(handle.pid) is not handle:
                    continue  # gone while the pass read
                self._adopt_strays(handle, extramem.pids_of(_seen(handle), reading.uid_pids, reading.images))
                if handle.kill_reason is None and reading.oom_kills.get(handle.pid):
                    self.kill(handle, _oom_reason(handle), kind="memory_killed")
        else:  # what a memory cgroup would charge and no resident set shows: page tables
            self._pte_mb = reading.pte_mb
        self._extra_mb = reading.extra_mb
        for handle in handles:
            if handle.pid in reading.private_mb:
                handle.private_mb = reading.private_mb[handle.pid]
        self._shmem_mb = reading.shmem_mb
        self._look_at_disks()

    def _unheld(self) -> extramem.Unheld | None:
        """The uids of the live templates' blocks that no process should have (None without templates)."""
        if not self._template_blocks or self._confinement is None:
            return None
        return extramem.Unheld(tuple(self._template_blocks.values()), self._confinement.held_uids())

    def _end_templates_with_strays(self, unheld: Mapping[int, list[int]]) -> None:
        """A template whose model started a process after its load (a hook that ran in its fork loop) that
        moved to a uid of its block no replica has: the template ends, and that process with it (its block's
        uids no replica holds are ended with a template)."""
        if not unheld or self._confinement is None:
            return
        held = self._confinement.held_uids()  # now: a replica given its uid while the pass read is no stray
        for pid, (low, high) in list(self._template_blocks.items()):
            strays = sum(len(pids) for uid, pids in unheld.items() if low <= uid <= high and uid not in held)
            if not strays or pid not in self._template_pids:
                continue
            why = (
                f"the template (pid {pid}) of this model was ended: {strays} process"
                f"{'es' if strays > 1 else ''} its model started ran under uids of its block that no "
                "replica has"
            )
            log.warning("%s", why)
            if (path := self._template_logs.get(pid)) is not None:
                _say(path, f"zeroscale: {why}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _look_at_disks(self) -> None:
        """Every confined worker's scratch directory, and every template's less its replicas' (nested in
        it): measured in a thread, those past --worker-disk-mb stopped (``_over_disk``)."""
        if self._disk.limit_bytes <= 0:
            return
        workers = [h for h in self._by_pid.values() if h.scratch]
        targets = [
            DiskTarget(
                h.pid,
                f"Worker {h.worker_id}",
                h.scratch,
                frozenset(),
                tuple(extramem.pids_of(_seen(h), self._uid_pids, self._trees)),
            )
            for h in workers
        ]
        for pid, path in self._template_scratch.items():
            inside = frozenset(h.scratch for h in workers if h.scratch.startswith(path + os.sep))
            who = f"The template (pid {pid}) of a worker's model"
            targets.append(DiskTarget(pid, who, path, inside, (pid,)))
        self._disk.look(targets)

    def _over_disk(self, pid: int, reason: str) -> None:
        handle = self._by_pid.get(pid)
        if handle is not None:
            self.kill(handle, reason, kind="disk_killed")
        elif pid in self._template_scratch:  # its pools fork the runtime's zygote from now on
            log.warning("%s", reason)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _seen(handle: WorkerHandle) -> extramem.Seen:
    """A worker as the memory watchdog's once-a-second pass sees it (``workers/extramem.py``)."""
    room = handle.spec.memory_mb - handle.rss_mb
    return extramem.Seen(
        handle.pid, handle.uid, bool(handle.port), handle.cgroup, handle.spec.measure_private, room
    )


def _oom_reason(handle: WorkerHandle) -> str:
    return (
        f"Worker {handle.worker_id} used more than the {handle.spec.memory_mb} MB of its MemorySizeInMB and "
        "was stopped (the kernel stopped it, or one of its processes, at its memory cgroup's limit)"
    )


def _say(log_path: Path, line: str) -> None:
    fd = open_log(str(log_path))
    try:
        os.write(fd, encode(int(time.time() * 1000), line.encode()))
    finally:
        os.close(fd)


def _left_running(block: tuple[int, int], template: int) -> int:
    """How many processes other than the template have a uid of its block (it has no replica yet)."""
    found = processes_of(range(block[0], block[1] + 1))
    return sum(1 for pids in found.values() for pid in pids if pid != template)


def _group_failure(done: Future[object]) -> None:
    exc = done.exception()
    if exc is not None:
        log.warning("memory cgroup: %s", exc)
