"""Where a model's inference code lives, and the worker environment that points at its Python packages.

Cheap to import (no numpy, no framework): the server's deploy step uses it to find
``requirements.txt`` beside the user's script, the worker's handler to import that script.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from zeroscale.errors import DeployError

PROGRAM = "SAGEMAKER_PROGRAM"
SUBMIT_DIRECTORY = "SAGEMAKER_SUBMIT_DIRECTORY"
# Set by deploy in the worker environment: the per-model directory that code/requirements.txt was
# installed into; the handler puts it first on sys.path before importing any user code.
PYTHONPATH = "ZEROSCALE_PYTHONPATH"
REQUIREMENTS = "requirements.txt"
DEFAULT_PROGRAM = "inference.py"
CONTAINER_MODEL_DIR = "/opt/ml/model"


def check_code_env(env: Mapping[str, str]) -> None:
    """DeployError for a model ``Environment`` that names code outside the model: a worker may read the
    directories these name, so a model could otherwise read another model's extracted files or installed
    packages. ``SAGEMAKER_SUBMIT_DIRECTORY`` is a source archive's URL (fetched and unpacked for this model
    at deploy) or a container path under /opt/ml/model; ``SAGEMAKER_PROGRAM`` a script within it;
    ``ZEROSCALE_PYTHONPATH`` is zeroscale's to set."""
    if PYTHONPATH in env:
        raise DeployError(
            f"{PYTHONPATH} is set by zeroscale (the directory of the model's installed requirements); "
            "remove it from the model's Environment."
        )
    program = env.get(PROGRAM, "").strip()
    if program.startswith("/") or ".." in Path(program).parts:
        raise DeployError(
            f"{PROGRAM}={program} must name a script within the code directory (a relative path, no '..')."
        )
    submit = env.get(SUBMIT_DIRECTORY, "").strip()
    if not submit or submit.startswith(("s3://", "file://")):
        return
    inside = submit == CONTAINER_MODEL_DIR or submit.startswith(CONTAINER_MODEL_DIR + "/")
    if not inside or ".." in Path(submit).parts:
        raise DeployError(
            f"{SUBMIT_DIRECTORY}={submit} must be the s3:// (or file://) URL of a source archive, or a "
            f"directory under {CONTAINER_MODEL_DIR} (the model's own files)."
        )


def user_code_path(model_dir: str, env: Mapping[str, str]) -> tuple[Path, bool]:
    """Where the user module lives and whether it was named explicitly (``SAGEMAKER_PROGRAM``)."""
    program = env.get(PROGRAM, "").strip()
    explicit = bool(program)
    if not program:
        program = DEFAULT_PROGRAM
    elif not program.endswith(".py"):
        program += ".py"
    return code_dir(model_dir, env) / program, explicit


def code_dir(model_dir: str, env: Mapping[str, str]) -> Path:
    """The directory of the user's code: ``SAGEMAKER_SUBMIT_DIRECTORY`` (a local path; a container path
    under /opt/ml/model maps into ``model_dir``), else ``<model_dir>/code``."""
    submit = env.get(SUBMIT_DIRECTORY, "").strip()
    if submit.startswith("file://"):
        submit = submit[len("file://") :]
    if not submit:
        return Path(model_dir) / "code"
    if "://" in submit:
        raise DeployError(
            f"{SUBMIT_DIRECTORY}={submit} is not a local directory; "
            "the code archive must be fetched and extracted before the worker starts"
        )
    if (submit == CONTAINER_MODEL_DIR or submit.startswith(CONTAINER_MODEL_DIR + "/")) and not os.path.isdir(
        submit
    ):
        # The SDK writes container paths (/opt/ml/model/code); the model lives elsewhere here.
        return Path(model_dir + submit[len(CONTAINER_MODEL_DIR) :])
    return Path(submit)


def requirements_file(model_dir: str, env: Mapping[str, str]) -> Path | None:
    """``requirements.txt`` beside the user's code, if there is one."""
    path = code_dir(model_dir, env) / REQUIREMENTS
    return path if path.is_file() else None


def add_python_path(env: Mapping[str, str]) -> str | None:
    """Put the model's installed requirements (``ZEROSCALE_PYTHONPATH``) first on ``sys.path``.

    Returns a warning naming packages it holds that the runtime had already imported before the fork
    (those keep the runtime's version), or None."""
    directory = env.get(PYTHONPATH, "").strip()
    if not directory:
        return None
    if directory in sys.path:
        sys.path.remove(directory)
    sys.path.insert(0, directory)
    try:
        names = {name.split(".", 1)[0] for name in os.listdir(directory)}
    except OSError as exc:
        return f"zeroscale: {PYTHONPATH}={directory} cannot be read: {exc}"
    shadowed = sorted(name for name in names if name in sys.modules)
    if not shadowed:
        return None
    return (
        f"zeroscale: requirements.txt installed {', '.join(shadowed)}, which the runtime had already "
        "imported; the runtime's version is used"
    )


def has_user_code(model_dir: str, env: Mapping[str, str]) -> bool:
    """Whether the model brings its own inference code (an ``inference.py`` or a named program)."""
    return bool(env.get(PROGRAM) or env.get(SUBMIT_DIRECTORY)) or os.path.exists(
        os.path.join(model_dir, "code", DEFAULT_PROGRAM)
    )


# Runtimes whose default model_fn leaves a process that is safe to fork (no threads, no connections):
# scikit-learn and XGBoost load into plain memory; PyTorch's torch.jit.load runs no operator, so ATen's
# intra-/inter-op pools do not exist yet (the template pinned torch to one thread before loading, and its
# replicas inherit that); ONNX Runtime with its telemetry off (``ORT_DISABLE_TELEMETRY=1``, see
# ``runtimes/onnx.py``) starts no thread at import, nor with one intra- and one inter-op thread per session.
FORK_SAFE_RUNTIMES = frozenset({"sklearn", "xgboost", "pytorch", "onnx"})


# A model's Environment may say ``off``: no template of it, every worker loads it (its model_fn runs in each).
TEMPLATES = "ZEROSCALE_TEMPLATES"


def check_templates(env: Mapping[str, str]) -> None:
    """Raises ValueError naming ``ZEROSCALE_TEMPLATES`` when it is set to other than ``on`` or ``off``."""
    value = env.get(TEMPLATES)
    if value is not None and value not in ("on", "off"):
        raise ValueError(
            f"{TEMPLATES}={value!r} is neither on nor off: off makes every worker load the model itself "
            "(its model_fn runs in each), on (the default) forks workers from one process that loaded it"
        )


def forks_loaded_model(runtime: str, env: Mapping[str, str]) -> bool:
    """Whether a process that loaded a model of ``runtime`` may be tried as a template (forked into further
    workers): a fork-safe runtime, with or without user code, unless the model's Environment sets
    ``ZEROSCALE_TEMPLATES=off`` (a model_fn that must run in every worker). What a model's own code does in
    its model_fn is checked where it ran: a template that finds other threads, a child process or a
    descriptor its load opened refuses to fork (``workers.forkserver.refuse_unless_forkable``), and its
    pool tries no other. The user's code is as untrusted as a pickle's, which every template already runs,
    confined alike."""
    return runtime in FORK_SAFE_RUNTIMES and env.get(TEMPLATES) != "off"
