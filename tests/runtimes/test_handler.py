from __future__ import annotations

import functools
import inspect
import io
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from zeroscale.errors import DeployError
from zeroscale.runtimes.handler import Handler, _wants_context
from zeroscale.runtimes.sklearn import model_fn as sklearn_model_fn

from .forkpair import run_pair

JSON = {"content-type": "application/json", "accept": "application/json"}


@pytest.fixture(autouse=True)
def _isolate_imports() -> Iterator[None]:
    """User modules are imported by name and their directory put on sys.path: undo both."""
    path = list(sys.path)
    before = set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - before:
        if name in ("inference", "serve", "helper"):
            del sys.modules[name]


def write_code(model_dir: Path, source: str, name: str = "inference.py", sub: str = "code") -> Path:
    code = model_dir / sub
    code.mkdir(parents=True, exist_ok=True)
    path = code / name
    path.write_text(textwrap.dedent(source))
    return path


def load(model_dir: Path, **env: str) -> Handler:
    return Handler.load(str(model_dir), sklearn_model_fn, env)


@pytest.fixture
def fitted(tmp_path: Path) -> tuple[LogisticRegression, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    model = LogisticRegression().fit(x, y)
    joblib.dump(model, tmp_path / "model.joblib")
    return model, x[:7]


def test_defaults_predict_with_the_runtime_model(tmp_path: Path, fitted: tuple[Any, np.ndarray]) -> None:
    model, x = fitted
    handler = load(tmp_path)
    status, body, content_type = handler.invoke(json.dumps(x.tolist()).encode(), JSON)
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == model.predict(x).tolist()

    csv = "\n".join(",".join(repr(v) for v in row) for row in x.tolist()).encode()
    status, body, content_type = handler.invoke(csv, {"content-type": "text/csv", "accept": "text/csv"})
    assert (status, content_type) == (200, "text/csv")
    assert body.decode().split() == [str(v) for v in model.predict(x)]

    buffer = io.BytesIO()
    np.save(buffer, x)
    npy_headers = {"content-type": "application/x-npy", "accept": "application/x-npy"}
    status, body, content_type = handler.invoke(buffer.getvalue(), npy_headers)
    assert (status, content_type) == (200, "application/x-npy")
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), model.predict(x))


def test_missing_model_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load(tmp_path)
    assert str(err.value) == (
        f"No model.joblib or model.pkl found in {tmp_path} and code/inference.py defines no model_fn"
    )


def test_model_pkl_is_found(tmp_path: Path) -> None:
    joblib.dump({"kind": "pickled"}, tmp_path / "model.pkl")
    assert load(tmp_path).model == {"kind": "pickled"}


def test_every_hook_overridden(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        import json
        import helper  # a sibling module: the code directory is on sys.path

        def model_fn(model_dir):
            return {"dir": model_dir, "scale": helper.SCALE}

        def input_fn(body, content_type):
            return {"values": [float(v) for v in body.decode().split()], "content_type": content_type}

        def predict_fn(data, model):
            return {"out": [v * model["scale"] for v in data["values"]], "content_type": data["content_type"]}

        def output_fn(prediction, accept):
            return json.dumps({**prediction, "accept": accept})
        """,
    )
    (tmp_path / "code" / "helper.py").write_text("SCALE = 10\n")
    handler = load(tmp_path)
    assert handler.model == {"dir": str(tmp_path), "scale": 10}
    status, body, content_type = handler.invoke(b"1 2.5", {"content-type": "text/plain", "accept": "x/y"})
    assert (status, content_type) == (200, "x/y")
    assert json.loads(body) == {"out": [10.0, 25.0], "content_type": "text/plain", "accept": "x/y"}


def test_transform_fn_and_tuple_return(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        def model_fn(model_dir):
            return "M"

        def transform_fn(model, body, content_type, accept):
            return f"{model}|{body.decode()}|{content_type}|{accept}", "text/x-custom"
        """,
    )
    handler = load(tmp_path)
    status, body, content_type = handler.invoke(b"hi", {"content-type": "text/plain"})
    assert (status, body, content_type) == (200, b"M|hi|text/plain|application/json", "text/x-custom")


def test_output_fn_may_return_bytes_or_values(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        import numpy as np

        def model_fn(model_dir):
            return None

        def predict_fn(data, model):
            return data * 2

        def output_fn(prediction, accept):
            if accept == "application/x-raw":
                return bytearray(b"raw")
            return prediction  # not a body: encoded for the accept type
        """,
    )
    handler = load(tmp_path)
    assert handler.invoke(b"[1, 2]", {"accept": "application/x-raw"})[:2] == (200, b"raw")
    assert handler.invoke(b"[1, 2]", {"accept": "text/csv"}) == (200, b"2\n4\n", "text/csv")


def test_context_argument(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        def model_fn(model_dir, context):
            return {"dir": context.system_properties["model_dir"]}

        def input_fn(body, content_type, context):
            return context.get_request_header(0, "X-Amzn-SageMaker-Custom-Attributes")

        def predict_fn(data, model):  # no context here: mixing is allowed
            return [data, model["dir"]]

        def output_fn(prediction, accept, context):
            return repr(prediction + [sorted(context.request_headers)])
        """,
    )
    handler = load(tmp_path)
    headers = {"content-type": "text/plain", "x-amzn-sagemaker-custom-attributes": "trace=1"}
    status, body, _ = handler.invoke(b"", headers)
    assert status == 200
    assert body.decode() == repr(["trace=1", str(tmp_path), sorted(headers)])


def test_transform_fn_with_context(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        def transform_fn(model, body, content_type, accept, context):
            return context.model_dir
        """,
    )
    handler = Handler.load(str(tmp_path), lambda d: "default-model", {})
    assert handler.model == "default-model"
    assert handler.invoke(b"", {})[:2] == (200, str(tmp_path).encode())


def _by_signature(fn: Any, arity: int) -> bool:
    """What the handler decided for every hook before its fast path: inspect.signature's positional count."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) > arity


def test_a_hook_wants_context_exactly_when_its_signature_says_so() -> None:
    """Plain functions are read off their code; the decision is inspect.signature's for every shape of hook
    (context with a default, *args, keyword-only, positional-only, decorated with functools.wraps, a
    partial, a bound method, a callable object, a builtin)."""

    def plain(data, model): ...  # type: ignore[no-untyped-def]
    def ctx(data, model, context): ...  # type: ignore[no-untyped-def]
    def ctx_default(data, model, context=None): ...  # type: ignore[no-untyped-def]
    def star(*args): ...  # type: ignore[no-untyped-def]
    def kw_only(data, model, *, context): ...  # type: ignore[no-untyped-def]
    def pos_only(data, model, context, /): ...  # type: ignore[no-untyped-def]

    @functools.wraps(ctx)
    def wrapped(*args, **kwargs): ...  # type: ignore[no-untyped-def]

    def with_signature(*args): ...  # type: ignore[no-untyped-def]

    with_signature.__signature__ = inspect.signature(ctx)  # type: ignore[attr-defined]

    class Model:
        def predict(self, data, model, context): ...  # type: ignore[no-untyped-def]

        def __call__(self, data, model): ...  # type: ignore[no-untyped-def]

    hooks = [plain, ctx, ctx_default, star, kw_only, pos_only, wrapped, with_signature]
    hooks += [functools.partial(ctx, 1), Model().predict, Model(), len, lambda a, b, c: None]
    decided = [(_wants_context(fn, 2), _by_signature(fn, 2)) for fn in hooks]
    assert [ours for ours, _ in decided] == [theirs for _, theirs in decided]
    functions = [False, True, True, False, False, True, True, True]
    assert [ours for ours, _ in decided] == [*functions, False, True, False, False, True]


def test_transform_fn_with_predict_fn_is_rejected_at_load(tmp_path: Path) -> None:
    write_code(
        tmp_path,
        """
        def transform_fn(model, body, content_type, accept):
            return body

        def input_fn(body, content_type):
            return body

        def predict_fn(data, model):
            return data
        """,
    )
    with pytest.raises(DeployError, match="defines transform_fn together with input_fn, predict_fn"):
        load(tmp_path)


def test_user_exceptions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_code(
        tmp_path,
        """
        class BadInput(Exception):
            status_code = 422

        def model_fn(model_dir):
            return None

        def predict_fn(data, model):
            if data.tolist() == [1]:
                raise BadInput("values must be positive")
            raise ValueError("model exploded")
        """,
    )
    handler = load(tmp_path)
    assert handler.invoke(b"[1]", {}) == (422, b"values must be positive", "text/plain; charset=utf-8")
    status, body, _ = handler.invoke(b"[2]", {})
    assert (status, body) == (500, b"ValueError: model exploded")
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "raise ValueError" in err


def test_default_accept(tmp_path: Path, fitted: tuple[Any, np.ndarray]) -> None:
    model, x = fitted
    body = json.dumps(x.tolist()).encode()
    handler = load(tmp_path, SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT="text/csv")
    expected = "".join(f"{v}\n" for v in model.predict(x)).encode()
    assert handler.invoke(body, {"content-type": "application/json"}) == (200, expected, "text/csv")
    assert handler.invoke(body, {"accept": "*/*"}) == (200, expected, "text/csv")
    assert handler.invoke(body, {"accept": "image/png, */*"}) == (200, expected, "text/csv")
    status, _, content_type = load(tmp_path).invoke(body, {"accept": "*/*"})
    assert (status, content_type) == (200, "application/json")


def test_default_codec_errors(tmp_path: Path, fitted: tuple[Any, np.ndarray]) -> None:
    handler = load(tmp_path)
    status, body, _ = handler.invoke(b"x", {"content-type": "image/png"})
    assert status == 415
    assert b"image/png" in body
    assert handler.invoke(b"[[1, 2, 3]]", {"accept": "image/png"})[0] == 406
    assert handler.invoke(b"[[1, 2", {})[0] == 400
    status, body, _ = handler.invoke(b"[[1, 2]]", {})  # wrong feature count: sklearn's own error
    assert status == 500
    assert body.startswith(b"ValueError: X has 2 features")


def test_sagemaker_program_and_submit_directory(tmp_path: Path) -> None:
    src = tmp_path / "elsewhere"
    write_code(src, "def model_fn(d):\n    return 'from serve.py'\n", name="serve.py", sub=".")
    handler = load(tmp_path, SAGEMAKER_PROGRAM="serve.py", SAGEMAKER_SUBMIT_DIRECTORY=str(src))
    assert handler.model == "from serve.py"


def test_container_code_path_maps_to_the_model_dir(tmp_path: Path) -> None:
    write_code(tmp_path, "def model_fn(d):\n    return 'mapped'\n")
    handler = load(tmp_path, SAGEMAKER_PROGRAM="inference", SAGEMAKER_SUBMIT_DIRECTORY="/opt/ml/model/code")
    assert handler.model == "mapped"


def test_named_program_must_exist(tmp_path: Path) -> None:
    with pytest.raises(DeployError, match=r"SAGEMAKER_PROGRAM=serve\.py not found"):
        load(tmp_path, SAGEMAKER_PROGRAM="serve.py")
    with pytest.raises(DeployError, match="is not a local directory"):
        load(tmp_path, SAGEMAKER_SUBMIT_DIRECTORY="s3://bucket/sourcedir.tar.gz")


CONTRACT_WARM_PROBE = """
    import gc, sys, types
    from zeroscale.runtimes import handler
    from zeroscale.runtimes.registry import RUNTIMES
    RUNTIMES["sklearn"].preload()
    import zeroscale.runtimes.worker
    gc.collect(); gc.freeze()
    runtime = types.SimpleNamespace(warm=lambda: handler.warm(RUNTIMES["sklearn"].defaults))

    def timed(_state):
        loaded = zeroscale.runtimes.worker.load_handler("sklearn", sys.argv[1])
        status, body, content_type = loaded.invoke(b"ab", {"content-type": "text/plain"})
        return [status, body.decode(), content_type]
    """


def test_the_contracts_warm_up_leaves_nothing_of_itself() -> None:
    """``handler.warm`` imports a module of its own: not into sys.modules, nothing on sys.path."""
    from zeroscale.runtimes import handler
    from zeroscale.runtimes.registry import RUNTIMES

    path, modules = list(sys.path), set(sys.modules)
    handler.warm(RUNTIMES["sklearn"].defaults)
    handler.warm()
    assert sys.path == path and set(sys.modules) == modules


def test_the_contracts_warm_up_leaves_a_user_modules_first_load_less_to_copy(tmp_path: Path) -> None:
    """``handler.warm`` (what a zygote's spare runs before it waits) leaves the fork single-threaded; a
    model's ``inference.py`` then loads and answers its first request copying under half the pages (~80
    against ~340 here), with the same answer. (What the model's own code first uses, json's state for one,
    is copied on its first use as before.)"""
    write_code(
        tmp_path,
        """
        def model_fn(model_dir):
            return 2

        def transform_fn(model, body, content_type, accept):
            return body * model, content_type
        """,
    )
    (cold_faults, cold_answer, _), (warm_faults, warm_answer, threads) = run_pair(
        CONTRACT_WARM_PROBE, str(tmp_path)
    )
    assert warm_answer == cold_answer == [200, "abab", "text/plain"]
    assert threads == 1
    assert warm_faults < 0.5 * cold_faults, (warm_faults, cold_faults)
