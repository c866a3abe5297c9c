"""The start banner's line on idle CPUs that halt at once (``zeroscale/hostidle.py``), on hosts as files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from zeroscale.hostidle import CPUIDLE_DRIVER, HALT_POLL_NS, idle_line


def host(files: dict[Path, str]) -> Callable[[Path], str | None]:
    return files.get


def test_a_haltpoll_host_that_never_polls_is_named_with_where_to_change_it() -> None:
    line = idle_line(host({CPUIDLE_DRIVER: "haltpoll", HALT_POLL_NS: "0"}))
    assert line is not None
    assert str(HALT_POLL_NS) in line and "docs/performance.md" in line


def test_a_host_whose_idle_cpus_poll_first_gets_no_line() -> None:
    assert idle_line(host({CPUIDLE_DRIVER: "haltpoll", HALT_POLL_NS: "200000"})) is None


def test_other_idle_drivers_and_unreadable_hosts_get_no_line() -> None:
    assert idle_line(host({CPUIDLE_DRIVER: "intel_idle", HALT_POLL_NS: "0"})) is None
    assert idle_line(host({CPUIDLE_DRIVER: "acpi_idle"})) is None
    assert idle_line(host({})) is None


def test_the_files_are_read_as_the_kernel_writes_them(tmp_path: Path) -> None:
    from zeroscale import hostidle

    driver, poll = tmp_path / "driver", tmp_path / "poll"
    driver.write_text("haltpoll\n")
    poll.write_text("0\n")
    files = {CPUIDLE_DRIVER: driver, HALT_POLL_NS: poll}
    assert idle_line(lambda p: hostidle._read(files[p])) is not None
    assert hostidle._read(tmp_path / "absent") is None
