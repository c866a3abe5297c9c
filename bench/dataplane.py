"""What a non-Python HTTP layer would buy: the floor app (bench/floor.py, the least a front end can do) under
uvicorn (uvloop + httptools, zeroscale's stack) and under Granian (a Rust HTTP server driving the same ASGI
app), both as a no-hop app and as a proxy to one trivial-model worker, at 1 and 2 connections, measured with
bench/loadgen.py; the server's CPU per request from psutil. Alternating rounds, medians reported.

    .venv/bin/python -m bench.dataplane [--rounds 3] [--duration 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from bench.common import IDLE_TAG, ROW, ServerProcess, build_models, deploy, free_port, worker_sockets
from bench.throughput import _plain_request


def _start(server: str, workers: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    args = [sys.executable, "-m", "bench.floor", "--port", str(port), "--server", server]
    for w in workers:
        args += ["--worker", w]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with urllib.request.urlopen(
                urllib.request.Request(f"http://127.0.0.1:{port}/", data=ROW, method="POST"), timeout=1
            ):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"floor under {server} did not start")


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _cpu(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _load(port: int, connections: int, duration: float, procs: list[psutil.Process]) -> dict[str, float]:
    with tempfile.NamedTemporaryFile(suffix=".req") as f:
        f.write(_plain_request(port))
        f.flush()
        c0 = _cpu(procs)
        out = subprocess.run(
            [sys.executable, "-m", "bench.loadgen", "--target", f"tcp:127.0.0.1:{port}", "--request-file",
             f.name, "--connections", str(connections), "--duration", str(duration), "--warmup", "0.5"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        used = _cpu(procs) - c0
    res = json.loads(out.stdout)
    every = max(1, int(res["total"]))  # the CPU window covers the warm-up's requests too
    return {"rps": float(res["rps"]), "p50_ms": float(res["p50_s"]) * 1000, "cpu_us": used / every * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="zsbench-dp-") as tmp:
        root = Path(tmp)
        models = build_models(root)
        srv = ServerProcess(root / "srv", {}).start()
        try:
            tags = [{"Key": IDLE_TAG, "Value": "3600"}]
            deploy(srv.client("sagemaker"), "dp", f"file://{models.echo}", max_concurrency=1, tags=tags)
            sockets = [str(p) for p in worker_sockets(srv.data_dir, "dp")]
            for _ in range(args.rounds):
                for server in ("uvicorn", "granian"):
                    for mode, workers in (("no-hop", []), ("proxy", sockets[:1])):
                        proc, port = _start(server, workers)
                        try:
                            for conns in (1, 2):
                                got = _load(port, conns, args.duration, _tree(proc.pid))
                                results.setdefault((server, mode, conns), []).append(got)
                        finally:
                            proc.terminate()
                            proc.wait(10)
        finally:
            srv.stop()
    print("| server | mode | connections | req/s | p50 ms | server CPU us/request |")
    print("|---|---|---:|---:|---:|---:|")
    for (server, mode, conns), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][2], kv[0][0])):
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {server} | {mode} | {conns} | {med['rps']:,.0f} | {med['p50_ms']:.3f} | {med['cpu_us']:.0f} |"
        )


if __name__ == "__main__":
    main()
