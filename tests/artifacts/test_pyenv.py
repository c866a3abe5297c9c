"""Per-model requirements installs with the real pip, offline (a wheel built here, ``--no-index``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import tarfile
import zipfile
from pathlib import Path

import pytest

from zeroscale.artifacts.holds import Holds
from zeroscale.artifacts.pyenv import PythonEnvs, env_key, has_requirements, pip_environment, pip_tail
from zeroscale.artifacts.requirements import Vetted, vet
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
    assert lib.parent.name == env_key(vet(offline))
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
    assert not envs.is_complete(env_key(vet(req)))
    assert list((tmp_path / "pyenvs" / "tmp").iterdir()) == []


async def test_timeout_kills_pip(offline: Path, tmp_path: Path) -> None:
    envs = PythonEnvs(tmp_path / "pyenvs", timeout_s=0.05)
    with pytest.raises(DeployError, match=r"did not finish within 0\.05 seconds"):
        await envs.prepare(offline)
    assert list((tmp_path / "pyenvs" / "tmp").iterdir()) == []
    assert await PythonEnvs(tmp_path / "pyenvs").prepare(offline) is not None  # a later deploy retries


def test_key_is_content_and_interpreter() -> None:
    assert env_key(Vetted(["roman"])) == env_key(Vetted(["roman"]))
    assert env_key(Vetted(["roman"])) != env_key(Vetted(["roman==5"]))
    assert env_key(Vetted(["roman"])) != env_key(Vetted(["roman"], options=["--pre"]))


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


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("-e .\n", "-e asks for an editable install"),
        ("--editable=git+https://example.com/x.git\n", "--editable asks for an editable install"),
        ("--index-url http://169.254.169.254/simple\nroman\n", "--index-url asks for another package index"),
        ("roman -i http://10.0.0.1/\n", "-i asks for another package index"),
        ("--extra-index-url=https://evil.example/simple\n", "another package index"),
        ("-f https://evil.example/links\n", "-f asks for another link source"),
        ("--trusted-host evil.example\n", "an untrusted host"),
        ("--no-binary :all:\nroman\n", "a source build"),
        ("roman @ https://evil.example/roman-4.0-py3-none-any.whl\n", "is a URL or direct reference"),
        ("git+https://example.com/pkg.git\n", "is a URL or direct reference"),
        ("https://evil.example/pkg-1.0-py3-none-any.whl\n", "is a URL or direct reference"),
        ("./src/mypkg\n", "is a local source"),
        ("mypkg-1.0.tar.gz\n", "is a local source"),
        ("../other/pkg-1.0-py3-none-any.whl\n", "must be a wheel in the model's code directory"),
        ("/tmp/pkg-1.0-py3-none-any.whl\n", "must be a wheel in the model's code directory"),
        ("-r ../../etc/requirements.txt\n", "is not a file beside the requirements"),
        ("--global-option=--x roman\n", "the option --global-option is not accepted"),
    ],
)
async def test_what_would_run_the_authors_code_or_reach_other_hosts_is_refused(
    tmp_path: Path, text: str, why: str
) -> None:
    # pip runs outside the workers' sandbox, as the server's user: a build is the author's code running here
    code = tmp_path / "code"
    code.mkdir()
    envs = PythonEnvs(tmp_path / "pyenvs")
    with pytest.raises(DeployError, match=r"requirements\.txt line") as err:
        await envs.prepare(requirements(code, text))
    assert why in str(err.value)
    assert not (tmp_path / "pyenvs").exists() or list((tmp_path / "pyenvs").glob("*/lib")) == []


async def test_nested_files_are_held_to_the_same_rules(tmp_path: Path) -> None:
    code = tmp_path / "code"
    (code / "reqs").mkdir(parents=True)
    (code / "reqs" / "base.txt").write_text("roman >= 4 ; python_version >= '3.8'  # markers are pip's\n")
    (code / "reqs" / "more.txt").write_text("-c base.txt\n--extra-index-url https://evil.example/\n")
    envs = PythonEnvs(tmp_path / "pyenvs")
    with pytest.raises(DeployError, match=r"reqs/more.txt line 2: --extra-index-url"):
        await envs.prepare(requirements(code, "-r reqs/base.txt\n--requirement=reqs/more.txt\n"))


async def test_a_source_distribution_is_never_built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an index of one source distribution whose build would leave a file: pip installs wheels only
    index = tmp_path / "index" / "zsbuilt"
    index.mkdir(parents=True)
    proof = tmp_path / "built"
    setup = (
        f"open({str(proof)!r}, 'w').write('ran')\n"
        "from setuptools import setup\nsetup(name='zsbuilt', version='1.0')\n"
    ).encode()
    with tarfile.open(index / "zsbuilt-1.0.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("zsbuilt-1.0/setup.py")
        info.size = len(setup)
        tar.addfile(info, io.BytesIO(setup))
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))  # the server's pip settings reach pip
    monkeypatch.setenv(
        "PIP_NO_BUILD_ISOLATION", "0"
    )  # (pip's inverted flag) a build would use this setuptools
    code = tmp_path / "code"
    code.mkdir()
    with pytest.raises(DeployError, match=r"pip install -r requirements\.txt failed"):
        await PythonEnvs(tmp_path / "pyenvs").prepare(requirements(code, "--no-index\nzsbuilt==1.0\n"))
    assert not proof.exists()  # its setup.py never ran


def _evil_sdist(code: Path, proof: Path) -> None:
    """``evilpkg-1.0.tar.gz`` in the code directory: building it (its in-tree backend) writes ``proof``."""
    files = {
        "evilpkg-1.0/PKG-INFO": b"Metadata-Version: 2.1\nName: evilpkg\nVersion: 1.0\n",
        "evilpkg-1.0/pyproject.toml": b'[build-system]\nrequires = []\nbuild-backend = "backend"\n'
        b'backend-path = ["."]\n',
        "evilpkg-1.0/backend.py": f"open({str(proof)!r}, 'w').write('ran')\n".encode(),
    }
    with tarfile.open(code / "evilpkg-1.0.tar.gz", "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.parametrize(
    ("raw", "why"),
    [  # pip decodes by a byte-order mark or a PEP 263 line: options the UTF-8 reading never saw
        ("--no-index\n--find-links .\n--no-binary evilpkg\nevilpkg\n".encode("utf-16"), "not UTF-8 text"),
        (b"# -*- coding: utf-7 -*-\n+AC0ALQ-no-binary evilpkg\nevilpkg\n", "not UTF-8 text"),
        (b"evilpkg\x00\n", "not UTF-8 text"),
        (b"\xff\xfeevilpkg\n", "not UTF-8 text"),
        # quoted, a requirement holds what pip (splitting on spaces) reads as options
        (b'"evilpkg --no-binary evilpkg"\n', "cannot be read as a requirement"),
        (b"evilpkg ; extra == ' -ihttp://evil.example/'\n", "cannot be read as a requirement"),
        (b"evilpkg ; python_version > '3' -i http://evil.example/\n", "another package index"),
        (b"'./evil pkg-1.0-py3-none-any.whl'\n", "no spaces"),
    ],
)
async def test_what_pip_would_read_otherwise_than_the_vetting_is_refused(
    tmp_path: Path, raw: bytes, why: str
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    proof = tmp_path / "built"
    _evil_sdist(code, proof)
    (code / "evil pkg-1.0-py3-none-any.whl").write_bytes(b"")
    (code / "requirements.txt").write_bytes(raw)
    with pytest.raises(DeployError, match=why):
        await PythonEnvs(tmp_path / "pyenvs").prepare(code / "requirements.txt")
    assert not proof.exists()


async def test_pip_reads_what_was_vetted_markers_hashes_and_nested_files_kept(tmp_path: Path) -> None:
    """The file pip installs from is written by zeroscale: requirements canonical, markers and hashes kept,
    nested requirements flattened and constraints apart, pip's options given once on its command line."""
    code = tmp_path / "code"
    (code / "wheels").mkdir(parents=True)
    wheel = make_wheel(code / "wheels")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    (code / "more.txt").write_text("-c pins.txt\nroman ; python_version < '3'\n")
    (code / "pins.txt").write_text("roman==4.2\n")
    req = requirements(
        code,
        f"\ufeff--no-index\n./wheels/{wheel.name} ; python_version >= '3.8' --hash=sha256:{digest}\n"
        "-r more.txt\n",
    )
    vetted = vet(req)
    assert vetted.requirements == [
        f'./wheels/{wheel.name} ; python_version >= "3.8" --hash=sha256:{digest}',
        'roman; python_version < "3"',
    ]
    assert (vetted.constraints, vetted.options) == (["roman==4.2"], ["--no-index"])
    lib = await PythonEnvs(tmp_path / "pyenvs").prepare(req)
    assert lib is not None and (lib / "zsdemo.py").exists()  # roman's marker is false: not installed
    (code / "requirements.txt").write_text(f"--no-index\n./wheels/{wheel.name} --hash=sha256:{'0' * 64}\n")
    with pytest.raises(DeployError, match="HASHES"):  # pip checks the hash it was given
        await PythonEnvs(tmp_path / "other").prepare(req)


def test_pip_gets_none_of_the_servers_credentials() -> None:
    server = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "PIP_INDEX_URL": "https://pypi.internal/simple",
        "HTTPS_PROXY": "http://proxy:3128",
        "ZEROSCALE_SECRET_ACCESS_KEY": "s3cret",
        "AWS_SECRET_ACCESS_KEY": "aws-s3cret",
        "ZEROSCALE_DATABASE_URL": "postgresql://u:p@db/zs",
        "PYTHONPATH": "/elsewhere",
    }
    env = pip_environment(server)
    assert (
        env["PIP_INDEX_URL"] == "https://pypi.internal/simple" and env["HTTPS_PROXY"] == "http://proxy:3128"
    )
    assert not {
        "ZEROSCALE_SECRET_ACCESS_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "ZEROSCALE_DATABASE_URL",
        "PYTHONPATH",
    } & set(env)


def _offline_requirements(root: Path, name: str) -> Path:
    code = root / name
    code.mkdir()
    wheel = make_wheel(code, name=name)
    return requirements(code, f"--no-index\n./{wheel.name}\n")


async def test_past_the_capacity_unused_environments_go_least_recently_used_first(tmp_path: Path) -> None:
    """Three real installs, room for two: the least recently used one nothing keeps goes; one held by a
    deployment under way, or named by a pool's PYTHONPATH, stays; an evicted one is installed again."""
    clock = [1000.0]
    root = tmp_path / "pyenvs"
    files = {name: _offline_requirements(tmp_path, name) for name in ("zsa", "zsb", "zsc")}
    first = PythonEnvs(root, capacity_bytes=0, clock=lambda: clock[0])
    libs = {}
    for name in ("zsa", "zsb"):
        clock[0] += 60
        lib = await first.prepare(files[name])
        assert lib is not None
        libs[name] = lib
    assert first.load().entries == 2 and first.trim() == []  # not before the server says what it uses
    size = first.load().bytes // 2

    # a restart with room for two (the order and sizes read from disk)
    clock[0] += 120
    holds = Holds()  # the book a deployment's hold is from (the artifact cache's, in the server)
    envs = PythonEnvs(root, capacity_bytes=2 * size, holds=holds, clock=lambda: clock[0])
    in_use: set[str] = {str(libs["zsa"])}
    envs.in_use = lambda: in_use
    with holds.hold() as hold:
        clock[0] += 60
        lib = await envs.prepare(files["zsc"], hold)  # a third: zsb goes (zsa is in use, zsc held)
        assert lib is not None and (lib / "zsc.py").is_file()
        libs["zsc"] = lib
        assert not libs["zsb"].parent.exists() and libs["zsa"].is_dir()
    in_use.clear()  # zsa's endpoint went
    clock[0] += 60
    again = await envs.prepare(files["zsb"])  # installed again: zsa, the least recently used, goes
    assert again == libs["zsb"] and (again / "zsb.py").is_file()
    assert not libs["zsa"].parent.exists() and libs["zsc"].is_dir()
    assert envs.load().evictions == 2 and envs.load().entries == 2
