"""A spare's Landlock ruleset, prepared before it waits (``sandbox.prepare_landlock``): the common rules the
zygote noted go in early, ``confine`` adds the rest, and the worker's ruleset holds exactly the rules of its
own policy. Where the policy lacks one of the prepared rules, or handles other rights, the prepared ruleset
is dropped (Landlock rules cannot be taken back): the worker never gets a path its policy does not give."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from zeroscale.workers import sandbox

pytestmark = pytest.mark.skipif(sandbox.abi_version() == 0, reason="needs Landlock")

# Python itself must stay readable for the child to report: its installation's paths are in every policy.
PYTHON = sandbox.python_read_roots(Path("/nonexistent"))

CHILD = """
import json, os, sys
from zeroscale.workers import sandbox

noted, policy, probes = json.loads(sys.argv[1])
sandbox.note_common(noted)  # the zygote, for its next spares
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.close(r)
    out = {}
    try:
        abi = sandbox.abi_version()
        sandbox.prepare_landlock(abi)  # the spare, before it waits
        out["prepared"] = sandbox._early_ruleset is not None
        prepared_fd = sandbox._early_ruleset[1] if sandbox._early_ruleset else -1
        added = []
        real = sandbox._add_path
        sandbox._add_path = lambda fd, path, rights: added.append(path) or real(fd, path, rights)
        sandbox.confine(sandbox.Policy.from_dict(policy), abi)
        out["added"] = added
        out["left"] = sandbox._early_ruleset is not None
        try:
            os.fstat(prepared_fd)
            out["ruleset_open"] = True
        except OSError:
            out["ruleset_open"] = False
        for path in probes:
            try:
                os.listdir(path)
                out[path] = "ok"
            except PermissionError:
                out[path] = "denied"
    finally:
        os.write(w, json.dumps(out).encode())
        os._exit(0)
os.close(w)
data = os.read(r, 65536)
os.waitpid(pid, 0)
print(data.decode())
"""


def _policy(read: list[str], common: int, **extra: Any) -> dict[str, object]:
    fixed = {"devices": (), "nproc": 0, "nofile": 0, "net_ns": False}
    policy = sandbox.Policy(read=tuple(read), common=common, **fixed, **extra)
    return policy.to_dict()


def _run(noted: dict[str, object], policy: dict[str, object], probes: list[str]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([noted, policy, probes])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, str]:
    made = {}
    for name in ("shared", "other", "model", "outside"):
        (tmp_path / name).mkdir()
        made[name] = str(tmp_path / name)
    return made


def test_the_prepared_rules_are_used_and_only_the_workers_own_are_added(dirs: dict[str, str]) -> None:
    common = [*PYTHON, dirs["shared"], dirs["other"]]
    noted = _policy([*common, "/some/other/model"], len(common))
    policy = _policy([*common, dirs["model"]], len(common))
    seen = _run(noted, policy, [dirs["shared"], dirs["other"], dirs["model"], dirs["outside"]])
    assert seen["prepared"] is True
    assert seen["added"] == [dirs["model"]]  # the common rules were in the spare's ruleset already
    assert seen["left"] is False and seen["ruleset_open"] is False
    assert [seen[dirs[k]] for k in ("shared", "other", "model", "outside")] == ["ok", "ok", "ok", "denied"]


def test_a_policy_without_a_prepared_rule_gets_a_ruleset_of_its_own(dirs: dict[str, str]) -> None:
    """The zygote noted a rule this request's policy does not give: the prepared ruleset would grant it, so
    confine builds one anew and the path stays out of reach."""
    noted_common = [*PYTHON, dirs["shared"], dirs["other"]]
    noted = _policy(noted_common, len(noted_common))
    common = [*PYTHON, dirs["shared"]]
    policy = _policy([*common, dirs["model"]], len(common))
    seen = _run(noted, policy, [dirs["shared"], dirs["other"], dirs["model"]])
    assert seen["prepared"] is True
    assert seen["added"] == [*common, dirs["model"]]
    assert [seen[dirs[k]] for k in ("shared", "other", "model")] == ["ok", "denied", "ok"]


def test_a_policy_that_handles_other_rights_gets_a_ruleset_of_its_own(dirs: dict[str, str]) -> None:
    """Outbound access handles no TCP connect (Landlock ABI 4 and later): a ruleset prepared for the default
    would refuse it. (Where Landlock has no TCP rules, both handle the same rights: the prepared one does.)"""
    common = [*PYTHON, dirs["shared"]]
    noted = _policy(common, len(common))
    policy = _policy([*common, dirs["model"]], len(common), outbound=True)
    seen = _run(noted, policy, [dirs["shared"], dirs["model"], dirs["outside"]])
    assert seen["prepared"] is True
    rebuilt = sandbox.abi_version() >= 4
    assert seen["added"] == ([*common, dirs["model"]] if rebuilt else [dirs["model"]])
    assert [seen[dirs[k]] for k in ("shared", "model", "outside")] == ["ok", "ok", "denied"]


def test_a_request_without_landlock_closes_the_prepared_ruleset(dirs: dict[str, str]) -> None:
    common = [*PYTHON, dirs["shared"]]
    noted = _policy(common, len(common))
    policy = _policy([*common, dirs["model"]], len(common), landlock=False)
    seen = _run(noted, policy, [dirs["outside"]])
    assert seen["prepared"] is True and seen["left"] is False and seen["ruleset_open"] is False
    assert seen["added"] == [] and seen[dirs["outside"]] == "ok"
