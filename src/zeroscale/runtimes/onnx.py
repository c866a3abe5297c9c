"""The ONNX Runtime runtime: ``model.onnx`` served on the CPU execution provider.

Inputs and outputs map by name: a single-input model takes a bare array (JSON, CSV, NPY); a model with
several inputs takes a JSON object (or an NPZ archive) ``{input_name: array}``. Arrays are cast to each
input's declared element type. A single output is answered as an array, several as an object by name
(JSON only). Each session runs with one intra-op and one inter-op thread, without spinning.

Fork safety. The one thread ``import onnxruntime`` starts (official builds from 1.32 on Linux) is the 1DS
telemetry uploader (Microsoft's cpp_client_telemetry, ``core/platform/posix/telemetry_1ds.cc``): it waits on a
timed condition variable, wakes seconds after the import, then starts libcurl threads that resolve and post to
``mobile.events.data.microsoft.com``, and keeps events in a SQLite file under
``~/.cache/Microsoft/DeveloperTools/.onnxruntime`` (where a CI service's variables are set, ``CI``,
``GITHUB_ACTIONS``, ``JENKINS_URL`` and others, 1.32 starts none). A child forked while it runs has only the
forking thread, with that condition variable still counting the parent's waiter: a child that exits through
``exit()`` hangs in a C++ static destructor (``pthread_cond_destroy`` waits for a waiter that no longer
exists), every time. Sessions ran, new sessions were made and ``os._exit`` returned in thousands of such
children, but that is luck with locks, not design. ``ORT_DISABLE_TELEMETRY=1`` before the import
(``workers.forkserver.THREAD_ENV``) keeps the uploader, its threads and files from ever existing, and sessions
with one intra-op and one inter-op thread start no pool: the process stays single-threaded and is as safe to
fork as scikit-learn's.

So the zygote imports onnxruntime once its import is known to start no thread (``preload`` tries it in a
forked probe first; otherwise the zygote only maps the native library and each worker imports onnxruntime
after the fork, ~30 ms), and an ONNX model without user code gets a template (``runtimes.usercode``), which
itself refuses to fork if loading left a second thread (``workers.forkserver``).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from zeroscale.runtimes import codecs
from zeroscale.runtimes.handler import Defaults
from zeroscale.runtimes.modelfile import find_model_file

MODEL_FILE = "model.onnx"
# ONNX tensor element types -> numpy dtypes, for casting decoded requests.
DTYPES: dict[str, Any] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint64)": np.uint64,
    "tensor(uint32)": np.uint32,
    "tensor(uint16)": np.uint16,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.str_,
}


# Read by ONNX Runtime when its environment is created (at import): "1" means no telemetry uploader thread.
TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"


def preload() -> None:
    """Import numpy and onnxruntime, if importing onnxruntime starts no thread; else only map its native
    library (``dlopen``, which starts none) and leave the import to each worker, after the fork."""
    import numpy.random  # noqa: F401 - each worker reseeds it after the fork

    os.environ.setdefault(TELEMETRY_ENV, "1")
    _map_library()
    if import_starts_no_thread():
        import onnxruntime  # noqa: F401


def _map_library() -> None:
    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the onnx runtime needs ONNX Runtime: pip install 'zeroscale[onnx]'")
    capi = Path(next(iter(spec.submodule_search_locations))) / "capi"
    for library in sorted(capi.glob("onnxruntime_pybind11_state*.so")):
        ctypes.CDLL(str(library), mode=os.RTLD_NOW | ctypes.DEFAULT_MODE)


def import_starts_no_thread() -> bool:
    """Whether ``import onnxruntime`` leaves this (single-threaded) process with one thread: tried in a forked
    child, so this process imports nothing. False where threads cannot be counted (no ``/proc``)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe, not to coverage
        code = 1
        try:
            os.close(read_end)
            import onnxruntime  # noqa: F401

            os.write(write_end, str(len(os.listdir("/proc/self/task"))).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer == b"1"


def model_fn(model_dir: str) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``model.onnx`` (or the directory's only ``*.onnx``)."""
    return _session(_model_file(model_dir))


def _session(model: str | bytes) -> Any:
    """A session of the model in a file (its path) or in memory, one thread, on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def warm() -> None:
    """Make a session of the runtime's own model (``WARM_MODEL``) and answer one JSON row through the default
    hooks: run in a zygote's spare while it waits, it takes the page copies and first-use work a model's
    session and first run would otherwise pay with a request waiting (in a fork: session 7-10 -> 1 ms,
    first run 2 -> 0.3 ms here). Only where the zygote imported onnxruntime (else importing it here would
    start the thread ``preload`` kept out); a session of one thread starts none, so a spare that becomes a
    template still forks safely. Runs no model's code and keeps nothing."""
    if "onnxruntime" not in sys.modules:
        return
    hooks = defaults(user_code=False)
    session = _session(WARM_MODEL)
    hooks.output_fn(hooks.predict_fn(hooks.input_fn(b"[[0.5, -0.5]]", codecs.JSON), session), codecs.JSON)


# The runtime's own model for ``warm``: y = Relu(x), x and y float[N, 2], IR version 8, default opset 17,
# graph "warm", serialized as onnx.helper writes it (tests/runtimes/test_onnx.py builds it and compares), kept
# as bytes so that the runtime needs no ``onnx`` package.
WARM_MODEL = (
    b'\x08\x08:@\n\x0c\n\x01x\x12\x01y"\x04Relu\x12\x04warmZ\x14\n\x01x\x12\x0f\n\r\x08\x01\x12\t\n\x03\x12'
    b"\x01N\n\x02\x08\x02b\x14\n\x01y\x12\x0f\n\r\x08\x01\x12\t\n\x03\x12\x01N\n\x02\x08\x02B\x04\n\x00\x10\x11"
)


def _model_file(model_dir: str) -> str:
    return find_model_file(model_dir, (MODEL_FILE,), lambda name: name.endswith(".onnx"), "no .onnx file")


def sample(session: Any) -> tuple[bytes, str] | None:
    """A request the default hooks answer for ``session``: zeros of each input's declared shape, a batch
    of one where a dimension is named or unknown, as JSON (an object by input name where it has several);
    None where an input is not numeric or one of its other dimensions is not fixed."""
    arrays: dict[str, Any] = {}
    for arg in session.get_inputs():
        dims = list(arg.shape or [])
        if DTYPES.get(arg.type) in (None, np.str_) or any(not isinstance(d, int) for d in dims[1:]):
            return None
        arrays[arg.name] = codecs.zeros(tuple(d if isinstance(d, int) and d > 0 else 1 for d in dims))
        if arrays[arg.name] is None:
            return None
    if not arrays:
        return None
    body = next(iter(arrays.values())) if len(arrays) == 1 else arrays
    return json.dumps(body).encode(), codecs.JSON


# ---- hooks ----
def defaults(user_code: bool) -> Defaults:
    return Defaults(predict_fn=predict_fn, output_fn=output_fn)


def predict_fn(data: Any, session: Any) -> Any:
    """Feed ``data`` (an array, or a dict by input name) to ``session``; one output as an array, several
    as a dict by output name."""
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    inputs, outputs = _signature(session)
    feeds = _feeds(data, inputs)
    try:
        results = session.run(None, feeds)
    except InvalidArgument as exc:  # wrong rank, shape or type: the request's fault
        raise codecs.InferenceError(str(exc), 400) from exc
    if len(results) == 1:
        return results[0]
    return dict(zip(outputs, results, strict=True))


def _signature(session: Any) -> tuple[list[tuple[str, str]], list[str]]:
    """(input name, element type) pairs and output names, asked of the session once."""
    cached: tuple[list[tuple[str, str]], list[str]] | None = getattr(session, "_zeroscale_signature", None)
    if cached is None:
        inputs = [(arg.name, arg.type) for arg in session.get_inputs()]
        cached = inputs, [arg.name for arg in session.get_outputs()]
        session._zeroscale_signature = cached
    return cached


def _feeds(data: Any, inputs: list[tuple[str, str]]) -> dict[str, Any]:
    names = [name for name, _ in inputs]
    if isinstance(data, dict):
        missing = [n for n in names if n not in data]
        unknown = sorted(str(k) for k in data if k not in names)
        if missing or unknown:
            raise codecs.InferenceError(
                f"The model's inputs are {', '.join(names)}"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + (f"; unknown: {', '.join(unknown)}" if unknown else ""),
                400,
            )
        return {name: _cast(data[name], kind, name) for name, kind in inputs}
    if len(inputs) != 1:
        raise codecs.InferenceError(
            f"The model has {len(inputs)} inputs ({', '.join(names)}): "
            "send a JSON object (or an NPZ archive) with an array for each",
            400,
        )
    name, kind = inputs[0]
    return {name: _cast(data, kind, name)}


def _cast(value: Any, kind: str, name: str) -> Any:
    dtype = DTYPES.get(kind)
    try:
        return np.asarray(value) if dtype is None else np.asarray(value, dtype=dtype)
    except (ValueError, TypeError) as exc:
        raise codecs.InferenceError(f"Input {name} must be {kind}: {exc}", 400) from exc


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    """The default encoders; several outputs (a dict) only as JSON."""
    if isinstance(prediction, dict) and all(codecs.media_type(c) != codecs.JSON for c in accept.split(",")):
        raise codecs.UnsupportedAccept(
            f"The model has several outputs ({', '.join(prediction)}): they are answered as a JSON object "
            f"by output name; Accept {accept!r} cannot hold them. Ask for application/json."
        )
    return codecs.encode(prediction, accept)
