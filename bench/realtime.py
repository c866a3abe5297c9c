"""Real-time endpoint: the reference RandomForest (100 trees, 10 features, one JSON row) on one
``ml.m5.large`` instance (2 vCPUs: two always-warm workers), through zeroscale vs the same two workers hit
directly on their Unix sockets.

Same load generator as bench/throughput.py (``bench/loadgen.py``: closed loop, pre-built requests; through
zeroscale a real SigV4 signature computed once and reused). Runs, alternating direct and zeroscale
``repeats`` times: 2 clients (req/s, p50, p99: both workers busy) and 1 client (the latency runs: p50, p99).
Figures are each run kind's median over the repeats (at least 3).
"""

from __future__ import annotations

import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench.common import ROW, CpuWatch, Models, ServerProcess, tree, wait_final
from bench.throughput import Run, _direct_request, _loadgen, _through_request, _two_workers

ENDPOINT = "rf-realtime"
INSTANCE_TYPE = "ml.m5.large"


@dataclass
class RealtimeResult:
    runs: list[Run] = field(default_factory=list)

    def median(self, label: str, connections: int, attr: str) -> float:
        runs = [r for r in self.runs if r.label == label and r.connections == connections]
        return float(statistics.median(getattr(r, attr) for r in runs)) if runs else 0.0


def deploy_rt(srv: ServerProcess, models: Models) -> None:
    sm = srv.client("sagemaker")
    sm.create_model(
        ModelName=ENDPOINT, PrimaryContainer={"Image": "sklearn", "ModelDataUrl": f"file://{models.rf}"}
    )
    variant = {
        "VariantName": "AllTraffic",
        "ModelName": ENDPOINT,
        "InstanceType": INSTANCE_TYPE,
        "InitialInstanceCount": 1,
    }
    sm.create_endpoint_config(EndpointConfigName=ENDPOINT, ProductionVariants=[variant])
    sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=ENDPOINT)
    desc = wait_final(sm, ENDPOINT, timeout_s=120)
    if desc["EndpointStatus"] != "InService":
        raise RuntimeError(f"{ENDPOINT}: {desc['EndpointStatus']} {desc.get('FailureReason', '')}")


def measure(srv: ServerProcess, duration_s: float, repeats: int, result: RealtimeResult) -> None:
    assert srv.proc is not None
    sockets = _two_workers(srv, ENDPOINT)
    server_proc = psutil.Process(srv.proc.pid)
    rest = tree(srv.proc.pid)[1:]
    direct = [f"unix:{s}" for s in sockets]
    through = [f"tcp:127.0.0.1:{srv.port}"]
    signed = _through_request(srv, ENDPOINT, ROW)
    plain = _direct_request(ROW)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)

        def go(label: str, targets: list[str], request: bytes, conns: int) -> None:
            watch = CpuWatch({"server": [server_proc], "workers": rest})
            out = _loadgen(targets if conns > 1 else targets[:1], request, conns, duration_s, tmp)
            cpu = watch.stop({"client": float(out["cpu_s"])})
            result.runs.append(
                Run(label, conns, out["rps"], out["p50_s"], out["p99_s"], int(out["errors"]), cpu)
            )

        _loadgen(direct, plain, 2, 0.5, tmp)  # warm both paths
        _loadgen(through, signed, 2, 0.5, tmp)
        for _ in range(repeats):
            go("direct", direct, plain, 2)
            go("zeroscale", through, signed, 2)
            go("direct", direct, plain, 1)
            go("zeroscale", through, signed, 1)
