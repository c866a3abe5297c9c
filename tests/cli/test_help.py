"""Every command and every option of the CLI says what it is for in --help."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click

from zeroscale.cli.main import cli


def _undocumented(command: click.Command, path: str) -> list[str]:
    missing = [path] if not command.help else []
    missing += [
        f"{path} {param.opts[0]}"
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not param.help
    ]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            missing += _undocumented(sub, f"{path} {name}")
    return missing


def test_every_command_and_option_has_help_text() -> None:
    assert _undocumented(cli, "zeroscale") == []


def test_python_dash_m_zeroscale_is_the_command() -> None:
    """``python -m zeroscale`` runs the CLI (for a Python whose scripts directory is not on PATH)."""
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-m", "zeroscale", "endpoints", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Usage: zeroscale endpoints")
