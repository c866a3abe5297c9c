"""Dynamic batching: the settings a model opts in with, the frames the router and a worker exchange, and the
pure merge and split of request rows. Cheap to import (no numpy until a merge or split runs).

A model opts in with its Environment:

- ``ZEROSCALE_MAX_BATCH_SIZE``: at most this many requests (not rows) in one predict call, 1-1000 (1: off);
- ``ZEROSCALE_MAX_BATCH_DELAY_MS``: how long a request may wait for others to join its batch when a worker
  is free, 0-1000 ms (default 0: only requests already waiting for a worker are merged).

Only a built-in runtime whose default predict is vectorized (``BATCHING_RUNTIMES``) and a model without
user code may batch: deploy refuses anything else by the variable's name, so nothing is silently ignored.

The router sends a batch as one ``POST /zeroscale/batch`` whose body is the requests' bodies framed
(``pack_bodies``), with their common Content-Type and Accept; the worker answers 200 with one framed answer
per request (``pack_answers``): its status, content type and body, each exactly what ``/invocations`` would
have answered for that request alone.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_BATCH_SIZE = "ZEROSCALE_MAX_BATCH_SIZE"
MAX_BATCH_DELAY_MS = "ZEROSCALE_MAX_BATCH_DELAY_MS"
BATCH_SIZE_LIMIT = 1000
BATCH_DELAY_LIMIT_MS = 1000
# Runtimes whose default input_fn/predict_fn take rows of numbers and predict each row on its own.
BATCHING_RUNTIMES = frozenset({"sklearn", "xgboost"})
# The request types a worker can merge (2-D rows); others are never sent in a batch.
MERGEABLE_TYPES = frozenset({"application/json", "text/csv", "application/x-npy"})
# Model classes whose prediction of a row does not depend on the other rows of the call, to the last bit:
# tree ensembles walk each row through the trees alone. A linear model, a kNN, an SVM or a neural network
# goes through BLAS, whose blocking (and so its rounding) depends on the batch's shape: merging their
# requests could change an answer's last bits, so their batches are answered one request at a time.
ROW_INDEPENDENT_MODULES = (
    "sklearn.ensemble._forest",
    "sklearn.ensemble._gb",
    "sklearn.ensemble._hist_gradient_boosting",
    "sklearn.ensemble._iforest",
    "sklearn.tree",
    "xgboost",
)
BATCH_PATH = b"/zeroscale/batch"
FRAME_TYPE = b"application/x-zeroscale-batch"

_COUNT = struct.Struct("!I")
_ANSWER = struct.Struct("!HHI")  # status, content type length, body length


def mergeable_type(content_type: bytes) -> bool:
    """Whether a request's Content-Type header (raw; empty: the default, JSON) is one a worker can merge."""
    kind = content_type.split(b";", 1)[0].strip().lower() or b"application/json"
    return kind.decode("latin-1") in MERGEABLE_TYPES


@dataclass(frozen=True)
class BatchSettings:
    max_size: int  # requests per batch
    max_delay_s: float = 0.0


def batch_settings(env: Mapping[str, str]) -> BatchSettings | None:
    """The model's batching settings from its Environment; None when it does not batch. Raises ValueError
    naming the variable when a value is out of range or not a number."""
    size_text = env.get(MAX_BATCH_SIZE)
    delay_text = env.get(MAX_BATCH_DELAY_MS)
    if size_text is None:
        if delay_text is not None:
            raise ValueError(f"{MAX_BATCH_DELAY_MS} is set but {MAX_BATCH_SIZE} is not: set both to batch.")
        return None
    try:
        size = int(size_text.strip())
    except ValueError:
        raise ValueError(
            f"{MAX_BATCH_SIZE}={size_text!r} is not an integer: give 1-{BATCH_SIZE_LIMIT} (1: off)."
        ) from None
    if not 1 <= size <= BATCH_SIZE_LIMIT:
        raise ValueError(f"{MAX_BATCH_SIZE}={size} is out of range: give 1-{BATCH_SIZE_LIMIT} (1: off).")
    delay_ms = 0.0
    if delay_text is not None:
        try:
            delay_ms = float(delay_text.strip())
        except ValueError:
            raise ValueError(
                f"{MAX_BATCH_DELAY_MS}={delay_text!r} is not a number: give 0-{BATCH_DELAY_LIMIT_MS} ms."
            ) from None
        if not 0 <= delay_ms <= BATCH_DELAY_LIMIT_MS:  # also false for NaN
            raise ValueError(
                f"{MAX_BATCH_DELAY_MS}={delay_text.strip()} is out of range: "
                f"give 0-{BATCH_DELAY_LIMIT_MS} ms."
            )
    if size == 1:
        return None
    return BatchSettings(size, delay_ms / 1000.0)


def unsupported(runtime: str, *, user_code: bool, image: bool, several: bool, multi_model: bool) -> str:
    """Why a model that set the batching variables cannot batch ("" when it can)."""
    if image:
        why = "its image is a bring-your-own image, whose predict zeroscale cannot see"
    elif several:
        why = "it has several containers"
    elif multi_model:
        why = "it is a multi-model endpoint"
    elif runtime not in BATCHING_RUNTIMES:
        why = f"the {runtime} runtime's predict is not known to treat rows independently"
    elif user_code:
        why = "it has its own inference code (code/inference.py, SAGEMAKER_PROGRAM), which could do anything"
    else:
        return ""
    return (
        f"{MAX_BATCH_SIZE} is set but {why}: batching serves the built-in "
        f"{' and '.join(sorted(BATCHING_RUNTIMES))} runtimes without user code only. Remove {MAX_BATCH_SIZE}"
        f" (and {MAX_BATCH_DELAY_MS}) from the model's Environment."
    )


# ---- frames ----
def pack_bodies(bodies: Sequence[bytes]) -> bytes:
    """Request bodies -> one frame: their count, then each one's length and bytes."""
    out = [_COUNT.pack(len(bodies))]
    for body in bodies:
        out.append(_COUNT.pack(len(body)))
        out.append(body)
    return b"".join(out)


def unpack_bodies(frame: bytes) -> list[bytes]:
    """``pack_bodies``' inverse. Raises ValueError for a frame that is cut short or too long."""
    view = memoryview(frame)
    (count,) = _unpack(_COUNT, view, 0)
    at = _COUNT.size
    bodies = []
    for _ in range(count):
        (length,) = _unpack(_COUNT, view, at)
        at += _COUNT.size
        if at + length > len(view):
            raise ValueError("batch frame cut short")
        bodies.append(bytes(view[at : at + length]))
        at += length
    if at != len(view):
        raise ValueError("batch frame has bytes after its last body")
    return bodies


def pack_answers(answers: Sequence[tuple[int, bytes, bytes]]) -> bytes:
    """(status, body, content type as its header value) per request -> one frame."""
    out = [_COUNT.pack(len(answers))]
    for status, body, kind in answers:
        out.append(_ANSWER.pack(status, len(kind), len(body)))
        out.append(kind)
        out.append(body)
    return b"".join(out)


def unpack_answers(frame: bytes) -> list[tuple[int, bytes, bytes]]:
    """``pack_answers``' inverse: (status, body, content type as bytes). Raises ValueError when malformed."""
    view = memoryview(frame)
    (count,) = _unpack(_COUNT, view, 0)
    at = _COUNT.size
    answers = []
    for _ in range(count):
        status, kind_len, body_len = _unpack(_ANSWER, view, at)
        at += _ANSWER.size
        end = at + kind_len + body_len
        if end > len(view):
            raise ValueError("batch answer frame cut short")
        answers.append((status, bytes(view[at + kind_len : end]), bytes(view[at : at + kind_len])))
        at = end
    if at != len(view):
        raise ValueError("batch answer frame has bytes after its last answer")
    return answers


def _unpack(shape: struct.Struct, view: memoryview, at: int) -> tuple[int, ...]:
    if at + shape.size > len(view):
        raise ValueError("batch frame cut short")
    return shape.unpack_from(view, at)


# ---- merge and split (in the worker) ----
@dataclass(frozen=True)
class Group:
    """Requests whose rows are merged into one predict call: their indexes and row counts, in order."""

    indexes: tuple[int, ...]
    rows: tuple[int, ...]
    data: Any  # the rows, concatenated (a 2-D numpy array)


def mergeable(data: Any) -> bool:
    """Rows of numbers a merge keeps exact: a 2-D numeric numpy array with at least one row."""
    import numpy as np

    return isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[0] > 0 and data.dtype.kind in "biuf"


def rows_independent(model: Any) -> bool:
    """Whether ``model`` predicts each row on its own, so merging requests cannot change an answer: a class
    of ``ROW_INDEPENDENT_MODULES``, or one that says so with a true ``zeroscale_rows_independent`` attribute
    (a wrapper around such a model)."""
    if getattr(type(model), "zeroscale_rows_independent", False) is True:
        return True
    module = type(model).__module__
    if not any(module == m or module.startswith(m + ".") for m in ROW_INDEPENDENT_MODULES):
        return False
    # A gradient boosting's first stage is its ``init`` estimator's prediction: a constant by default (a
    # dummy estimator, or "zero"), but any estimator may be given, and a linear model's matrix product
    # rounds differently with the number of rows (an audit: 86 of 200 answers changed in the 7th digit).
    init = getattr(model, "init_", None)
    return init is None or isinstance(init, str) or type(init).__module__.startswith("sklearn.dummy")


def merge(decoded: Sequence[Any]) -> list[Group]:
    """Decoded requests (None for one that did not decode) -> groups of at least two requests with the same
    dtype and column count, each one predict call. A request in no group is invoked alone: a 1-D body, a
    JSON object, strings, no rows, or no other request of its dtype and width (concatenating int with float
    rows would change the numbers the model sees)."""
    import numpy as np

    by_kind: dict[tuple[str, int], list[int]] = {}
    for i, data in enumerate(decoded):
        if data is not None and mergeable(data):
            by_kind.setdefault((data.dtype.str, data.shape[1]), []).append(i)
    groups = []
    for indexes in by_kind.values():
        if len(indexes) > 1:
            parts = [decoded[i] for i in indexes]
            groups.append(Group(tuple(indexes), tuple(p.shape[0] for p in parts), np.concatenate(parts)))
    return groups


def split(prediction: Any, rows: Sequence[int]) -> list[Any] | None:
    """A group's prediction -> one slice per request, by its row count; None when it cannot be split with
    certainty (not an array, or not one prediction per row)."""
    import numpy as np

    if not isinstance(prediction, np.ndarray) or prediction.ndim == 0 or prediction.shape[0] != sum(rows):
        return None
    # Each part laid out as the model's own answer for those rows alone would be (np.save writes the order):
    # a Fortran-ordered prediction's rows are copied into Fortran order (one row is C-contiguous either way).
    fortran = prediction.ndim > 1 and prediction.flags.f_contiguous and not prediction.flags.c_contiguous
    out = []
    at = 0
    for n in rows:
        part = prediction[at : at + n]
        out.append(np.asfortranarray(part) if fortran else part)
        at += n
    return out
