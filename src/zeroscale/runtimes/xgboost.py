"""The XGBoost runtime, served like the sagemaker-xgboost-container.

Two modes, chosen by whether the model has ``code/inference.py``:
- algorithm mode (SageMaker's built-in XGBoost algorithm): the model directory holds one Booster file,
  ``xgboost-model`` (XGBoost's JSON/UBJSON format, or a pickled Booster). Requests are CSV, LIBSVM, JSON
  or NPY rows; responses are CSV (the default: ``0.1,0.7,0.2``), JSON ``{"predictions": [{"score": s}]}``,
  JSON Lines (``{"score": s}`` per line) or NPY;
- framework mode (user code): the user's hooks over the container's defaults: input_fn -> ``DMatrix``,
  predict_fn ``model.predict(dmatrix, validate_features=False)``, output_fn the toolkit's encoders.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import warnings
from typing import Any

import numpy as np

from zeroscale.runtimes import codecs
from zeroscale.runtimes.handler import Defaults
from zeroscale.runtimes.modelfile import find_model_file

MODEL_FILE = "xgboost-model"
JSONLINES = "application/jsonlines"
DECODERS = {
    **codecs.DECODERS,
    codecs.LIBSVM: codecs.decode_libsvm,
    codecs.X_LIBSVM: codecs.decode_libsvm,
}
CONTENT_TYPES = (codecs.CSV, codecs.LIBSVM, codecs.X_LIBSVM, codecs.JSON, codecs.NPY, codecs.NPZ)
ALGORITHM_ACCEPTS = (codecs.CSV, codecs.JSON, JSONLINES, codecs.NPY)
_warm_model = b""  # a two-tree Booster of the runtime's own, UBJSON (set by ``preload``): what ``warm`` loads


def preload() -> None:
    """Import numpy, scipy.sparse (LIBSVM) and xgboost; libxgboost starts no thread until it predicts."""
    try:
        import xgboost
    except ImportError as exc:
        raise ImportError(
            f"the xgboost runtime needs XGBoost: pip install 'zeroscale[xgboost]' ({exc})"
        ) from exc
    importlib.import_module("scipy.sparse")  # for LIBSVM requests; scipy ships no type stubs
    import numpy.random  # noqa: F401 - each worker reseeds it after the fork

    global _warm_model
    rows = np.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    data = xgboost.DMatrix(rows, label=np.array([0, 1, 0, 1]), nthread=1)
    booster = xgboost.train({"max_depth": 2, "nthread": 1}, data, num_boost_round=2)
    _warm_model = bytes(booster.save_raw("ubj"))


def warm() -> None:
    """Load the runtime's own two-tree Booster and predict one CSV row through the algorithm's default path:
    run in a zygote's spare while it waits, it copies the pages a model's load and first predict write
    before a request waits on it (in a fork: load 8 -> 5 ms, first predict 3.5 -> 1.3 ms here). Runs no
    model's code and keeps nothing; one thread (the zygote's OMP_NUM_THREADS=1), so a spare that becomes a
    template still forks safely."""
    import xgboost

    if _warm_model:
        booster = xgboost.Booster()
        booster.load_model(bytearray(_warm_model))
        booster.set_param("nthread", "1")
        algorithm_predict_fn(input_fn(b"0.5,0.5", codecs.CSV), booster)


def sample(booster: Any) -> tuple[bytes, str] | None:
    """A request the algorithm's default hooks answer for ``booster``: one CSV row of zeros as wide as its
    features (``num_features``); None where it has none."""
    rows = codecs.zeros((1, booster.num_features()))
    return None if rows is None else (",".join(map(str, rows[0])).encode(), codecs.CSV)


def exercise(model: Any) -> bool:
    """For a model with user hooks (which are never asked a sample): XGBoost's own predict on one row of
    zeros as wide as its features, when the model is XGBoost's own Booster, or one of its scikit-learn
    estimators (their Booster predicts: no parameter of the user's, a custom objective or metric, runs at
    prediction), and not a subclass, where code of the user's could run. The answer is dropped. What a
    parked replica of such a model's template does before it says it is up: in a fork, the first predict
    of a 100-tree Booster took 2.5 ms and 740 page faults, after this 0.4 ms and 20. True when it
    predicted."""
    import xgboost

    kind = type(model)  # compared by identity: nothing of a user's class is consulted
    estimators = (
        xgboost.XGBClassifier,
        xgboost.XGBRegressor,
        xgboost.XGBRanker,
        xgboost.XGBRFClassifier,
        xgboost.XGBRFRegressor,
    )
    if kind is xgboost.Booster:
        booster = model
    elif any(kind is each for each in estimators):
        booster = model.get_booster()
    else:
        return False
    rows = codecs.zeros((1, booster.num_features()))
    if rows is None:
        return False
    booster.predict(xgboost.DMatrix(np.asarray(rows, dtype=np.float32)))
    return True


def model_fn(model_dir: str) -> Any:
    """The Booster in ``xgboost-model`` (or the model directory's only file), one thread per prediction."""
    booster = load_booster(_model_file(model_dir))
    booster.set_param("nthread", 1)
    return booster


def _model_file(model_dir: str) -> str:
    return find_model_file(model_dir, (MODEL_FILE,), lambda name: not name.startswith("."), "no files")


def load_booster(path: str) -> Any:
    """``Booster.load_model``, falling back to unpickling (a pickled Booster, or an XGBoost scikit-learn
    estimator, whose Booster is used) as SageMaker's container does."""
    import xgboost

    booster = xgboost.Booster()
    try:
        with warnings.catch_warnings():  # "Unknown file format" for a name without .json/.ubj
            warnings.simplefilter("ignore")
            booster.load_model(path)
        return booster
    except Exception as exc:
        native_error = exc
    try:
        obj = _unpickle(path)
    except Exception as exc:
        raise ValueError(
            f"{path} is neither an XGBoost model file ({_first_line(native_error)}) "
            f"nor a pickled Booster ({type(exc).__name__}: {_first_line(exc)})"
        ) from exc
    if isinstance(obj, xgboost.Booster):
        return obj
    get_booster = getattr(obj, "get_booster", None)
    if callable(get_booster):
        return get_booster()
    raise TypeError(f"{path} holds a pickled {type(obj).__name__}, not an XGBoost Booster")


def _unpickle(path: str) -> Any:
    try:
        import joblib  # noqa: F401  (reads plain pickles too, and joblib.dump's files)
    except ImportError:
        with open(path, "rb") as f:
            return pickle.load(f)
    from zeroscale.runtimes import joblib_reader

    return joblib_reader.load(path)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ---- hooks ----
def defaults(user_code: bool) -> Defaults:
    if user_code:
        return Defaults(input_fn=input_fn, predict_fn=framework_predict_fn)
    return Defaults(
        input_fn=input_fn,
        predict_fn=algorithm_predict_fn,
        output_fn=algorithm_output_fn,
        accept=codecs.CSV,
        batch_input_fn=batch_input_fn,
    )


def batch_input_fn(body: bytes, content_type: str) -> Any:
    """Dynamic batching: a request's rows before they become a DMatrix (algorithm_predict_fn builds one from
    rows, as input_fn would have); merged only when they are a 2-D numeric array."""
    return codecs.decode(body, content_type, DECODERS)


def input_fn(body: bytes, content_type: str) -> Any:
    """CSV, LIBSVM, JSON (a list of rows, or one row), NPY or NPZ -> ``xgboost.DMatrix``."""
    return to_dmatrix(codecs.decode(body, content_type, DECODERS))


def to_dmatrix(data: Any) -> Any:
    import xgboost

    if isinstance(data, xgboost.DMatrix):
        return data
    if isinstance(data, dict):
        raise codecs.DecodeError("Expected rows of features (a list of lists), not a JSON object")
    if isinstance(data, np.ndarray):
        if data.ndim == 1:
            data = data.reshape(1, -1)
        if data.ndim != 2:
            raise codecs.DecodeError(f"Expected rows of features (2 dimensions), got shape {data.shape}")
        if data.dtype.kind not in "biuf":
            raise codecs.DecodeError(f"Expected numeric features, got {data.dtype} values")
    try:
        return xgboost.DMatrix(data, nthread=1)
    except (ValueError, TypeError, xgboost.core.XGBoostError) as exc:
        raise codecs.DecodeError(f"Could not build a DMatrix from the request: {_first_line(exc)}") from exc


def framework_predict_fn(data: Any, model: Any) -> Any:
    return model.predict(data, validate_features=False)


def algorithm_predict_fn(data: Any, model: Any) -> Any:
    import xgboost

    try:
        return model.predict(to_dmatrix(data), validate_features=False)
    except (ValueError, xgboost.core.XGBoostError) as exc:  # e.g. more columns than the model has
        raise codecs.InferenceError(f"Unable to evaluate payload provided: {_first_line(exc)}", 400) from exc


def algorithm_output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    """Like the XGBoost algorithm: CSV is one line of comma-separated predictions (one per line when
    ``SAGEMAKER_BATCH`` is set), JSON ``{"predictions": [{"score": ...}]}``, JSON Lines ``{"score": ...}``."""
    values = np.asarray(prediction).tolist()
    if not isinstance(values, list):
        values = [values]
    for candidate in accept.split(","):
        kind = codecs.media_type(candidate)
        if kind in (codecs.CSV, "csv"):
            if os.environ.get("SAGEMAKER_BATCH"):
                return ("\n".join(map(str, values)) + "\n").encode(), codecs.CSV
            return ",".join(map(str, values)).encode(), codecs.CSV
        if kind in (codecs.JSON, "json"):
            return json.dumps({"predictions": [{"score": v} for v in values]}).encode(), codecs.JSON
        if kind == JSONLINES:
            return "".join(json.dumps({"score": v}) + "\n" for v in values).encode(), JSONLINES
        if kind == codecs.NPY:
            return codecs.encode(prediction, codecs.NPY)
    raise codecs.UnsupportedAccept(
        f"Accept {accept!r} is not supported by the XGBoost algorithm. "
        f"Supported: {', '.join(ALGORITHM_ACCEPTS)}"
    )
