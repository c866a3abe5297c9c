"""For tests and benchmarks of code that talks to zeroscale: start the real server as a subprocess on a free
port (its own data directory, fixed credentials), make boto3 clients for it, package a model.tar.gz,
deploy an endpoint and wait for it.

    server = ServerProcess(tmp_path / "data").start()
    try:
        deploy(server.client("sagemaker"), "demo", f"file://{make_tar(tmp_path / 'm.tar.gz', files)}")
        server.client("sagemaker-runtime").invoke_endpoint(EndpointName="demo", Body=b"[[1, 2]]")
    finally:
        server.stop()
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ACCESS_KEY = "AKIDZEROSCALETEST01"
SECRET_KEY = "zeroscale-test-secret-key-0123456789abcd"
REGION = "us-east-1"
SKLEARN_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    # Where servers keep their state when a test names no --database-url: None is SQLite in the data
    # directory; a function of the data directory gives a database URL (the same one for the same directory,
    # so a restart finds its state), e.g. a PostgreSQL database per data directory.
    databases: Callable[[Path], str] | None = None

    def __init__(
        self,
        data_dir: Path,
        flags: Mapping[str, Any] | None = None,
        env: Mapping[str, str | None] | None = None,
        cwd: Path | None = None,
    ):
        """``env`` adds to the server's environment; a None value removes that variable (e.g.
        ``{"ZEROSCALE_ACCESS_KEY_ID": None}`` for a server that generates its own credentials)."""
        self.data_dir = data_dir  # relative to ``cwd`` when that is given
        self.cwd = cwd
        self.flags = dict(flags or {})
        self.extra_env = dict(env or {})
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        if "database_url" not in self.flags and ServerProcess.databases is not None:
            self.flags["database_url"] = ServerProcess.databases((cwd or Path()).absolute() / data_dir)
        if "database_url" in self.flags and "iam_key_file" not in self.flags:
            # front ends on one database share the key sealing its IAM secrets, as an operator gives them one
            digest = hashlib.sha256(str(self.flags["database_url"]).encode()).hexdigest()[:16]
            self.flags["iam_key_file"] = Path(tempfile.gettempdir()) / f"zeroscale-iam-{digest}.key"
        self.log_path = (cwd or Path()) / data_dir.parent / f"{data_dir.name}-server.log"

    @property
    def db_url(self) -> str:
        """The server's SQLAlchemy database URL."""
        given = self.flags.get("database_url")
        return str(given) if given else f"sqlite:///{(self.cwd or Path()) / self.data_dir / 'zeroscale.db'}"

    @property
    def url(self) -> str:
        scheme = "https" if "tls_cert" in self.flags else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def native_url(self) -> str:
        """The native data plane's port (started with ``native_port``: a free port, ``free_port()``)."""
        return f"http://127.0.0.1:{self.flags['native_port']}"

    @property
    def ca_file(self) -> str | None:
        """With --tls-cert (a self-signed certificate in the tests): the file clients verify it with."""
        cert = self.flags.get("tls_cert")
        return str(cert) if cert else None

    def _ssl(self) -> ssl.SSLContext | None:
        return ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        args = [
            sys.executable,
            "-m",
            "zeroscale.cli.main",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        for key, value in self.flags.items():  # a list or tuple: the flag once per value
            for each in value if isinstance(value, list | tuple) else [value]:
                args += [f"--{key.replace('_', '-')}", str(each)]
        merged: dict[str, str | None] = {
            **os.environ,
            "ZEROSCALE_ACCESS_KEY_ID": ACCESS_KEY,
            "ZEROSCALE_SECRET_ACCESS_KEY": SECRET_KEY,
            **self.extra_env,
        }
        env = {key: value for key, value in merged.items() if value is not None}
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.cwd
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.url}/ping", timeout=1, context=self._ssl()) as resp,
            ):
                if resp.status == 200:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"server did not start: {self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def client(
        self, service: str, key: Mapping[str, str] | None = None, *, url: str | None = None, **config: Any
    ) -> Any:
        """A boto3 client of the server (``url``: another of its ports, e.g. ``native_url``), signing with the
        admin's credentials or ``key`` (an IAM access key as CreateAccessKey answers it), with no retries
        unless ``config`` says otherwise."""
        config.setdefault("retries", {"total_max_attempts": 1})
        return boto3.client(
            service,
            endpoint_url=url or self.url,
            region_name=REGION,
            aws_access_key_id=key["AccessKeyId"] if key else ACCESS_KEY,
            aws_secret_access_key=key["SecretAccessKey"] if key else SECRET_KEY,
            config=Config(**config),
            verify=self.ca_file,
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5, context=self._ssl()) as resp:
            return str(resp.read().decode())

    def workers(self, endpoint: str, variant: str = "AllTraffic") -> int:
        prefix = f'zeroscale_workers{{endpoint_name="{endpoint}",variant_name="{variant}"}} '
        for line in self.metrics().splitlines():
            if line.startswith(prefix):
                return int(float(line[len(prefix) :]))
        return 0


def self_signed_certificate(root: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost and its key (``root``/cert.pem, key.pem), made with openssl:
    what a server given ``--tls-cert``/``--tls-key`` serves, trusted by naming the certificate itself."""
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def make_tar(path: Path, files: Mapping[str, bytes | Path]) -> Path:
    """Write a model.tar.gz holding ``files`` (archive name -> bytes or a file to add)."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in files.items():
            if isinstance(content, Path):
                tar.add(content, arcname=name)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return path


def deploy(
    sm: Any,
    name: str,
    model_url: str,
    *,
    image: str = SKLEARN_IMAGE,
    memory_mb: int = 1024,
    max_concurrency: int = 2,
    provisioned: int | None = None,
    tags: list[dict[str, str]] | None = None,
    environment: Mapping[str, str] | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    """CreateModel + CreateEndpointConfig + CreateEndpoint named ``name``; waits for a final status."""
    container: dict[str, Any] = {"Image": image, "ModelDataUrl": model_url}
    if environment:
        container["Environment"] = dict(environment)
    sm.create_model(ModelName=name, PrimaryContainer=container)
    serverless: dict[str, Any] = {"MemorySizeInMB": memory_mb, "MaxConcurrency": max_concurrency}
    if provisioned:
        serverless["ProvisionedConcurrency"] = provisioned
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[{"VariantName": "AllTraffic", "ModelName": name, "ServerlessConfig": serverless}],
        Tags=tags or [],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=name)
    if not wait:
        return {}
    return wait_final(sm, name)


def wait_final(sm: Any, name: str, timeout_s: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        desc: dict[str, Any] = sm.describe_endpoint(EndpointName=name)
        if desc["EndpointStatus"] not in ("Creating", "Updating"):
            return desc
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} still {desc['EndpointStatus']}")
        time.sleep(0.05)


def wait_for(predicate: Any, timeout_s: float = 20.0, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval_s)


def mutate(
    rng: random.Random, data: bytes, inserts: list[bytes], edits: int = 3, cut: int = 4, repeat: bool = False
) -> bytes:
    """``data`` with 1 to ``edits`` random edits, for fuzzing a parser: a bit flipped, up to ``cut`` bytes
    cut, one of ``inserts`` put in, and with ``repeat`` a run of it repeated or the rest cut off."""
    out = bytearray(data)
    for _ in range(rng.randint(1, edits)):
        if not out:
            break
        at = rng.randrange(len(out))
        how = rng.randrange(5 if repeat else 3)
        if how == 0:
            out[at] ^= 1 << rng.randrange(8)
        elif how == 1:
            del out[at : at + rng.randint(1, cut)]
        elif how == 2:
            out[at:at] = rng.choice(inserts)
        elif how == 3:
            out[at:at] = out[at : at + rng.randint(1, 200)] * rng.randint(1, 5)
        else:
            del out[at:]
    return bytes(out)
