"""The server's side of worker sandboxing: what each worker may touch (a ``sandbox.Policy``), its scratch
directory, and its process-count cgroup.

- Files: a worker reads its model directory, its code directory and requirements environment when they lie
  elsewhere, the Python it runs on and its libraries, and the system's shared libraries; it writes only
  ``<workers dir>/scratch/<worker id>`` (its ``TMPDIR``, removed when it exits) and creates only its own
  Unix socket. Nothing else of the data directory (database, credentials, other artifacts, logs) is
  readable.
- Network: a forked worker gets an empty network namespace (it listens on a Unix socket); an image's server
  may bind only its ports. Neither connects anywhere unless ``outbound`` is set.
- Processes: where the server may create cgroups with the ``pids`` controller (root, cgroup v1's pids
  hierarchy), each worker runs in its own cgroup capped at ``max_processes`` tasks, and everything left in it
  is killed when the worker exits. Elsewhere ``RLIMIT_NPROC`` in a user namespace of its own does it (the
  kernel ignores that limit for root in the initial namespace, hence the cgroup).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from zeroscale.runtimes.usercode import PYTHONPATH, code_dir
from zeroscale.workers import sandbox
from zeroscale.workers.sandbox import HostSupport, Policy

log = logging.getLogger("zeroscale.sandbox")

_PIDS_V1 = Path("/sys/fs/cgroup/pids")
CONTAINER_MODEL_DIR = "/opt/ml/model"
IMAGE_MIN_PROCESSES = 256  # an image's server may run a process manager and workers of its own


@dataclass(frozen=True)
class SandboxSettings:
    data_dir: Path  # nothing in it is readable but the worker's own model, code and environment
    outbound: bool = False  # workers may open connections (and share the host's network)
    max_processes: int = sandbox.DEFAULT_NPROC  # tasks (processes and threads) per worker
    max_open_files: int = sandbox.DEFAULT_NOFILE
    writable: tuple[Path, ...] = ()  # directories every worker may also write


class Confinement:
    def __init__(self, settings: SandboxSettings, run_dir: Path) -> None:
        self.settings = settings
        self._run_dir = run_dir
        self._scratch = run_dir / "scratch"
        self.support: HostSupport = sandbox.probe()
        self._python = sandbox.python_read_roots(settings.data_dir)
        self._cgroups = _PidsCgroups.open()
        net = () if not settings.outbound else sandbox.NETWORK_READ
        self._system = (*self._python, *sandbox.SYSTEM_READ, *net)
        self._shared: list[str] = []
        self._refused: list[str] = []
        for path in settings.writable:
            ok = path.is_dir() and not sandbox.inside(str(settings.data_dir), path)
            (self._shared if ok else self._refused).append(str(path.resolve()) if ok else str(path))

    def announce(self) -> list[str]:
        """Lines for the start banner and log: what is enforced here, loudly what is not."""
        s = self.support
        limit = "pids cgroup" if self._cgroups else "RLIMIT_NPROC"
        lines = [
            f"sandbox: Landlock ABI {s.landlock_abi}, "
            f"processes: {limit} <= {self.settings.max_processes}, "
            f"open files <= {self.settings.max_open_files}, outbound network "
            f"{'allowed' if self.settings.outbound else 'refused'}"
        ]
        for problem in s.problems:
            lines.append(f"WARNING: sandbox incomplete on this host: {problem}")
        if self._cgroups is None and os.geteuid() == 0:
            lines.append("WARNING: no pids cgroup: a root server cannot cap a worker's process count")
        for path in self._refused:
            lines.append(f"WARNING: workers may not write {path} (missing, or it holds the data directory)")
        for root in self._system:
            if sandbox.inside(str(self.settings.data_dir), Path(root)):
                lines.append(f"WARNING: the data directory is inside {root}, which workers may read")
        return lines

    # ---- per worker ----
    def scratch(self, worker_id: str, parent: str | None = None) -> str:
        """A fresh scratch directory (inside a template's, for its replicas)."""
        base = Path(parent) if parent else self._scratch
        path = base / worker_id
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        return str(path)

    def remove_scratch(self, path: str) -> None:
        if path:
            shutil.rmtree(path, ignore_errors=True)

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
        cgroup: str = "",
    ) -> Policy:
        read = [*self._system, model_dir, *extra_read]
        for candidate in (str(code_dir(model_dir, env)), env.get(PYTHONPATH, "").strip()):
            if candidate and self._readable_code(candidate):
                read.append(candidate)
        return Policy(
            read=tuple(read),
            write=(scratch, *self._shared),
            sockets=(str(self._run_dir),) if unix_sockets else (),
            bind_ports=bind_ports,
            outbound=self.settings.outbound,
            nproc=self.settings.max_processes,
            nofile=self.settings.max_open_files,
            net_ns=net_ns and not self.settings.outbound and self.support.user_ns,
            cgroup=cgroup,
            landlock=self.support.landlock_abi > 0,
        )

    def image_policy(
        self, model_dir: str, workdir: str, env: Mapping[str, str], scratch: str, cgroup: str
    ) -> Policy:
        """A bring-your-own image's server: its image (and the host's programs), the model (also at
        /opt/ml/model under bwrap), its scratch; binds only the ports it is given (added by the launcher)."""
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
            cgroup=cgroup,
        )
        return dataclasses.replace(policy, nproc=max(policy.nproc, IMAGE_MIN_PROCESSES))

    def _readable_code(self, path: str) -> bool:
        """A code directory or requirements environment outside the model is granted only where deploy
        prepares them (an extracted sourcedir in the artifact cache, a pip target in pyenvs): the model's
        Environment names these paths, and a user could name /etc or the data directory."""
        data = self.settings.data_dir
        if not os.path.isdir(path):
            return False
        return any(
            sandbox.inside(path, data / sub) and not sandbox.inside(str(data / sub), Path(path))
            for sub in ("artifacts", "pyenvs")
        )

    # ---- process cgroups ----
    def cgroup(self, worker_id: str) -> str:
        """A pids cgroup for one worker ('' where there are none); the worker joins it itself."""
        if self._cgroups is None:
            return ""
        return self._cgroups.create(worker_id, self.settings.max_processes)

    def join(self, cgroup: str, pid: int) -> None:
        """Move ``pid`` into ``cgroup`` (a template's replica, which cannot: it is already confined)."""
        if cgroup:
            with contextlib.suppress(OSError):
                (Path(cgroup) / "cgroup.procs").write_text(str(pid))

    def release(self, cgroup: str) -> bool:
        """Kill whatever the worker left in its cgroup and remove it; False while processes remain."""
        if not cgroup or self._cgroups is None:
            return True
        return self._cgroups.release(cgroup)

    def close(self) -> None:
        if self._cgroups is not None:
            self._cgroups.close()


class _PidsCgroups:
    """``/sys/fs/cgroup/pids/zeroscale-<server pid>-<tag>/<worker id>`` (cgroup v1's pids hierarchy)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls) -> _PidsCgroups | None:
        try:
            own = next(
                line.split(":", 2)[2].strip()
                for line in Path("/proc/self/cgroup").read_text().splitlines()
                if line.split(":")[1] == "pids"
            )
        except (OSError, StopIteration, IndexError):
            return None
        parent = _PIDS_V1 / own.lstrip("/")
        for stale in parent.glob("zeroscale-*"):  # left by a server that was killed
            if not _alive(stale.name.split("-")[1]):
                cls(stale).close()
        root = parent / f"zeroscale-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        try:
            root.mkdir(exist_ok=True)
            probe = root / "probe"
            probe.mkdir(exist_ok=True)
            (probe / "pids.max").write_text("1")
            probe.rmdir()
        except OSError:
            with contextlib.suppress(OSError):
                root.rmdir()
            return None
        return cls(root)

    def create(self, worker_id: str, max_tasks: int) -> str:
        path = self.root / worker_id
        try:
            path.mkdir(exist_ok=True)
            (path / "pids.max").write_text(str(max_tasks))
        except OSError as exc:
            log.warning("cannot create the pids cgroup %s: %s", path, exc)
            return ""
        return str(path)

    def release(self, cgroup: str) -> bool:
        path = Path(cgroup)
        for _ in range(3):
            try:
                pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
            except OSError:
                return True
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError:
                continue
        return False

    def close(self) -> None:
        if not self.root.exists():
            return
        for child in self.root.iterdir():
            if child.is_dir():
                self.release(str(child))
        with contextlib.suppress(OSError):
            self.root.rmdir()


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True
