"""``--since`` as ``logs``, ``metrics`` and ``audit`` read it: a duration, epoch seconds or an ISO time."""

from __future__ import annotations

import datetime

import click
import pytest

from zeroscale.cli.since import parse_since, since_seconds

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90s", (NOW - 90) * 1000),
        ("30m", (NOW - 1800) * 1000),
        ("1.5h", (NOW - 5400) * 1000),
        ("1w", (NOW - 604800) * 1000),
        ("1799990000", 1799990000 * 1000),
        ("1799990000.5", 1799990000.5 * 1000),
        (
            "2027-01-15T08:00:00+00:00",
            datetime.datetime(2027, 1, 15, 8, tzinfo=datetime.UTC).timestamp() * 1000,
        ),
    ],
)
def test_the_forms(text: str, ms: float) -> None:
    assert parse_since(text, NOW) == int(ms)


def test_an_iso_time_without_a_zone_is_local_and_the_server_gets_epoch_seconds() -> None:
    local = datetime.datetime(2027, 1, 15, 8, 0)
    assert parse_since("2027-01-15T08:00", NOW) == int(local.astimezone().timestamp() * 1000)
    assert since_seconds("30m", NOW) == f"{NOW - 1800:.3f}"


@pytest.mark.parametrize("text", ["soon", "30x", "12345", ""])
def test_anything_else_is_a_usage_error_naming_the_option(text: str) -> None:
    with pytest.raises(click.BadParameter) as err:
        parse_since(text, NOW)
    assert err.value.param_hint == "--since"
