"""The sagemaker-inference-toolkit handler contract: user hooks in ``code/inference.py`` over defaults.

``Handler.load`` imports the user module (if any), checks its hooks and loads the model;
``Handler.invoke`` turns one request body into ``(status, body, content_type)`` and never raises. A
predict_fn, output_fn or transform_fn that returns an iterator streams (see streaming.py): the body is then
an iterator of parts, whose first part is already computed (an error before it is a plain error answer).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import FunctionType, ModuleType
from typing import Any

from zeroscale.errors import DeployError
from zeroscale.runtimes import batching, codecs
from zeroscale.runtimes.streaming import StreamFailed, is_stream, parts, prepend
from zeroscale.runtimes.usercode import add_python_path, user_code_path

HOOKS = ("model_fn", "input_fn", "predict_fn", "output_fn", "transform_fn")
# How many arguments each hook takes without the optional trailing context.
_ARITY = {"model_fn": 1, "input_fn": 2, "predict_fn": 2, "output_fn": 2, "transform_fn": 4}
_TEXT = "text/plain; charset=utf-8"

Body = bytes | Iterator[bytes]  # an iterator: a streamed answer, one part per item
Result = tuple[int, Body, str]


@dataclass
class Context:
    """The optional trailing ``context`` argument of a hook (a small subset of the toolkit's)."""

    model_dir: str
    system_properties: dict[str, Any]
    request_headers: dict[str, str] = field(default_factory=dict)

    def get_request_header(self, idx: int, key: str) -> str | None:
        return self.request_headers.get(key.lower())

    def get_all_request_header(self, idx: int) -> dict[str, str]:
        return dict(self.request_headers)


@dataclass(frozen=True)
class Hook:
    fn: Callable[..., Any]
    wants_context: bool


def _wants_context(fn: Callable[..., Any], arity: int) -> bool:
    """Whether ``fn`` takes a positional argument past the hook's ``arity`` (the toolkit's ``context``)."""
    if type(fn) is FunctionType and not hasattr(fn, "__wrapped__") and not hasattr(fn, "__signature__"):
        # A plain function's positional parameters, as inspect.signature would count them, read off its code
        # (a cold start calls this for each hook: inspect.signature took ~40 us a hook in a fresh worker).
        return fn.__code__.co_argcount > arity
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) > arity


def load_user_module(model_dir: str, env: Mapping[str, str]) -> ModuleType | None:
    """Import the user's inference module with its directory on ``sys.path``; None when there is none."""
    path, explicit = user_code_path(model_dir, env)
    if not path.is_file():
        if explicit:
            raise DeployError(f"SAGEMAKER_PROGRAM={path.name} not found: {path} does not exist")
        return None
    code_dir = str(path.parent)
    if code_dir not in sys.path:
        sys.path.insert(0, code_dir)
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - only for odd file names
        raise DeployError(f"Cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def find_hooks(module: ModuleType | None) -> dict[str, Hook]:
    """The user's hooks by name; rejects transform_fn defined together with input/predict/output_fn."""
    if module is None:
        return {}
    where = getattr(module, "__file__", module.__name__)
    hooks: dict[str, Hook] = {}
    for name in HOOKS:
        fn = getattr(module, name, None)
        if fn is None:
            continue
        if not callable(fn):
            raise DeployError(f"{where}: {name} is not a function")
        hooks[name] = Hook(fn, _wants_context(fn, _ARITY[name]))
    if "transform_fn" in hooks:
        both = [n for n in ("input_fn", "predict_fn", "output_fn") if n in hooks]
        if both:
            raise DeployError(
                f"{where} defines transform_fn together with {', '.join(both)}: "
                "define either transform_fn or input_fn/predict_fn/output_fn, not both"
            )
    return hooks


def default_input_fn(body: bytes, content_type: str) -> Any:
    return codecs.decode(body, content_type)


def _default_predict_fn(data: Any, model: Any) -> Any:
    return model.predict(data)


def _default_output_fn(prediction: Any, accept: str) -> tuple[bytes, str]:
    return codecs.encode(prediction, accept)


@dataclass(frozen=True)
class Defaults:
    """A runtime's hooks for what ``code/inference.py`` does not define, and its default Accept."""

    input_fn: Callable[[bytes, str], Any] = default_input_fn
    predict_fn: Callable[[Any, Any], Any] = _default_predict_fn
    output_fn: Callable[[Any, str], Any] = _default_output_fn
    accept: str = codecs.JSON
    # Dynamic batching (batching.py): one request's body -> rows that predict_fn accepts both as they are
    # and concatenated with other requests' rows, the same rows input_fn would have led to. None: this
    # runtime's requests are never merged.
    batch_input_fn: Callable[[bytes, str], Any] | None = None


# A runtime's defaults, chosen in the worker (after fork) by whether the model has user code.
DefaultsFactory = Callable[[bool], Defaults]


class Handler:
    """A loaded model with its hooks. Not thread-safe: the server calls ``invoke`` one at a time."""

    def __init__(
        self,
        model: Any,
        hooks: Mapping[str, Hook],
        model_dir: str,
        default_accept: str,
        defaults: Defaults | None = None,
    ) -> None:
        self.model = model
        self.model_dir = model_dir
        self.default_accept = default_accept
        base = defaults or Defaults()
        self._transform = hooks.get("transform_fn")
        self._input = hooks.get("input_fn") or Hook(base.input_fn, False)
        self._predict = hooks.get("predict_fn") or Hook(base.predict_fn, False)
        self._output = hooks.get("output_fn") or Hook(base.output_fn, False)
        self._needs_context = any(h.wants_context for h in hooks.values())
        self.runs_user_code = bool(hooks)  # a request runs none of the user's code when there are no hooks
        # Requests are merged only through the runtime's own hooks (user code could do anything), and only
        # for a model whose rows are predicted independently (else merging could change an answer's bits).
        self._batch_input = None if hooks else base.batch_input_fn
        self._batch_route = self._batch_input is not None
        self.unmerged: str | None = None  # the model's class, when batching could not merge its requests
        if self._batch_input is not None and not batching.rows_independent(model):
            self.unmerged = f"{type(model).__module__}.{type(model).__qualname__}"
            self._batch_input = None

    @property
    def batches(self) -> bool:
        """Whether the worker takes batch frames (``invoke_batch``): a runtime that can merge and no user
        code. Whether it merges them is ``merges``: a model not known to predict each row on its own gets
        each request of a frame answered alone (no round trip lost to a refusal)."""
        return self._batch_route

    @property
    def merges(self) -> bool:
        return self._batch_input is not None

    @classmethod
    def load(
        cls,
        model_dir: str,
        default_model_fn: Callable[[str], Any],
        env: Mapping[str, str] | None = None,
        defaults: DefaultsFactory | None = None,
    ) -> Handler:
        """Import the user module, check its hooks and load the model. Raises on any failure.

        ``defaults`` (the runtime's) is called with whether the model has user code."""
        env = os.environ if env is None else env
        model_dir = os.path.abspath(model_dir)
        warning = add_python_path(env)  # code/requirements.txt, installed at deploy time
        if warning:
            print(warning, file=sys.stderr, flush=True)
        module = load_user_module(model_dir, env)
        hooks = find_hooks(module)
        base = defaults(module is not None) if defaults is not None else Defaults()
        default_accept = env.get("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", "").strip() or base.accept
        model_hook = hooks.get("model_fn")
        if model_hook is None:
            model = default_model_fn(model_dir)
        elif model_hook.wants_context:
            model = model_hook.fn(model_dir, _context(model_dir, {}))
        else:
            model = model_hook.fn(model_dir)
        handler = cls(model, hooks, model_dir, default_accept, base)
        if handler.unmerged is not None and _batching_on(env):  # said only to a model that asked to batch
            print(
                f"zeroscale: batching is on, but {handler.unmerged} is not known to predict each row on its "
                "own: its requests are answered one at a time (batching merges the requests of tree "
                "ensembles: scikit-learn forests, boosting and trees; XGBoost)",
                file=sys.stderr,
                flush=True,
            )
        return handler

    def invoke(self, body: bytes, headers: Mapping[str, str]) -> Result:
        """One request: ``headers`` has lower-case names. Returns ``(status, body, content_type)``."""
        try:
            content_type = headers.get("content-type") or codecs.JSON
            accept = self._accept(headers.get("accept", ""))
            ctx = _context(self.model_dir, headers) if self._needs_context else None
            if self._transform is not None:
                result = _call(self._transform, ctx, self.model, body, content_type, accept)
            else:
                data = _call(self._input, ctx, body, content_type)
                prediction = _call(self._predict, ctx, data, self.model)
                if is_stream(prediction):
                    return self._stream_predictions(prediction, ctx, accept)
                result = _call(self._output, ctx, prediction, accept)
            out, out_type = _response(result, accept)
            if isinstance(out, bytes):
                return 200, out, out_type
            return 200, _started(parts(out, lambda item: _part(item, out_type), _stream_error)), out_type
        except StreamFailed as exc:  # failed before its first part: already logged
            return exc.status, exc.message.encode("utf-8", "replace"), _TEXT
        except Exception as exc:
            return error_result(exc)

    def invoke_batch(self, bodies: list[bytes], headers: Mapping[str, str]) -> list[Result]:
        """Several requests with the same headers: those whose rows can be merged (``batching.merge``) are
        predicted in one call and the prediction is split back by rows, each part through output_fn as it
        would have been alone; every other request, and any group whose predict, split or encoding fails,
        is invoked alone (``invoke``), so each answer is the one it would have had by itself."""
        results: list[Result | None] = [None] * len(bodies)
        decode = self._batch_input
        if decode is not None and len(bodies) > 1:
            content_type = headers.get("content-type") or codecs.JSON
            accept = self._accept(headers.get("accept", ""))
            decoded: list[Any] = []
            for body in bodies:
                try:
                    decoded.append(decode(body, content_type))
                except Exception:
                    decoded.append(None)  # answered alone: its own error
            for group in batching.merge(decoded):
                for i, result in zip(group.indexes, self._predict_group(group, accept), strict=True):
                    results[i] = result
        return [r if r is not None else self.invoke(bodies[i], headers) for i, r in enumerate(results)]

    def _predict_group(self, group: batching.Group, accept: str) -> list[Result | None]:
        """One predict call for a group's rows, split back per request (None: that one goes alone)."""
        try:
            prediction = self._predict.fn(group.data, self.model)
        except Exception:
            return [None] * len(group.indexes)
        parts = batching.split(prediction, group.rows)
        if parts is None:
            return [None] * len(group.indexes)
        out: list[Result | None] = []
        for part in parts:
            try:
                body, out_type = _response(self._output.fn(part, accept), accept)
            except Exception:
                out.append(None)  # its encoding failed: alone, it gets its own error
                continue
            out.append((200, body, out_type) if isinstance(body, bytes) else None)
        return out

    def _stream_predictions(self, predictions: Iterator[Any], ctx: Context | None, accept: str) -> Result:
        """predict_fn streamed: each prediction goes through output_fn and is one part; the first one's
        content type is the answer's."""
        output = self._output

        def encode(prediction: Any) -> tuple[bytes, str]:
            out, out_type = _response(_call(output, ctx, prediction, accept), accept)
            if not isinstance(out, bytes):
                out = b"".join(_part(item, out_type) for item in out)
            return out, out_type

        first = next(predictions, _END)
        if first is _END:
            return 200, b"", accept.split(",", 1)[0].strip()
        first_out, out_type = encode(first)
        rest = parts(predictions, lambda p: encode(p)[0], _stream_error)
        return 200, prepend(first_out, rest), out_type

    def _accept(self, accept: str) -> str:
        accept = accept.strip()
        if not accept:
            return self.default_accept
        if "*/*" not in accept:
            return accept
        parts = [p.strip() for p in accept.split(",")]
        return ",".join(self.default_accept if codecs.media_type(p) == "*/*" else p for p in parts)


# The contract's own user module, for a spare's warm-up (``warm``): made in memory, never a file, never in
# sys.modules or on sys.path.
_WARM_DIR = "/nonexistent/zeroscale-warm-up"
_WARM_SOURCE = """\
def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    return body, content_type
"""


def warm(defaults: DefaultsFactory | None = None) -> None:
    """What a zygote's spare runs before it waits, for the models with ``code/inference.py``: the contract's
    own first use, with a module of its own in place of the model's: its import (compiled: a model's
    read-only directory gets no ``.pyc``), its hooks found, a handler with the runtime's defaults, one
    request through ``transform_fn``. In a fork, ~300 of the ~400 pages a user module's first load writes
    to are then copied ahead (~1.5 ms of a cold start here). Runs none of any model's code."""
    path, _ = user_code_path(_WARM_DIR, {})
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None:  # pragma: no cover - a .py path always has a spec
        return
    module = importlib.util.module_from_spec(spec)
    exec(compile(_WARM_SOURCE, str(path), "exec"), module.__dict__)  # our own source, above
    hooks = find_hooks(module)
    base = defaults(True) if defaults is not None else Defaults()
    handler = Handler(hooks["model_fn"].fn(_WARM_DIR), hooks, _WARM_DIR, base.accept, base)
    handler.invoke(b"{}", {"content-type": codecs.JSON})


def _batching_on(env: Mapping[str, str]) -> bool:
    """Whether the model's Environment turns batching on (ZEROSCALE_MAX_BATCH_SIZE above 1)."""
    try:
        return batching.batch_settings(env) is not None
    except ValueError:  # refused at deploy; never here
        return False


def _context(model_dir: str, headers: Mapping[str, str]) -> Context:
    # The keys the model server gives the toolkit; gpu_id None: workers run on the CPU.
    props: dict[str, Any] = {
        "model_dir": model_dir,
        "gpu_id": None,
        "batch_size": 1,
        "server_name": "zeroscale",
    }
    return Context(model_dir, props, dict(headers))


def _call(hook: Hook, ctx: Context | None, *args: Any) -> Any:
    if hook.wants_context:
        return hook.fn(*args, ctx)
    return hook.fn(*args)


_END = object()


def _response(result: Any, accept: str) -> tuple[Body, str]:
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], str):
        body, content_type = result
    else:
        body, content_type = result, accept.split(",", 1)[0].strip()
    if is_stream(body):
        return body, content_type
    if isinstance(body, bytes):
        return body, content_type
    if isinstance(body, str):
        return body.encode("utf-8"), content_type
    if isinstance(body, bytearray | memoryview):
        return bytes(body), content_type
    # output_fn/transform_fn returned a value, not a body: encode it for the content type.
    return codecs.encode(body, content_type)


def _part(item: Any, content_type: str) -> bytes:
    """One streamed item as bytes: bytes and str as they are, anything else encoded for the content type."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytearray | memoryview):
        return bytes(item)
    return codecs.encode(item, content_type)[0]


def _started(stream: Iterator[bytes]) -> Body:
    """The stream with its first part computed now (an error before any part is a plain error answer)."""
    first = next(stream, None)
    if first is None:
        return b""
    return prepend(first, stream)


def _stream_error(exc: Exception) -> tuple[int, str]:
    status, message, _ = error_result(exc)
    assert isinstance(message, bytes)
    return status, message.decode("utf-8", "replace")


def error_result(exc: BaseException) -> tuple[int, bytes, str]:
    """The response for an exception: its integer ``status_code`` if it has one, else 500."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599:
        message = str(exc)
    else:
        status = 500
        message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, codecs.InferenceError) and status < 500:
        print(f"zeroscale: {status} {message}", file=sys.stderr, flush=True)
    else:
        traceback.print_exception(exc, file=sys.stderr)
        sys.stderr.flush()
    return status, message.encode("utf-8", "replace"), _TEXT
