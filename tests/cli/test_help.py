"""Every command and every option of the CLI says what it is for in --help."""

from __future__ import annotations

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
