"""The scikit-learn runtime: what a zygote imports before forking, and the default model_fn."""

from __future__ import annotations

import os
from typing import Any

MODEL_FILES = ("model.joblib", "model.pkl")


def preload() -> None:
    """Import numpy, scikit-learn, joblib and the heavy estimator modules so forks share them."""
    import joblib  # noqa: F401
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
