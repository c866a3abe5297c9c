"""Workers on a Ray cluster vs workers on this machine: cold start and overhead of the reference RandomForest.

Run by ``bench/run.py`` inside a private network namespace (Ray binds every interface):

    unshare --net bash -c 'ip link set lo up && .venv/bin/python -m bench.cluster --out R.json'

Two zeroscale servers on the same data: ``local`` (workers forked on this machine, the default) and ``ray``
(``--ray-address`` of a two-node Ray cluster on 127.0.0.1, ``testing_ray.RayCluster``: the front end is not a
node, so every worker runs under a node's agent, reached over TCP through the agent's relay). The nodes share
this machine, so the figures are what the agent, the relay and the extra hop cost, not a network's latency.

- cold start: endpoint ``rf`` (MaxConcurrency 1, idle timeout 0.05 s) at zero workers (``/metrics``), and
  after the first round with its template in the warm-model cache (``zeroscale_warm_cache_entries``: its
  replica parked, on this machine or on the template's node, as for an endpoint idle a while), then one
  signed request on a fresh connection, client-side; the two servers alternate round by round. The first
  round loads the model.
- overhead: endpoint ``warm`` (one warm worker), ``--requests`` signed requests one at a time on a keep-alive
  connection, client-side send -> last byte (signing outside the timer); the two servers alternate in blocks
  of 50.
- front ends: requests per second through one front end vs two on the same cluster. Three more servers on
  the cluster, with PostgreSQL (``tests/pgserver.py``, started inside the namespace): ``one`` alone on its
  database, ``two-a`` and ``two-b`` sharing another. Each database has endpoint ``tp`` (the trivial echo
  model, MaxConcurrency 2, ProvisionedConcurrency 2): ``one`` runs both workers, ``two-a`` and ``two-b``
  one each (their shares), so both sides have two workers on the nodes. ``bench/loadgen.py`` (closed loop,
  one pre-signed request) with 4 connections, all to ``one``, or 2 to each of the pair; the two sides
  alternate, ``--fe-rounds`` blocks of ``--fe-seconds`` each.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import IDLE_TAG, REPO, ROW, Models, SignedClient, build_models, plain, wait_for, wait_zero
from bench.throughput import BODY, _loadgen, _through_request
from zeroscale.testing import ServerProcess, deploy
from zeroscale.testing_ray import RayCluster

BLOCK = 50


def _deploy(srv: ServerProcess, rf: Path) -> None:
    sm = srv.client("sagemaker")
    idle = [{"Key": IDLE_TAG, "Value": "0.05"}]
    for name, tags in (("rf", idle), ("warm", [])):
        desc = deploy(sm, name, f"file://{rf}", memory_mb=1024, max_concurrency=1, tags=tags)
        if desc["EndpointStatus"] != "InService":
            raise RuntimeError(f"{name} on {srv.url}: {desc.get('FailureReason')}")


def _cold(srv: ServerProcess, client: SignedClient, *, cached: bool) -> float:
    wait_zero(srv, ["rf"])
    if cached:  # the template is in the warm-model cache, its replica parked: an endpoint idle a while
        wait_for(
            lambda: plain(srv.metrics(), "zeroscale_warm_cache_entries") >= 1, timeout_s=10, interval_s=0.02
        )
    headers = client.signed_headers("rf", ROW)
    client.conn.close()
    client.conn.connect()
    t0 = time.perf_counter()
    client.send("rf", ROW, headers)
    return time.perf_counter() - t0


def _warm(client: SignedClient, count: int) -> list[float]:
    out = []
    for _ in range(count):
        headers = client.signed_headers("warm", ROW)
        t0 = time.perf_counter()
        client.send("warm", ROW, headers)
        out.append(time.perf_counter() - t0)
    return out


def _frontends(
    root: Path, cluster: RayCluster, models: Models, rounds: int, seconds: float
) -> dict[str, Any]:
    """Requests/s of one front end vs two on one database (see the module's doc), alternating blocks."""
    pg_dir = Path(tempfile.mkdtemp(prefix="zeroscale-bench-pg-"))
    pg_dir.chmod(0o755)  # the cluster belongs to the postgres user when run as root
    try:
        return _measure_frontends(root, cluster, models, rounds, seconds, pg_dir)
    finally:
        shutil.rmtree(pg_dir, ignore_errors=True)


def _measure_frontends(
    root: Path, cluster: RayCluster, models: Models, rounds: int, seconds: float, pg_dir: Path
) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "tests"))
    from pgserver import PostgresServer  # type: ignore[import-not-found]  # tests/pgserver.py

    with PostgresServer(pg_dir) as pg:
        base = {"ray_address": cluster.address}
        one = ServerProcess(root / "one", {**base, "database_url": pg.create_database("one")})
        shared = pg.create_database("two")
        pair = [ServerProcess(root / name, {**base, "database_url": shared}) for name in ("two-a", "two-b")]
        servers = [one, *pair]
        try:
            for srv in servers:
                srv.start(timeout_s=120)
            for srv in (one, pair[0]):
                desc = deploy(
                    srv.client("sagemaker"), "tp", f"file://{models.echo}", max_concurrency=2, provisioned=2
                )
                if desc["EndpointStatus"] != "InService":
                    raise RuntimeError(f"tp on {srv.url}: {desc.get('FailureReason')}")
            with tempfile.TemporaryDirectory() as tmp_name:
                tmp = Path(tmp_name)
                solo = [f"tcp:127.0.0.1:{one.port}"]
                two = [f"tcp:127.0.0.1:{srv.port}" for srv in pair]
                requests = {
                    "one": _through_request(one, "tp", BODY),
                    "two": _through_request(pair[0], "tp", BODY),
                }
                targets = {"one": solo, "two": two}
                for name in targets:  # warm: every front end routes tp and has its workers
                    _loadgen(targets[name], requests[name], 4, 1.0, tmp)
                wait_for(lambda: [s.workers("tp") for s in servers] == [2, 1, 1], timeout_s=60)
                runs: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
                for _ in range(rounds):
                    for name in targets:
                        runs[name].append(_loadgen(targets[name], requests[name], 4, seconds, tmp))
                runs["workers"] = [{"one": one.workers("tp"), "two": [s.workers("tp") for s in pair]}]
                return runs
        finally:
            for srv in servers:
                srv.stop()


def run(
    root: Path, rounds: int, requests: int, out: dict[str, Any], fe_rounds: int = 3, fe_seconds: float = 3.0
) -> None:
    models = build_models(root)
    t = time.monotonic()
    with RayCluster(nodes=2, memory_mb=8192) as cluster:
        out["timings_s"]["ray_start"] = time.monotonic() - t
        servers = {
            "local": ServerProcess(root / "local"),
            "ray": ServerProcess(root / "ray", {"ray_address": cluster.address}),
        }
        try:
            for srv in servers.values():
                srv.start(timeout_s=120)
                _deploy(srv, models.rf)
            clients = {name: SignedClient(srv.url) for name, srv in servers.items()}
            for name in servers:  # one unmeasured request each: connections, first predict
                _warm(clients[name], 5)
            cold: dict[str, list[float]] = {name: [] for name in servers}
            for i in range(rounds):
                for name, srv in servers.items():
                    cold[name].append(_cold(srv, clients[name], cached=i > 0))
            warm: dict[str, list[float]] = {name: [] for name in servers}
            for _ in range(max(1, requests // BLOCK)):
                for name in servers:
                    warm[name] += _warm(clients[name], BLOCK)
            out["cold_s"], out["warm_s"] = cold, warm
            for client in clients.values():
                client.close()
        finally:
            for srv in servers.values():
                srv.stop()
        if fe_rounds:
            t = time.monotonic()
            out["frontends"] = _frontends(root, cluster, models, fe_rounds, fe_seconds)
            out["timings_s"]["frontends"] = time.monotonic() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--fe-rounds", type=int, default=3, help="blocks per side, one vs two front ends")
    parser.add_argument("--fe-seconds", type=float, default=3.0, help="seconds per block")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import ray

    out: dict[str, Any] = {"ok": False, "timings_s": {}, "ray_version": ray.__version__}
    t_all = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="zeroscale-cluster-bench-") as tmp:
            run(Path(tmp), args.rounds, args.requests, out, args.fe_rounds, args.fe_seconds)
        out["ok"] = True
    finally:
        out["timings_s"]["total"] = time.monotonic() - t_all
        Path(args.out).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
