"""What the best a front end could do on this machine: issue 15's data-plane figures (overhead at 1 client,
the RandomForest's and the trivial model's throughput at one client per core) through zeroscale (its main
port and its native data plane's port), through the floor proxy in Python
(bench/floor.py: uvicorn, no signature, no records) and through the floor proxy in C (bench/nativefloor.c:
one thread, epoll, no signature, no records), against the same warm workers hit directly, all with
bench/loadgen.py. The C proxy is what a non-Python data plane would cost if it did nothing but forward: no
front end can add less than it does here, so where it misses a target, the target is this machine's.

    .venv/bin/python -m bench.nativefloor [--rounds 3] [--seconds 2] [--poll-idle]

Each round runs every front end once per scenario, in turn; medians of the rounds are reported, with each
front end's own CPU per request (its process, from psutil). ``--poll-idle`` runs everything with idle CPUs
polling (``bench.common.idle_polling``: a machine's setting, root), for reference. Needs ``cc``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench.common import REPO, ROW, ServerProcess, build_models, free_port, idle_polling, pct
from bench.throughput import (
    BODY,
    ENDPOINT,
    RF_ENDPOINT,
    RF_WORKERS,
    _direct_request,
    _floor,
    _loadgen,
    _through_request,
    _workers,
    deploy_tp,
)

SOURCE = Path(__file__).resolve().parent / "nativefloor.c"


def build(out_dir: Path) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("bench.nativefloor needs a C compiler (cc)")
    binary = out_dir / "nativefloor"
    subprocess.run([compiler, "-O2", "-Wall", "-o", str(binary), str(SOURCE)], check=True)
    return binary


def start_native(binary: Path, port: int, workers: list[Path]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([str(binary), str(port), *map(str, workers)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError(f"nativefloor did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


def _plain(port: int, body: bytes) -> bytes:
    """An unsigned request for a floor proxy (it checks nothing)."""
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _cpu_s(proc: psutil.Process | None) -> float:
    if proc is None:
        return 0.0
    t = proc.cpu_times()
    return float(t.user + t.system)


@contextlib.contextmanager
def _fronts(binary: Path, workers: list[Path]) -> Iterator[dict[str, tuple[int, psutil.Process]]]:
    """The two floor proxies to ``workers``: name -> (port, process)."""
    c_port, py_port = free_port(), free_port()
    native = start_native(binary, c_port, workers)
    floor = _floor(py_port, workers)
    try:
        yield {
            "C floor proxy": (c_port, psutil.Process(native.pid)),
            "Python floor proxy": (py_port, psutil.Process(floor.pid)),
        }
    finally:
        for proc in (native, floor):
            proc.kill()
            proc.wait()


Plan = tuple[str, list[str], bytes, "psutil.Process | None"]


def _plans(
    srv: ServerProcess,
    fronts: dict[str, tuple[int, psutil.Process]],
    endpoint: str,
    body: bytes,
    workers: list[Path],
) -> list[Plan]:
    """Direct, zeroscale and each floor proxy: (name, loadgen targets, request, the front end's process)."""
    assert srv.proc is not None
    plans: list[Plan] = [
        ("direct", [f"unix:{w}" for w in workers], _direct_request(body), None),
        (
            "zeroscale",
            [f"tcp:127.0.0.1:{srv.port}"],
            _through_request(srv, endpoint, body),
            psutil.Process(srv.proc.pid),
        ),
        (
            "zeroscale, native port",
            [f"tcp:127.0.0.1:{srv.flags['native_port']}"],
            _through_request(srv, endpoint, body),
            psutil.Process(srv.proc.pid),
        ),
    ]
    for name, (port, proc) in fronts.items():
        plans.append((name, [f"tcp:127.0.0.1:{port}"], _plain(port, body), proc))
    return plans


def _scenario(
    plans: list[Plan], clients: int, rounds: int, seconds: float, tmp: Path
) -> dict[str, list[dict[str, float]]]:
    """Each path under bench/loadgen.py, ``clients`` closed-loop connections, in turn, ``rounds`` times."""
    runs: dict[str, list[dict[str, float]]] = {}
    for _name, targets, request, _ in plans:  # warm every path
        _loadgen(targets, request, clients, 0.5, tmp)
    for _ in range(rounds):
        for name, targets, request, proc in plans:
            c0 = _cpu_s(proc)
            out = _loadgen(targets, request, clients, seconds, tmp)
            used = _cpu_s(proc) - c0
            if int(out["errors"]):
                raise RuntimeError(f"{name}: {out['errors']} failed requests")
            every = max(1, int(out["total"]))  # the CPU window covers the warm-up's requests too
            runs.setdefault(name, []).append(
                {
                    "rps": float(out["rps"]),
                    "p50_ms": float(out["p50_s"]) * 1000,
                    "p99_ms": float(out["p99_s"]) * 1000,
                    "cpu_us": used / every * 1e6,
                }
            )
    return runs


def _connect(target: str) -> socket.socket:
    kind, _, where = target.partition(":")
    if kind == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(where)
        return sock
    host, _, port = where.rpartition(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _exchange(sock: socket.socket, request: bytes) -> float:
    """One request on a kept-alive connection, its answer read whole: seconds taken."""
    start = time.perf_counter()
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, rest = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"not answered 200: {head[:100]!r}")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        rest += sock.recv(65536)
    return time.perf_counter() - start


def _pairs(plans: list[Plan], pairs: int, rounds: int) -> dict[str, list[float]]:
    """Per front end: its request, then the same body straight to the first worker, ``pairs`` times per
    round, front ends in turn: each pair's difference (through - direct), in seconds."""
    direct = plans[0]
    diffs: dict[str, list[float]] = {}
    straight = _connect(direct[1][0])
    try:
        for _ in range(rounds):
            for name, targets, request, _ in plans[1:]:
                through = _connect(targets[0])
                try:
                    for _ in range(20):  # warm both
                        _exchange(through, request)
                        _exchange(straight, direct[2])
                    got = diffs.setdefault(name, [])
                    for _ in range(pairs):
                        t = _exchange(through, request)
                        got.append(t - _exchange(straight, direct[2]))
                finally:
                    through.close()
    finally:
        straight.close()
    return diffs


def _table(title: str, runs: dict[str, list[dict[str, float]]]) -> list[str]:
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    direct = med["direct"]
    lines = [
        f"\n{title}",
        "| path | req/s | of direct | p50 ms | p50 - direct p50 | p99 ms | front end's CPU us/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, m in med.items():
        cpu = "" if name == "direct" else f"{m['cpu_us']:.0f}"
        lines.append(
            f"| {name} | {m['rps']:,.0f} | {m['rps'] / direct['rps']:.2f} | {m['p50_ms']:.3f} | "
            f"{m['p50_ms'] - direct['p50_ms']:.3f} | {m['p99_ms']:.3f} | {cpu} |"
        )
    return lines


def _pair_table(title: str, diffs: dict[str, list[float]]) -> list[str]:
    lines = [
        f"\n{title}: per pair (through the front end, then straight to the worker), the difference",
        "| path | pairs | p50 ms | p90 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, values in diffs.items():
        ms = sorted(v * 1000 for v in values)
        p50, p90, p99 = (pct(ms, q) for q in (50, 90, 99))
        lines.append(f"| {name} | {len(ms):,} | {p50:.3f} | {p90:.3f} | {p99:.3f} |")
    return lines


def run(rounds: int, seconds: float, pairs: int) -> list[str]:
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="zsbench-nf-") as tmp_name:
        tmp = Path(tmp_name)
        binary = build(tmp)
        models = build_models(tmp)
        srv = ServerProcess(tmp / "srv", {"native_port": free_port()}).start()
        try:
            deploy_tp(srv, models)
            echo = _workers(srv, ENDPOINT, 2)
            n = RF_WORKERS
            rf = _workers(srv, RF_ENDPOINT, n)
            for model, endpoint, body, workers in (
                ("trivial model", ENDPOINT, BODY, echo[:1]),
                ("RandomForest (100 trees, 10 features)", RF_ENDPOINT, ROW, rf[:1]),
            ):
                with _fronts(binary, workers) as fronts:
                    plans = _plans(srv, fronts, endpoint, body, workers)
                    lines += _table(
                        f"{model}, 1 client, one worker", _scenario(plans, 1, rounds, seconds, tmp)
                    )
                    lines += _pair_table(f"{model}, one worker", _pairs(plans, pairs, rounds))
            with _fronts(binary, rf) as fronts:
                plans = _plans(srv, fronts, RF_ENDPOINT, ROW, rf)
                got = _scenario(plans, n, rounds, seconds, tmp)
                lines += _table(f"RandomForest, {n} clients, {n} workers", got)
            with _fronts(binary, echo) as fronts:  # issue 15's other throughput target (>= 0.70 of direct)
                plans = _plans(srv, fronts, ENDPOINT, BODY, echo)
                got = _scenario(plans, 2, rounds, seconds, tmp)
                lines += _table("trivial model, 2 clients, 2 workers", got)
        finally:
            srv.stop()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--pairs", type=int, default=300, help="overhead pairs per front end per round")
    parser.add_argument("--poll-idle", action="store_true", help="idle CPUs poll for the whole run (root)")
    args = parser.parse_args()
    context: Any = idle_polling() if args.poll_idle else contextlib.nullcontext()
    with context:
        lines = run(args.rounds, args.seconds, args.pairs)
    print("\n".join(lines))
    print(f"\n(bench/nativefloor.py, {REPO.name}: medians of {args.rounds} rounds of {args.seconds:g} s)")


if __name__ == "__main__":
    main()
