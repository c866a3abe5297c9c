"""The server's side of worker sandboxing: what each worker may touch (a ``sandbox.Policy``), its scratch
directory, and its uid.

- Files: a worker reads its model directory, its code directory and requirements environment when they lie
  elsewhere, the Python it runs on and its libraries, and the system's shared libraries; it writes only
  ``<workers dir>/scratch/<name>`` (its ``TMPDIR``, removed when it exits) and creates only its own
  Unix socket. Nothing else of the data directory (database, credentials, other artifacts, logs) is
  readable.
- Network: a forked worker gets an empty network namespace (it listens on a Unix socket); an image's server
  may bind only its ports, and makes no socket but Unix, netlink and plain TCP ones (a seccomp filter: no
  UDP, no MPTCP, no TCP Fast Open). Neither connects anywhere unless ``outbound`` is set.
- Processes: a root server gives each worker a uid of its own (from a random block of ``_UIDS``), so
  ``RLIMIT_NPROC`` caps the worker's tasks at ``max_processes`` (the kernel never applies it to root), and
  everything left with that uid is killed when the worker exits. A server that is not root relies on
  ``RLIMIT_NPROC`` in a user namespace of the worker's own. (A pids cgroup per worker was tried first:
  joining one costs 10-15 ms, an RCU grace period, on every isolated cold start.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import random
import shutil
import signal
from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path

from zeroscale.fstree import remove_tree_quietly
from zeroscale.runtimes.usercode import PYTHONPATH, code_dir
from zeroscale.workers import sandbox, seccomp
from zeroscale.workers.sandbox import HostSupport, Policy
from zeroscale.workers.sockdir import socket_dir

log = logging.getLogger("zeroscale.sandbox")

SCRATCH_AHEAD = 2  # scratch directories made ahead of the cold starts that take them (``stock_scratch``)
_UIDS = 100_000  # uids per server: a random block of them above 10^9, away from real users
_UID_BASE_FILE = "uid-base"  # in the workers' directory: this run's block, for the next run to clear
_WORKER_UIDS = 50_000  # the first half: one per worker forked from a zygote, or image server
TEMPLATE_UIDS = 512  # the second half, in blocks: a template's own uid and its replicas'
CONTAINER_MODEL_DIR = "/opt/ml/model"
IMAGE_MIN_PROCESSES = 256  # an image's server may run a process manager and workers of its own


@dataclass(frozen=True)
class SandboxSettings:
    data_dir: Path  # nothing in it is readable but the worker's own model, code and environment
    outbound: bool = False  # workers may open connections (and share the host's network)
    max_processes: int = sandbox.DEFAULT_NPROC  # tasks (processes and threads) per worker
    max_open_files: int = sandbox.DEFAULT_NOFILE
    writable: tuple[Path, ...] = ()  # directories every worker may also write
    # What a worker may write to its scratch directory, bytes (0: no limit): one file is held to it by
    # RLIMIT_FSIZE, all of them by the manager's once-a-second look (``workers/diskuse.py``).
    max_disk_bytes: int = 0


class Confinement:
    def __init__(self, settings: SandboxSettings, run_dir: Path) -> None:
        self.settings = settings
        self._sockets = str(socket_dir(run_dir))  # where workers make their sockets (``workers/sockdir.py``)
        self._scratch = run_dir / "scratch"
        self._stock: list[str] = []  # empty scratch directories made ahead, each for one worker
        self.support: HostSupport = sandbox.probe()
        self._python = sandbox.python_read_roots(settings.data_dir)
        self._uid_base = _take_uid_base(run_dir / _UID_BASE_FILE)
        self._uid_seq = itertools.count()
        self._uids_in_use: set[int] = set()
        self._blocks_in_use: set[int] = set()
        net = () if not settings.outbound else sandbox.NETWORK_READ
        self._system = (*self._python, *sandbox.SYSTEM_READ, *net)
        # Where deploy prepares code outside a model (extracted sourcedirs, pip targets), resolved once.
        self._code_roots = tuple(
            Path(os.path.realpath(settings.data_dir / sub)) for sub in ("artifacts", "pyenvs")
        )
        self._shared: list[str] = []
        self._refused: list[str] = []
        for path in settings.writable:
            ok = path.is_dir() and not sandbox.inside(str(settings.data_dir), path)
            (self._shared if ok else self._refused).append(str(path.resolve()) if ok else str(path))

    def announce(self) -> list[str]:
        """Lines for the start banner and log: what is enforced here, loudly what is not."""
        s = self.support
        limit = "a uid per worker, RLIMIT_NPROC" if os.geteuid() == 0 else "RLIMIT_NPROC in a user namespace"
        lines = [
            f"sandbox: Landlock ABI {s.landlock_abi}, "
            f"processes: {limit} <= {self.settings.max_processes}, "
            f"open files <= {self.settings.max_open_files}, "
            + (
                f"scratch disk <= {self.settings.max_disk_bytes // (1024 * 1024)} MB, "
                if self.settings.max_disk_bytes
                else ""
            )
            + "outbound network "
            f"{'allowed' if self.settings.outbound else 'refused'}"
            + (
                ", connect and datagram Unix sockets refused, images TCP only (seccomp)"
                if s.seccomp and not self.settings.outbound
                else ""
            )
            + (", memfd and SysV shared memory refused (seccomp)" if s.seccomp else "")
        ]
        for problem in s.problems:
            lines.append(f"WARNING: sandbox incomplete on this host: {problem}")
        if not self.settings.outbound and shutil.which("bwrap") is None:
            lines.append(
                "WARNING: sandbox incomplete on this host: no bubblewrap (bwrap): images' servers see the "
                "host's file system and can connect to its Unix sockets"
            )
        for path in self._refused:
            lines.append(f"WARNING: workers may not write {path} (missing, or it holds the data directory)")
        for root in self._system:
            if sandbox.inside(str(self.settings.data_dir), Path(root)):
                lines.append(f"WARNING: the data directory is inside {root}, which workers may read")
        return lines

    # ---- per worker ----
    def worker_scratch(self, worker_id: str) -> str:
        """A worker's scratch directory: one made ahead where one waits (``stock_scratch``), else
        ``<scratch>/<worker_id>`` made now."""
        with contextlib.suppress(IndexError):
            return self._stock.pop()
        return self.scratch(worker_id)

    def scratch(self, name: str, parent: str | None = None) -> str:
        """A fresh scratch directory ``<base>/<name>`` (inside a template's, for its replicas), made now."""
        base = Path(parent) if parent else self._scratch
        path = base / name
        try:
            os.mkdir(path, 0o700)
        except FileNotFoundError:  # the first in its base
            base.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        os.chmod(path, 0o700)  # whatever the umask
        return str(path)

    @property
    def stock_low(self) -> bool:
        return len(self._stock) < SCRATCH_AHEAD

    def stock_scratch(self) -> None:
        """Make empty scratch directories until ``SCRATCH_AHEAD`` wait. A directory made by a server that
        woke for a cold start takes it ~0.5 ms on these machines (~30 us when its caches are warm): made
        ahead, off the cold start's path (``WorkerManager`` calls this once starts pause).
        Their names are random (``ready-<hex>``): a worker's scratch need not carry its id."""
        while len(self._stock) < SCRATCH_AHEAD:
            self._stock.append(self.scratch(f"ready-{os.urandom(6).hex()}"))

    def remove_scratch(self, path: str) -> None:
        if path:
            remove_tree_quietly(path)

    def policy(
        self,
        *,
        model_dir: str,
        env: Mapping[str, str],
        scratch: str,
        extra_read: tuple[str, ...] = (),
        bind_ports: tuple[int, ...] = (),
        unix_sockets: bool = True,
        net_ns: bool = True,
        uid: int = 0,
        uid_block: tuple[int, int] | None = None,
    ) -> Policy:
        read = [*self._system, model_dir, *extra_read]
        inside = model_dir.rstrip("/") + "/"
        for candidate in (str(code_dir(model_dir, env)), env.get(PYTHONPATH, "").strip()):
            # beneath the model: readable already (and no stat and realpath on a cold start's path)
            if candidate and not candidate.startswith(inside) and self._readable_code(candidate):
                read.append(candidate)
        return Policy(
            read=tuple(read),
            write=(scratch, *self._shared),
            sockets=(self._sockets,) if unix_sockets else (),
            bind_ports=bind_ports,
            outbound=self.settings.outbound,
            nproc=self.settings.max_processes,
            nofile=self.settings.max_open_files,
            fsize=self.settings.max_disk_bytes,
            net_ns=net_ns and not self.settings.outbound and self.support.user_ns,
            uid=uid,
            uid_block=uid_block,
            # A forked worker (it listens on a Unix socket) connects nowhere unless outbound access is on;
            # an image's server keeps connect (e.g. nginx to its app server over a socket of its own).
            deny_connect=unix_sockets and not self.settings.outbound and self.support.seccomp,
            # A forked worker or template makes no memory its resident set would not show (memfd_create,
            # memfd_secret, SysV shmget), outbound access or not; an image's server keeps them.
            deny_shmem=unix_sockets and self.support.seccomp,
            landlock=self.support.landlock_abi > 0,
            common=len(self._system),
        )

    def image_policy(
        self, model_dir: str, workdir: str, env: Mapping[str, str], scratch: str, uid: int
    ) -> Policy:
        """A bring-your-own image's server: its image (and the host's programs), the model (also at
        /opt/ml/model under bwrap), its scratch; binds only the ports it is given (added by the launcher);
        TCP only (seccomp), unless outbound access is on. Under bwrap the launcher also makes these paths
        all it can see (``process.confined_view``), so no host Unix socket is within its reach."""
        images = self.settings.data_dir / "images"
        image = Path(workdir)
        if sandbox.inside(workdir, images):  # <images>/<name>/<tag>/<sha256>/...: the whole image
            rel = Path(os.path.realpath(workdir)).relative_to(os.path.realpath(images))
            image = Path(os.path.realpath(images)).joinpath(*rel.parts[:3])
        policy = self.policy(
            model_dir=model_dir,
            env=env,
            scratch=scratch,
            extra_read=(str(image), CONTAINER_MODEL_DIR),
            unix_sockets=False,
            net_ns=False,
            uid=uid,
        )
        tcp_only = not self.settings.outbound and self.support.seccomp
        return dataclasses.replace(
            policy,
            nproc=max(policy.nproc, IMAGE_MIN_PROCESSES),
            seccomp_filter=seccomp.program(deny_connect=False, id_range=None, tcp_only=True).hex()
            if tcp_only
            else "",
        )

    def _readable_code(self, path: str) -> bool:
        """A code directory or requirements environment outside the model is granted only where deploy
        prepares them (an extracted sourcedir in the artifact cache, a pip target in pyenvs): the model's
        Environment names these paths, and a user could name /etc or the data directory."""
        if not os.path.isdir(path):
            return False
        real = Path(os.path.realpath(path))
        return any(root in real.parents for root in self._code_roots)  # beneath one, not one itself

    # ---- worker uids ----
    def uid(self, block: tuple[int, int] | None = None) -> int:
        """A uid for one worker (0 where the server is not root: it cannot give one); a template's replica
        takes one from the template's ``block`` (never the template's own, its first)."""
        if os.geteuid() != 0:
            return 0
        if block is not None:
            for uid in range(block[0] + 1, block[1] + 1):
                if uid not in self._uids_in_use:
                    self._uids_in_use.add(uid)
                    return uid
            raise RuntimeError("no free uid in the template's block")
        for _ in range(_WORKER_UIDS):
            uid = self._uid_base + next(self._uid_seq) % _WORKER_UIDS
            if uid not in self._uids_in_use:
                self._uids_in_use.add(uid)
                return uid
        raise RuntimeError("no free worker uid")

    def template_block(self) -> tuple[int, int] | None:
        """A block of uids for one template, inclusive: the first is the template's own, the others its
        replicas' (None where the server is not root, or no seccomp filter can hold the template to it)."""
        if os.geteuid() != 0 or not self.support.seccomp:
            return None
        first = self._uid_base + _WORKER_UIDS
        for start in range(first, self._uid_base + _UIDS - TEMPLATE_UIDS + 1, TEMPLATE_UIDS):
            # Not while any uid of it is taken: a template may become any uid of its block, so a process a
            # last template's model left under one would share it with the next (another tenant's).
            uids = range(start, start + TEMPLATE_UIDS)
            if start not in self._blocks_in_use and self._uids_in_use.isdisjoint(uids):
                self._blocks_in_use.add(start)
                self._uids_in_use.add(start)  # released with the template, once nothing has it
                return start, start + TEMPLATE_UIDS - 1
        raise RuntimeError("no free template uid block")

    def held_uids(self) -> frozenset[int]:
        """The uids handed out now (workers', templates', replicas'), and those not yet released."""
        return frozenset(self._uids_in_use)

    def retire_block(self, block: tuple[int, int]) -> set[int]:
        """The template is gone: its block may be handed out again. Returns the uids of it that no replica
        holds, now counted in use until ``release`` finds nothing with them (a process the template's model
        started may have taken one); its replicas' uids are released one by one, as they exit."""
        strays = set(range(block[0] + 1, block[1] + 1)) - self._uids_in_use
        self._uids_in_use |= strays
        self._blocks_in_use.discard(block[0])
        return strays

    def release(self, uids: set[int]) -> set[int]:
        """Kill every process left with one of ``uids`` (what those workers started; nothing else has their
        uids), in one pass over /proc. Returns the uids that still had processes; the others may be handed
        out again."""
        found = _kill(processes_of(uids - {0}))
        self._uids_in_use -= uids - found
        return found

    def close(self) -> None:
        """Kill every process left with one of this server's uids, whether or not it still counts it as in
        use, and remove the scratch directories made ahead. (A uid is let go when no process has it, and a
        replica its template forked just then would take it only later, at its ``setuid``. Fresh-clone CI
        runs twice left a replica running after its server stopped, its template gone; why its
        parent-death signal did not end it was not found.)"""
        self._uids_in_use.clear()
        _kill(processes_of(range(self._uid_base, self._uid_base + _UIDS)))
        while self._stock:
            self.remove_scratch(self._stock.pop())


def _take_uid_base(record: Path) -> int:
    """A random block of uids for this run of the server. What the last run of this data directory left
    under its own block is killed first, as its ``close`` would have: a server SIGKILLed takes its zygotes
    and forked workers with it, but an image's server, whose bubblewrap parent dies with the server, was
    seen to live on (reparented to init, its parent-death signal never delivered) and keep its port."""
    base = 1_000_000_000 + random.randrange(0, 20_000) * _UIDS
    if os.geteuid() != 0:
        return base
    with contextlib.suppress(OSError, ValueError):
        last = int(record.read_text())
        left = _kill(processes_of(range(last, last + _UIDS)))
        if left:
            log.warning(
                "sandbox: ended what the last run of this data directory left under %d uid(s)", len(left)
            )
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(f"{base}\n")
    except OSError as exc:
        log.warning("sandbox: cannot record this run's uids in %s: %s", record, exc)
    return base


def _kill(found: dict[int, list[int]]) -> set[int]:
    """SIGKILL every pid of ``found`` (uid -> pids, ``processes_of``'s); the uids that had any."""
    for pids in found.values():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return set(found)


def processes_of(uids: Container[int]) -> dict[int, list[int]]:
    """The pids of the processes owned by each of ``uids`` (a set, or a range: one pass over /proc; a
    confined worker is dumpable, so its /proc/<pid> belongs to its uid)."""
    found: dict[int, list[int]] = {}
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                owner = entry.stat().st_uid
            except OSError:
                continue
            if owner in uids:
                found.setdefault(owner, []).append(int(entry.name))
    return found
