"""XGBoost, PyTorch and ONNX models, trained or built here, packaged as users package them, deployed with
SageMaker's image URIs through boto3 and served by real forked workers."""

from __future__ import annotations

import io
import json
import textwrap
import threading
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import xgboost as xgb
from onnx import TensorProto, helper, numpy_helper

from zeroscale.testing import deploy, make_tar, wait_for

XGBOOST_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
PYTORCH_IMAGE = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-inference:2.1-cpu-py310"
ONNX_IMAGE = "onnx"  # SageMaker has no ONNX image; zeroscale's alias (or .../zeroscale-onnx:TAG)

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def invoke(
    smr: Any, endpoint: str, body: bytes, content_type: str, accept: str | None = None
) -> tuple[bytes, str]:
    kwargs = {"Accept": accept} if accept else {}
    resp = smr.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType=content_type, **kwargs)
    return resp["Body"].read(), resp["ContentType"]


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def csv(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()


def in_service(sm: Any, name: str, url: str, image: str, **kwargs: Any) -> None:
    desc = deploy(sm, name, url, image=image, **kwargs)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")


# ---- XGBoost ----
@pytest.fixture(scope="module")
def booster_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, xgb.Booster, np.ndarray]:
    root = tmp_path_factory.mktemp("xgboost")
    rng = np.random.default_rng(5)
    x = rng.uniform(0.1, 1.0, size=(300, 6))
    y = 3 * x[:, 0] - 2 * x[:, 3] + rng.normal(scale=0.05, size=300)
    booster = xgb.train(
        {"max_depth": 4, "nthread": 1, "seed": 0}, xgb.DMatrix(x, label=y), num_boost_round=20
    )
    booster.save_model(str(root / "xgboost-model.ubj"))  # what SageMaker's XGBoost algorithm writes
    (root / "xgboost-model.ubj").rename(root / "xgboost-model")
    return root, booster, x[:8]


def test_xgboost_algorithm_artifact(
    sm: Any, smr: Any, booster_dir: tuple[Path, xgb.Booster, np.ndarray]
) -> None:
    root, booster, rows = booster_dir
    tar = make_tar(root / "algo.tar.gz", {"xgboost-model": root / "xgboost-model"})
    in_service(sm, "xgb-algo", f"file://{tar}", XGBOOST_IMAGE)
    want = [float(v) for v in booster.predict(xgb.DMatrix(rows))]

    body, content_type = invoke(smr, "xgb-algo", csv(rows), "text/csv")  # no Accept: CSV, like SageMaker
    assert content_type == "text/csv"
    assert [float(v) for v in body.decode().split(",")] == want

    libsvm = "\n".join("0 " + " ".join(f"{j}:{v!r}" for j, v in enumerate(row)) for row in rows.tolist())
    body, _ = invoke(smr, "xgb-algo", libsvm.encode(), "text/libsvm", "text/csv")
    assert [float(v) for v in body.decode().split(",")] == want

    body, content_type = invoke(
        smr, "xgb-algo", json.dumps(rows.tolist()).encode(), "application/json", "application/json"
    )
    assert content_type == "application/json"
    assert json.loads(body) == {"predictions": [{"score": v} for v in want]}

    body, content_type = invoke(smr, "xgb-algo", npy(rows), "application/x-npy", "application/x-npy")
    assert content_type == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), booster.predict(xgb.DMatrix(rows)))


def test_xgboost_framework_mode(sm: Any, smr: Any, booster_dir: tuple[Path, xgb.Booster, np.ndarray]) -> None:
    root, booster, rows = booster_dir
    code = textwrap.dedent(
        """
        import os
        import xgboost as xgb

        def model_fn(model_dir):
            booster = xgb.Booster()
            booster.load_model(os.path.join(model_dir, "xgboost-model"))
            return booster
        """
    )
    tar = make_tar(
        root / "fw.tar.gz", {"xgboost-model": root / "xgboost-model", "code/inference.py": code.encode()}
    )
    in_service(sm, "xgb-framework", f"file://{tar}", "xgboost")
    body, content_type = invoke(smr, "xgb-framework", csv(rows), "text/csv")
    assert content_type == "application/json"  # the toolkit's default Accept in framework mode
    assert json.loads(body) == [float(v) for v in booster.predict(xgb.DMatrix(rows))]


# ---- PyTorch ----
class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(5, 16)
        self.out = torch.nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x)))


STATE_DICT_INFERENCE = """
import os
import time
import torch

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(5, 16)
        self.out = torch.nn.Linear(16, 2)

    def forward(self, x):
        return self.out(torch.tanh(self.hidden(x)))

def model_fn(model_dir):
    model = Net()
    model.load_state_dict(torch.load(os.path.join(model_dir, "weights.pth"), weights_only=True))
    return model.eval()

def predict_fn(data, model):
    time.sleep(1.0)  # long enough for a second request to need a second worker, even on a busy machine
    with torch.no_grad():
        y = model(data) @ torch.ones(2, 2)  # a matmul in the forked worker
    return {"y": model(data), "pid": os.getpid(), "threads": torch.get_num_threads(), "check": y}
"""


@pytest.fixture(scope="module")
def torch_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Net, np.ndarray]:
    root = tmp_path_factory.mktemp("pytorch")
    torch.manual_seed(0)
    net = Net().eval()
    torch.jit.script(net).save(str(root / "model.pt"))
    torch.save(net.state_dict(), root / "weights.pth")
    return root, net, np.random.default_rng(6).normal(size=(4, 5))


def expected(net: Net, rows: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.tensor(rows, dtype=torch.float32)).numpy()


def test_pytorch_torchscript(sm: Any, smr: Any, torch_model: tuple[Path, Net, np.ndarray]) -> None:
    root, net, rows = torch_model
    tar = make_tar(root / "ts.tar.gz", {"model.pt": root / "model.pt"})
    in_service(sm, "torch-ts", f"file://{tar}", PYTORCH_IMAGE)
    want = expected(net, rows)

    body, content_type = invoke(smr, "torch-ts", json.dumps(rows.tolist()).encode(), "application/json")
    assert content_type == "application/json"
    np.testing.assert_allclose(json.loads(body), want, rtol=1e-6, atol=1e-7)

    body, content_type = invoke(smr, "torch-ts", csv(rows), "text/csv", "text/csv")
    assert content_type == "text/csv"
    np.testing.assert_allclose(
        np.loadtxt(io.StringIO(body.decode()), delimiter=","), want, rtol=1e-6, atol=1e-6
    )

    body, content_type = invoke(
        smr, "torch-ts", npy(rows.astype(np.float32)), "application/x-npy", "application/x-npy"
    )
    assert content_type == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(body)), want, rtol=1e-6, atol=1e-7)


def test_pytorch_state_dict_two_forked_workers_at_once(
    sm: Any, smr: Any, torch_model: tuple[Path, Net, np.ndarray]
) -> None:
    root, net, rows = torch_model
    files: dict[str, bytes | Path] = {
        "weights.pth": root / "weights.pth",
        "code/inference.py": STATE_DICT_INFERENCE.encode(),
    }
    tar = make_tar(root / "sd.tar.gz", files)
    in_service(sm, "torch-sd", f"file://{tar}", PYTORCH_IMAGE, max_concurrency=2)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            body, _ = invoke(smr, "torch-sd", json.dumps(rows.tolist()).encode(), "application/json")
            results.append(json.loads(body))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert len(results) == 2
    assert len({r["pid"] for r in results}) == 2  # two workers answered at the same time
    want = expected(net, rows)
    for r in results:
        assert r["threads"] == 1
        np.testing.assert_allclose(r["y"], want, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(r["check"], want @ np.ones((2, 2)), rtol=1e-5, atol=1e-6)


# ---- ONNX ----
def onnx_models(root: Path) -> tuple[Path, Path]:
    w = np.arange(12, dtype=np.float32).reshape(4, 3) / 10
    linear = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["xw"]),
            helper.make_node("Sigmoid", ["xw"], ["probability"]),
        ],
        "linear",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("probability", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    two = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["a", "bf"], ["total"]),
            helper.make_node("ReduceMax", ["a"], ["peak"], keepdims=0),
        ],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("peak", TensorProto.FLOAT, []),
        ],
    )
    paths = []
    for graph in (linear, two):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        path = root / f"{graph.name}.onnx"
        onnx.save(model, str(path))
        paths.append(path)
    return paths[0], paths[1]


def test_onnx_models(sm: Any, smr: Any, tmp_path: Path) -> None:
    linear, two = onnx_models(tmp_path)
    in_service(
        sm, "onnx-linear", f"file://{make_tar(tmp_path / 'l.tar.gz', {'model.onnx': linear})}", ONNX_IMAGE
    )
    url = f"file://{make_tar(tmp_path / 't.tar.gz', {'model.onnx': two})}"
    in_service(sm, "onnx-two", url, "123456789012.dkr.ecr.us-east-1.amazonaws.com/zeroscale-onnx:1.17")

    rows = np.random.default_rng(8).normal(size=(3, 4))
    (want,) = ort.InferenceSession(str(linear), providers=["CPUExecutionProvider"]).run(
        None, {"features": rows.astype(np.float32)}
    )
    body, _ = invoke(smr, "onnx-linear", json.dumps(rows.tolist()).encode(), "application/json")
    np.testing.assert_allclose(json.loads(body), want, rtol=1e-6)
    body, _ = invoke(smr, "onnx-linear", csv(rows), "text/csv", "text/csv")
    np.testing.assert_allclose(np.loadtxt(io.StringIO(body.decode()), delimiter=","), want, rtol=1e-6)
    body, content_type = invoke(smr, "onnx-linear", npy(rows), "application/x-npy", "application/x-npy")
    assert content_type == "application/x-npy"
    np.testing.assert_allclose(np.load(io.BytesIO(body)), want, rtol=1e-6)

    a, b = [[0.5, 1.5], [2.0, -1.0]], [[2, 3], [-4, 5]]
    total, peak = ort.InferenceSession(str(two), providers=["CPUExecutionProvider"]).run(
        None, {"a": np.array(a, np.float32), "b": np.array(b, np.int64)}
    )
    body, _ = invoke(smr, "onnx-two", json.dumps({"a": a, "b": b}).encode(), "application/json")
    assert json.loads(body) == {"total": total.tolist(), "peak": peak.tolist()}


def test_restart_prewarms_the_runtimes_of_stored_endpoints(
    server_factory: Any, tmp_path: Path, booster_dir: tuple[Path, xgb.Booster, np.ndarray]
) -> None:
    """After a restart, endpoints come back at zero workers, and their runtimes' zygotes start right away,
    so the first cold start does not also pay for importing the framework."""
    import psutil

    root, booster, rows = booster_dir
    tar = make_tar(tmp_path / "algo.tar.gz", {"xgboost-model": root / "xgboost-model"})
    server = server_factory()
    in_service(server.client("sagemaker"), "xgb-restart", f"file://{tar}", XGBOOST_IMAGE)
    server.restart()
    assert server.proc is not None

    def xgboost_zygote() -> bool:
        children = psutil.Process(server.proc.pid).children()  # type: ignore[union-attr]
        return any("xgboost" in child.cmdline() for child in children)

    wait_for(xgboost_zygote, timeout_s=30)
    body, _ = invoke(server.client("sagemaker-runtime"), "xgb-restart", csv(rows), "text/csv")
    assert [float(v) for v in body.decode().split(",")] == [
        float(v) for v in booster.predict(xgb.DMatrix(rows))
    ]
