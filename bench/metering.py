"""What metering costs the invoke path: the same warm-invoke loop against two servers started in the same
run, one with metering on (the default) and one with ``--no-metering``, in interleaved blocks so both see
the same machine; plus the sink's own cost per invocation, measured in process.

    .venv/bin/python -m bench.metering [--requests N] [--block N]

The endpoint is a handler that returns its input (the cheapest model there is), so any per-request cost
of metering is as large a share of the latency as it can be. Writes bench/results/metering.md.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bench.common import (
    ACCESS_KEY,
    REGION,
    RESULTS,
    SECRET_KEY,
    ServerProcess,
    SignedClient,
    deploy,
    make_tar,
    pct,
)
from zeroscale.events import InvocationRecord
from zeroscale.metering.journal import Journal
from zeroscale.metering.ledger import Ledger
from zeroscale.metering.sink import MeteringSink

ECHO = b"def model_fn(model_dir):\n    return None\n\n\ndef predict_fn(data, model):\n    return data\n"
BODY = json.dumps([[0.5] * 10]).encode()


def sink_append_ns(n: int, db: Path, journal: Path | None = None) -> tuple[float, float]:
    """Median ns per ``MeteringSink.invocation`` (what the invoke path pays), and ms to write 1000 records
    (what the writer thread pays, off the event loop); with ``journal``, each record is journaled too."""
    ledger = Ledger(f"sqlite:///{db}")
    sink = MeteringSink(
        ledger, flush_interval_s=3600, max_batch=10**9, journal=Journal(journal) if journal else None
    )
    sink.start()
    rec = InvocationRecord(
        "ep", "AllTraffic", "w1", time.time(), 0.0042, 0.0051, 80, 20, 200, "", 1024, None, False
    )
    appends, writes = [], []
    for _ in range(20):
        start = time.perf_counter_ns()
        for _ in range(n):
            sink.invocation(rec)
        appends.append((time.perf_counter_ns() - start) / n)
        start = time.perf_counter_ns()
        sink.flush()
        writes.append((time.perf_counter_ns() - start) / n * 1000 / 1e6)
    ledger.close()
    return statistics.median(appends), statistics.median(writes)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=6000, help="timed requests per server")
    parser.add_argument("--block", type=int, default=100, help="requests per interleaved block")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zeroscale-bench-metering-") as tmp:
        root = Path(tmp)
        model = make_tar(root / "echo.tar.gz", {"code/inference.py": ECHO})
        servers = {
            "on": ServerProcess(root / "on").start(),
            "off": ServerProcess(root / "off", env={"ZEROSCALE_METERING": "false"}).start(),
        }
        try:
            clients = {}
            for name, server in servers.items():
                desc = deploy(server.client("sagemaker"), "echo", f"file://{model}", max_concurrency=1)
                assert desc["EndpointStatus"] == "InService", desc
                clients[name] = SignedClient(server.url)
                for _ in range(300):  # warm up: connections, worker, caches
                    clients[name].invoke("echo", BODY)
            latencies: dict[str, list[float]] = {"on": [], "off": []}
            paired: list[float] = []  # p50 on / p50 off of each pair of neighbouring blocks
            rng = random.Random(0)
            for _ in range(args.requests // args.block):
                order = ["on", "off"]
                rng.shuffle(order)
                block: dict[str, list[float]] = {}
                for name in order:
                    client = clients[name]
                    block[name] = []
                    for _ in range(args.block):
                        start = time.perf_counter()
                        client.invoke("echo", BODY)
                        block[name].append(time.perf_counter() - start)
                    latencies[name] += block[name]
                paired.append(statistics.median(block["on"]) / statistics.median(block["off"]))
            metered = _metered(servers["on"])
        finally:
            for server in servers.values():
                server.stop()
        append_ns, write_ms = sink_append_ns(10_000, root / "sink.db", root / "journal")
        bare_ns, _ = sink_append_ns(10_000, root / "bare.db")
    on, off = latencies["on"], latencies["off"]
    rows = [
        ("warm invoke p50", pct(on, 50), pct(off, 50)),
        ("warm invoke p99", pct(on, 99), pct(off, 99)),
        ("warm invoke mean", statistics.fmean(on), statistics.fmean(off)),
    ]
    lines = [
        "| figure | metering on ms | metering off ms | ratio on/off |",
        "|---|---:|---:|---:|",
        *(f"| {label} | {a * 1000:.3f} | {b * 1000:.3f} | {a / b:.3f} |" for label, a, b in rows),
    ]
    lines.append(
        f"| p50 ratio of neighbouring blocks, median of {len(paired)} pairs | | | "
        f"{statistics.median(paired):.3f} |"
    )
    table = "\n".join(lines)
    expected = len(on) + 300
    notes = (
        f"{len(on)} timed requests per server in interleaved blocks of {args.block} (plus 300 warm-up each), "
        "echo handler, MaxConcurrency 1, one signed keep-alive client.\n"
        f"The metered server recorded {metered} invocations (expected {expected}).\n"
        f"In process: `MeteringSink.invocation` costs {append_ns:.0f} ns a call (median) with the usage "
        f"journal (one line written to the OS per record, no fsync), {bare_ns:.0f} ns without it; the "
        f"writer thread spends {write_ms:.2f} ms per 1000 records writing them to SQLite, off the event loop."
    )
    print(table)
    print()
    print(notes)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "metering.md").write_text(
        f"# bench/metering.py, {time.strftime('%Y-%m-%d %H:%M')}\n\n{table}\n\n{notes}\n"
    )


def _metered(server: ServerProcess) -> int:
    url = f"{server.url}/zeroscale/v1/usage"
    req = AWSRequest("GET", url)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(req)
    with urllib.request.urlopen(urllib.request.Request(url, headers=dict(req.headers)), timeout=30) as resp:
        return int(json.loads(resp.read())["total"]["invocations"])


if __name__ == "__main__":
    main()
