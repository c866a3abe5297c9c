"""code/requirements.txt through the real server: installed once at deploy time with pip (from PyPI) into a
per-model cached environment, reused by every worker, every endpoint with the same requirements, and
after a restart; a failing install fails the endpoint with pip's own words."""

from __future__ import annotations

import importlib.util
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from e2e.conftest import handler_model
from zeroscale.testing import ServerProcess, deploy, make_tar

# A small pure-Python package from PyPI that the test venv does not have (checked below).
PACKAGE = "roman"
REQUIREMENTS = b"roman>=4\n"

ROMAN = """
import json
import os

import roman


def model_fn(model_dir):
    return open(os.path.join(model_dir, "tag.txt")).read().strip()


def transform_fn(model, body, content_type, accept):
    number = int(json.loads(body))
    return json.dumps({"roman": roman.toRoman(number), "tag": model, "file": roman.__file__})
"""


@pytest.fixture(scope="module", autouse=True)
def _package_is_not_installed_here() -> None:
    """The point of these tests: the worker can import only what requirements.txt installed."""
    assert importlib.util.find_spec(PACKAGE) is None, f"{PACKAGE} is installed in the test venv"


def roman_model(root: Path, tag: str, requirements: bytes = REQUIREMENTS) -> str:
    root.mkdir(parents=True, exist_ok=True)
    return handler_model(root, ROMAN, {"code/requirements.txt": requirements, "tag.txt": tag.encode()})


def ask(smr: Any, endpoint: str, number: int) -> dict[str, Any]:
    resp = smr.invoke_endpoint(
        EndpointName=endpoint, Body=str(number).encode(), ContentType="application/json"
    )
    out: dict[str, Any] = json.loads(resp["Body"].read())
    return out


def markers(server: ServerProcess) -> dict[Path, int]:
    """Every finished environment's marker and its mtime."""
    return {p: p.stat().st_mtime_ns for p in (server.data_dir / "pyenvs").glob("*/complete")}


def installs(server: ServerProcess) -> int:
    """pip runs so far, from the server's whole log (appended to across restarts)."""
    return server.log_path.read_text(errors="replace").count("zeroscale.pyenv: installed requirements")


def test_requirements_are_installed_once_and_shared(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    started = time.monotonic()
    desc = deploy(sm, "roman-a", roman_model(tmp_path / "a", "first"))
    first_deploy_s = time.monotonic() - started
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    answer = ask(smr, "roman-a", 1994)
    assert answer["roman"] == "MCMXCIV"
    assert answer["tag"] == "first"
    pyenvs = (server.data_dir / "pyenvs").resolve()
    assert Path(answer["file"]).resolve().is_relative_to(pyenvs), answer["file"]
    installed = markers(server)
    assert len(installed) == 1
    marker = json.loads(next(iter(installed)).read_text())
    assert marker["requirements"] == REQUIREMENTS.decode()
    assert installs(server) == 1

    # A different model with the same requirements: same environment, no second pip run.
    started = time.monotonic()
    desc = deploy(sm, "roman-b", roman_model(tmp_path / "b", "second"))
    second_deploy_s = time.monotonic() - started
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    answer_b = ask(smr, "roman-b", 2024)
    assert answer_b == {"roman": "MMXXIV", "tag": "second", "file": answer["file"]}
    assert markers(server) == installed
    assert installs(server) == 1
    print(f"first deploy (pip install) {first_deploy_s:.2f}s, second deploy (cached) {second_deploy_s:.2f}s")


def test_concurrent_deploys_of_new_requirements_install_once(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    # shared by the two endpoints deployed at once; new to the server (comments are not part of the key)
    requirements = b"# both\nroman>=4.1\n"
    before = installs(server)
    urls = [roman_model(tmp_path / str(i), f"concurrent-{i}", requirements) for i in range(2)]
    results: dict[int, dict[str, Any]] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, deploy(sm, f"roman-c{i}", urls[i])))
        for i in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [results[i]["EndpointStatus"] for i in range(2)] == ["InService", "InService"], results
    assert ask(smr, "roman-c0", 4)["roman"] == "IV"
    assert ask(smr, "roman-c1", 9)["roman"] == "IX"
    assert installs(server) == before + 1
    assert list((server.data_dir / "pyenvs" / "tmp").iterdir()) == []


def test_requirements_in_a_sourcedir_tarball(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    """The sagemaker SDK's form: code and requirements.txt in sourcedir.tar.gz, named by the environment."""
    before = installs(server)
    (tmp_path / "m").mkdir()
    model = make_tar(tmp_path / "m" / "model.tar.gz", {"tag.txt": b"from sourcedir"})
    source = make_tar(
        tmp_path / "sourcedir.tar.gz", {"serve.py": ROMAN.encode(), "requirements.txt": REQUIREMENTS}
    )
    env = {"SAGEMAKER_PROGRAM": "serve.py", "SAGEMAKER_SUBMIT_DIRECTORY": f"file://{source}"}
    desc = deploy(sm, "roman-sourcedir", f"file://{model}", environment=env)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert ask(smr, "roman-sourcedir", 14) == {
        "roman": "XIV",
        "tag": "from sourcedir",
        "file": ask(smr, "roman-a", 1)["file"],
    }
    assert installs(server) == before  # the same requirements as roman-a: reused


def test_a_failing_install_fails_the_endpoint_with_pips_message(
    server: ServerProcess, sm: Any, tmp_path: Path
) -> None:
    before = markers(server)
    url = roman_model(tmp_path, "never", b"zeroscale-no-such-package-0xdead==1.0\n")
    desc = deploy(sm, "roman-missing", url)
    assert desc["EndpointStatus"] == "Failed"
    reason = desc["FailureReason"]
    assert "pip install -r requirements.txt failed" in reason, reason
    assert "No matching distribution found for zeroscale-no-such-package-0xdead" in reason, reason
    assert "Variant AllTraffic" in reason
    assert markers(server) == before  # nothing cached for a failure
    assert list((server.data_dir / "pyenvs" / "tmp").iterdir()) == []


def test_a_package_the_runtime_already_imported_keeps_the_runtimes_version(
    server: ServerProcess, sm: Any, smr: Any, tmp_path: Path
) -> None:
    source = ROMAN.replace("import roman", "import joblib as roman")  # joblib has no toRoman: use __file__
    source = source.replace('"roman": roman.toRoman(number), ', "")
    url = handler_model(tmp_path, source, {"code/requirements.txt": b"joblib\n", "tag.txt": b"j"})
    desc = deploy(sm, "joblib-again", url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert (server.data_dir / "pyenvs").resolve() not in Path(ask(smr, "joblib-again", 1)["file"]).parents
    logs = server.data_dir / "logs" / "joblib-again" / "AllTraffic"
    text = "".join(p.read_text() for p in logs.glob("*.log"))
    warning = re.search(r"requirements\.txt installed (.*), which the runtime had already imported", text)
    assert warning and "joblib" in warning[1].split(", "), text


def test_installed_environment_survives_a_restart(server: ServerProcess, tmp_path: Path) -> None:
    before = markers(server)
    count = installs(server)
    server.restart()
    smr = server.client("sagemaker-runtime")
    assert ask(smr, "roman-a", 3888) == {**ask(smr, "roman-b", 3888), "tag": "first"}
    assert ask(smr, "roman-a", 3888)["roman"] == "MMMDCCCLXXXVIII"
    assert markers(server) == before
    assert installs(server) == count  # the server log is appended to across the restart


def test_at_capacity_zero_only_the_environments_endpoints_use_are_kept(
    server_factory: Any, tmp_path: Path
) -> None:
    """--requirements-cache-mb 0: an environment stays while an endpoint uses it; once its endpoint is
    deleted it goes when the next one is installed, and the endpoint that uses the new one answers."""
    server = server_factory(requirements_cache_mb=0)
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    desc = deploy(sm, "roman-old", roman_model(tmp_path / "old", "old", b"roman>=4\n"))
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert ask(smr, "roman-old", 4)["roman"] == "IV"
    [old] = markers(server)
    sm.delete_endpoint(EndpointName="roman-old")
    while sm.list_endpoints(NameContains="roman-old")["Endpoints"]:
        time.sleep(0.05)
    desc = deploy(sm, "roman-new", roman_model(tmp_path / "new", "new", b"roman>=3.3\n"))
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    [new] = markers(server)  # the old one went when the new one was installed
    assert new != old and not old.exists()
    assert ask(smr, "roman-new", 9)["roman"] == "IX"
    metrics = server.metrics()
    assert "zeroscale_requirements_cache_entries 1.0" in metrics
    assert "zeroscale_requirements_cache_evictions_total 1.0" in metrics
