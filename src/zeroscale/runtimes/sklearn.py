"""The scikit-learn runtime: what a zygote imports before forking, and the default model_fn."""

from __future__ import annotations

import abc
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


def exercise(model: Any) -> bool:
    """For a model with user hooks (which are never asked a sample): scikit-learn's own ``predict`` on one row
    of zeros as wide as the model was fitted, when the model object is scikit-learn's through and through
    (``library_only``, asked first: nothing of the object is read before), so that no code of the user's
    can run in it. Its answer is dropped. What a parked replica of such a model's template does before it
    says it is up (``runtimes.worker.rehearse``): the pages its first request would copy, one fault at a
    time, are copied while it waits. True when it predicted."""
    import numpy

    if not library_only(model):
        return False
    width = getattr(model, "n_features_in_", None)
    rows = codecs.zeros((1, width)) if type(width) is int else None
    if rows is None:
        return False
    model.predict(numpy.asarray(rows, dtype=numpy.float64))
    return True


_PLAIN: tuple[type, ...] = (type(None), bool, int, float, complex, str, bytes)
_CONTAINERS: tuple[type, ...] = (list, tuple, set, frozenset)
_LIBRARIES = frozenset({"sklearn", "numpy", "scipy"})  # (the first name of a class's module)
_MAX_DEPTH = 32


def library_only(value: Any) -> bool:
    """Whether ``value`` holds nothing but plain values, numpy arrays of numbers, and objects of classes
    that scikit-learn, numpy and scipy define (every class in their method resolution order, and their
    metaclasses), through every attribute, list, tuple, set and dict, as deep as ``_MAX_DEPTH``: then
    calling its ``predict`` runs those libraries' code only. A user's subclass, a function
    (FunctionTransformer's, a custom metric) or an object of the user's anywhere inside, and it is not.
    Asking runs none of the user's code either: classes are compared by identity, and a class's module and
    bases are read only once its metaclass is known to be ``type``, ``abc.ABCMeta`` or the libraries'."""
    return _library_only(value, 0, set())


def _one_of(cls: type, kinds: tuple[type, ...]) -> bool:
    return any(cls is kind for kind in kinds)


def _library_only(value: Any, depth: int, seen: set[int]) -> bool:
    kind = type(value)
    if _one_of(kind, _PLAIN):
        return True
    if depth > _MAX_DEPTH:
        return False
    if id(value) in seen:
        return True
    seen.add(id(value))
    if _one_of(kind, _CONTAINERS):
        return all(_library_only(each, depth + 1, seen) for each in value)
    if kind is slice:  # ColumnTransformer's output_indices_
        return all(_library_only(each, depth + 1, seen) for each in (value.start, value.stop, value.step))
    if kind is dict:
        return all(
            _library_only(k, depth + 1, seen) and _library_only(v, depth + 1, seen) for k, v in value.items()
        )
    if kind is type or kind is abc.ABCMeta:  # a class as a parameter (a dtype such as numpy.float64, float)
        return _one_of(value, _PLAIN) or _library_class(value)
    if not _library_class(kind):  # a function, an object of the user's (or of another library)
        return False
    if _module(kind).split(".")[0] == "numpy":  # an array, a scalar, a dtype, a ufunc, a random state
        return getattr(getattr(value, "dtype", None), "kind", "") != "O"  # no array of objects
    attributes = getattr(value, "__dict__", None)
    return attributes is None or all(_library_only(each, depth + 1, seen) for each in attributes.values())


def _module(cls: type) -> str:
    """A class's module, "" when it is not a plain string (read through ``type`` itself: a metaclass's
    own attribute is never consulted)."""
    module = type.__dict__["__module__"].__get__(cls)
    return module if type(module) is str else ""


def _library_class(cls: type) -> bool:
    """``cls`` is the libraries', its metaclass is ``type``, ``abc.ABCMeta`` or theirs, and so is every class
    in its method resolution order but ``object``, ``abc.ABC`` and the plain types (numpy's float64 is a
    float)."""
    meta = type(cls)
    if not (meta is type or meta is abc.ABCMeta or (type(meta) is type and _library_module(_module(meta)))):
        return False
    if not _library_module(_module(cls)):
        return False
    for base in type.__dict__["__mro__"].__get__(cls):
        if base is object or base is abc.ABC or _one_of(base, _PLAIN):
            continue
        if base is not cls and not _library_class(base):
            return False
    return True


def _library_module(module: str) -> bool:
    return module.split(".")[0] in _LIBRARIES


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
