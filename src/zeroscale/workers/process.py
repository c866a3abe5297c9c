"""Start a bring-your-own image's server as a plain process, the way SageMaker starts its container.

- Command: ``<entrypoint> serve`` in the image's workdir. Environment: the image's ``env`` with the model's
  ``Environment`` over it (PATH, HOME and LANG default to the server's), plus ``SAGEMAKER_BIND_TO_PORT``
  (a free TCP port on 127.0.0.1 the server must listen on), ``SAGEMAKER_SAFE_PORT_RANGE`` (ten more ports
  that were free when it started, for its own use) and ``SM_MODEL_DIR`` (where the model is).
- ``/opt/ml/model``: with bubblewrap (``bwrap``) on PATH and working, the process runs in a mount namespace
  where the model directory is mounted read-only at ``/opt/ml/model``; ``SM_MODEL_DIR`` is
  ``/opt/ml/model``. Confined (a sandbox policy, no outbound access), that namespace holds only what the
  policy grants (``confined_view``): the read roots read-only, the scratch and shared writable directories,
  a minimal ``/dev``, ``/proc``, an empty ``/tmp``; no ``/run``, ``/var``, host ``/tmp`` or data directory,
  so none of the host's Unix sockets (PostgreSQL's, Ray's, a daemon's, the workers') can be named, while the
  image's own (in its scratch directory) work. Otherwise (no policy, or outbound access) it is the host's
  file system with a fresh ``/opt`` (whatever the host had in ``/opt`` bound back, except ``ml``). The
  network and the process tree are the host's. Without bwrap, ``SM_MODEL_DIR`` is the real model directory
  and ``/opt/ml/model`` does not exist.
- Output: stdout and stderr are a pipe read on the server's event loop, written to the worker's log file
  as timestamped records (``capture.LoopCapture``, the same format as forked workers' output).
- Life: the process is the leader of its own process group, the container's stand-in. It dies with the
  server (the parent-death signal; bwrap's ``--die-with-parent``). Stop is the manager's: SIGTERM to the
  server process (as ``docker stop`` signals PID 1), SIGKILL after the grace period. When the server process
  exits, whatever is left of its group is killed, as a container's processes are, and the exit is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import shutil
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from zeroscale.background import Background
from zeroscale.errors import DeployError
from zeroscale.workers import sandbox
from zeroscale.workers.capture import LoopCapture
from zeroscale.workers.sandbox import Policy

ExitCallback = Callable[[int, int], None]  # (pid, exit code or -signal)

SERVE_ARG = "serve"
CONTAINER_MODEL_DIR = "/opt/ml/model"
MODEL_DIR_ENV = "SM_MODEL_DIR"
PORT_ENV = "SAGEMAKER_BIND_TO_PORT"
SAFE_PORT_RANGE_ENV = "SAGEMAKER_SAFE_PORT_RANGE"
SAFE_PORTS = 10
_PORT_LOW, _PORT_HIGH = 10000, 32000  # below Linux's ephemeral range, so outgoing connections don't take them
_BASE_ENV = ("PATH", "HOME", "LANG")
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_INFO_TIMEOUT_S = 10.0
_CLOSE_TIMEOUT_S = 5.0  # for the killed processes' exits to be reported
log = logging.getLogger("zeroscale.workers")


@dataclass(frozen=True)
class StartedProcess:
    pid: int  # the image's server process: what is signalled and measured
    pgid: int  # its process group, killed once the server process is gone
    port: int
    sandboxed: bool


class ProcessLauncher:
    def __init__(self, on_exit: ExitCallback, *, sandbox: bool | None = None, log_limit: int = 0) -> None:
        self._log_limit = log_limit  # bytes of a server's output a minute kept in its log (0: all)
        """``sandbox``: True requires bwrap, False never uses it, None uses it when it works here."""
        self._on_exit = on_exit
        self._sandbox = sandbox
        self._bwrap: str | None = None
        self._probe_lock = asyncio.Lock()
        self._watchers = Background("process watcher")
        self._groups: set[int] = set()
        self._ports: set[int] = set()

    async def start(
        self,
        command: tuple[str, ...],
        *,
        workdir: str,
        model_dir: str,
        env: Mapping[str, str],
        log_path: Path,
        policy: Policy | None = None,
    ) -> StartedProcess:
        """Start ``command serve``; returns once the process exists (readiness is the caller's /ping).

        Raises DeployError when it cannot be started at all."""
        bwrap = await self._sandbox_binary(model_dir)
        ports = self._allocate_ports()
        port = ports[0]
        own_env = {"PATH": _DEFAULT_PATH}  # the server's, for bwrap and the shim (below)
        own_env.update({key: os.environ[key] for key in _BASE_ENV if os.environ.get(key)})
        full_env = {**own_env, **env}
        full_env[PORT_ENV] = str(port)
        full_env[SAFE_PORT_RANGE_ENV] = f"{ports[1]}-{ports[-1]}"
        full_env[MODEL_DIR_ENV] = CONTAINER_MODEL_DIR if bwrap else model_dir
        argv = [*command, SERVE_ARG]
        # The image's environment reaches its command only: the shim (sandbox.py run as a script, with only
        # the standard library) reads it from its standard input and applies it at its exec, once confined.
        # bwrap and the shim run as the server does, with the server's own environment: an image's LD_PRELOAD
        # (or any loader variable) would run the image's code in them, as root, unconfined. Not in their
        # arguments either: any local user reads a process's command line, and Environment holds secrets.
        parent = str(0 if bwrap else os.getpid())  # bwrap is the shim's parent: it dies with the server
        if policy is not None:
            policy = dataclasses.replace(policy, bind_ports=tuple(ports))
        confined = sandbox.encode(policy) if policy is not None else sandbox.UNCONFINED
        shim = [sys.executable, "-I", "-S", sandbox.__file__, parent, confined]
        info_r = info_w = -1
        if bwrap:
            info_r, info_w = os.pipe()
            inner = [*shim, *argv]
            if policy is not None and not policy.outbound:
                view = confined_view(bwrap, policy, model_dir, workdir)
            else:
                view = bwrap_args(bwrap, model_dir, workdir)
            args = [*view, "--info-fd", str(info_w), "--", *inner]
        else:
            args = [*shim, *argv]
        capture = LoopCapture(str(log_path), limit=self._log_limit)
        env_file = sandbox.environment_file(full_env)
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=env_file,
                stdout=capture.write_fd,
                stderr=capture.write_fd,
                cwd=workdir,
                env=own_env,
                start_new_session=True,
                pass_fds=(info_w,) if bwrap else (),
            )
        except OSError as exc:
            capture.close()
            if info_r >= 0:
                os.close(info_r)
            self._release_ports(ports)
            what = f"{argv[0]!r} in {workdir}"
            raise DeployError(f"Could not start the image's server ({what}): {exc}") from exc
        finally:
            os.close(env_file)
            if info_w >= 0:
                os.close(info_w)
        capture.spawned()
        pgid = proc.pid
        self._groups.add(pgid)
        pid = proc.pid
        if bwrap:
            try:
                pid = await _child_pid(info_r)
            except DeployError:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), 5.0)
                self._kill_group(pgid)
                capture.exited()
                self._release_ports(ports)
                raise
        self._watchers.spawn(self._watch(proc, capture, pid, pgid, ports, bool(bwrap)))
        return StartedProcess(pid=pid, pgid=pgid, port=port, sandboxed=bool(bwrap))

    async def close(self) -> None:
        """Kill every process group still around and stop watching."""
        for pgid in list(self._groups):
            self._kill_group(pgid)
        try:
            await asyncio.wait_for(self._watchers.join(), _CLOSE_TIMEOUT_S)
        except TimeoutError:
            await self._watchers.cancel()

    # ---- exits ----
    async def _watch(
        self,
        proc: asyncio.subprocess.Process,
        capture: LoopCapture,
        pid: int,
        pgid: int,
        ports: list[int],
        sandboxed: bool,
    ) -> None:
        code = await proc.wait()
        if sandboxed and 128 < code < 128 + 65:  # bwrap reports a child killed by signal N as 128 + N
            code = -(code - 128)
        self._kill_group(pgid)
        capture.exited()  # its last lines are in the log before anyone hears of the exit
        self._release_ports(ports)
        self._on_exit(pid, code)

    def _kill_group(self, pgid: int) -> None:
        self._groups.discard(pgid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)

    # ---- ports ----
    def _allocate_ports(self) -> list[int]:
        """1 + SAFE_PORTS consecutive ports that are free now and not handed to another live worker."""
        for _ in range(200):
            base = random.randrange(_PORT_LOW, _PORT_HIGH - SAFE_PORTS)
            ports = list(range(base, base + SAFE_PORTS + 1))
            if not self._ports.intersection(ports) and all(_port_free(p) for p in ports):
                self._ports.update(ports)
                return ports
        raise DeployError("Could not find free TCP ports for the image's server.")

    def _release_ports(self, ports: list[int]) -> None:
        self._ports.difference_update(ports)

    # ---- sandbox ----
    async def _sandbox_binary(self, model_dir: str) -> str | None:
        """bwrap's path when it is to be used, after checking once that it works on this machine."""
        if self._sandbox is False:
            return None
        async with self._probe_lock:
            if self._bwrap is None:
                self._bwrap = await _probe_bwrap(model_dir) or ""
                if not self._bwrap:
                    log.warning("bwrap is not usable: /opt/ml/model is mapped through %s only", MODEL_DIR_ENV)
        if self._sandbox and not self._bwrap:
            raise DeployError("bubblewrap (bwrap) is required for this worker but is not usable here")
        return self._bwrap or None


def bwrap_args(bwrap: str, model_dir: str, workdir: str) -> list[str]:
    """The host's file system, except a fresh /opt holding the host's /opt entries and the model at
    /opt/ml/model (read-only)."""
    args = [bwrap, "--dev-bind", "/", "/", "--tmpfs", "/opt"]
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir("/opt")):
            if entry == "ml":
                continue
            path = f"/opt/{entry}"
            if os.path.islink(path):
                args += ["--symlink", os.readlink(path), path]
            else:
                args += ["--dev-bind", path, path]
    args += ["--ro-bind", model_dir, CONTAINER_MODEL_DIR, "--chdir", workdir, "--die-with-parent"]
    return args


_BWRAP_DEVICES = frozenset(f"/dev/{name}" for name in ("null", "zero", "full", "random", "urandom", "tty"))


def confined_view(bwrap: str, policy: Policy, model_dir: str, workdir: str) -> list[str]:
    """A file system of only what ``policy`` grants (bwrap's root is an empty tmpfs): its read roots
    read-only, its writable directories, its devices, ``/proc`` (Landlock lets it read its own entries; its
    ptrace rule keeps other processes' ``root`` and ``fd`` links out of reach), an empty ``/tmp``, and the
    model at /opt/ml/model. Nothing else of the host is there to connect to."""
    kinds: dict[str, str] = {}
    for path in policy.read:
        if path != CONTAINER_MODEL_DIR and not _beneath(path, "/proc"):
            kinds.setdefault(path, "--ro-bind-try")
    for path in policy.write:
        kinds[path] = "--bind-try"
    for path in policy.devices:
        if path not in _BWRAP_DEVICES:
            kinds[path] = "--dev-bind-try"
    links: list[str] = []
    mounts: dict[str, str] = {}
    for path, kind in kinds.items():
        if os.path.islink(path):  # e.g. /lib -> usr/lib: the link, and its target unless already there
            parent = os.path.dirname(path)
            if not any(_beneath(parent, other) for other in kinds if not os.path.islink(other)):
                links += ["--symlink", os.readlink(path), path]
            path = os.path.realpath(path)
        mounts.setdefault(path, kind)
    # Parents before children; a child with its parent's kind is already there.
    ordered = sorted(mounts, key=lambda p: (p.count("/"), p))
    args = [bwrap, "--dev", "/dev", "--dev-bind", "/proc", "/proc", "--tmpfs", "/tmp"]
    for path in ordered:
        kind = mounts[path]
        if any(mounts[other] == kind and _beneath(path, other) for other in ordered if other != path):
            continue
        args += [kind, path, path]
    args += links
    args += ["--ro-bind", model_dir, CONTAINER_MODEL_DIR, "--chdir", workdir, "--die-with-parent"]
    return args


def _beneath(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


async def _probe_bwrap(model_dir: str) -> str | None:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    try:
        proc = await asyncio.create_subprocess_exec(
            *bwrap_args(bwrap, model_dir, "/"),
            "--",
            "test",
            "-d",
            CONTAINER_MODEL_DIR,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 10.0)
    except (OSError, TimeoutError) as exc:
        log.warning("bwrap probe failed: %s", exc)
        return None
    if proc.returncode != 0:
        log.warning("bwrap probe failed (exit %s): %s", proc.returncode, err.decode(errors="replace").strip())
        return None
    return bwrap


async def _child_pid(fd: int) -> int:
    """The sandboxed process's pid from bwrap's --info-fd JSON (written before it runs the command)."""
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "rb", buffering=0)
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    data = b""
    try:
        async with asyncio.timeout(_INFO_TIMEOUT_S):
            while chunk := await reader.read(4096):
                data += chunk
                with contextlib.suppress(ValueError):
                    return int(json.loads(data)["child-pid"])
    except (TimeoutError, KeyError, TypeError):
        pass
    finally:
        transport.close()
    raise DeployError("bwrap did not start the image's server (see the worker log)")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True
