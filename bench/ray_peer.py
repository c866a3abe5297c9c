"""The peer: Ray Serve serving the same RandomForest, measured the way zeroscale is.

Run by ``bench/run.py`` inside a private network namespace (Ray binds every interface):

    unshare --net bash -c 'ip link set lo up && .venv/bin/python -m bench.ray_peer --model M --out R.json'

Two applications behind Ray's HTTP proxy on 127.0.0.1:8000:
- ``/cold``: autoscaling with min_replicas=0, max_replicas=1, tuned to scale to zero quickly
  (downscale_to_zero_delay_s=1) and up at once (upscale_delay_s=0, metrics every 0.1 s). Cold start: wait
  until Serve reports no replica, then time one POST through the proxy.
- ``/warm``: one fixed replica. Overhead: p50/p99 through the proxy vs the same call through a
  DeploymentHandle (Ray's router straight to the replica, no HTTP) vs the same work in-process (JSON decode,
  predict, JSON encode in the driver).
Access logs are off (Serve writes one line per request by default); everything else is Serve's defaults.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

ROW = json.dumps([[0.5] * 10]).encode()


def _predict_json(model: Any, body: bytes) -> bytes:
    import numpy as np

    return json.dumps(model.predict(np.asarray(json.loads(body), dtype=float)).tolist()).encode()


def _replicas(serve: Any, app: str) -> int:
    status = serve.status()
    application = status.applications.get(app)
    if application is None:
        return -1
    return sum(sum(d.replica_states.values()) for d in application.deployments.values())


def _post(conn: http.client.HTTPConnection, path: str) -> float:
    t = time.perf_counter()
    conn.request("POST", path, body=ROW, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"{path}: {resp.status} {data!r}")
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out: dict[str, Any] = {"ok": False, "timings_s": {}}
    t_all = time.monotonic()
    try:
        _run(args, out)
        out["ok"] = True
    finally:
        out["timings_s"]["total"] = time.monotonic() - t_all
        Path(args.out).write_text(json.dumps(out))


def _run(args: argparse.Namespace, out: dict[str, Any]) -> None:
    import joblib
    import ray
    from ray import serve
    from starlette.requests import Request

    model_path = os.path.abspath(args.model)
    out["ray_version"] = ray.__version__
    t = time.monotonic()
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 8000}, logging_config={"enable_access_log": False})
    out["timings_s"]["ray_start"] = time.monotonic() - t

    class Forest:
        def __init__(self, path: str) -> None:
            self.model = joblib.load(path)

        async def __call__(self, request: Request) -> Any:
            from starlette.responses import Response

            return Response(_predict_json(self.model, await request.body()), media_type="application/json")

        def predict(self, body: bytes) -> bytes:
            return _predict_json(self.model, body)

    autoscaling = {
        "min_replicas": 0,
        "initial_replicas": 0,
        "max_replicas": 1,
        "target_ongoing_requests": 1,
        "metrics_interval_s": 0.1,
        "look_back_period_s": 0.5,
        "upscale_delay_s": 0.0,
        "downscale_delay_s": 1.0,
        "downscale_to_zero_delay_s": 1.0,
    }
    cold_app = serve.deployment(name="Cold", autoscaling_config=autoscaling, max_ongoing_requests=1)(Forest)
    warm_app = serve.deployment(name="Warm", num_replicas=1, max_ongoing_requests=1)(Forest)
    t = time.monotonic()
    serve.run(cold_app.bind(model_path), name="cold", route_prefix="/cold")
    handle = serve.run(warm_app.bind(model_path), name="warm", route_prefix="/warm")
    out["timings_s"]["deploy"] = time.monotonic() - t

    # ---- cold start: zero replicas -> first response through the proxy ----
    cold: list[float] = []
    waits: list[float] = []
    for _ in range(args.rounds):
        t = time.monotonic()
        deadline = t + 120
        while _replicas(serve, "cold") != 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the cold deployment did not scale to zero in 120 s")
            time.sleep(0.05)
        waits.append(time.monotonic() - t)
        time.sleep(0.2)  # let the controller settle after the last replica stopped
        conn = http.client.HTTPConnection("127.0.0.1", 8000, timeout=120)
        cold.append(_post(conn, "/cold"))
        conn.close()
    out["cold_s"] = cold
    out["scale_to_zero_wait_s"] = waits

    # ---- overhead: proxy vs handle vs in-process, interleaved ----
    model = joblib.load(model_path)
    conn = http.client.HTTPConnection("127.0.0.1", 8000, timeout=60)
    for _ in range(50):
        _post(conn, "/warm")
        handle.predict.remote(ROW).result()
        _predict_json(model, ROW)
    proxy: list[float] = []
    via_handle: list[float] = []
    inproc: list[float] = []
    for _ in range(args.requests):
        proxy.append(_post(conn, "/warm"))
        t0 = time.perf_counter()
        handle.predict.remote(ROW).result()
        via_handle.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _predict_json(model, ROW)
        inproc.append(time.perf_counter() - t0)
    out["proxy_s"] = proxy
    out["handle_s"] = via_handle
    out["inproc_s"] = inproc
    serve.shutdown()  # type: ignore[no-untyped-call]
    ray.shutdown()


if __name__ == "__main__":
    main()
