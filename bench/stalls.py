"""What holds a zeroscale server's event loop: a thread of the server posts a callback to the loop every
millisecond (``bench/stalls_site/sitecustomize.py``), and a callback that waits past ``--after-us`` records
what the loop's thread, and every other busy thread, was doing then.

    .venv/bin/python -m bench.stalls [--workers 16] [--seconds 8] [--clients 0] [--after-us 600]

The server runs the reference RandomForest with ``--workers`` warm workers (MaxConcurrency and provisioned
concurrency), idle, or driven by ``--clients`` closed-loop clients (``bench/loadgen.py``). Prints the late
callbacks grouped by the loop thread's four innermost Python frames (the runner's and the server's start-up
frames around them left out), with their count and worst lateness. A group without such frames is the
loop waiting in C: uvloop running or polling, the GIL held by another thread (the busiest other threads
listed beside it), or the machine not running the loop's thread.

With 16 workers on 2 cores (2026-12-04), the memory watchdog's once-a-second pass was such a group (1.6 ms
each second) until it moved to a thread (``workers/extramem.py``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import tempfile
import time
from pathlib import Path

from bench import throughput as tp
from bench.common import ROW, build_models, deploy
from zeroscale.testing import ServerProcess

SITE = Path(__file__).resolve().parent / "stalls_site"


def _ours(frames: str) -> str:
    """The server's own frames of a stack (innermost first), or what the loop was in when it has none."""
    outer = (
        "asyncio/runners.py:",
        "stalls_site/sitecustomize.py:",
        "uvicorn/_compat.py:",
        "uvicorn/server.py:",
        "zeroscale/server.py:serve",
        "cli/main.py:",
        "click/core.py:",
        "<frozen",
    )
    kept = [f for f in frames.split(";") if ".py:" in f and not f.startswith(outer)]
    in_c = "(the loop in C: polling, running C callbacks, or waiting for the GIL)"
    return ";".join(kept[:4]) if kept else in_c


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=16, help="warm RandomForest workers")
    parser.add_argument("--seconds", type=float, default=8.0, help="how long to watch")
    parser.add_argument("--clients", type=int, default=0, help="closed-loop clients (0: the server idles)")
    parser.add_argument("--after-us", type=int, default=600, help="a callback this late is recorded")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="zeroscale-bench-stalls-"))
    models = build_models(root)
    record = root / "stalls.jsonl"
    path = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)
    env = {
        "ZEROSCALE_STALLS_FILE": str(record),
        "ZEROSCALE_STALLS_AFTER_US": str(args.after_us),
        "PYTHONPATH": path,
    }
    srv = ServerProcess(root / "srv", {"memory_budget_mb": 1_000_000}, env=env).start()
    try:
        n = args.workers
        rf = f"file://{models.rf}"
        deploy(srv.client("sagemaker"), tp.RF_ENDPOINT, rf, max_concurrency=n, provisioned=n)
        tp._workers(srv, tp.RF_ENDPOINT, n)
        time.sleep(2.0)  # the deployment's own work done
        record.write_text("")
        if args.clients:
            tmp = root / "loadgen"
            tmp.mkdir()
            request = tp._through_request(srv, tp.RF_ENDPOINT, ROW)
            out = tp._loadgen([f"tcp:127.0.0.1:{srv.port}"], request, args.clients, args.seconds, tmp)
            print(f"{args.clients} clients: {out['rps']:.0f} req/s, p50 {out['p50_s'] * 1e3:.2f} ms")
        else:
            time.sleep(args.seconds)
        lines = record.read_text().splitlines()
    finally:
        srv.stop()
    groups: dict[str, list[int]] = collections.defaultdict(list)
    others: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in lines:
        seen = json.loads(line)
        key = _ours(seen["loop"])
        groups[key].append(seen["late_us"])
        for other in seen["others"]:
            others[key][other.split(";")[0]] += 1
    total = sum(len(v) for v in groups.values())
    print(f"{total} callbacks later than {args.after_us} us in {args.seconds:g} s ({n} workers)")
    for key, late in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        busy = ", ".join(f"{k} x{c}" for k, c in others[key].most_common(3))
        also = f"  [other threads: {busy}]" if busy else ""
        print(f"  {len(late):5d}  worst {max(late):6d} us  {key}{also}")


if __name__ == "__main__":
    main()
