"""The machine the benchmark runs on: who else uses its CPUs, what a wake-up costs, what it is."""

from __future__ import annotations

import itertools
import math
import os
import platform
import socket
import threading
import time
from pathlib import Path

import psutil

from bench.common import machine_busy_s


class Background:
    """Samples CPU used by the whole machine and by this benchmark's process tree every 0.5 s, so each
    scenario can say how much CPU other processes (other users of a shared machine) took meanwhile.
    Approximate: a process of ours that exits between two samples loses its last CPU to "others"."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (t, machine busy s, ours busy s)
        self._stop = threading.Event()
        self._me = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _ours(self) -> float:
        total = 0.0
        try:
            procs = [self._me, *self._me.children(recursive=True)]
        except psutil.Error:
            return 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic(), machine_busy_s(), self._ours()))
            self._stop.wait(0.5)

    def others_cores(self, t0: float, t1: float) -> float:
        window = [s for s in self.samples if t0 <= s[0] <= t1]
        if len(window) < 2:
            return math.nan
        total = 0.0
        for (_, ma, oa), (_, mb, ob) in itertools.pairwise(window):
            total += max(0.0, (mb - ma) - max(0.0, ob - oa))
        return total / (window[-1][0] - window[0][0])

    def wait_quiet(self, timeout_s: float, limit_cores: float = 0.3, window_s: float = 5.0) -> float:
        """Wait until other processes used under ``limit_cores`` over the last ``window_s``; returns that."""
        deadline = time.monotonic() + timeout_s
        time.sleep(window_s)
        while True:
            now = time.monotonic()
            others = self.others_cores(now - window_s, now)
            if others < limit_cores or now > deadline:
                return others
            time.sleep(1.0)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def wakeup_cost(
    gaps_s: tuple[float, ...] = (0.0, 0.005), rounds: int = 300
) -> dict[float, tuple[float, float]]:
    """Round trip of one byte between two processes over a socketpair, back to back and after both sat
    idle for a while: what one more process on a request's path costs on this machine beyond its own CPU.
    Returns gap -> (p50, p99) in seconds."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the echoing child
        ours.close()
        while (data := theirs.recv(1)) not in (b"", b"q"):
            theirs.sendall(data)
        os._exit(0)
    theirs.close()
    out: dict[float, tuple[float, float]] = {}
    try:
        for gap in gaps_s:
            times = []
            for _ in range(rounds):
                if gap:
                    time.sleep(gap)
                t = time.perf_counter()
                ours.sendall(b"x")
                ours.recv(1)
                times.append(time.perf_counter() - t)
            times.sort()
            out[gap] = (times[len(times) // 2], times[int(len(times) * 0.99)])
    finally:
        ours.sendall(b"q")
        ours.close()
        os.waitpid(pid, 0)
    return out


def describe(
    plan: object,
    t_start: float,
    windows: dict[str, tuple[float, float, float]],
    bg: Background,
    wake: dict[float, tuple[float, float]],
) -> str:
    """The Environment section; ``wake`` is ``wakeup_cost()`` measured before the scenarios."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    def version(dist: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(dist)
        except Exception:
            return "-"

    hot, idle = wake[0.0], wake[0.005]
    lines = [
        "## Environment",
        "",
        f"- {cpu}, {psutil.cpu_count()} logical cores, {psutil.virtual_memory().total / 2**30:.0f} GiB; "
        f"Linux {platform.release()}; Python {platform.python_version()}; numpy {version('numpy')}, "
        f"scikit-learn {version('scikit-learn')}, uvicorn {version('uvicorn')}, ray {version('ray')}",
        f"- plan: {plan}; scheduling priority (nice) {os.getpriority(os.PRIO_PROCESS, 0)} for the benchmark "
        "and every process it starts (servers, zygotes, workers, baselines, load generators, Ray)",
        f"- total wall time {time.monotonic() - t_start:.0f} s",
        "- wake-up cost on this machine (measured before the scenarios): a 1-byte round trip between two "
        f"processes takes p50 "
        f"{hot[0] * 1e6:.0f} us (p99 {hot[1] * 1e6:.0f} us) back to back, p50 {idle[0] * 1e6:.0f} us "
        f"(p99 {idle[1] * 1e6:.0f} us) when both sat idle 5 ms before it: each extra process on a request's "
        "path costs more when the model keeps it waiting",
        "- CPU taken by other processes on the machine during each scenario (cores, approximate) and the "
        "1-minute load average at its start:",
    ]
    for name, (t0, t1, load) in windows.items():
        lines.append(f"  - {name}: {bg.others_cores(t0, t1):.2f} cores, load {load:.2f}")
    return "\n".join(lines)
