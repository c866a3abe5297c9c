"""The PyTorch (CPU) runtime, served like the sagemaker-pytorch-inference-toolkit.

Default model_fn: ``torch.jit.load`` of ``model.pt`` or ``model.pth`` (or the model directory's only
``*.pt``/``*.pth`` file), a TorchScript model; other models (a ``state_dict``) need ``model_fn`` in
``code/inference.py``. Defaults: input_fn decodes JSON and CSV to float32 tensors and NPY/NPZ to tensors of
the array's dtype; predict_fn is ``model(tensor)`` under ``torch.inference_mode()``; output_fn turns tensors
(or tuples, lists and dicts of them) into arrays and encodes them as JSON, CSV or NPY.

Fork safety: the zygote imports torch and builds its warm-up module (a 2x2 Linear: initializing it runs two
tiny operators on the calling thread, with OpenMP pinned to one thread by the zygote's environment). ATen's
inter-op pool and any OpenMP worker thread are created on first parallel use, so none exists at fork time
(``tests/runtimes/test_pytorch.py`` checks the zygote has one thread and a fork computes); each worker pins
both to one thread before it loads the model.

Cold starts: TorchScript's profiling graph executor spends 30-100 ms optimizing a graph on its first call
(in each new thread), for little gain on the CPU, where it fuses nothing by default; so the default
predict_fn runs TorchScript unoptimized (``torch.jit.optimized_execution(False)``, a thread-local switch).
The model's environment ``ZEROSCALE_TORCHSCRIPT_OPTIMIZE=true`` turns the optimizing executor back on.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import sys
import warnings
from typing import Any

import numpy as np

from zeroscale.runtimes import codecs
from zeroscale.runtimes.handler import Defaults
from zeroscale.runtimes.modelfile import find_model_file

MODEL_FILES = ("model.pt", "model.pth")
OPTIMIZE_ENV = "ZEROSCALE_TORCHSCRIPT_OPTIMIZE"
_UTF8_TYPES = (codecs.JSON, codecs.CSV)  # decoded as float32, like the toolkit's torch.FloatTensor
# The runtime's own TorchScript module (Linear, ReLU), saved by ``preload``: what ``warm`` loads.
_warm_model = b""


def preload() -> None:
    """Import torch (and its nn/jit modules) and script the spares' warm-up module; starts no thread."""
    try:
        import torch
    except ImportError as exc:
        raise ImportError(
            f"the pytorch runtime needs PyTorch: pip install 'zeroscale[pytorch]' ({exc})"
        ) from exc
    import numpy.random  # noqa: F401 - each worker reseeds it after the fork
    import torch.jit
    import torch.nn
    import torch.nn.functional

    global _warm_model
    buffer = io.BytesIO()
    jit: Any = torch.jit  # torch.jit.script and save have no annotations
    try:
        with warnings.catch_warnings():  # TorchScript's deprecation, for the runtime's own module
            warnings.simplefilter("ignore", DeprecationWarning)
            jit.save(jit.script(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())), buffer)
    except Exception as exc:  # a torch without TorchScript still serves: its spares only do not warm up
        print(f"zeroscale: no warm-up model for the pytorch runtime's spares: {exc!r}", file=sys.stderr)
        return
    _warm_model = buffer.getvalue()


def warm() -> None:
    """Load the runtime's own two-layer TorchScript module and answer one JSON row through the default hooks:
    run in a zygote's spare while it waits, it takes the page copies and first-use work a model's load and
    first predict would otherwise pay with a request waiting (in a fork: load 14 -> 6 ms, first predict
    3 -> 1 ms here). Pins torch to one thread as a worker does; starts no thread, so a spare that becomes a
    template still forks safely. Runs no model's code and keeps nothing."""
    if not _warm_model:
        return
    import torch

    hooks = defaults(user_code=False)
    jit: Any = torch.jit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        model = jit.load(io.BytesIO(_warm_model), map_location="cpu")
    model.eval()
    hooks.output_fn(hooks.predict_fn(hooks.input_fn(b"[[0.5, -0.5]]", codecs.JSON), model), codecs.JSON)


def model_fn(model_dir: str) -> Any:
    """``torch.jit.load`` the TorchScript model in ``model.pt``/``model.pth``, on the CPU, in eval mode."""
    import torch

    path = _model_file(model_dir)
    jit: Any = torch.jit  # torch.jit.load has no annotations
    try:
        model = jit.load(path, map_location="cpu")
    except RuntimeError as exc:
        raise ValueError(
            f"{path} is not a TorchScript model (torch.jit.save); for a state_dict or a pickled module "
            f"define model_fn in code/inference.py. torch said: {str(exc).strip().splitlines()[0]}"
        ) from exc
    model.eval()
    return model


def _model_file(model_dir: str) -> str:
    return find_model_file(
        model_dir, MODEL_FILES, lambda name: name.endswith((".pt", ".pth")), "no .pt/.pth file"
    )


# ---- hooks ----
def defaults(user_code: bool) -> Defaults:
    """Pin torch to one thread in this worker (before any model code runs), choose the TorchScript executor,
    then the toolkit's defaults."""
    import torch

    torch.set_num_threads(1)
    with contextlib.suppress(RuntimeError):  # only allowed before the inter-op pool exists
        torch.set_num_interop_threads(1)
    optimize = os.environ.get(OPTIMIZE_ENV, "").strip().lower() in ("1", "true", "yes")
    c: Any = torch._C  # torch.jit.optimized_execution's switch, for this (the loading) thread
    c._set_graph_executor_optimize(optimize)
    predict = functools.partial(predict_fn, optimize=optimize)
    return Defaults(input_fn=input_fn, predict_fn=predict, output_fn=output_fn)


def input_fn(body: bytes, content_type: str) -> Any:
    """JSON/CSV -> float32 tensor; NPY/NPZ -> tensor of the array's dtype; a JSON object or a multi-array
    NPZ -> a dict of tensors."""
    float32 = codecs.media_type(content_type) in _UTF8_TYPES
    data = codecs.decode(body, content_type)
    if isinstance(data, dict):
        return {str(name): _tensor(value, float32) for name, value in data.items()}
    return _tensor(data, float32)


def _tensor(value: Any, float32: bool) -> Any:
    import torch

    array = np.asarray(value)
    if array.dtype.kind not in "biufc":
        raise codecs.DecodeError(f"Expected numbers, got {array.dtype} values")
    if float32:
        array = array.astype(np.float32, copy=False)
    return torch.from_numpy(np.ascontiguousarray(array))


def predict_fn(data: Any, model: Any, optimize: bool = False) -> Any:
    """``model(data)`` in eval mode, without autograd; TorchScript's optimizing executor only if asked."""
    import torch

    if getattr(model, "training", False):
        model.eval()
    jit: Any = torch.jit  # optimized_execution is public but not re-exported in torch.jit's stubs
    with torch.inference_mode(), jit.optimized_execution(optimize):
        return model(data)


def output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    return codecs.encode(to_numpy(prediction), accept)


def to_numpy(value: Any) -> Any:
    """Tensors (also inside tuples, lists and dicts) -> numpy arrays; anything else as it is."""
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16
            tensor = tensor.float()
        return tensor.numpy()
    if isinstance(value, tuple | list):
        return [to_numpy(v) for v in value]
    if isinstance(value, dict):
        return {k: to_numpy(v) for k, v in value.items()}
    return value
