"""``python -m zeroscale``: the ``zeroscale`` command, for a Python whose scripts directory is not on PATH."""

from zeroscale.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="zeroscale")
