"""The start banner's line on how this host's idle CPUs wait, when that costs requests latency.

A virtual machine whose guest halts an idle vCPU at once hands the CPU back to its host: a thread woken onto
it waits for the host to run the vCPU again, and the thread that wakes it waits for the interrupt that
does. A request through zeroscale makes four wake-ups (the client wakes the server, the server the worker,
and the same way back) where a client that calls the worker directly makes two, so on such a host each
request pays two more: docs/performance.md, "Idle CPUs that halt", measured them at about 0.09 ms of a
trivial model's overhead. Linux's ``haltpoll`` idle driver polls a while before halting
(``guest_halt_poll_ns``, 200,000 ns upstream, adapting itself to the wake-ups it sees); set to 0, it never
does.

zeroscale does not change it: it is the host's setting, a trade of idle CPU for latency for every process on
the machine. The line says what is set and where to change it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

CPUIDLE_DRIVER = Path("/sys/devices/system/cpu/cpuidle/current_driver")
HALT_POLL_NS = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def idle_line(read: Callable[[Path], str | None] = _read) -> str | None:
    """The banner's line when idle CPUs here halt at once under the ``haltpoll`` driver; None otherwise
    (another driver, polling on, or nothing to read: no line)."""
    if read(CPUIDLE_DRIVER) != "haltpoll" or read(HALT_POLL_NS) != "0":
        return None
    return (
        f"idle CPUs: halted at once ({HALT_POLL_NS} is 0): every request waits for halted CPUs to wake, "
        "about 0.1 ms of a trivial model's latency; a host-wide setting (200000 polls for up to 0.2 ms "
        "first), see docs/performance.md, 'Idle CPUs that halt'"
    )
