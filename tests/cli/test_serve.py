"""``zeroscale serve`` as a user starts it (a subprocess): what it says when its flags cannot work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from zeroscale.testing import ServerProcess, deploy, make_tar

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
