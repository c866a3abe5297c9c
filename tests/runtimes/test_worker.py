"""End to end: ``python -m zeroscale.runtimes.worker`` as a real process with a real sklearn model."""

from __future__ import annotations

import http.client
import io
import json
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pytest
from sklearn.ensemble import RandomForestRegressor

from .unixhttp import UnixHTTPConnection, free_port, start_worker, stop_worker, wait_ready, worker_env


@dataclass
class Worker:
    proc: subprocess.Popen[str]
    socket_path: str
    model: RandomForestRegressor
    x: np.ndarray


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    model_dir = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(42)
    x = rng.normal(size=(80, 4))
    y = x @ np.array([1.0, -2.0, 0.5, 3.0]) + rng.normal(scale=0.1, size=80)
    model = RandomForestRegressor(n_estimators=8, random_state=0).fit(x, y)
    joblib.dump(model, model_dir / "model.joblib")
    socket_path = str(model_dir / "worker.sock")
    proc = start_worker(model_dir, socket_path=socket_path)
    wait_ready(proc)
    yield Worker(proc, socket_path, model, x[:5])
    assert stop_worker(proc) == 0


def post(
    conn: http.client.HTTPConnection, body: bytes, content_type: str, accept: str
) -> tuple[int, bytes, str]:
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": content_type, "Accept": accept})
    resp = conn.getresponse()
    return resp.status, resp.read(), resp.getheader("Content-Type", "")


def test_ping(worker: Worker) -> None:
    conn = UnixHTTPConnection(worker.socket_path)
    conn.request("GET", "/ping")
    resp = conn.getresponse()
    assert (resp.status, resp.read()) == (200, b"")


def test_predictions_match_the_model_exactly(worker: Worker) -> None:
    expected = worker.model.predict(worker.x)
    conn = UnixHTTPConnection(worker.socket_path)

    csv = "".join(",".join(repr(v) for v in row) + "\n" for row in worker.x.tolist()).encode()
    status, body, content_type = post(conn, csv, "text/csv", "text/csv")
    assert (status, content_type) == (200, "text/csv")
    assert [float(v) for v in body.decode().split()] == expected.tolist()

    status, body, content_type = post(conn, json.dumps(worker.x.tolist()).encode(), "application/json", "*/*")
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == expected.tolist()

    buffer = io.BytesIO()
    np.save(buffer, worker.x)
    status, body, content_type = post(conn, buffer.getvalue(), "application/x-npy", "application/x-npy")
    assert (status, content_type) == (200, "application/x-npy")
    out = np.load(io.BytesIO(body))
    assert out.dtype == expected.dtype
    np.testing.assert_array_equal(out, expected)


def test_unsupported_types(worker: Worker) -> None:
    conn = UnixHTTPConnection(worker.socket_path)
    status, body, _ = post(conn, b"\x89PNG", "image/png", "application/json")
    assert status == 415
    assert b"image/png" in body
    assert post(conn, b"[[1, 2, 3, 4]]", "application/json", "image/png")[0] == 406
    status, body, _ = post(conn, b"[[1, 2]]", "application/json", "application/json")
    assert status == 500
    assert b"features" in body
    conn.request("GET", "/nope")
    assert conn.getresponse().status == 404


def test_keep_alive(worker: Worker) -> None:
    conn = UnixHTTPConnection(worker.socket_path)
    conn.connect()
    sock = conn.sock
    row = json.dumps(worker.x[:1].tolist()).encode()
    for _ in range(20):
        assert post(conn, row, "application/json", "application/json")[0] == 200
        conn.request("GET", "/ping")
        assert conn.getresponse().read() == b""
    assert conn.sock is sock


def test_sigterm_answers_the_in_flight_request_then_exits_0(tmp_path: Path) -> None:
    """Over TCP, on the port SAGEMAKER_BIND_TO_PORT names (it wins over --port)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text(
        textwrap.dedent(
            """
            import time

            def model_fn(model_dir):
                return "slow"

            def predict_fn(data, model):
                time.sleep(0.6)
                return data * 2
            """
        )
    )
    port = free_port()
    proc = start_worker(tmp_path, port=1, env=worker_env(SAGEMAKER_BIND_TO_PORT=str(port)))
    try:
        wait_ready(proc)
        answer: list[tuple[int, bytes]] = []

        def call() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            status, body, _ = post(conn, b"[1, 2]", "application/json", "application/json")
            answer.append((status, body))

        caller = threading.Thread(target=call)
        caller.start()
        time.sleep(0.3)  # the request is inside predict_fn now
        started = time.monotonic()
        code_ = stop_worker(proc)
        caller.join(10)
        assert code_ == 0
        assert answer == [(200, b"[2, 4]")]
        assert time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            proc.kill()


def test_broken_inference_exits_with_the_reason(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text(
        "def model_fn(model_dir):\n    raise RuntimeError('cannot load weights from ' + model_dir)\n"
    )
    proc = start_worker(tmp_path, socket_path=str(tmp_path / "w.sock"))
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert "zeroscale worker ready" not in out
    assert err.rstrip().splitlines()[-1] == f"RuntimeError: cannot load weights from {tmp_path}"
    assert "inference.py" in err


def test_missing_model_exits_with_the_reason(tmp_path: Path) -> None:
    proc = start_worker(tmp_path, socket_path=str(tmp_path / "w.sock"))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3
    assert err.rstrip().splitlines()[-1] == (
        f"FileNotFoundError: No model.joblib or model.pkl found in {tmp_path} "
        "and code/inference.py defines no model_fn"
    )


def test_a_rehearsal_the_model_cannot_answer_says_nothing_and_changes_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A model whose predict fails on zeros (here: their reciprocals are infinite, which the regression
    refuses, after numpy warned of the division): ``rehearse`` says False, and neither its warning nor the
    handler's error report reaches the worker's output (its log); the model then answers as before."""
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    from zeroscale.runtimes.worker import load_handler, rehearse

    x = np.random.default_rng(0).uniform(1, 2, size=(30, 3))
    model = make_pipeline(FunctionTransformer(np.reciprocal), LinearRegression()).fit(x, x.sum(axis=1))
    joblib.dump(model, tmp_path / "model.joblib")
    handler = load_handler("sklearn", str(tmp_path))
    capfd.readouterr()
    assert rehearse(handler, "sklearn") is False
    assert capfd.readouterr() == ("", "")
    headers = {"content-type": "application/json"}
    status, body, _ = handler.invoke(json.dumps(x[:2].tolist()).encode(), headers)
    assert status == 200
    assert json.loads(body) == pytest.approx(model.predict(x[:2]).tolist())
    status, _, _ = handler.invoke(b"[[0.0, 0.0, 0.0]]", headers)
    assert status != 200  # a real request of zeros still gets its error, logged as any
    assert "infinity" in capfd.readouterr().err
