"""The invoke path, this tree against another checkout of zeroscale: two servers side by side, the same load
generator (``bench/loadgen.py``, pre-signed requests, closed loop) alternating between them round by round,
and each server's CPU per request from its process's CPU time. The machine's noise hits both the same way;
the medians and their ratio are the figures.

    git worktree add --detach ../zs-base HEAD~3
    python -m bench.ab --baseline ../zs-base/src --model echo --clients 2 --seconds 3 --rounds 8

``--model rf`` sends the RandomForest row instead of the trivial model's echo. ``--deploy N`` measures
the control plane instead: each round, a fresh server per side takes N deployments (CreateModel,
CreateEndpointConfig and CreateEndpoint of the trivial model, from ``bench/scale.py``'s 16 boto3 threads),
and each side's deployments per second and server CPU per deployment are printed:

    python -m bench.ab --baseline ../zs-base/src --deploy 1500 --rounds 3
    python -m bench.ab --baseline ../zs-base/src --deploy 500 --rounds 2 --postgres  # state in PostgreSQL

Otherwise prints one line per server
(CPU per request, requests per second, p50) and the ratio new/baseline of the CPU per request, then where
each server's CPU went: its event loop's thread and its other threads (metering's writer, the audit trail,
executor threads), each in microseconds and time slices per request (``/proc/<pid>/task/*/schedstat``). A
background thread with about one time slice per request or more is handing the GIL back and forth with the
event loop.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from bench import scale
from bench import throughput as tp
from bench.common import ROW, build_models, scratch_postgres
from zeroscale.testing import ServerProcess

THIS_SRC = str(Path(__file__).resolve().parent.parent / "src")


@dataclass
class Side:
    name: str
    src: str
    server: ServerProcess | None = None
    request: bytes = b""
    cpu_us: list[float] = field(default_factory=list)
    # per request: (event loop thread us, its time slices, other threads us, their time slices)
    threads: list[tuple[float, float, float, float]] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)
    p50_us: list[float] = field(default_factory=list)


def run(
    baseline: str, model: str, clients: int, seconds: float, rounds: int, think_ms: float = 0.0
) -> list[Side]:
    sides = [Side("baseline", str(Path(baseline).resolve())), Side("this tree", THIS_SRC)]
    endpoint, body = (tp.ENDPOINT, tp.BODY) if model == "echo" else (tp.RF_ENDPOINT, ROW)
    with tempfile.TemporaryDirectory() as tmp_name:
        root = Path(tmp_name)
        models = build_models(root)
        scratch = root / "load"
        scratch.mkdir()
        try:
            for i, side in enumerate(sides):
                side.server = ServerProcess(root / f"server-{i}", env={"PYTHONPATH": side.src}).start()
                tp.deploy_tp(side.server, models)
                side.request = tp._through_request(side.server, endpoint, body)
                tp._loadgen([f"tcp:127.0.0.1:{side.server.port}"], side.request, clients, 1.0, scratch)
            for _ in range(rounds):
                for side in sides:
                    assert side.server is not None and side.server.proc is not None
                    proc = psutil.Process(side.server.proc.pid)
                    before, tasks_before = sum(proc.cpu_times()[:2]), _schedstat(proc.pid)
                    out = tp._loadgen(
                        [f"tcp:127.0.0.1:{side.server.port}"],
                        side.request,
                        clients,
                        seconds,
                        scratch,
                        think_ms,
                    )
                    spent = sum(proc.cpu_times()[:2]) - before
                    # the load generator's warm-up (0.5 s) is served too: count it at the measured rate
                    served = out["rps"] * (seconds + 0.5)
                    side.cpu_us.append(spent / served * 1e6)
                    side.threads.append(_per_thread(proc.pid, tasks_before, served))
                    side.rps.append(out["rps"])
                    side.p50_us.append(out["p50_s"] * 1e6)
        finally:
            for side in sides:
                if side.server is not None:
                    side.server.stop()
    return sides


def run_deploy(baseline: str, n: int, rounds: int, postgres: bool = False) -> list[Side]:
    """Each round, each side: a fresh server (the first 10 deployments warm it), then ``n`` deployments timed;
    ``Side.rps`` holds deployments per second, ``Side.cpu_us`` the server's CPU per deployment. With
    ``postgres``, each server's state is a fresh database of one PostgreSQL server (the tests' own)."""
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(scratch_postgres("zeroscale-bench-ab-"))[1] if postgres else None
        return _run_deploy(baseline, n, rounds, pg)


def _run_deploy(baseline: str, n: int, rounds: int, pg: Any) -> list[Side]:
    sides = [Side("baseline", str(Path(baseline).resolve())), Side("this tree", THIS_SRC)]
    with tempfile.TemporaryDirectory() as tmp_name:
        root = Path(tmp_name)
        models = build_models(root)
        for r in range(rounds):
            for i, side in enumerate(sides):
                env = {"PYTHONPATH": side.src}
                flags: dict[str, Any] = {"memory_budget_mb": 2_000_000}
                if pg is not None:
                    flags["database_url"] = pg.create_database()
                srv = ServerProcess(root / f"server-{r}-{i}", flags, env=env).start()
                try:
                    failed: list[str] = []
                    scale.deploy_range(srv, models, 0, 10, failed)
                    assert srv.proc is not None
                    proc = psutil.Process(srv.proc.pid)
                    before = sum(proc.cpu_times()[:2])
                    elapsed = scale.deploy_range(srv, models, 10, 10 + n, failed)
                    side.cpu_us.append((sum(proc.cpu_times()[:2]) - before) / n * 1e6)
                    side.rps.append(n / elapsed)
                    if failed:
                        raise SystemExit(
                            f"{side.name}: {len(failed)} deployments failed, the first: {failed[0]}"
                        )
                finally:
                    srv.stop()
                print(f"  round {r + 1} {side.name}: {side.rps[-1]:.0f} per s", flush=True)
    return sides


def _schedstat(pid: int) -> dict[int, tuple[int, int]]:
    """Each thread of ``pid``: (nanoseconds on a CPU, time slices), from its ``schedstat``."""
    out: dict[int, tuple[int, int]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns, _, slices = f.read().split()[:3]
        except (OSError, ValueError):
            continue  # a thread that ended meanwhile
        out[int(tid)] = (int(ns), int(slices))
    return out


def _per_thread(
    pid: int, before: dict[int, tuple[int, int]], served: float
) -> tuple[float, float, float, float]:
    """Per request: the event loop's (main) thread's us and time slices, then the other threads' together
    (threads that ended during the round are left out)."""
    loop_us = loop_slices = other_us = other_slices = 0.0
    for tid, (ns, slices) in _schedstat(pid).items():
        ns0, slices0 = before.get(tid, (0, 0))
        us, n = (ns - ns0) / 1e3 / served, (slices - slices0) / served
        if tid == pid:
            loop_us, loop_slices = us, n
        else:
            other_us, other_slices = other_us + us, other_slices + n
    return loop_us, loop_slices, other_us, other_slices


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", required=True, help="the other checkout's src directory")
    parser.add_argument("--model", choices=("echo", "rf"), default="echo")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument(
        "--think-ms", type=float, default=0.0, help="each client waits this long after an answer (ms)"
    )
    parser.add_argument(
        "--deploy", type=int, default=0, metavar="N", help="N deployments per round instead of invocations"
    )
    parser.add_argument("--postgres", action="store_true", help="with --deploy: the state in PostgreSQL")
    args = parser.parse_args()
    med = statistics.median
    if args.deploy:
        sides = run_deploy(args.baseline, args.deploy, args.rounds, args.postgres)
        for side in sides:
            each = " ".join(f"{x:.0f}" for x in side.rps)
            print(
                f"{side.name:10s} {med(side.rps):5.0f} deployments per s, server CPU "
                f"{med(side.cpu_us) / 1000:.2f} ms per deployment   rounds: {each}"
            )
        ratio = med(sides[1].cpu_us) / med(sides[0].cpu_us)
        print(
            f"this tree / baseline: server CPU per deployment {ratio:.3f}, deployments per s "
            f"{med(sides[1].rps) / med(sides[0].rps):.3f}"
        )
        return
    sides = run(args.baseline, args.model, args.clients, args.seconds, args.rounds, args.think_ms)
    for side in sides:
        print(
            f"{side.name:10s} server CPU {med(side.cpu_us):6.1f} us/request  {med(side.rps):8.0f} req/s  "
            f"p50 {med(side.p50_us):6.0f} us   rounds: {' '.join(f'{x:.0f}' for x in side.cpu_us)}"
        )
    print(f"this tree / baseline, server CPU per request: {med(sides[1].cpu_us) / med(sides[0].cpu_us):.3f}")
    for side in sides:
        loop_us, loop_n, other_us, other_n = (med(t[i] for t in side.threads) for i in range(4))
        print(
            f"{side.name:10s} per request: event loop thread {loop_us:6.1f} us, {loop_n:.2f} time slices; "
            f"other threads {other_us:6.1f} us, {other_n:.2f} time slices"
        )


if __name__ == "__main__":
    main()
