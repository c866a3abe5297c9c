"""``zeroscale package`` as a user runs it (a subprocess), the archive it writes, and one round trip of that
archive through a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from zeroscale.cli.package import package_into_cache
from zeroscale.testing import ServerProcess, deploy

ZEROSCALE = Path(sys.executable).parent / "zeroscale"

INFERENCE = """
import roman
from helper import offset


def predict_fn(data, model):
    return [roman.toRoman(int(label) + offset()) for label in model.predict(data)]
"""


def zs(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [str(ZEROSCALE), "package", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


def failed(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stderr
    return proc.stderr


def members(archive: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar.getmembers():
            data = tar.extractfile(member)
            if data is not None:
                out[member.name] = data.read()
    return out


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A trained model file, a code directory (with a helper, a subpackage and debris) and requirements."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(80, 2))
    joblib.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), tmp_path / "model.joblib")
    code = tmp_path / "src"
    (code / "sub").mkdir(parents=True)
    (code / "__pycache__").mkdir()
    (code / "inference.py").write_text(textwrap.dedent(INFERENCE))
    (code / "helper.py").write_text("def offset():\n    return 1\n")
    (code / "sub" / "util.py").write_text("X = 1\n")
    (code / "__pycache__" / "helper.cpython-311.pyc").write_bytes(b"\0junk")
    (code / ".DS_Store").write_bytes(b"junk")
    (tmp_path / "reqs.txt").write_text("roman>=4\n")
    return tmp_path


def test_builds_the_sagemaker_layout(project: Path) -> None:
    out = ok(
        zs("model.joblib", "--code", "src", "--requirements", "reqs.txt", "-o", "model.tar.gz", cwd=project)
    )
    files = members(project / "model.tar.gz")
    assert sorted(files) == [
        "code/helper.py",
        "code/inference.py",
        "code/requirements.txt",
        "code/sub/util.py",
        "model.joblib",
    ]
    assert files["model.joblib"] == (project / "model.joblib").read_bytes()
    assert files["code/requirements.txt"] == b"roman>=4\n"
    assert files["code/inference.py"] == (project / "src" / "inference.py").read_bytes()
    assert out.startswith("wrote model.tar.gz (")
    assert "5 files" in out
    for name in files:
        assert f"  {name}" in out
    assert "zeroscale deploy" in out


def test_archives_are_reproducible_and_output_needs_force(project: Path) -> None:
    ok(zs("model.joblib", "--code", "src", "-o", "a.tar.gz", cwd=project))
    err = failed(zs("model.joblib", "--code", "src", "-o", "a.tar.gz", cwd=project))
    assert "a.tar.gz already exists; pass --force to overwrite it" in err
    first = (project / "a.tar.gz").read_bytes()
    ok(zs("model.joblib", "--code", "src", "-o", "a.tar.gz", "--force", cwd=project))
    assert (project / "a.tar.gz").read_bytes() == first
    ok(zs("model.joblib", "--code", "src", "-o", "b.tar.gz", cwd=project))
    assert (project / "b.tar.gz").read_bytes() == first


def test_invalid_input_is_one_clear_line(project: Path) -> None:
    assert "Model file missing.joblib does not exist" in failed(zs("missing.joblib", cwd=project))
    assert "--code nowhere: not a directory" in failed(zs("model.joblib", "--code", "nowhere", cwd=project))
    err = failed(zs("model.joblib", "--requirements", "nope.txt", cwd=project))
    assert "--requirements nope.txt: no such file" in err
    ok(zs("model.joblib", "-o", "m.tar.gz", cwd=project))
    assert "already an archive" in failed(zs("m.tar.gz", "-o", "n.tar.gz", cwd=project))
    assert "is a directory" in failed(zs("model.joblib", "-o", "src", cwd=project))
    assert not (project / "n.tar.gz").exists()


def test_warnings_code_without_inference_and_replaced_requirements(project: Path) -> None:
    code = project / "plain"
    code.mkdir()
    (code / "requirements.txt").write_text("old\n")
    proc = zs("model.joblib", "--code", "plain", "--requirements", "reqs.txt", "-o", "w.tar.gz", cwd=project)
    ok(proc)
    assert "warning: plain has no inference.py" in proc.stderr
    assert "replaces" in proc.stderr and "requirements.txt" in proc.stderr
    assert members(project / "w.tar.gz")["code/requirements.txt"] == b"roman>=4\n"
    # the code's own requirements.txt named again (the README's example): nothing is replaced, no warning
    (code / "inference.py").write_text("")
    proc = zs(
        "model.joblib",
        "--code",
        "plain",
        "--requirements",
        "plain/requirements.txt",
        "-o",
        "v.tar.gz",
        cwd=project,
    )
    ok(proc)
    assert "warning" not in proc.stderr


def test_a_missing_model_file_is_said_before_anything_about_the_output(project: Path) -> None:
    ok(zs("model.joblib", cwd=project))  # model.tar.gz, as the quickstart leaves it
    assert "Model file nosuch.joblib does not exist" in failed(zs("nosuch.joblib", cwd=project))


def test_deploys_bare_model_packaging_is_the_same_code(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``zeroscale deploy --model model.joblib --code src`` packages with the same function."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(project / "cache"))
    cached = package_into_cache(project / "model.joblib", project / "src")
    assert cached.parent == project / "cache" / "zeroscale" / "packages"
    assert package_into_cache(project / "model.joblib", project / "src") == cached  # content-addressed
    ok(zs("model.joblib", "--code", "src", "-o", "same.tar.gz", cwd=project))
    assert cached.read_bytes() == (project / "same.tar.gz").read_bytes()
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]  # no temporaries left


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("data")).start()
    yield proc
    proc.stop()


def test_the_archive_deploys_and_serves(server: ServerProcess, project: Path) -> None:
    ok(zs("model.joblib", "--code", "src", "--requirements", "reqs.txt", "-o", "model.tar.gz", cwd=project))
    sm: Any = server.client("sagemaker")
    desc = deploy(sm, "packaged", f"file://{project / 'model.tar.gz'}")
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resp = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName="packaged", Body=json.dumps([[2.0, 0.0], [-2.0, 0.0]]), ContentType="application/json"
    )
    # label + offset() from code/helper.py, as roman numerals from the package requirements.txt installed
    assert json.loads(resp["Body"].read()) == ["II", "I"]
    assert resp["ContentType"] == "application/json"


# ---- a bare model file is stored under the name its image loads --------------------------------------------


def test_a_bare_file_is_stored_as_its_image_expects(project: Path) -> None:
    (project / "model.joblib").rename(project / "clf.joblib")
    out = ok(zs("clf.joblib", "-o", "a.tar.gz", cwd=project))
    assert sorted(members(project / "a.tar.gz")) == ["model.joblib"]
    assert "clf.joblib is stored as model.joblib" in out
    assert "--image sklearn" in out
    (project / "clf.pkl").write_bytes((project / "clf.joblib").read_bytes())
    ok(zs("clf.pkl", "-o", "b.tar.gz", cwd=project))
    assert sorted(members(project / "b.tar.gz")) == ["model.pkl"]
    # each built-in image's name, guessed from the suffix or named with --image
    (project / "net.onnx").write_bytes(b"onnx")
    out = ok(zs("net.onnx", "-o", "c.tar.gz", cwd=project))
    assert sorted(members(project / "c.tar.gz")) == ["model.onnx"]
    assert "--image onnx" in out
    (project / "net.pth").write_bytes(b"torch")
    ok(zs("net.pth", "-o", "d.tar.gz", cwd=project))
    assert sorted(members(project / "d.tar.gz")) == ["model.pth"]
    (project / "booster.json").write_bytes(b"{}")
    out = ok(zs("booster.json", "--image", "xgboost", "-o", "e.tar.gz", cwd=project))
    assert sorted(members(project / "e.tar.gz")) == ["xgboost-model"]
    assert "booster.json is stored as xgboost-model" in out and "--image xgboost" in out
    # an image zeroscale does not know (bring your own): the file keeps its name
    out = ok(zs("booster.json", "--image", "byo-linear:1.0", "-o", "f.tar.gz", cwd=project))
    assert sorted(members(project / "f.tar.gz")) == ["booster.json"]
    assert "--image byo-linear:1.0" in out
    # the user's own model_fn loads the file by its own name
    (project / "src" / "inference.py").write_text(
        "import joblib\n\ndef model_fn(d):\n    return joblib.load(d + '/clf.joblib')\n"
    )
    ok(zs("clf.joblib", "--code", "src", "-o", "g.tar.gz", cwd=project))
    assert "clf.joblib" in members(project / "g.tar.gz")


def test_a_file_for_another_image_is_refused(project: Path) -> None:
    err = failed(zs("model.joblib", "--image", "pytorch", "-o", "a.tar.gz", cwd=project))
    assert "model.joblib looks like a sklearn model" in err and "--image sklearn" in err
    (project / "net.pt").write_bytes(b"torch")
    err = failed(zs("net.pt", "--image", "sklearn", "-o", "a.tar.gz", cwd=project))
    assert "--image pytorch" in err
    assert not (project / "a.tar.gz").exists()
