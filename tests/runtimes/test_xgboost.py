"""The XGBoost runtime in-process: model loading as SageMaker's container does, and its default hooks."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import joblib
import numpy as np
import pytest
import xgboost as xgb

from zeroscale.runtimes import codecs
from zeroscale.runtimes.handler import Handler
from zeroscale.runtimes.image_uris import resolve_image
from zeroscale.runtimes.registry import RUNTIMES
from zeroscale.workers.forkserver import THREAD_ENV

from .forkpair import rehearsed_handler, run_pair

RUNTIME = RUNTIMES["xgboost"]
CSV_IN = {"content-type": "text/csv"}


@pytest.fixture(autouse=True)
def _isolate_imports() -> Iterator[None]:
    path = list(sys.path)
    yield
    sys.path[:] = path
    sys.modules.pop("inference", None)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.uniform(0.1, 1.0, size=(120, 5))  # no zeros: LIBSVM rows can list every feature
    y = (x[:, 0] + x[:, 2] > 1.1).astype(int)
    return x, y


@pytest.fixture(scope="module")
def booster(data: tuple[np.ndarray, np.ndarray]) -> xgb.Booster:
    x, y = data
    params = {"objective": "binary:logistic", "max_depth": 3, "nthread": 1, "seed": 0}
    return xgb.train(params, xgb.DMatrix(x, label=y), num_boost_round=8)


def load(model_dir: Path, env: dict[str, str] | None = None) -> Handler:
    return Handler.load(str(model_dir), RUNTIME.model_fn, env or {}, defaults=RUNTIME.defaults)


def expected(booster: xgb.Booster, rows: np.ndarray) -> list[float]:
    return [float(v) for v in booster.predict(xgb.DMatrix(rows))]


def csv_body(rows: np.ndarray) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()


def libsvm_body(rows: np.ndarray) -> bytes:
    return "\n".join(
        "0 " + " ".join(f"{j}:{v!r}" for j, v in enumerate(row.tolist())) for row in rows
    ).encode()


def npy_body(rows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, rows)
    return buf.getvalue()


def test_preload_starts_no_thread_and_a_fork_predicts(tmp_path: Path, booster: xgb.Booster) -> None:
    """What the zygote does: preload, then fork; the child loads the model and predicts."""
    booster.save_model(str(tmp_path / "model.json"))
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from zeroscale.runtimes.registry import RUNTIMES
        runtime = RUNTIMES['xgboost']
        runtime.preload()
        assert 'xgboost' in sys.modules and 'scipy.sparse' in sys.modules
        print(len(os.listdir('/proc/self/task')))
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            import numpy as np, xgboost
            model = runtime.model_fn({str(tmp_path)!r})
            print(model.predict(xgboost.DMatrix(np.full((3, 5), 0.5))).shape)
            sys.stdout.flush()
            os._exit(0)
        deadline = time.monotonic() + 30
        while os.waitpid(pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:  # a hung child (a lock or thread pool copied by fork)
                os.kill(pid, 9)
                print('hung')
                sys.exit(0)
            time.sleep(0.01)
        print(0)
        """
    )
    env = {**os.environ, **THREAD_ENV}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["1", "(3,)", "0"]


WARM_PROBE = """
    import gc, sys
    import numpy as np, xgboost
    from zeroscale.runtimes import codecs
    from zeroscale.runtimes.registry import RUNTIMES
    from zeroscale.runtimes.xgboost import algorithm_predict_fn, input_fn
    runtime = RUNTIMES["xgboost"]
    runtime.preload()
    x = np.random.RandomState(0).rand(500, 10); y = (x[:, 0] + x[:, 3] > 1).astype(int)
    params = {"max_depth": 4, "nthread": 1}
    xgboost.train(params, xgboost.DMatrix(x, label=y), 50).save_model(sys.argv[1] + "/xgboost-model")
    gc.collect(); gc.freeze()

    def timed(_state):
        model = runtime.model_fn(sys.argv[1])
        row = b"0.2,0.9,0.1,0.8,0.5,0.5,0.5,0.5,0.5,0.5"
        return algorithm_predict_fn(input_fn(row, codecs.CSV), model).tolist()
    """


def test_a_warmed_fork_loads_and_predicts_copying_fewer_of_the_zygotes_pages(tmp_path: Path) -> None:
    """The runtime's ``warm`` (what a zygote's spare runs before it waits: its own two-tree Booster loaded and
    asked one CSV row) leaves the fork single-threaded (it may become a template), and the load and first
    predict of another model in it copy a third fewer pages or better (about half), with the same answer."""
    (cold_faults, cold_answer, _), (warm_faults, warm_answer, threads) = run_pair(WARM_PROBE, str(tmp_path))
    assert warm_answer == cold_answer
    assert threads == 1
    assert warm_faults < 0.7 * cold_faults, (warm_faults, cold_faults)  # ~470 against ~910 here


@pytest.mark.parametrize("fmt", ["ubj", "json", "pickle", "joblib-sklearn-api"])
def test_model_fn_loads_the_formats_sagemaker_does(
    tmp_path: Path, booster: xgb.Booster, data: tuple[np.ndarray, np.ndarray], fmt: str
) -> None:
    x, y = data
    path = tmp_path / "xgboost-model"
    if fmt == "ubj":
        booster.save_model(str(tmp_path / "m.ubj"))
        (tmp_path / "m.ubj").rename(path)
        want = booster.predict(xgb.DMatrix(x))
    elif fmt == "json":
        booster.save_model(str(tmp_path / "m.json"))
        (tmp_path / "m.json").rename(path)
        want = booster.predict(xgb.DMatrix(x))
    elif fmt == "pickle":
        path.write_bytes(pickle.dumps(booster))
        want = booster.predict(xgb.DMatrix(x))
    else:
        clf = xgb.XGBClassifier(n_estimators=4, max_depth=2, n_jobs=1).fit(x, y)
        joblib.dump(clf, path)
        want = clf.get_booster().predict(xgb.DMatrix(x))
    model = RUNTIME.model_fn(str(tmp_path))
    assert isinstance(model, xgb.Booster)
    assert json.loads(model.save_config())["learner"]["generic_param"]["nthread"] == "1"
    np.testing.assert_array_equal(model.predict(xgb.DMatrix(x)), want)


def test_model_fn_takes_the_only_file_and_explains_otherwise(tmp_path: Path, booster: xgb.Booster) -> None:
    booster.save_model(str(tmp_path / "model.json"))
    assert isinstance(RUNTIME.model_fn(str(tmp_path)), xgb.Booster)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(FileNotFoundError, match=r"No xgboost-model in .* \(found model\.json, notes\.txt\)"):
        RUNTIME.model_fn(str(tmp_path))
    (tmp_path / "model.json").unlink()
    with pytest.raises(ValueError, match=r"neither an XGBoost model file .* nor a pickled Booster"):
        RUNTIME.model_fn(str(tmp_path))


@pytest.fixture
def algorithm(tmp_path: Path, booster: xgb.Booster) -> Handler:
    booster.save_model(str(tmp_path / "m.ubj"))
    (tmp_path / "m.ubj").rename(tmp_path / "xgboost-model")
    return load(tmp_path)


def test_algorithm_mode_csv_in_csv_out_by_default(
    algorithm: Handler, booster: xgb.Booster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    rows = data[0][:6]
    status, body, content_type = algorithm.invoke(csv_body(rows), CSV_IN)
    assert (status, content_type) == (200, "text/csv")
    assert body.decode() == ",".join(str(v) for v in expected(booster, rows))  # one line, as SageMaker
    status, body, _ = algorithm.invoke(csv_body(rows[:1]), {**CSV_IN, "accept": "*/*"})
    assert body.decode() == str(expected(booster, rows[:1])[0])


@pytest.mark.parametrize(
    "content_type", ["text/libsvm", "text/x-libsvm", "application/json", "application/x-npy"]
)
def test_algorithm_mode_inputs(
    algorithm: Handler, booster: xgb.Booster, data: tuple[np.ndarray, np.ndarray], content_type: str
) -> None:
    rows = data[0][10:17]
    if content_type.endswith("libsvm"):
        body = libsvm_body(rows)
    elif content_type == "application/json":
        body = json.dumps(rows.tolist()).encode()
    else:
        body = npy_body(rows)
    status, out, _ = algorithm.invoke(body, {"content-type": content_type, "accept": "text/csv"})
    assert status == 200, out
    assert [float(v) for v in out.decode().split(",")] == expected(booster, rows)


def test_algorithm_mode_outputs(
    algorithm: Handler,
    booster: xgb.Booster,
    data: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rows = data[0][:4]
    want = expected(booster, rows)
    status, body, content_type = algorithm.invoke(csv_body(rows), {**CSV_IN, "accept": "application/json"})
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == {"predictions": [{"score": v} for v in want]}
    status, body, content_type = algorithm.invoke(
        csv_body(rows), {**CSV_IN, "accept": "application/jsonlines"}
    )
    assert (status, content_type) == (200, "application/jsonlines")
    assert [json.loads(line) for line in body.decode().splitlines()] == [{"score": v} for v in want]
    status, body, content_type = algorithm.invoke(csv_body(rows), {**CSV_IN, "accept": "application/x-npy"})
    assert (status, content_type) == (200, "application/x-npy")
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), booster.predict(xgb.DMatrix(rows)))
    monkeypatch.setenv("SAGEMAKER_BATCH", "true")
    status, body, _ = algorithm.invoke(csv_body(rows), CSV_IN)
    assert body.decode() == "".join(f"{v}\n" for v in want)


def test_algorithm_mode_default_accept_from_the_environment(tmp_path: Path, booster: xgb.Booster) -> None:
    booster.save_model(str(tmp_path / "model.ubj"))
    handler = load(tmp_path, {"SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "application/json"})
    status, body, content_type = handler.invoke(b"0.5,0.5,0.5,0.5,0.5", CSV_IN)
    assert (status, content_type) == (200, "application/json")
    assert list(json.loads(body)) == ["predictions"]


def test_algorithm_mode_errors(algorithm: Handler) -> None:
    too_wide = csv_body(np.full((1, 9), 0.5))
    status, body, _ = algorithm.invoke(too_wide, CSV_IN)
    assert status == 400
    assert body.decode().startswith("Unable to evaluate payload provided: ")
    assert algorithm.invoke(b"a,b,c,d,e", CSV_IN)[:1] == (400,)
    assert algorithm.invoke(b'{"rows": [1]}', {"content-type": "application/json"})[:1] == (400,)
    assert algorithm.invoke(b"1:x", {"content-type": "text/libsvm"})[:1] == (400,)
    assert algorithm.invoke(b"0.5", {"content-type": "image/png"})[:1] == (415,)
    status, body, _ = algorithm.invoke(b"0.5,0.5,0.5,0.5,0.5", {**CSV_IN, "accept": "image/png"})
    assert status == 406
    assert "text/csv, application/json, application/jsonlines, application/x-npy" in body.decode()


def test_framework_mode_defaults(
    tmp_path: Path, booster: xgb.Booster, data: tuple[np.ndarray, np.ndarray]
) -> None:
    booster.save_model(str(tmp_path / "my-model.json"))
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(
        textwrap.dedent(
            """
            import os
            import xgboost as xgb

            def model_fn(model_dir):
                booster = xgb.Booster()
                booster.load_model(os.path.join(model_dir, "my-model.json"))
                return booster
            """
        )
    )
    handler = load(tmp_path)
    rows = data[0][:5]
    # input_fn -> DMatrix, predict_fn -> model.predict, output_fn -> the toolkit's encoders (JSON default)
    status, body, content_type = handler.invoke(csv_body(rows), CSV_IN)
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == expected(booster, rows)
    status, body, _ = handler.invoke(libsvm_body(rows), {"content-type": "text/libsvm", "accept": "text/csv"})
    assert [float(v) for v in body.decode().split()] == expected(booster, rows)


def test_libsvm_decoding_and_sklearn_unchanged() -> None:
    matrix = codecs.decode_libsvm(b"1 0:1.5 3:2\n\n0 1:-1\n2:4.25\n")
    assert matrix.shape == (3, 4)
    np.testing.assert_array_equal(matrix.toarray(), [[1.5, 0, 0, 2], [0, -1, 0, 0], [0, 0, 4.25, 0]])
    with pytest.raises(codecs.UnsupportedContentType):
        codecs.decode(b"1 0:1", "text/libsvm")  # the default input_fn (scikit-learn) does not take LIBSVM
    with pytest.raises(codecs.DecodeError):
        codecs.decode(b"", "text/libsvm", {"text/libsvm": codecs.decode_libsvm})


@pytest.mark.parametrize(
    "image",
    [
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
        "246618743249.dkr.ecr.us-west-2.amazonaws.com/sagemaker-xgboost:1.5-1-cpu-py3",
        "sagemaker-xgboost:latest",
        "xgboost",
        "XGBoost:1.7",
    ],
)
def test_images(image: str) -> None:
    assert resolve_image(image) == "xgboost"


def test_registry_entry() -> None:
    assert RUNTIME.framework_version == xgb.__version__
    assert {"text/csv", "text/libsvm", "application/json", "application/x-npy"} <= set(RUNTIME.content_types)
    assert "application/jsonlines" in RUNTIME.accepts


def test_a_sample_is_a_csv_row_of_zeros_the_algorithm_answers(
    algorithm: Handler, booster: xgb.Booster
) -> None:
    """What a parked replica rehearses with (``Runtime.sample``): one CSV row of zeros as wide as the
    Booster's features, which the algorithm's default hooks answer."""
    made = RUNTIME.sample(algorithm.model) if RUNTIME.sample is not None else None
    assert made == (b"0.0,0.0,0.0,0.0,0.0", "text/csv")
    status, body, _ = algorithm.invoke(made[0], {"content-type": made[1]})
    assert (status, body.decode()) == (200, str(expected(booster, np.zeros((1, 5)))[0]))


USER_HOOKS_PROBE = """
    import gc, os, sys
    import numpy as np, xgboost
    from zeroscale.runtimes.registry import RUNTIMES
    from zeroscale.runtimes.worker import load_handler, rehearse
    RUNTIMES["xgboost"].preload()
    x = np.random.RandomState(0).rand(500, 10); y = (x[:, 0] + x[:, 3] > 1).astype(int)
    params = {"max_depth": 6, "nthread": 1, "objective": "binary:logistic"}
    xgboost.train(params, xgboost.DMatrix(x, label=y), 100).save_model(sys.argv[1] + "/xgboost-model")
    calls = sys.argv[1] + "/predict_fn-calls-"
    os.makedirs(sys.argv[1] + "/code")
    with open(sys.argv[1] + "/code/inference.py", "w") as f:
        f.write(
            "import json, os, numpy as np, xgboost\\n"
            "def model_fn(model_dir):\\n"
            "    booster = xgboost.Booster()\\n"
            "    booster.load_model(os.path.join(model_dir, 'xgboost-model'))\\n"
            "    booster.set_param('nthread', 1)\\n"
            "    return booster\\n"
            "def input_fn(body, content_type):\\n"
            "    return xgboost.DMatrix(np.asarray(json.loads(body), dtype=np.float32))\\n"
            "def predict_fn(data, model):\\n"
            f"    open({calls!r} + str(os.getpid()), 'a').write('x')\\n"
            "    return model.predict(data)\\n"
            "def output_fn(prediction, accept):\\n"
            "    return json.dumps(prediction.tolist())\\n"
        )
    """ + rehearsed_handler("xgboost")


def test_a_replica_of_a_booster_behind_user_hooks_is_rehearsed_without_them(tmp_path: Path) -> None:
    """A model with its own inference.py is never asked a sample through its hooks; when model_fn gave
    XGBoost's own Booster, XGBoost's predict on a row of zeros takes the page copies its first request in a
    fork would make (``Runtime.exercise``), the user's predict_fn never called: the first real request
    through the user's hooks takes a fraction of the faults, and answers the same."""
    (cold_faults, cold_answer, _), (warm_faults, warm_answer, threads) = run_pair(
        USER_HOOKS_PROBE, str(tmp_path)
    )
    assert warm_answer == cold_answer
    assert warm_answer[0] == 200
    assert threads == 1
    assert cold_faults > 100
    assert warm_faults * 3 < cold_faults, (warm_faults, cold_faults)


def test_only_xgboosts_own_models_are_exercised(
    data: tuple[np.ndarray, np.ndarray], booster: xgb.Booster
) -> None:
    """``exercise`` predicts zeros on XGBoost's own Booster and scikit-learn estimators only: a subclass
    (where code of the user's could run) or anything else, and it does nothing."""
    x, y = data

    class Mine(xgb.XGBClassifier):
        def predict(self, *args: object, **kwargs: object) -> np.ndarray:
            raise AssertionError("the user's code ran")

    assert RUNTIME.exercise is not None
    assert RUNTIME.exercise(booster) is True
    assert RUNTIME.exercise(xgb.XGBClassifier(n_estimators=3, n_jobs=1).fit(x, y)) is True
    assert RUNTIME.exercise(Mine(n_estimators=3, n_jobs=1).fit(x, y)) is False
    assert RUNTIME.exercise({"model": booster}) is False
    assert RUNTIME.exercise(object()) is False
