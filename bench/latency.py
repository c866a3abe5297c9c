"""Cold-start and warm-invoke latency of a serverless endpoint, each against a baseline measured in the same run.

    make bench            # or: .venv/bin/python bench/latency.py [--rounds N]

Reference model: a scikit-learn RandomForest of 100 trees on 10 features (the cold-start target of the
roadmap). Figures:
- cold start: endpoint at zero workers -> first response, through boto3-free signed HTTP; baseline: the naive
  approach, a fresh Python process that imports scikit-learn, loads the model and predicts;
- warm invoke: p50/p99 through zeroscale (SigV4 check, routing, one hop to the worker) versus the same request
  sent straight to the same warm worker over its Unix socket; the difference is zeroscale's overhead.
Writes bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from sklearn.ensemble import RandomForestClassifier

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from serverproc import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy, make_tar, wait_for  # noqa: E402

ROOT = Path(__file__).resolve().parent
ROW = json.dumps([[0.5] * 10]).encode()


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("worker")
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


class SignedClient:
    """Keep-alive HTTP with a SigV4 signature per request, like boto3 but without its per-call machinery."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = http.client.HTTPConnection(url.split("//", 1)[1])
        self.signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION)

    def invoke(self, endpoint: str, body: bytes) -> bytes:
        path = f"/endpoints/{endpoint}/invocations"
        req = AWSRequest("POST", self.url + path, data=body, headers={"Content-Type": "application/json"})
        self.signer.add_auth(req)
        self.conn.request("POST", path, body=body, headers=dict(req.headers.items()))
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"{resp.status}: {data!r}")
        return data


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def build_model(root: Path) -> Path:
    rng = np.random.RandomState(0)
    X = rng.rand(2000, 10)
    y = (X[:, 0] + X[:, 3] > 1).astype(int)
    model = RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y)
    joblib.dump(model, root / "model.joblib")
    return make_tar(root / "model.tar.gz", {"model.joblib": root / "model.joblib"})


def naive_cold_start(model_path: Path, rounds: int) -> list[float]:
    code = (
        "import joblib, numpy as np, sklearn.ensemble\n"
        f"m = joblib.load({str(model_path)!r}); m.predict(np.full((1, 10), 0.5))\n"
    )
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - t)
    return times


def cold_starts(server: ServerProcess, client: SignedClient, endpoint: str, rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        wait_for(lambda: server.workers(endpoint) == 0, timeout_s=30, interval_s=0.02)
        t = time.perf_counter()
        client.invoke(endpoint, ROW)
        times.append(time.perf_counter() - t)
    return times


def warm(fn: Any, n: int) -> list[float]:
    for _ in range(50):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15, help="cold starts to measure")
    parser.add_argument("--requests", type=int, default=2000, help="warm requests to measure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tar = build_model(root)
        server = ServerProcess(root / "data", {"idle_timeout_s": 300}).start()
        try:
            sm = server.client("sagemaker")
            client = SignedClient(server.url)
            idle = [{"Key": "zeroscale:idle-timeout-s", "Value": "0.05"}]
            deploy(sm, "cold", f"file://{tar}", memory_mb=1024, max_concurrency=1, tags=idle)
            deploy(sm, "warm", f"file://{tar}", memory_mb=1024, max_concurrency=1)
            cold = cold_starts(server, client, "cold", args.rounds)
            naive = naive_cold_start(root / "model.joblib", max(3, args.rounds // 3))
            client.invoke("warm", ROW)
            sockets = sorted((root / "data" / "workers").glob("*.sock"))
            live = [s for s in sockets if _answers(str(s))]
            direct_conn = UnixHTTPConnection(str(live[0]))

            def direct() -> None:
                direct_conn.request("POST", "/invocations", body=ROW, headers={"Content-Type": "application/json"})
                direct_conn.getresponse().read()

            through = warm(lambda: client.invoke("warm", ROW), args.requests)
            straight = warm(direct, args.requests)
        finally:
            server.stop()
    rows = [
        ("cold start p50 (RandomForest 100x10)", pct(cold, 50), "naive fresh process p50", pct(naive, 50)),
        ("cold start p90", pct(cold, 90), "naive fresh process p90", pct(naive, 90)),
        ("warm invoke p50 via zeroscale", pct(through, 50), "same worker direct p50", pct(straight, 50)),
        ("warm invoke p99 via zeroscale", pct(through, 99), "same worker direct p99", pct(straight, 99)),
    ]
    lines = [
        "| figure | ms | baseline | ms | ratio |",
        "|---|---:|---|---:|---:|",
        *(f"| {a} | {x * 1000:.2f} | {b} | {y * 1000:.2f} | {x / y:.3f} |" for a, x, b, y in rows),
        "",
        f"overhead p50: {(pct(through, 50) - pct(straight, 50)) * 1000:.3f} ms; "
        f"p99: {(pct(through, 99) - pct(straight, 99)) * 1000:.3f} ms "
        f"(client signs every request with SigV4, server verifies it)",
        f"cold starts measured: {len(cold)}, warm requests: {len(through)}; "
        f"mean cold {statistics.mean(cold) * 1000:.1f} ms",
    ]
    report = "\n".join(lines)
    print(report)
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "latest.md").write_text(f"# bench/latency.py, {time.strftime('%Y-%m-%d %H:%M')}\n\n{report}\n")


def _answers(path: str) -> bool:
    try:
        conn = UnixHTTPConnection(path)
        conn.request("GET", "/ping")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


if __name__ == "__main__":
    main()
