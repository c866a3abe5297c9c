"""The runtimes a worker can run, by name. Cheap to import: frameworks load only when called."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroscale.errors import DeployError


@dataclass(frozen=True)
class Runtime:
    name: str
    framework_version: str  # the installed framework's version; "" when it is not installed
    preload: Callable[[], None]
    model_fn: Callable[[str], Any]
    content_types: tuple[str, ...]  # what the default input_fn decodes


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


def _preload_serving() -> None:
    """The worker's own modules (handler, server, codecs): imported before fork, shared by the children."""
    import zeroscale.runtimes.worker  # noqa: F401


def _sklearn_preload() -> None:
    from zeroscale.runtimes import sklearn

    sklearn.preload()
    _preload_serving()


def _sklearn_model_fn(model_dir: str) -> Any:
    from zeroscale.runtimes import sklearn

    return sklearn.model_fn(model_dir)


DEFAULT_CONTENT_TYPES = ("application/json", "text/csv", "application/x-npy", "application/x-npz")

RUNTIMES: dict[str, Runtime] = {
    "sklearn": Runtime(
        name="sklearn",
        framework_version=installed_version("scikit-learn"),
        preload=_sklearn_preload,
        model_fn=_sklearn_model_fn,
        content_types=DEFAULT_CONTENT_TYPES,
    ),
}


def get_runtime(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise DeployError(f"Unknown runtime {name!r}; known: {', '.join(sorted(RUNTIMES))}") from None
