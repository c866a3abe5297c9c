"""Per-model requirements installs with the real pip, offline (a wheel built here, ``--no-index``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import zipfile
from pathlib import Path

import pytest

from zeroscale.artifacts.pyenv import PythonEnvs, env_key, has_requirements, pip_tail
from zeroscale.errors import DeployError


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def make_wheel(directory: Path, name: str = "zsdemo", version: str = "1.0") -> Path:
    """A minimal pure-Python wheel holding ``<name>.py`` (so no index and no build step are needed)."""
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n".encode(),
        f"{name}-{version}.dist-info/METADATA": metadata.encode(),
        f"{name}-{version}.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = f"{name}-{version}.dist-info/RECORD"
    lines = [_record_line(n, d) for n, d in files.items()] + [f"{record},,"]
    files[record] = ("\n".join(lines) + "\n").encode()
    path = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as whl:
        for member, data in files.items():
            whl.writestr(member, data)
    return path


def requirements(directory: Path, text: str) -> Path:
    path = directory / "requirements.txt"
    path.write_text(text)
    return path


@pytest.fixture
def offline(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    wheel = make_wheel(code)
    return requirements(code, f"--no-index\n./{wheel.name}\n")  # relative: pip runs in the code dir


def installs(caplog: pytest.LogCaptureFixture) -> int:
    return sum("installed requirements" in r.getMessage() for r in caplog.records)


async def test_installs_once_and_reuses(
    offline: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="zeroscale.pyenv")
    envs = PythonEnvs(tmp_path / "pyenvs")
    lib = await envs.prepare(offline)
    assert lib is not None
    assert (lib / "zsdemo.py").read_text() == "VERSION = '1.0'\n"
    assert lib.parent.name == env_key(offline.read_bytes())
    assert (lib.parent / "complete").is_file()
    assert await envs.prepare(offline) == lib
    # Another server (process) on the same data dir finds it too.
    assert await PythonEnvs(tmp_path / "pyenvs").prepare(offline) == lib
    assert installs(caplog) == 1
    assert list((tmp_path / "pyenvs" / "tmp").iterdir()) == []


async def test_concurrent_prepares_install_once(
    offline: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two instances (as two processes would: separate asyncio locks, one flock) and two deploys each."""
    caplog.set_level(logging.INFO, logger="zeroscale.pyenv")
    first, second = PythonEnvs(tmp_path / "pyenvs"), PythonEnvs(tmp_path / "pyenvs")
    libs = await asyncio.gather(*(envs.prepare(offline) for envs in (first, second, first, second)))
    assert len(set(libs)) == 1
    assert installs(caplog) == 1


async def test_nothing_to_install(tmp_path: Path) -> None:
    envs = PythonEnvs(tmp_path / "pyenvs")
    assert await envs.prepare(requirements(tmp_path, "# nothing yet\n\n   \n")) is None
    assert not has_requirements(b"# a\n\n")
    assert has_requirements(b"# a\nroman  # numerals\n")


async def test_failure_is_pips_message_and_is_not_cached(tmp_path: Path) -> None:
    envs = PythonEnvs(tmp_path / "pyenvs")
    req = requirements(tmp_path, "--no-index\nzeroscale-not-a-package==9\n")
    with pytest.raises(DeployError) as err:
        await envs.prepare(req)
    message = str(err.value)
    assert message.startswith("pip install -r requirements.txt failed (exit 1):")
    assert "zeroscale-not-a-package==9" in message
    assert not envs.is_complete(env_key(req.read_bytes()))
    assert list((tmp_path / "pyenvs" / "tmp").iterdir()) == []


async def test_timeout_kills_pip(offline: Path, tmp_path: Path) -> None:
    envs = PythonEnvs(tmp_path / "pyenvs", timeout_s=0.05)
    with pytest.raises(DeployError, match=r"did not finish within 0\.05 seconds"):
        await envs.prepare(offline)
    assert list((tmp_path / "pyenvs" / "tmp").iterdir()) == []
    assert await PythonEnvs(tmp_path / "pyenvs").prepare(offline) is not None  # a later deploy retries


def test_key_is_content_and_interpreter() -> None:
    assert env_key(b"roman\n") == env_key(b"roman\n")
    assert env_key(b"roman\n") != env_key(b"roman==5\n")


def test_pip_tail_keeps_the_errors() -> None:
    output = "\n".join(
        ["Looking in links: /x", "WARNING: Location 'file:///y' is ignored"]
        + [f"Collecting dep{i}" for i in range(30)]
        + ["ERROR: No matching distribution found for nope"]
    )
    tail = pip_tail(output)
    assert tail.endswith("ERROR: No matching distribution found for nope")
    assert "WARNING" not in tail
    assert len(tail.splitlines()) == 12
