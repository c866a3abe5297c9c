"""The command the server's banner and `zeroscale deploy` tell a user to run next."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from zeroscale.progname import command_name


def _script(directory: Path) -> Path:
    directory.mkdir(parents=True)
    script = directory / "zeroscale"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    return script


def test_a_script_off_path_is_named_by_the_path_it_was_started_by(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After `make run`: .venv/bin is not on PATH, so a bare `zeroscale` would not be found."""
    _script(tmp_path / "repo" / ".venv" / "bin")
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setenv("PATH", str(tmp_path / "elsewhere"))
    monkeypatch.setattr(sys, "argv", [".venv/bin/zeroscale", "serve"])
    assert command_name() == ".venv/bin/zeroscale"
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "with space" / "zeroscale"), "serve"])
    assert command_name() == f"'{tmp_path}/with space/zeroscale'"


def test_the_script_on_path_is_zeroscale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = _script(tmp_path / "bin")
    monkeypatch.setenv("PATH", str(script.parent))
    monkeypatch.setattr(sys, "argv", [str(script), "serve"])
    assert command_name() == "zeroscale"
    other = _script(tmp_path / "other")  # another install of the same name: named by its path
    monkeypatch.setattr(sys, "argv", [str(other), "serve"])
    assert command_name() == str(other)


def test_python_dash_m_or_embedded_is_zeroscale(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/x/src/zeroscale/__main__.py", "serve"])
    assert command_name() == "zeroscale"
    monkeypatch.setattr(sys, "argv", [])
    assert command_name() == "zeroscale"
