"""Default decoders (request body -> numpy) and encoders (prediction -> response body).

Follows the sagemaker-inference-toolkit defaults: JSON, CSV and NPY both ways, NPZ for input. An
unsupported request type raises ``UnsupportedContentType`` (415), an unsupported Accept
``UnsupportedAccept`` (406), a body that does not parse ``DecodeError`` (400).
"""

from __future__ import annotations

import importlib
import io
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

JSON = "application/json"
CSV = "text/csv"
NPY = "application/x-npy"
NPZ = "application/x-npz"
LIBSVM = "text/libsvm"  # decoded only where a runtime asks for it (xgboost): not in DECODERS
X_LIBSVM = "text/x-libsvm"


class InferenceError(Exception):
    """An error the worker answers with ``status_code`` and the message as the body."""

    status_code: int = 500

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code


class UnsupportedContentType(InferenceError):
    status_code = 415


class UnsupportedAccept(InferenceError):
    status_code = 406


class DecodeError(InferenceError):
    status_code = 400


# A rehearsal's sample request (``runtimes.worker.rehearse``) holds at most this many values: a model whose
# input is larger gets none.
SAMPLE_MAX_VALUES = 1 << 20


def zeros(shape: tuple[int, ...]) -> Any | None:
    """A nested list of ``0.0`` of ``shape`` (every dimension positive), as JSON decodes into an array of it;
    None when it would hold more than ``SAMPLE_MAX_VALUES`` values."""
    if not shape or any(d <= 0 for d in shape) or math.prod(shape) > SAMPLE_MAX_VALUES:
        return None
    return np.zeros(shape).tolist()


def media_type(value: str) -> str:
    """``'Text/CSV; charset=utf-8'`` -> ``'text/csv'``."""
    return value.split(";", 1)[0].strip().lower()


# ---- decoders ----
def _decode_json(body: bytes) -> Any:
    data = json.loads(body)
    if isinstance(data, dict):
        return data
    return np.asarray(data)


def _csv_value(field: str) -> float:
    field = field.strip()
    return float(field) if field else float("nan")


def _decode_csv(body: bytes) -> Any:
    if body.strip():
        try:  # numpy's C parser: several times faster than the loop below on numeric rows (batch payloads)
            return np.loadtxt(io.BytesIO(body), delimiter=",", ndmin=2, dtype=np.float64, comments=None)
        except ValueError:
            pass  # empty fields (NaN), non-numeric columns, ragged rows: the loop below decides
    lines = [line for line in body.decode("utf-8").splitlines() if line.strip()]
    rows = [line.split(",") for line in lines]
    try:
        return np.array([[_csv_value(f) for f in row] for row in rows], dtype=np.float64, ndmin=2)
    except ValueError:
        # Non-numeric columns (e.g. a pipeline with an encoder): hand over strings, one row per line.
        return np.array([[f.strip() for f in row] for row in rows], dtype=np.str_, ndmin=2)


def _decode_npy(body: bytes) -> Any:
    return np.load(io.BytesIO(body), allow_pickle=False)


def _decode_npz(body: bytes) -> Any:
    with np.load(io.BytesIO(body), allow_pickle=False) as archive:
        names = list(archive.files)
        if {"format", "shape", "data"} <= set(names):  # written by scipy.sparse.save_npz
            sparse: Any = importlib.import_module("scipy.sparse")  # scipy ships no type stubs
            return sparse.load_npz(io.BytesIO(body))
        if len(names) == 1:
            return archive[names[0]]
        return {name: archive[name] for name in names}


def decode_libsvm(body: bytes) -> Any:
    """``label idx:value idx:value ...`` per line -> a ``scipy.sparse.csr_matrix`` with a column per
    index as written (0-based or 1-based alike); the label, a token without a colon, is ignored."""
    rows: list[int] = []
    cols: list[int] = []
    values: list[float] = []
    n_rows = 0
    for line in body.decode("utf-8").splitlines():
        tokens = line.split()
        if not tokens:
            continue
        for token in tokens:
            index, colon, value = token.partition(":")
            if not colon:
                continue
            col = int(index)
            if col < 0:
                raise ValueError(f"negative feature index in {token!r}")
            rows.append(n_rows)
            cols.append(col)
            values.append(float(value))
        n_rows += 1
    if n_rows == 0:
        raise ValueError("no rows")
    sparse: Any = importlib.import_module("scipy.sparse")  # scipy ships no type stubs
    shape = (n_rows, max(cols, default=-1) + 1)
    return sparse.csr_matrix((np.asarray(values, dtype=np.float64), (rows, cols)), shape=shape)


DECODERS: dict[str, Callable[[bytes], Any]] = {
    JSON: _decode_json,
    CSV: _decode_csv,
    NPY: _decode_npy,
    NPZ: _decode_npz,
}


def decode(body: bytes, content_type: str, decoders: Mapping[str, Callable[[bytes], Any]] = DECODERS) -> Any:
    """Decode a request body into a numpy array (a dict stays a dict for JSON objects). A runtime may
    pass its own table of ``decoders`` (media type -> decoder)."""
    kind = media_type(content_type)
    decoder = decoders.get(kind)
    if decoder is None:
        raise UnsupportedContentType(
            f"Content type {content_type!r} is not supported by the default input_fn. "
            f"Supported: {', '.join(decoders)}; define input_fn in code/inference.py for others."
        )
    try:
        return decoder(body)
    except InferenceError:
        raise
    except (ValueError, TypeError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise DecodeError(f"Could not decode the request body as {kind}: {exc}") from exc


# ---- encoders ----
def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, set | frozenset):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _encode_json(prediction: Any) -> bytes:
    if isinstance(prediction, np.ndarray | np.generic) and prediction.dtype != object:
        return json.dumps(prediction.tolist()).encode("utf-8")  # the common case: no default hook
    return json.dumps(prediction, default=_json_default).encode("utf-8")


def _csv_row(row: Any) -> str:
    if isinstance(row, list | tuple):
        return ",".join(str(v) for v in row)
    return str(row)


def _encode_csv(prediction: Any) -> bytes:
    # Like np.savetxt(delimiter=","): a 2-D array is one line per row, a 1-D array one value per line.
    values = prediction.tolist() if hasattr(prediction, "tolist") else prediction
    if not isinstance(values, list | tuple):
        values = [values]
    if not values:
        return b""
    ndim = getattr(prediction, "ndim", None)
    if ndim == 1:  # a batch's predictions: one join, no per-row checks
        return ("\n".join(map(str, values)) + "\n").encode("utf-8")
    if ndim == 2:
        return ("\n".join([",".join(map(str, row)) for row in values]) + "\n").encode("utf-8")
    return "".join(_csv_row(row) + "\n" for row in values).encode("utf-8")


def _encode_npy(prediction: Any) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(prediction), allow_pickle=False)
    return buffer.getvalue()


ENCODERS: dict[str, Callable[[Any], bytes]] = {
    JSON: _encode_json,
    CSV: _encode_csv,
    NPY: _encode_npy,
}


def encode(prediction: Any, accept: str) -> tuple[bytes, str]:
    """Encode a prediction for ``accept`` (one media type or a comma-separated list; the first
    supported one wins). Returns ``(body, content_type)``."""
    for candidate in accept.split(","):
        kind = media_type(candidate)
        encoder = ENCODERS.get(kind)
        if encoder is not None:
            try:
                return encoder(prediction), kind
            except (ValueError, TypeError) as exc:
                raise InferenceError(f"Could not encode the prediction as {kind}: {exc}") from exc
    raise UnsupportedAccept(
        f"Accept {accept!r} is not supported by the default output_fn. "
        f"Supported: {', '.join(ENCODERS)}; define output_fn in code/inference.py for others."
    )
