"""``--since`` as every command that takes it reads it: a duration back from now (``90s``, ``30m``, ``2h``,
``1d``, ``1w``), epoch seconds, or an ISO 8601 time (local time when it names no zone)."""

from __future__ import annotations

import datetime
import re

import click

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_EPOCH = re.compile(r"^\s*\d{9,}(?:\.\d+)?\s*$")
HELP = (
    "How far back: a duration (90s, 30m, 2h, 1d, 1w), epoch seconds, or an ISO 8601 time (local if no zone)."
)


def parse_since(value: str, now: float) -> int:
    """Epoch milliseconds; click's usage error naming ``--since`` for anything else."""
    relative = _RELATIVE.match(value)
    if relative:
        return int((now - float(relative[1]) * _UNITS[relative[2]]) * 1000)
    if _EPOCH.match(value):
        return int(float(value) * 1000)
    try:
        when = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a duration (30m, 2h, 1d), epoch seconds nor an ISO 8601 time",
            param_hint="--since",
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()
    return int(when.timestamp() * 1000)


def since_seconds(value: str, now: float) -> str:
    """``value`` as epoch seconds, the form every server API takes."""
    return f"{parse_since(value, now) / 1000:.3f}"
