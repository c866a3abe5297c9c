"""Where an invocation's time goes inside the server, against the same workers hit directly: the
RandomForest at MaxConcurrency N with N closed-loop clients (default: one per core), through zeroscale and
straight to its workers (before and after), with the server's per-request stamps
(``bench/spans_site/sitecustomize.py``): waiting to run, the request half, the worker's round trip as the
server sees it, the answer half, and what runs after the answer.

    .venv/bin/python -m bench.spans [--workers N] [--seconds 4] [--poll-idle] [--model echo]

``--model echo`` sends the trivial model's request instead (its worker answers at once: the spans are then
nearly all the server's own).

Compare the worker's round trip with the direct p50: what the worker takes longer when the server sends it
the request is neither half's CPU. Each run also reports the workers' scheduler counters per request, read
from ``/proc/<pid>/task/<tid>/schedstat`` and ``sched`` every 0.1 s while it runs (a worker serves each
connection on a thread that ends with it, so the counters are read while the connections are open): CPU
time, run delay (runnable, waiting for a core), time slices and migrations between cores.

``--methods`` also times five methods of the path in place, each call wrapped (the answer's one send, the
request's parse, the signature's two steps, the answer's parse): us per call, through zeroscale. With and
without ``--poll-idle``, it shows what a wake-up of a halted CPU costs the thread that makes it.

``--poll-idle`` holds ``/dev/cpu_dma_latency`` at 0 for the whole run (root): idle CPUs then poll instead of
halting, so no wake-up waits for a halted (virtual) CPU to come back. Run it with and without: what it
removes from the through-zeroscale gap is wake-ups landing on idle CPUs. (A machine's setting, for the
experiment only: it spins every idle CPU while the run goes.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

import psutil

from bench import throughput as tp
from bench.common import ROW, build_models, deploy, idle_polling, pct
from zeroscale.testing import ServerProcess

SITE = Path(__file__).resolve().parent / "spans_site"
# (label, from stamp, to stamp) of a span record (sitecustomize's docstring)
PARTS = (
    ("bytes arrived -> handler runs", 0, 1),
    ("request half (handler -> written to the worker)", 1, 2),
    ("worker round trip, as the server sees it", 2, 3),
    ("answer half (answer read -> written to the client)", 3, 4),
    ("after the answer (records)", 4, 5),
    ("bytes arrived -> answer written", 0, 4),
)


def _task_counters(pid: int) -> dict[int, tuple[int, int, int, int]]:
    """Each thread of ``pid``: (CPU ns, run delay ns, time slices, migrations)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            cpu, delay, slices = (int(x) for x in (task / "schedstat").read_text().split())
            sched = (task / "sched").read_text().splitlines()
        except (OSError, ValueError):
            continue
        moved = next((int(line.split()[-1]) for line in sched if line.startswith("se.nr_migrations")), 0)
        out[int(task.name)] = (cpu, delay, slices, moved)
    return out


class Counters:
    """The workers' threads' counters, sampled while a run goes: each thread's last reading less its first."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._first: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        self._last: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            for pid in self._pids:
                for tid, counters in _task_counters(pid).items():
                    self._first.setdefault((pid, tid), counters)
                    self._last[(pid, tid)] = counters
            if self._stop.wait(0.1):
                return

    def per_request(self, requests: float) -> str:
        self._stop.set()
        self._thread.join()
        total = [0, 0, 0, 0]
        for key, last in self._last.items():
            total = [t + b - a for t, a, b in zip(total, self._first[key], last, strict=True)]
        cpu, delay, slices, moved = (x / max(requests, 1.0) for x in total)
        return (
            f"workers per request: CPU {cpu / 1e3:.0f} us, run delay {delay / 1e3:.0f} us, "
            f"{slices:.2f} time slices, {moved:.2f} migrations"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=tp.RF_WORKERS, help="MaxConcurrency and clients")
    parser.add_argument("--seconds", type=float, default=4.0, help="each run")
    parser.add_argument(
        "--model", choices=("rf", "echo"), default="rf", help="the RandomForest or the trivial model"
    )
    parser.add_argument(
        "--poll-idle", action="store_true", help="hold /dev/cpu_dma_latency at 0 while it runs (root)"
    )
    parser.add_argument(
        "--methods", action="store_true", help="also time five methods of the path in place (us per call)"
    )
    args = parser.parse_args()
    with idle_polling(args.poll_idle):
        run(args.workers, args.seconds, args.model, args.methods)


def run(n: int, seconds: float, model: str = "rf", methods: bool = False) -> None:
    root = Path(tempfile.mkdtemp(prefix="zeroscale-bench-spans-"))
    models = build_models(root)
    spans = root / "spans.jsonl"
    timed = root / "spans.jsonl.methods"  # the sitecustomize's totals, with ``methods``
    path = os.pathsep.join(p for p in (str(SITE), os.environ.get("PYTHONPATH", "")) if p)
    env = {"ZEROSCALE_SPANS_FILE": str(spans), "PYTHONPATH": path}
    if methods:
        env["ZEROSCALE_SPANS_METHODS"] = "1"
    srv = ServerProcess(root / "srv", env=env).start()
    try:
        endpoint, url, body = (
            (tp.RF_ENDPOINT, f"file://{models.rf}", ROW)
            if model == "rf"
            else (tp.ENDPOINT, f"file://{models.echo}", tp.BODY)
        )
        deploy(srv.client("sagemaker"), endpoint, url, max_concurrency=n, provisioned=n)
        sockets = tp._workers(srv, endpoint, n)
        through = ([f"tcp:127.0.0.1:{srv.port}"], tp._through_request(srv, endpoint, body))
        direct = ([f"unix:{s}" for s in sockets], tp._direct_request(body))
        tmp = root / "loadgen"
        tmp.mkdir()
        tp._loadgen(*through, n, 1.0, tmp)  # warm
        server = psutil.Process(srv.proc.pid) if srv.proc is not None else None
        assert server is not None
        workers = [child.pid for child in server.children(recursive=True)]  # zygotes and templates are idle
        for label, (targets, request) in (("direct", direct), ("through", through), ("direct", direct)):
            if label == "through":
                spans.unlink(missing_ok=True)
                timed.unlink(missing_ok=True)
            counters = Counters(workers)
            out = tp._loadgen(targets, request, n, seconds, tmp)
            # the counters span the load generator's warm-up too (0.5 s at about the same rate)
            per_request = counters.per_request(out["rps"] * (seconds + 0.5))
            print(
                f"{label:8} {n} clients  {out['rps']:8.0f} req/s  p50 {out['p50_s'] * 1e3:.3f} ms  "
                f"p99 {out['p99_s'] * 1e3:.3f} ms  {per_request}",
                flush=True,
            )
        recorded = spans.read_text().splitlines() if spans.exists() else []
        totals: dict[str, list[int]] = json.loads(timed.read_text()) if timed.exists() else {}
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    records = [json.loads(line) for line in recorded]
    if not records:
        raise SystemExit("no spans recorded: the server did not load bench/spans_site (PYTHONPATH?)")
    print(f"{len(records)} invocations through zeroscale, in us:  p50  p90  p99")
    for label, a, b in PARTS:
        values = [(r[b] - r[a]) / 1000 for r in records]
        print(f"  {label:52} {pct(values, 50):7.0f} {pct(values, 90):7.0f} {pct(values, 99):7.0f}")
    if methods:
        if not totals:
            raise SystemExit("no method timings recorded (ZEROSCALE_SPANS_METHODS did not reach the server?)")
        print("methods timed in place through zeroscale (the wrapper's ~1 us included): us per call, and")
        print("calls (the warm-up's too)")
        for label, (ns, calls) in totals.items():
            print(f"  {label:72} {ns / max(calls, 1) / 1000:7.1f} {calls:8d}")


if __name__ == "__main__":
    main()
