"""The scikit-learn runtime: what a zygote imports before forking, and the default model_fn."""

from __future__ import annotations

import os
from typing import Any

MODEL_FILES = ("model.joblib", "model.pkl")


def preload() -> None:
    """Import numpy, scikit-learn, joblib and the heavy estimator modules so forks share them."""
    import joblib  # noqa: F401
    import numpy  # noqa: F401
    import sklearn
    import sklearn.compose
    import sklearn.ensemble
    import sklearn.linear_model
    import sklearn.pipeline
    import sklearn.preprocessing
    import sklearn.tree  # noqa: F401


def model_fn(model_dir: str) -> Any:
    """Load ``model.joblib`` or ``model.pkl`` from the root of the model directory."""
    import joblib

    for name in MODEL_FILES:
        path = os.path.join(model_dir, name)
        if os.path.isfile(path):
            return joblib.load(path)
    raise FileNotFoundError(
        f"No model.joblib or model.pkl found in {model_dir} and code/inference.py defines no model_fn"
    )
