"""The scikit-learn runtime: what a zygote imports before forking, and the default model_fn."""

from __future__ import annotations

import io
import json
import os
from typing import Any

from zeroscale.runtimes import codecs

MODEL_FILES = ("model.joblib", "model.pkl")

# A two-tree forest of the runtime's own, as joblib.dump writes it, and a row for it (set by ``preload``):
# what ``warm`` runs in a zygote's spare.
_warm_model = b""
_warm_row: Any = None


def preload() -> None:
    """Import numpy, scikit-learn, joblib and the heavy estimator modules so forks share them."""
    import joblib
    import numpy
    import sklearn
    import sklearn.compose
    import sklearn.ensemble
    import sklearn.linear_model
    import sklearn.pipeline
    import sklearn.preprocessing
    import sklearn.tree

    from zeroscale.runtimes import joblib_reader  # noqa: F401

    # One throwaway fit and predict: scikit-learn's first input validation in a process scans installed
    # entry points (~7 ms); paid once here, not by every forked worker's first request. Single-threaded:
    # the zygote's BLAS/OpenMP pools are pinned to one thread, so no pool exists to break across fork().
    x = numpy.array([[0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [1.0, 1.0]])
    y = numpy.array([0, 1, 0, 1])
    sklearn.tree.DecisionTreeClassifier(random_state=0).fit(x, y).predict(x)
    sklearn.linear_model.LinearRegression().fit(x, y).predict(x)

    global _warm_model, _warm_row
    buffer = io.BytesIO()
    joblib.dump(sklearn.ensemble.RandomForestClassifier(n_estimators=2, random_state=0).fit(x, y), buffer)
    _warm_model, _warm_row = buffer.getvalue(), x[:1]


def warm() -> None:
    """Read the runtime's own two-tree forest with the joblib reader and predict one row: run in a zygote's
    spare while it waits, it copies the pages that a model's load and first predict write (reference counts,
    the interpreter's caches of the functions on that path) before a request waits on it; the first predict
    of a forest in a worker then copies ~5 pages instead of ~500. Runs no model's code and keeps nothing."""
    from zeroscale.runtimes import joblib_reader

    if _warm_model:
        joblib_reader.read(io.BytesIO(_warm_model)).predict(_warm_row)


def sample(model: Any) -> tuple[bytes, str] | None:
    """A request the default hooks answer for ``model``: one JSON row of zeros as wide as the model was
    fitted (``n_features_in_``, which fitted estimators and pipelines have); None where it does not say."""
    width = getattr(model, "n_features_in_", None)
    rows = codecs.zeros((1, width)) if isinstance(width, int) else None
    return None if rows is None else (json.dumps(rows).encode(), codecs.JSON)


def model_fn(model_dir: str) -> Any:
    """Load ``model.joblib`` or ``model.pkl`` from the root of the model directory: what ``joblib.load``
    returns, read with the C unpickler (``joblib_reader``)."""
    from zeroscale.runtimes import joblib_reader

    for name in MODEL_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            return joblib_reader.load(path)
    raise FileNotFoundError(
        f"No model.joblib or model.pkl found in {model_dir} and code/inference.py defines no model_fn"
    )
