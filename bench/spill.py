"""Spill-over (``api/forward.py``): what a client that sticks to one front end gets, and what spilling costs
while every front end is saturated.

Two front ends on one PostgreSQL database (``tests/pgserver.py``); endpoint ``slow`` (a model that sleeps
the time the request asks) with MaxConcurrency 4: a share of 2 each, and a warm worker on each up to it.

- ``sticky``: rounds of 4 invocations at once of a 0.5-s model, every one through the first front end (each
  on a keep-alive connection of its own, as boto3 keeps them): the wall time of a round (0.5 s when all 4
  run at once, 1.0 s when only the front end's 2 do), and the invocations it spilled.
- ``saturated``: 4 client threads on each front end (twice each share) invoking a 50-ms model in a loop
  for ``--seconds``: invocations, how many each front end spilled, and how many spills were refused (a
  round trip for nothing): the refusals' memory (``api/refusals.py``) keeps that to a few per second
  instead of one per invocation that finds its share saturated.

    .venv/bin/python -m bench.spill [--rounds 5] [--seconds 10] [--out R.json]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.common import SignedClient, pct, scratch_postgres
from zeroscale.testing import ServerProcess, deploy, make_tar, wait_for

SLOW = """\
import time


def model_fn(model_dir):
    return None


def predict_fn(data, model):
    time.sleep(data["sleep"])
    return {}
"""
SHARE = 2


def _peer_counts(server: ServerProcess) -> dict[str, float]:
    out = {"spilled": 0.0, "refused": 0.0, "forwarded": 0.0}
    for line in server.metrics().splitlines():
        if line.startswith("zeroscale_peer_invocations_total{") and 'endpoint_name="slow"' in line:
            how = line.split('how="', 1)[1].split('"', 1)[0]
            out[how] = float(line.rsplit(" ", 1)[1])
    return out


def _sticky(a: ServerProcess, rounds: int) -> dict[str, Any]:
    clients = [SignedClient(a.url) for _ in range(2 * SHARE)]
    body = json.dumps({"sleep": 0.5}).encode()
    walls = []
    before = _peer_counts(a)["spilled"]
    with ThreadPoolExecutor(len(clients)) as pool:
        for _ in range(rounds):
            started = time.perf_counter()
            list(pool.map(lambda c: c.invoke("slow", body), clients))
            walls.append(time.perf_counter() - started)
    for client in clients:
        client.close()
    return {
        "round_wall_s": [round(w, 3) for w in walls],
        "spilled_per_round": (_peer_counts(a)["spilled"] - before) / rounds,
    }


def _saturated(servers: list[ServerProcess], seconds: float) -> dict[str, Any]:
    body = json.dumps({"sleep": 0.05}).encode()
    before = [_peer_counts(s) for s in servers]
    stop = time.monotonic() + seconds
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def loop(server: ServerProcess) -> None:
        client = SignedClient(server.url)
        try:
            while time.monotonic() < stop:
                try:
                    took = client.invoke("slow", body)[1]
                except RuntimeError as exc:
                    with lock:
                        failures.append(str(exc)[:200])
                    continue
                with lock:
                    latencies.append(took)
        finally:
            client.close()

    threads = [threading.Thread(target=loop, args=(s,)) for s in servers for _ in range(2 * SHARE)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = [_peer_counts(s) for s in servers]
    spilled = sum(a["spilled"] - b["spilled"] for a, b in zip(after, before, strict=True))
    refused = sum(a["refused"] - b["refused"] for a, b in zip(after, before, strict=True))
    return {
        "invocations": len(latencies),
        "failures": len(failures),
        "spilled": spilled,
        "refused": refused,
        "refused_per_second": round(refused / seconds, 1),
        "refused_per_invocation": round(refused / max(1, len(latencies)), 4),
        "p50_ms": round(pct(latencies, 50) * 1000, 1),
        "p99_ms": round(pct(latencies, 99) * 1000, 1),
    }


def _measure(root: Path, database_url: str, rounds: int, seconds: float) -> dict[str, Any]:
    model = make_tar(root / "slow.tar.gz", {"code/inference.py": SLOW.encode()})
    flags = {"database_url": database_url}
    a = ServerProcess(root / "a", flags).start(timeout_s=120)
    b = ServerProcess(root / "b", flags).start(timeout_s=120)
    try:
        desc = deploy(a.client("sagemaker"), "slow", f"file://{model}", max_concurrency=2 * SHARE)
        if desc["EndpointStatus"] != "InService":
            raise RuntimeError(f"slow: {desc.get('FailureReason')}")
        share = f'zeroscale_max_concurrency{{endpoint_name="slow",variant_name="AllTraffic"}} {SHARE}'
        wait_for(lambda: share in b.metrics(), timeout_s=30)
        warm = json.dumps({"sleep": 0.2}).encode()
        for server in (a, b):  # each front end's share of warm workers
            clients = [SignedClient(server.url) for _ in range(SHARE)]
            with ThreadPoolExecutor(SHARE) as pool:
                list(pool.map(lambda c: c.invoke("slow", warm), clients))
            for client in clients:
                client.close()
        return {"sticky": _sticky(a, rounds), "saturated": _saturated([a, b], seconds)}
    finally:
        b.stop()
        a.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the sticky client")
    parser.add_argument("--seconds", type=float, default=10.0, help="of sustained saturation")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()
    with scratch_postgres("zeroscale-bench-spill-") as (root, pg):
        results = _measure(root, pg.create_database("spill"), args.rounds, args.seconds)
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
