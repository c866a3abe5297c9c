"""``zeroscale serve`` as a user starts it (a subprocess): what it says when its flags cannot work."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from zeroscale.testing import ACCESS_KEY, SECRET_KEY, ServerProcess, deploy, free_port, make_tar

ZEROSCALE = Path(sys.executable).parent / "zeroscale"
ECHO = b"""
def model_fn(model_dir):
    return 1


def transform_fn(model, body, content_type, accept):
    return body, content_type
"""


def serve(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ZEROSCALE_")}
    environ.update(env or {}, COLUMNS="120")
    return subprocess.run(
        [str(ZEROSCALE), "serve", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def usage_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert "listening" not in proc.stdout
    return proc.stderr


@pytest.mark.parametrize(
    "url",
    ["ftp://10.0.0.5:8080", "10.0.0.5:8080", "http://", "http://10.0.0.5:8080/zeroscale", "http://h?x=1"],
)
def test_an_advertise_url_that_peers_cannot_use_is_a_usage_error(tmp_path: Path, url: str) -> None:
    err = usage_error(serve("--advertise-url", url, "--data-dir", str(tmp_path / "d"), cwd=tmp_path))
    assert "--advertise-url" in err and "is not http(s)://HOST[:PORT]" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_a_port_out_of_range_is_a_usage_error(tmp_path: Path, port: str) -> None:
    err = usage_error(serve("--port", port, "--data-dir", str(tmp_path / "d"), cwd=tmp_path))
    assert "--port" in err and "65535" in err
    err = usage_error(serve("--data-dir", str(tmp_path / "d"), cwd=tmp_path, env={"ZEROSCALE_PORT": port}))
    assert "65535" in err
    assert not (tmp_path / "d").exists()  # nothing was made


@pytest.mark.parametrize("live_workers", [False, True])
def test_ctrl_c_is_a_clean_shutdown(tmp_path: Path, live_workers: bool) -> None:
    server = ServerProcess(tmp_path / "data").start()
    proc = server.proc
    assert proc is not None
    try:
        if live_workers:
            model = tmp_path / "model.tar.gz"
            make_tar(model, {"code/inference.py": ECHO})
            desc = deploy(server.client("sagemaker"), "ctrl-c", f"file://{model}")
            assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
            answer = server.client("sagemaker-runtime").invoke_endpoint(EndpointName="ctrl-c", Body=b"[1]")
            assert answer["Body"].read() == b"[1]"
    finally:
        server.stop(signal.SIGINT)
    log = server.log()
    assert proc.returncode == 0, log
    assert "Aborted!" not in log and "Traceback" not in log


def runtime_error(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit 1 with one line of error (after any log lines), no traceback, no banner."""
    assert proc.returncode == 1, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert "listening" not in proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: "), proc.stderr
    return last


@pytest.mark.parametrize("url", ["garbage", "nosuchdb://x/y"])
def test_a_database_url_that_is_not_one_is_a_usage_error(tmp_path: Path, url: str) -> None:
    err = usage_error(serve("--port", str(free_port()), "--database-url", url, cwd=tmp_path, timeout=20))
    assert "--database-url" in err


def test_another_kind_of_database_is_a_usage_error_naming_the_two_it_stores_in(tmp_path: Path) -> None:
    url = "mysql+pymysql://zs:secret@127.0.0.1:3306/zs"  # SQLAlchemy knows it; zeroscale's SQL is not for it
    err = usage_error(serve("--port", str(free_port()), "--database-url", url, cwd=tmp_path, timeout=20))
    assert "--database-url" in err and "SQLite or PostgreSQL, not mysql" in err and "secret" not in err


def test_a_missing_postgresql_driver_names_the_extra(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")  # the driver the extra installs is here; psycopg2 is not
    assert importlib.util.find_spec("psycopg2") is None
    url = f"postgresql+psycopg2://zs:secret@127.0.0.1:{free_port()}/zs"
    line = runtime_error(serve("--port", str(free_port()), "--database-url", url, cwd=tmp_path, timeout=20))
    assert "--database-url" in line and "psycopg2" in line
    assert "pip install 'zeroscale[postgres]'" in line and "postgresql+psycopg://" in line
    assert "secret" not in line


def test_a_database_that_is_down_is_one_line(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://zs:secret@127.0.0.1:{free_port()}/zs"
    line = runtime_error(serve("--port", str(free_port()), "--database-url", url, cwd=tmp_path, timeout=30))
    assert "--database-url" in line and "127.0.0.1" in line and "secret" not in line


def test_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    err = usage_error(serve("--port", str(free_port()), "--data-dir", "afile", cwd=tmp_path, timeout=20))
    assert "--data-dir" in err and "not a directory" in err


@pytest.mark.parametrize("state", ["read-only", "full"])
def test_a_data_dir_that_cannot_be_written_is_one_line(tmp_path: Path, state: str) -> None:
    """An audit's server on a read-only or full file system ended in a traceback."""
    disk = tmp_path / "disk"
    disk.mkdir()
    options = "size=1m,ro" if state == "read-only" else "size=1m"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)], check=True)
    try:
        if state == "full":
            with open(disk / "filler", "wb", buffering=0) as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 4096)
        line = runtime_error(serve("--port", str(free_port()), "--data-dir", str(disk), cwd=tmp_path))
        assert f"--data-dir {disk}: cannot write there" in line, line
        why = "Read-only file system" if state == "read-only" else "No space left on device"
        assert why in line and "free space" in line, line
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)


def test_a_port_in_use_is_one_line_and_no_banner(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        line = runtime_error(serve("--port", port, "--data-dir", "d", cwd=tmp_path, timeout=30))
    assert f"--port {port}" in line and "in use" in line and "PORT=" in line
    assert not (tmp_path / "d" / "zeroscale.db").exists()  # nothing was built


def test_a_data_dir_another_server_uses_is_one_line_and_free_again_once_it_is_killed(tmp_path: Path) -> None:
    first = ServerProcess(tmp_path / "d").start()
    try:
        line = runtime_error(serve("--port", str(free_port()), "--data-dir", "d", cwd=tmp_path, timeout=30))
        assert first.proc is not None
        assert f"is in use by another zeroscale serve (pid {first.proc.pid})" in line and "--data-dir" in line
        first.stop(signal.SIGKILL)  # its lock goes with it
        first.start()
    finally:
        first.stop()


def test_port_0_is_any_free_port_and_the_banner_says_which(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ZEROSCALE_")}
    environ.update(ZEROSCALE_ACCESS_KEY_ID=ACCESS_KEY, ZEROSCALE_SECRET_ACCESS_KEY=SECRET_KEY)
    proc = subprocess.Popen(
        [str(ZEROSCALE), "serve", "--port", "0", "--data-dir", "d"],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        match = re.match(r"zeroscale listening on http://127\.0\.0\.1:(\d+) ", first)
        assert match, first
        port = int(match.group(1))
        assert port != 0
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=1) as resp:
                    assert resp.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0


@pytest.mark.parametrize("content", ["", "  \n", "two words\n", "t\u00f6ken\n"])
def test_a_metrics_token_file_without_one_token_is_one_line(tmp_path: Path, content: str) -> None:
    (tmp_path / "token").write_text(content)
    line = runtime_error(
        serve("--port", str(free_port()), "--metrics-token-file", "token", cwd=tmp_path, timeout=30)
    )
    assert "--metrics-token-file token: it must hold one token" in line


@pytest.mark.parametrize("name", ["http://proxy.example", "proxy.example:8080", "proxy.example/x", ""])
def test_an_allowed_host_that_is_not_a_name_is_a_usage_error(tmp_path: Path, name: str) -> None:
    err = usage_error(serve("--allowed-host", name, "--data-dir", str(tmp_path / "d"), cwd=tmp_path))
    assert "--allowed-host" in err and "is not a host name" in err


@pytest.mark.parametrize("spec", ["proxy.example", "10.0.0.0/33", "10.0.0.1 10.0.0.2x"])
def test_a_trusted_proxy_that_is_no_address_or_network_is_a_usage_error(tmp_path: Path, spec: str) -> None:
    err = usage_error(serve("--trusted-proxy", spec, "--data-dir", str(tmp_path / "d"), cwd=tmp_path))
    assert "--trusted-proxy" in err and "is not an IP address or network" in err
