"""A real PostgreSQL server for tests: Debian's binaries, a fresh cluster in a temporary directory, on a free
loopback port, its Unix socket in the cluster's directory.

    with PostgresServer(workdir) as pg:
        url = pg.create_database("demo")   # postgresql+psycopg://postgres@127.0.0.1:PORT/demo

initdb refuses to run as root: as root the cluster belongs to the ``postgres`` user (``runuser``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


def find_bin(name: str) -> str:
    """``/usr/lib/postgresql/<newest>/bin/<name>``, else PATH."""
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    if candidates:
        return candidates[-1]
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"PostgreSQL's {name} not found (apt-get install postgresql)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(self, workdir: Path, startup_timeout_s: float = 30.0) -> None:
        self.workdir = workdir
        self.data = workdir / "pgdata"
        self.port = 0
        self.startup_timeout_s = startup_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = "postgres" if os.geteuid() == 0 else None
        self._count = 0

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", self._user, "--", *args] if self._user else args

    def start(self) -> PostgresServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.workdir, entry.pw_uid, entry.pw_gid)  # its parents must let the owner through
        subprocess.run(
            self._as_owner([find_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
                            "--no-sync", "-E", "UTF8"]),
            check=True,
            capture_output=True,
        )  # fmt: skip
        for _ in range(3):  # a port picked as free can be taken before postgres binds it
            self.port = _free_port()
            if self._launch():
                return self
        raise RuntimeError(f"PostgreSQL did not start: {self.log_tail()}")

    def _launch(self) -> bool:
        with (self.workdir / "postgres.log").open("ab") as log:
            self._proc = subprocess.Popen(
                self._as_owner([find_bin("postgres"), "-D", str(self.data), "-p", str(self.port),
                                "-h", "127.0.0.1", "-k", str(self.data), "-c", "fsync=off",
                                "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                "-c", "max_connections=200"]),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        if self._wait_ready():
            return True
        self._kill()
        return False

    def pause(self) -> None:
        """Stop the server, keeping its data (the database is gone until ``resume``)."""
        self._kill()

    def resume(self) -> None:
        """Start it again on the same port with the same data."""
        if not self._launch():
            raise RuntimeError(f"PostgreSQL did not restart: {self.log_tail()}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                return False
            ready = subprocess.run(
                [find_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"], check=False
            )
            if ready.returncode == 0:
                return True
            time.sleep(0.1)
        return False

    def log_tail(self) -> str:
        try:
            return (self.workdir / "postgres.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "zs") -> str:
        """A new empty database; its SQLAlchemy URL."""
        import psycopg

        self._count += 1
        name = f"{prefix}_{os.getpid()}_{self._count}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:  # fmt: skip
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 2)  # SIGINT: fast shutdown
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait()

    def stop(self) -> None:
        self._kill()
        shutil.rmtree(self.data, ignore_errors=True)
