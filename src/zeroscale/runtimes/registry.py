"""The runtimes a worker can run, by name. Cheap to import: frameworks load only when called."""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zeroscale.errors import DeployError

if TYPE_CHECKING:
    from zeroscale.runtimes.handler import Defaults


@dataclass(frozen=True)
class Runtime:
    name: str
    framework_version: str  # the installed framework's version; "" when it is not installed
    preload: Callable[[], None]
    model_fn: Callable[[str], Any]
    content_types: tuple[str, ...]  # what the default input_fn decodes
    # In the worker, after fork: the runtime's default input/predict/output_fn and Accept, by whether the
    # model has user code (None: the handler's own, numpy in and out, ``model.predict``).
    defaults: Callable[[bool], Defaults] | None = None
    accepts: tuple[str, ...] = ("application/json", "text/csv", "application/x-npy")  # default output_fn
    # In a zygote's spare, before it waits for a request: the runtime's own throwaway model through the
    # default load and predict, so their first writes to the zygote's pages happen ahead (None: nothing).
    warm: Callable[[], None] | None = None
    # In a parked replica of a template (``runtimes.worker.rehearse``): a request the default hooks answer
    # for the loaded model, ``(body, content type)``, made from what the model says of its input (None: it
    # says nothing, or the runtime makes none).
    sample: Callable[[Any], tuple[bytes, str] | None] | None = None
    # In a parked replica of a template whose model has user hooks (which are never asked a sample): the
    # framework's own predict on zeros of the model's input, when the model object is the framework's
    # through and through; True when it predicted (None: the runtime has none).
    exercise: Callable[[Any], bool] | None = None


def installed_version(distribution: str) -> str:
    """A distribution's version from its ``*.dist-info`` name on sys.path, without importing it
    (importlib.metadata costs ~30 ms to import)."""
    pattern = re.compile(re.escape(distribution.replace("-", "_")) + r"-([^-]+)\.dist-info$", re.IGNORECASE)
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            match = pattern.match(name)
            if match:
                return match.group(1)
    return ""


def _sklearn_preload() -> None:
    from zeroscale.runtimes import sklearn

    sklearn.preload()


def _sklearn_warm() -> None:
    from zeroscale.runtimes import sklearn

    sklearn.warm()


def _sklearn_sample(model: Any) -> tuple[bytes, str] | None:
    from zeroscale.runtimes import sklearn

    return sklearn.sample(model)


def _sklearn_exercise(model: Any) -> bool:
    from zeroscale.runtimes import sklearn

    return sklearn.exercise(model)


def _sklearn_model_fn(model_dir: str) -> Any:
    from zeroscale.runtimes import sklearn

    return sklearn.model_fn(model_dir)


def _sklearn_defaults(user_code: bool) -> Defaults:
    """The handler's own hooks (numpy in and out, ``model.predict``); without user code, requests may be
    merged into one predict call (dynamic batching): the default input_fn's rows go to predict as they are."""
    from zeroscale.runtimes.handler import Defaults, default_input_fn

    return Defaults() if user_code else Defaults(batch_input_fn=default_input_fn)


DEFAULT_CONTENT_TYPES = ("application/json", "text/csv", "application/x-npy", "application/x-npz")


def _lazy_runtime(
    name: str, version: str, content_types: tuple[str, ...], accepts: tuple[str, ...] | None = None
) -> Runtime:
    """A runtime whose code lives in ``zeroscale.runtimes.<name>`` (preload, model_fn, defaults), imported
    only when one of them is called."""

    def module() -> Any:
        return importlib.import_module(f"zeroscale.runtimes.{name}")

    def preload() -> None:
        module().preload()

    def model_fn(model_dir: str) -> Any:
        return module().model_fn(model_dir)

    def defaults(user_code: bool) -> Defaults:
        chosen: Defaults = module().defaults(user_code)
        return chosen

    def warm() -> None:
        hook = getattr(module(), "warm", None)
        if hook is not None:
            hook()

    def sample(model: Any) -> tuple[bytes, str] | None:
        make = getattr(module(), "sample", None)
        made: tuple[bytes, str] | None = make(model) if make is not None else None
        return made

    def exercise(model: Any) -> bool:
        run = getattr(module(), "exercise", None)
        return run is not None and bool(run(model))

    return Runtime(
        name=name,
        framework_version=version,
        preload=preload,
        model_fn=model_fn,
        content_types=content_types,
        defaults=defaults,
        accepts=accepts or Runtime.accepts,
        warm=warm,
        sample=sample,
        exercise=exercise,
    )


RUNTIMES: dict[str, Runtime] = {
    "sklearn": Runtime(
        name="sklearn",
        framework_version=installed_version("scikit-learn"),
        preload=_sklearn_preload,
        model_fn=_sklearn_model_fn,
        content_types=DEFAULT_CONTENT_TYPES,
        defaults=_sklearn_defaults,
        warm=_sklearn_warm,
        sample=_sklearn_sample,
        exercise=_sklearn_exercise,
    ),
    # SageMaker's XGBoost algorithm (a bare xgboost-model) and framework mode (code/inference.py).
    "xgboost": _lazy_runtime(
        "xgboost",
        installed_version("xgboost-cpu") or installed_version("xgboost"),
        ("text/libsvm", "text/x-libsvm", *DEFAULT_CONTENT_TYPES),
        ("text/csv", "application/json", "application/jsonlines", "application/x-npy"),
    ),
    "pytorch": _lazy_runtime("pytorch", installed_version("torch"), DEFAULT_CONTENT_TYPES),
    "onnx": _lazy_runtime("onnx", installed_version("onnxruntime"), DEFAULT_CONTENT_TYPES),
}


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise DeployError(f"Unknown runtime {name!r}; known: {', '.join(sorted(RUNTIMES))}") from None
