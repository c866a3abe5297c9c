"""The ONNX Runtime runtime in-process: inputs and outputs by name, casting, sessions; fork safety in real
forked processes (``onnx_forks.py``)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from zeroscale.runtimes import codecs
from zeroscale.runtimes.handler import Handler
from zeroscale.runtimes.image_uris import resolve_image
from zeroscale.runtimes.onnx import WARM_MODEL
from zeroscale.runtimes.registry import RUNTIMES
from zeroscale.workers.forkserver import EXIT_UNFORKABLE_TEMPLATE, THREAD_ENV

from .forkpair import run_pair

RUNTIME = RUNTIMES["onnx"]
JSON = {"content-type": "application/json", "accept": "application/json"}
W = np.array([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]], dtype=np.float32)
B = np.array([0.1, -0.2], dtype=np.float32)


def save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def linear_model(path: Path) -> Path:
    """x: float[N, 3] -> y = x @ W + b: float[N, 2]."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "b")],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def two_in_two_out_model(path: Path) -> Path:
    """a: float[N, 2], b: int64[N, 2] -> total = a + b, product = a * b (float)."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["a", "bf"], ["total"]),
            helper.make_node("Mul", ["a", "bf"], ["product"]),
        ],
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 2]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("product", TensorProto.FLOAT, ["N", 2]),
        ],
    )
    return save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def load(model_dir: Path) -> Handler:
    return Handler.load(str(model_dir), RUNTIME.model_fn, {}, defaults=RUNTIME.defaults)


def reference(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """The same model run in this process by onnxruntime with its default options."""
    return list(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds))


FORKS = Path(__file__).with_name("onnx_forks.py")


def user_env(telemetry: str) -> dict[str, str]:
    """The environment of a process on a user's machine, with ONNX Runtime's telemetry off ("1") or on ("0").
    Only PATH and HOME come from this one: onnxruntime also keeps its telemetry off where a CI service's
    variables are set (CI, GITHUB_ACTIONS, JENKINS_URL, ...), which would hide what a user's zygote meets."""
    kept = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    return {**kept, **THREAD_ENV, "ORT_DISABLE_TELEMETRY": telemetry}


def fork_children(model_dir: Path, children: int, timeout_s: float, telemetry: str) -> dict[str, Any]:
    """``onnx_forks.py``: a template of the model forks ``children`` that serve and exit; its report."""
    env = user_env(telemetry)
    out = subprocess.run(
        [sys.executable, str(FORKS), str(model_dir), str(children), str(timeout_s)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return report


def test_a_template_of_a_loaded_session_forks_children_that_serve_make_sessions_and_exit(
    tmp_path: Path,
) -> None:
    """With the telemetry off (as every zygote and worker runs) the import starts no thread, so the zygote
    imports onnxruntime, and a loaded session leaves one thread: children forked at any moment (right after a
    run, right after a session was made) run it with two inputs, make new sessions, and exit either way."""
    two_in_two_out_model(tmp_path / "model.onnx")
    report = fork_children(tmp_path, children=24, timeout_s=20.0, telemetry="1")
    assert report == {
        "zygote_threads": 1,
        "zygote_imported": True,
        "template_threads": 1,
        "ok": 24,
        "failed": 0,
        "hung": 0,
    }


def test_the_telemetry_thread_hangs_children_in_exit_and_is_kept_out(tmp_path: Path) -> None:
    """What the guards are for, with onnxruntime's telemetry on: importing it starts a thread, so the zygote's
    preload (a forked probe) leaves onnxruntime unimported; the loaded model has a second thread, so a
    template refuses to fork; and the children of such a process hang in exit() (the condition variable the
    thread waited on is destroyed in a C++ static destructor that waits for the missing waiter)."""
    two_in_two_out_model(tmp_path / "model.onnx")
    report = fork_children(tmp_path, children=4, timeout_s=3.0, telemetry="0")
    assert (report["zygote_threads"], report["zygote_imported"]) == (1, False)
    assert report["template_threads"] >= 2
    assert report["hung"] >= 1, report  # the children that left through exit(): the timeout caught them
    check = textwrap.dedent(
        f"""
        from zeroscale.runtimes.registry import RUNTIMES
        from zeroscale.workers.forkserver import refuse_unless_forkable
        RUNTIMES['onnx'].model_fn({str(tmp_path)!r})
        refuse_unless_forkable()
        """
    )
    env = user_env("0")
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == EXIT_UNFORKABLE_TEMPLATE, out.stderr
    assert "no template of this model: loading it left 2 threads" in out.stderr


def test_the_warm_up_model_is_what_onnx_helper_writes() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "warm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert model.SerializeToString() == WARM_MODEL
    onnx.checker.check_model(onnx.load_from_string(WARM_MODEL), full_check=True)


WARM_PROBE = """
    import gc, sys
    from zeroscale.runtimes import codecs
    from zeroscale.runtimes.registry import RUNTIMES
    runtime = RUNTIMES["onnx"]
    runtime.preload()
    assert "onnxruntime" in sys.modules
    gc.collect(); gc.freeze()

    def timed(_state):
        hooks = runtime.defaults(False)
        model = runtime.model_fn(sys.argv[1])
        row = b"[[0.2, 0.9, 0.1]]"
        answer, _ = hooks.output_fn(hooks.predict_fn(hooks.input_fn(row, codecs.JSON), model), codecs.JSON)
        return answer.decode()
    """


def test_a_warmed_fork_makes_a_session_and_runs_it_copying_fewer_of_the_zygotes_pages(tmp_path: Path) -> None:
    """The runtime's ``warm`` (a zygote's spare, before it waits: a session of its own Relu model asked one
    JSON row) leaves the fork with one thread (it may become a template), and another model's session and
    first run in it copy under a fifth of the pages, same answer."""
    linear_model(tmp_path / "model.onnx")
    (cold_faults, cold_answer, _), (warm_faults, warm_answer, threads) = run_pair(WARM_PROBE, str(tmp_path))
    assert warm_answer == cold_answer
    assert threads == 1
    assert warm_faults < cold_faults / 5, (warm_faults, cold_faults)  # ~60 against ~1,200 here


def test_warm_leaves_onnxruntime_unimported_where_the_zygote_did_not_import_it() -> None:
    """With the telemetry on, the zygote leaves the import to each worker (it would start a thread): a spare's
    warm-up must not import it either."""
    check = textwrap.dedent(
        """
        import os, sys
        from zeroscale.runtimes.registry import RUNTIMES
        RUNTIMES['onnx'].preload()
        RUNTIMES['onnx'].warm()
        print("onnxruntime" in sys.modules, len(os.listdir('/proc/self/task')))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", check], env=user_env("0"), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "1"]


def test_session_runs_single_threaded(tmp_path: Path) -> None:
    linear_model(tmp_path / "linear.onnx")  # the directory's only .onnx file
    session = RUNTIME.model_fn(str(tmp_path))
    options = session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    assert session.get_providers() == ["CPUExecutionProvider"]


def test_missing_model_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"No model.onnx in .* \(found no .onnx file\)"):
        RUNTIME.model_fn(str(tmp_path))


def test_single_input_json_csv_npy(tmp_path: Path) -> None:
    path = linear_model(tmp_path / "model.onnx")
    handler = load(tmp_path)
    rows = np.random.default_rng(2).normal(size=(5, 3))
    (want,) = reference(path, {"x": rows.astype(np.float32)})

    status, body, content_type = handler.invoke(json.dumps(rows.tolist()).encode(), JSON)
    assert (status, content_type) == (200, "application/json"), body
    np.testing.assert_allclose(json.loads(body), want, rtol=1e-6)

    status, body, _ = handler.invoke(json.dumps({"x": rows.tolist()}).encode(), JSON)  # by name
    np.testing.assert_allclose(json.loads(body), want, rtol=1e-6)

    csv = "\n".join(",".join(repr(v) for v in row) for row in rows.tolist()).encode()
    status, body, content_type = handler.invoke(csv, {"content-type": "text/csv", "accept": "text/csv"})
    assert (status, content_type) == (200, "text/csv")
    np.testing.assert_allclose(
        np.loadtxt(io.StringIO(body.decode()), delimiter=",", ndmin=2), want, rtol=1e-6
    )

    buf = io.BytesIO()
    np.save(buf, rows)  # float64: cast to the input's float32
    npy = {"content-type": "application/x-npy", "accept": "application/x-npy"}
    status, body, content_type = handler.invoke(buf.getvalue(), npy)
    assert (status, content_type) == (200, "application/x-npy")
    got = np.load(io.BytesIO(body))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_several_inputs_and_outputs_by_name(tmp_path: Path) -> None:
    path = two_in_two_out_model(tmp_path / "model.onnx")
    handler = load(tmp_path)
    a = [[0.5, 1.5], [2.0, -1.0]]
    b = [[2, 3], [-4, 5]]
    total, product = reference(path, {"a": np.array(a, np.float32), "b": np.array(b, np.int64)})

    status, body, _ = handler.invoke(json.dumps({"a": a, "b": b}).encode(), JSON)
    assert status == 200, body
    assert json.loads(body) == {"total": total.tolist(), "product": product.tolist()}

    buf = io.BytesIO()
    np.savez(buf, a=np.array(a), b=np.array(b))
    status, body, _ = handler.invoke(
        buf.getvalue(), {"content-type": "application/x-npz", "accept": "application/json"}
    )
    assert json.loads(body) == {"total": total.tolist(), "product": product.tolist()}


def test_bad_requests_are_client_errors(tmp_path: Path) -> None:
    two_in_two_out_model(tmp_path / "model.onnx")
    handler = load(tmp_path)
    status, body, _ = handler.invoke(b"[[1, 2]]", JSON)
    assert (status, body) == (
        400,
        b"The model has 2 inputs (a, b): send a JSON object (or an NPZ archive) with an array for each",
    )
    status, body, _ = handler.invoke(b'{"a": [[1, 2]], "c": [[1, 2]]}', JSON)
    assert (status, body) == (400, b"The model's inputs are a, b; missing: b; unknown: c")
    status, body, _ = handler.invoke(b'{"a": [1, 2], "b": [1, 2]}', JSON)  # rank 1, the model wants rank 2
    assert status == 400
    assert b"Invalid rank for input" in body
    status, body, _ = handler.invoke(b'{"a": [["x", 2]], "b": [[1, 2]]}', JSON)
    assert (status, body) == (400, b"Input a must be tensor(float): could not convert string to float: 'x'")
    status, body, _ = handler.invoke(
        b'{"a": [[1, 2]], "b": [[1, 2]]}', {**JSON, "accept": "application/x-npy"}
    )
    assert status == 406
    assert b"several outputs (total, product)" in body


@pytest.mark.parametrize(
    "image", ["onnx", "onnxruntime:1.17", "zeroscale-onnx", "example.com/ml/zeroscale-onnx:1"]
)
def test_images(image: str) -> None:
    assert resolve_image(image) == "onnx"


def test_registry_entry() -> None:
    assert RUNTIME.framework_version == ort.__version__
    assert set(RUNTIME.content_types) == set(codecs.DECODERS)


def test_a_sample_is_zeros_of_each_inputs_shape_with_a_batch_of_one(tmp_path: Path) -> None:
    """What a parked replica rehearses with (``Runtime.sample``): zeros of the declared shape, a batch of one
    for the named dimension; an object by input name for several inputs; none for a string input or a
    dimension other than the first that is not fixed. The default hooks answer the samples."""
    assert RUNTIME.sample is not None
    for model, want in (
        (linear_model, [[0.0, 0.0, 0.0]]),
        (two_in_two_out_model, {"a": [[0.0, 0.0]], "b": [[0.0, 0.0]]}),
    ):
        model_dir = tmp_path / model.__name__
        model_dir.mkdir()
        model(model_dir / "model.onnx")
        handler = load(model_dir)
        made = RUNTIME.sample(handler.model)
        assert made is not None and made[1] == "application/json"
        assert json.loads(made[0]) == want
        assert handler.invoke(made[0], {"content-type": made[1]})[0] == 200
    for kind, shape in ((TensorProto.STRING, ["N", 2]), (TensorProto.FLOAT, ["N", "M"])):
        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "odd",
            [helper.make_tensor_value_info("x", kind, shape)],
            [helper.make_tensor_value_info("y", kind, shape)],
        )
        odd = tmp_path / f"odd-{kind}"
        odd.mkdir()
        save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), odd / "model.onnx")
        assert RUNTIME.sample(RUNTIME.model_fn(str(odd))) is None
