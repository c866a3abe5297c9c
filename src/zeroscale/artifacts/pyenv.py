"""Per-model Python packages: ``code/requirements.txt`` -> a cached ``pip install --target`` directory.

Installed once at deploy time with the server's own interpreter, shared by every worker of every model
with the same requirements, and kept across restarts. pip runs outside any sandbox, so it installs wheels
only, from what ``requirements.vet`` lets a model ask for, with none of the server's credentials in its
environment. Layout under ``root``::

    <key>/lib/        what pip installed: the worker puts it first on sys.path
    <key>/complete    marker (requirements, python, pip's output), written before the rename into place
    tmp/<pid>-<rand>  staging directories: renamed into place, or removed
    locks/<key>.lock  flock held while installing, so concurrent deploys (threads or processes) of the
                      same requirements install once

``key`` is the sha256 of the vetted requirements (what pip is given: ``requirements.Vetted``, nested files
included) and the interpreter (version, ABI, platform). A failed
install is not cached: the next deploy tries again. With a capacity (``--requirements-cache-mb``) the
environments nothing keeps (no pool's ``PYTHONPATH``, no deployment's hold) go least recently used first
(``shelf.py``), after an install and when ``trim`` is called.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from zeroscale import childenv
from zeroscale.artifacts.holds import Hold, Holds
from zeroscale.artifacts.requirements import Vetted, vet
from zeroscale.artifacts.scratch import remove_stale, staging_dir
from zeroscale.artifacts.shelf import Shelf, Shelved
from zeroscale.errors import DeployError
from zeroscale.fstree import tree_bytes

log = logging.getLogger("zeroscale.pyenv")
MARKER = "complete"
LIB = "lib"
DEFAULT_TIMEOUT_S = 900.0
_LOCK_POLL_S = 0.1
_TAIL_LINES = 12
_TAIL_CHARS = 700
# besides ``childenv.BASE``: pip's own configuration, and what it needs to trust the index's certificates
_PIP_ENV = frozenset(
    {"XDG_CONFIG_HOME", "XDG_CACHE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE"}
)


def pip_environment(server_env: Mapping[str, str]) -> dict[str, str]:
    """What of the server's environment pip runs with: what it needs to reach and trust the index (its own
    ``PIP_*`` settings, proxies, certificates, locale, home), never the server's credentials."""
    env = childenv.allowed(server_env, _PIP_ENV, ("PIP_",))
    env.update((k, v) for k, v in server_env.items() if k.lower().endswith("_proxy"))
    env.update(PIP_NO_INPUT="1", PYTHONNOUSERSITE="1")
    return env


def interpreter_tag() -> str:
    """What makes installed packages of one interpreter unusable by another."""
    return f"{sys.implementation.cache_tag} {sys.version.split()[0]} {sys.platform} {platform.machine()}"


def env_key(vetted: Vetted) -> str:
    """The environment's key: all that pip is given, and the interpreter."""
    given = f"{vetted.text}\0{vetted.constraints_text}\0{' '.join(vetted.options)}"
    return hashlib.sha256(f"{interpreter_tag()}\n{given}".encode()).hexdigest()


def has_requirements(requirements: bytes) -> bool:
    """Whether the file asks for anything (not only blank lines and comments)."""
    lines = requirements.decode("utf-8", "replace").splitlines()
    return any(line.split("#", 1)[0].strip() for line in lines)


def pip_tail(output: str) -> str:
    """The useful end of pip's output: its last lines, without index warnings."""
    lines = [line.rstrip() for line in output.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith("WARNING:")] or lines
    text = "\n".join(useful[-_TAIL_LINES:])
    return text if len(text) <= _TAIL_CHARS else "..." + text[-_TAIL_CHARS:]


class PythonEnvs(Shelved):
    def __init__(
        self,
        root: Path,
        *,
        python: str = sys.executable,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        capacity_bytes: int | None = None,
        holds: Holds | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``capacity_bytes``: the installed files kept (None: all; 0: only those in use)."""
        self.root = Path(root).resolve()
        self.python = python
        self.timeout_s = timeout_s
        self._tmp_dir = self.root / "tmp"
        self._locks_dir = self.root / "locks"
        self._locks: dict[str, asyncio.Lock] = {}
        for directory in (self.root, self._tmp_dir, self._locks_dir):
            directory.mkdir(parents=True, exist_ok=True)
        remove_stale(self._tmp_dir)  # staging directories of processes that died mid-install
        self._shelf = Shelf(
            self.root,
            self._tmp_dir,
            marker=MARKER,
            leaf=LIB,
            label="requirements environments",
            capacity_bytes=capacity_bytes,
            holds=holds,
            clock=clock,
        )

    def lib_dir(self, key: str) -> Path:
        return self.root / key / LIB

    def is_complete(self, key: str) -> bool:
        return self._shelf.is_complete(key)

    def trim(self) -> list[str]:
        """Blocking. Evict environments nothing keeps, least recently used first, until the rest fit the
        capacity; returns their keys."""
        return self._shelf.trim()

    async def prepare(self, requirements_file: Path, hold: Hold | None = None) -> Path | None:
        """The directory holding the installed requirements (None when the file asks for nothing), held by
        ``hold`` until it is closed (without one, kept for the grace period).

        Installs on first use; raises DeployError with pip's message when the install fails or times out.
        ``pip`` runs in the requirements file's directory, so relative paths in it (``-r``, wheels) work."""
        if hold is None:
            with self._shelf.holds.hold() as own:
                lib = await self.prepare(requirements_file, own)
                if lib is not None:
                    self._shelf.kept_for_grace(lib.parent.name)
            return lib
        try:
            requirements = requirements_file.read_bytes()
        except OSError as exc:
            raise DeployError(f"Cannot read {requirements_file}: {exc.strerror or exc}") from exc
        if not has_requirements(requirements):
            return None
        vetted = vet(requirements_file)  # before anything is installed, or a cached install is handed out
        key = env_key(vetted)
        # The shelf's calls wait for its lock (a trim's) and, on a Ray node, for another process's
        # eviction: in a thread, never on the event loop (a node's also relays its workers' traffic).
        if await asyncio.to_thread(self._shelf.use, key, hold):
            return self.lib_dir(key)
        async with self._locked(key):
            if not await asyncio.to_thread(self._shelf.use, key, hold):
                await self._install(key, requirements, requirements_file, vetted, hold)
        if self._shelf.over_capacity():
            await asyncio.to_thread(self._shelf.trim_if_grew)
        return self.lib_dir(key)

    # ---- install ----
    async def _install(
        self, key: str, requirements: bytes, requirements_file: Path, vetted: Vetted, hold: Hold | None
    ) -> None:
        with staging_dir(self._tmp_dir) as staging:
            started = time.monotonic()
            output = await self._pip(staging, requirements_file, vetted)
            size = await asyncio.to_thread(tree_bytes, staging / LIB)
            marker = {
                "key": key,
                "python": interpreter_tag(),
                "requirements": requirements.decode("utf-8", "replace"),
                "seconds": round(time.monotonic() - started, 3),
                "created": time.time(),
                "bytes": size,
            }
            (staging / "pip.log").write_text(output)
            (staging / MARKER).write_text(json.dumps(marker))
            await asyncio.to_thread(self._publish, staging, key, size, hold)
            log.info("installed requirements %s into %s in %.1fs", requirements_file, self.lib_dir(key),
                     marker["seconds"])  # fmt: skip

    async def _pip(self, staging: Path, requirements_file: Path, vetted: Vetted) -> str:
        """pip installs into ``staging``/lib what ``vetted`` holds, from files written here (never the
        author's), in the author's code directory (its wheels are named from there)."""
        (staging / "requirements.txt").write_text(vetted.text)
        args = [
            self.python, "-m", "pip", "install", "--only-binary=:all:", "--target", str(staging / LIB),
            "--requirement", str(staging / "requirements.txt"), "--no-input", "--disable-pip-version-check",
            "--no-warn-script-location", *vetted.options,
        ]  # fmt: skip
        if vetted.constraints:
            (staging / "constraints.txt").write_text(vetted.constraints_text)
            args += ["--constraint", str(staging / "constraints.txt")]
        env = pip_environment(os.environ)
        proc = await asyncio.create_subprocess_exec(
            *args,
            cwd=str(requirements_file.parent),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            raise DeployError(
                f"pip install -r {requirements_file.name} did not finish within {self.timeout_s:g} seconds"
            ) from None
        finally:
            if proc.returncode is None:  # timed out or cancelled (the endpoint was deleted): stop pip
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                with contextlib.suppress(Exception):
                    await asyncio.shield(proc.wait())
        output = out.decode("utf-8", "replace")
        if proc.returncode != 0:
            command = f"pip install -r {requirements_file.name}"
            raise DeployError(f"{command} failed (exit {proc.returncode}):\n{pip_tail(output)}")
        return output

    def _publish(self, staging: Path, key: str, size: int, hold: Hold | None) -> None:
        try:
            self._shelf.place(key, size, hold, staging)
        except OSError as exc:
            raise DeployError(
                f"Could not place the installed requirements at {self.root / key}: {exc}"
            ) from exc

    # ---- locking ----
    @contextlib.asynccontextmanager
    async def _locked(self, key: str) -> AsyncIterator[None]:
        """One installer per key: an asyncio lock within this server, an flock across processes."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            fd = os.open(self._locks_dir / f"{key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(_LOCK_POLL_S)
                yield
            finally:
                os.close(fd)  # releases the flock
