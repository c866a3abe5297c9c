"""Dynamic batching: the reference RandomForest (100 trees, 10 features), MaxConcurrency 2 with both workers
provisioned (warm), one row per request, deployed twice in the same server: batching off, and on
(``ZEROSCALE_MAX_BATCH_SIZE=32``, no delay). Measured in the same run, interleaved off/on:

- throughput: 32 closed-loop clients (bench/loadgen.py: keep-alive connections, each sending one
  pre-signed request as soon as its previous answer is complete), req/s on vs off (the ratio);
- latency: 1 client, p50 on vs off (a request alone takes the ordinary path even with batching on).

Before the runs, the answers of both endpoints to the same 200 requests of 1-20 rows (JSON, CSV, NPY; sent
concurrently to the batching one) are compared byte for byte: a difference fails the scenario.

    .venv/bin/python -m bench.batching [--duration 5] [--repeats 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import REPO, RESULTS, ROW, ServerProcess, build_models, deploy, sign

OFF, ON = "rf-batch-off", "rf-batch-on"
MAX_BATCH = 32
CLIENTS = 32


@dataclass
class BatchingResult:
    rps: dict[str, list[float]] = field(default_factory=lambda: {OFF: [], ON: []})  # 32 clients
    p50_s: dict[str, list[float]] = field(default_factory=lambda: {OFF: [], ON: []})  # 1 client
    p50_32_s: dict[str, list[float]] = field(default_factory=lambda: {OFF: [], ON: []})  # 32 clients
    errors: int = 0
    compared: int = 0

    def median(self, what: dict[str, list[float]], endpoint: str) -> float:
        return statistics.median(what[endpoint]) if what[endpoint] else float("nan")

    @property
    def ratio(self) -> float:
        return self.median(self.rps, ON) / self.median(self.rps, OFF)

    @property
    def latency_ratio(self) -> float:
        return self.median(self.p50_s, ON) / self.median(self.p50_s, OFF)


def _raw_request(srv: ServerProcess, endpoint: str, body: bytes) -> bytes:
    headers = sign(srv.url, endpoint, body)
    lines = [f"POST /endpoints/{endpoint}/invocations HTTP/1.1", f"Host: 127.0.0.1:{srv.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    lines += [f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode() + body


def _load(
    srv: ServerProcess, tmp: Path, endpoint: str, connections: int, duration_s: float
) -> dict[str, Any]:
    request = tmp / f"{endpoint}.http"
    request.write_bytes(_raw_request(srv, endpoint, ROW))
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.loadgen",
            "--target",
            f"tcp:127.0.0.1:{srv.port}",
            "--request-file",
            str(request),
            "--connections",
            str(connections),
            "--duration",
            f"{duration_s:g}",
            "--warmup",
            "1",
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def _body(rows: np.ndarray, content_type: str) -> bytes:
    if content_type == "application/json":
        return json.dumps(rows.tolist()).encode()
    if content_type == "text/csv":
        return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()
    buf = io.BytesIO()
    np.save(buf, rows)
    return buf.getvalue()


def compare_answers(smr: Any, requests: int = 200) -> int:
    """The same requests to both endpoints (concurrently to the batching one): every answer equal."""
    rng = np.random.RandomState(0)
    types = ("application/json", "text/csv", "application/x-npy")
    work = []
    for i in range(requests):
        content_type = types[i % 3]
        work.append((_body(rng.rand(1 + i % 20, 10), content_type), content_type, types[(i // 3) % 3]))

    def call(endpoint: str, item: tuple[bytes, str, str]) -> tuple[str, bytes]:
        resp = smr.invoke_endpoint(EndpointName=endpoint, Body=item[0], ContentType=item[1], Accept=item[2])
        return resp["ContentType"], resp["Body"].read()

    with ThreadPoolExecutor(CLIENTS) as pool:
        on = list(pool.map(lambda item: call(ON, item), work))
    off = [call(OFF, item) for item in work]
    different = sum(a != b for a, b in zip(on, off, strict=True))
    if different:
        raise AssertionError(f"{different} of {requests} answers differ with batching on")
    return requests


def run(root: Path, duration_s: float = 5.0, repeats: int = 3) -> BatchingResult:
    root.mkdir(parents=True, exist_ok=True)
    models = build_models(root)
    res = BatchingResult()
    srv = ServerProcess(root / "data").start()
    try:
        sm, smr = srv.client("sagemaker"), srv.client("sagemaker-runtime")
        url = f"file://{models.rf}"
        for endpoint, env in ((OFF, None), (ON, {"ZEROSCALE_MAX_BATCH_SIZE": str(MAX_BATCH)})):
            desc = deploy(sm, endpoint, url, max_concurrency=2, provisioned=2, environment=env)
            assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        res.compared = compare_answers(smr)
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(repeats):
                for endpoint in (OFF, ON):
                    out = _load(srv, Path(tmp), endpoint, CLIENTS, duration_s)
                    res.rps[endpoint].append(out["rps"])
                    res.p50_32_s[endpoint].append(out["p50_s"])
                    res.errors += out["errors"]
                for endpoint in (OFF, ON):
                    out = _load(srv, Path(tmp), endpoint, 1, min(duration_s, 3.0))
                    res.p50_s[endpoint].append(out["p50_s"])
                    res.errors += out["errors"]
    finally:
        srv.stop()
    return res


def report(res: BatchingResult) -> str:
    lines = [
        "| figure | batching off | batching on | on / off |",
        "|---|---|---|---|",
        f"| RandomForest, {CLIENTS} clients, MaxConcurrency 2: req/s | {res.median(res.rps, OFF):.0f} | "
        f"{res.median(res.rps, ON):.0f} | {res.ratio:.2f}x |",
        f"| {CLIENTS} clients: p50 latency (ms) | {res.median(res.p50_32_s, OFF) * 1000:.2f} | "
        f"{res.median(res.p50_32_s, ON) * 1000:.2f} | "
        f"{res.median(res.p50_32_s, ON) / res.median(res.p50_32_s, OFF):.2f}x |",
        f"| 1 client: p50 latency (ms) | {res.median(res.p50_s, OFF) * 1000:.2f} | "
        f"{res.median(res.p50_s, ON) * 1000:.2f} | {res.latency_ratio:.2f}x |",
        "",
        f"req/s per run at {CLIENTS} clients, off: {', '.join(f'{v:.0f}' for v in res.rps[OFF])}; "
        f"on: {', '.join(f'{v:.0f}' for v in res.rps[ON])}.",
        f"Medians of {len(res.rps[OFF])} interleaved runs; errors (non-200): {res.errors}; "
        f"{res.compared} answers compared byte for byte, on vs off: all equal.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per 32-client run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        res = run(Path(tmp), args.duration, args.repeats)
    text = report(res) + f"\n\nLoad average at the start: {load:.2f} ({os.cpu_count()} cores).\n"
    print(text)
    command = f"python -m bench.batching --duration {args.duration:g} --repeats {args.repeats}"
    (RESULTS / "batching.md").write_text(f"# Dynamic batching (`{command}`)\n\n{text}")


if __name__ == "__main__":
    main()
