"""Forwarded invocations: what the hop costs when a front end holds no share of a variant and sends its
invocations to one that holds it (``api/forward.py``).

Two front ends on one PostgreSQL database (``tests/pgserver.py``); endpoint ``one`` (the trivial echo model,
MaxConcurrency 1, ProvisionedConcurrency 1: one warm worker) is held by the first. Signed requests, one at a
time on a keep-alive connection of the client to each front end, alternate in blocks of 50 between the holder
(the baseline: the same worker, no hop) and the other front end (forwarded); the figures are each side's
latency percentiles (client-side, signing excluded), the p50 difference (the forward's cost) and the ratio.
Run for front ends serving HTTP and serving HTTPS (``--tls-cert``, a self-signed certificate made with
openssl, which the front ends also use to call each other).

    .venv/bin/python -m bench.forward [--requests 1000] [--out R.json]

``make bench`` runs it as the scenario ``forward``.
"""

from __future__ import annotations

import argparse
import json
import ssl
from pathlib import Path
from typing import Any

from bench.common import SignedClient, build_models, pct, scratch_postgres
from zeroscale.testing import ServerProcess, deploy, self_signed_certificate, wait_for

BLOCK = 50
BODY = b'{"x": 1}'


def _measure(root: Path, database_url: str, echo: Path, tls: bool, requests: int) -> dict[str, Any]:
    flags: dict[str, Any] = {"database_url": database_url}
    if tls:
        cert, key = self_signed_certificate(root)
        flags.update(tls_cert=cert, tls_key=key)
    holder = ServerProcess(root / "holder", flags).start(timeout_s=120)
    other = ServerProcess(root / "other", flags).start(timeout_s=120)
    try:
        desc = deploy(holder.client("sagemaker"), "one", f"file://{echo}", max_concurrency=1, provisioned=1)
        if desc["EndpointStatus"] != "InService":
            raise RuntimeError(f"one: {desc.get('FailureReason')}")
        no_share = 'zeroscale_max_concurrency{endpoint_name="one",variant_name="AllTraffic"} 0'
        wait_for(lambda: no_share in other.metrics(), timeout_s=30)
        context = ssl.create_default_context(cafile=holder.ca_file) if tls else None
        clients = {
            "direct": SignedClient(holder.url, context=context),
            "forwarded": SignedClient(other.url, context=context),
        }
        times: dict[str, list[float]] = {name: [] for name in clients}
        for client in clients.values():  # warm: connections, routes, the forwarding connection
            for _ in range(BLOCK):
                client.invoke("one", BODY)
        while len(times["direct"]) < requests:
            for name, client in clients.items():
                times[name] += [client.invoke("one", BODY)[1] for _ in range(BLOCK)]
        for client in clients.values():
            client.close()
        if other.workers("one") != 0:
            raise RuntimeError("the front end without a share started a worker: nothing was forwarded")
    finally:
        other.stop()
        holder.stop()
    out: dict[str, Any] = {}
    for name, values in times.items():
        out[name] = {f"p{q}_ms": round(pct(values, q) * 1000, 3) for q in (50, 90, 99)}
    out["forward_cost_p50_ms"] = round(out["forwarded"]["p50_ms"] - out["direct"]["p50_ms"], 3)
    out["ratio_p50"] = round(out["forwarded"]["p50_ms"] / out["direct"]["p50_ms"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests on each side, per protocol")
    parser.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with scratch_postgres("zeroscale-bench-forward-") as (root, pg):
        models = build_models(root)
        for tls in (False, True):
            name = "https" if tls else "http"
            work = root / name
            work.mkdir()
            results[name] = _measure(work, pg.create_database(name), models.echo, tls, args.requests)
            r = results[name]
            print(
                f"{name:5}  direct p50 {r['direct']['p50_ms']:.3f} ms  forwarded p50 "
                f"{r['forwarded']['p50_ms']:.3f} ms  (cost {r['forward_cost_p50_ms']:.3f} ms, "
                f"ratio {r['ratio_p50']:.2f}; p99 {r['direct']['p99_ms']:.3f} / "
                f"{r['forwarded']['p99_ms']:.3f} ms)",
                flush=True,
            )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
