"""Cold-start latency of each built-in runtime: endpoint at zero workers -> first response, zygote warm.

    .venv/bin/python -m bench.runtimes [--rounds N] [--runtimes sklearn,onnx] [--warm-cache-mb 0]

One server; per runtime a small model on 10 features (scikit-learn RandomForest 100 trees, XGBoost 100
trees, a TorchScript MLP 10-64-64-1, an ONNX MLP 10-64-1), deployed with SageMaker's image URI and the tag
``zeroscale:idle-timeout-s`` at 0.2 s so the endpoint is back at zero workers between rounds; each cold
request is sent 0.1 s after the endpoint reached zero (the warm-cache scenario's gap is 0.05 s: a replica
is parked beside a cached template within ~30 ms of zero, and a request sooner than that waits for it,
about what a fork of the template costs). The first request of each endpoint (which also starts the
runtime's zygote) is not counted. Also reports a warm invoke p50 (a second request right after each cold
one). With the server's default warm-model cache a cold start is the first request of the replica parked
beside the model's cached template (every built-in runtime has one); with ``--warm-cache-mb 0`` it is a
zygote's spare that loads the model.
Writes bench/results/runtimes.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from bench.common import RESULTS, ServerProcess, SignedClient, deploy, make_tar, pct, wait_for

FEATURES = 10
ROW = json.dumps([[0.5] * FEATURES]).encode()
IMAGES = {
    "sklearn": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
    "xgboost": "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
    "pytorch": "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-cpu-py310",
    "onnx": "onnx",
}


AT_ZERO_S = 0.1  # a cold request comes this long after the endpoint reached zero


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(0)
    x = rng.rand(2000, FEATURES)
    return x, (x[:, 0] + x[:, 3] > 1).astype(int)


def sklearn_model(root: Path) -> Path:
    from sklearn.ensemble import RandomForestClassifier

    x, y = _data()
    joblib.dump(RandomForestClassifier(n_estimators=100, random_state=0).fit(x, y), root / "model.joblib")
    return make_tar(root / "sklearn.tar.gz", {"model.joblib": root / "model.joblib"})


def xgboost_model(root: Path) -> Path:
    import xgboost as xgb

    x, y = _data()
    params = {"objective": "binary:logistic", "max_depth": 6, "nthread": 1, "seed": 0}
    xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=100).save_model(str(root / "model.ubj"))
    return make_tar(root / "xgboost.tar.gz", {"xgboost-model": root / "model.ubj"})


def pytorch_model(root: Path) -> Path:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(FEATURES, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 1),
    )
    torch.jit.script(net.eval()).save(str(root / "model.pt"))  # type: ignore[no-untyped-call]
    return make_tar(root / "pytorch.tar.gz", {"model.pt": root / "model.pt"})


def onnx_model(root: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.RandomState(0)
    w1 = rng.randn(FEATURES, 64).astype(np.float32)
    w2 = rng.randn(64, 1).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["h"]),
            helper.make_node("Relu", ["h"], ["r"]),
            helper.make_node("MatMul", ["r", "w2"], ["y"]),
        ],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(root / "model.onnx"))
    return make_tar(root / "onnx.tar.gz", {"model.onnx": root / "model.onnx"})


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "sklearn": sklearn_model,
    "xgboost": xgboost_model,
    "pytorch": pytorch_model,
    "onnx": onnx_model,
}


def measure(server: ServerProcess, client: SignedClient, endpoint: str, rounds: int) -> dict[str, Any]:
    client.invoke(endpoint, ROW)  # the endpoint's first request: the zygote is warm from here on
    cold, warm = [], []
    for _ in range(rounds):
        wait_for(lambda: server.workers(endpoint) == 0, timeout_s=30, interval_s=0.02)
        time.sleep(AT_ZERO_S)
        t = time.perf_counter()
        client.invoke(endpoint, ROW)
        cold.append(time.perf_counter() - t)
        t = time.perf_counter()
        client.invoke(endpoint, ROW)
        warm.append(time.perf_counter() - t)
    return {"cold": cold, "warm": warm}


def run(
    root: Path, names: list[str], rounds: int, warm_cache_mb: int | None = None
) -> dict[str, dict[str, Any]]:
    """Runtime name -> {"cold": seconds per cold start, "warm": seconds per warm request}, one server
    (``warm_cache_mb``: its warm-model cache; None: the server's default)."""
    results: dict[str, dict[str, Any]] = {}
    tars = {name: BUILDERS[name](root) for name in names}
    flags: dict[str, Any] = {"idle_timeout_s": 300}
    if warm_cache_mb is not None:
        flags["warm_cache_mb"] = warm_cache_mb
    server = ServerProcess(root / "data", flags).start()
    try:
        sm = server.client("sagemaker")
        client = SignedClient(server.url)
        idle = [{"Key": "zeroscale:idle-timeout-s", "Value": "0.2"}]
        for name in names:
            desc = deploy(sm, name, f"file://{tars[name]}", image=IMAGES[name], max_concurrency=1, tags=idle)
            assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
            results[name] = measure(server, client, name, rounds)
    finally:
        server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15, help="cold starts to measure per runtime")
    parser.add_argument("--runtimes", default=",".join(BUILDERS), help="comma-separated runtime names")
    parser.add_argument(
        "--warm-cache-mb",
        type=int,
        default=None,
        help="the server's warm-model cache (default: its own default; 0: every cold start loads the model)",
    )
    args = parser.parse_args()
    names = [n for n in args.runtimes.split(",") if n]
    with tempfile.TemporaryDirectory() as tmp:
        results = run(Path(tmp), names, args.rounds, args.warm_cache_mb)
    lines = [
        "| runtime | cold start p50 ms | cold start p90 ms | warm invoke p50 ms |",
        "|---|---:|---:|---:|",
        *(
            f"| {name} | {pct(r['cold'], 50) * 1000:.1f} | {pct(r['cold'], 90) * 1000:.1f} "
            f"| {pct(r['warm'], 50) * 1000:.2f} |"
            for name, r in results.items()
        ),
        "",
        f"{args.rounds} cold starts per runtime (endpoint at zero workers, zygote warm -> first response, "
        "through SigV4-signed HTTP)"
        + ("" if args.warm_cache_mb is None else f"; --warm-cache-mb {args.warm_cache_mb}"),
    ]
    report = "\n".join(lines)
    print(report)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "runtimes.md").write_text(
        f"# bench/runtimes.py, {time.strftime('%Y-%m-%d %H:%M')}\n\n{report}\n"
    )


if __name__ == "__main__":
    main()
