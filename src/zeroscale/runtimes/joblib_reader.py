"""Read a ``joblib.dump`` file with the C unpickler: the objects ``joblib.load`` returns, 3-4x faster.

``joblib.load`` runs every opcode through Python's pure-Python unpickler: joblib's format writes each NumPy
array's bytes into the stream right after the pickled ``NumpyArrayWrapper`` that describes it, and joblib
swaps the wrapper on the unpickler's stack for the array it reads. For the reference RandomForest (100 trees)
that is ~50 ms, most of a cold start's cost when no template of the model is cached.

This reader runs the C unpickler. The wrapper's class resolves to an ``ndarray`` subclass whose
``__setstate__`` (the pickle's BUILD, with the wrapper's fields) reads the array's bytes from the file and
becomes that array in place, so whatever the pickle builds next (a ``Tree``, an estimator's attribute)
receives a real array. Once the pickle is read, the arrays reachable through dicts, lists, tuples, object
arrays and instance ``__dict__``s are swapped for plain ``ndarray`` views of the same memory (an object the
pickle shares stays shared), so a model's attributes have the types ``joblib.load`` gives them. An array held
only inside an extension object (a Cython BallTree) stays the subclass, which behaves as an ``ndarray`` and
pickles as one.

The file object handed to the C unpickler has no ``peek``: without it the unpickler reads exactly what each
opcode or frame needs, so the file's position is the array's first byte when ``__setstate__`` runs (joblib
ends a pickle frame before each array's bytes; pickles without frames are read opcode by opcode).

What it does not read in place it leaves to ``joblib.load``, from the start (``Fallback``): compressed files,
files of joblib < 0.10 (arrays in companion files), arrays in a non-native byte order (joblib swaps them),
and array subclasses joblib rebuilds (only under NumPy 1). Starting over runs the pickle's constructors
twice; a model's ``model_fn`` runs in its own worker, so that costs time, not correctness.
"""

from __future__ import annotations

import io
import math
import pickle
from typing import Any

import numpy as np

# A pickle of protocol 2 or later starts with PROTO (0x80); joblib's compressed files start with their
# compressor's magic (zlib 0x78, gzip 0x1f8b, bz2 "BZh", xz 0xfd37, lzma 0x5d, lz4 0x04224d18; joblib < 0.10:
# "ZF"), never with it.
_PROTO = b"\x80"
# joblib.load rebuilds other array subclasses (np.matrix) only where ndarray has __array_prepare__ (NumPy 1).
_REBUILDS_SUBCLASSES = hasattr(np.ndarray, "__array_prepare__")
_WRAPPER_MODULES = ("joblib.numpy_pickle", "joblib.numpy_pickle_compat")


class Fallback(Exception):
    """The file holds something this reader does not read in place; ``joblib.load`` reads it."""


class _NoPeek:
    """A buffered file without ``peek``: the C unpickler then reads no further than it needs."""

    def __init__(self, f: io.BufferedIOBase) -> None:
        self.read = f.read
        self.readinto = f.readinto
        self.readline = f.readline
        self.tell = f.tell
        here = f.tell()
        self.size = f.seek(0, io.SEEK_END)
        f.seek(here)

    def read_exactly(self, n: int, what: str) -> bytes:
        """``n`` bytes, or an error before any allocation when the file has fewer left (a wrapper may claim
        any shape: joblib would try to allocate it)."""
        left = self.size - self.tell()
        if n < 0 or n > left:
            raise pickle.UnpicklingError(
                f"the file ends inside {what} ({n} bytes announced, {left} left): is it truncated?"
            )
        return self.read(n)


class _LoadedArray(np.ndarray):
    """What a pickled ``NumpyArrayWrapper`` becomes: an empty array that its BUILD fills from the file."""

    _file: _NoPeek  # set on the per-load subclass

    def __new__(cls, *args: Any) -> _LoadedArray:
        return np.ndarray.__new__(cls, (0,), "b")

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise Fallback("an array wrapper of an unknown form")
        shape = tuple(map(int, state["shape"]))
        dtype = state["dtype"]
        if not isinstance(dtype, np.dtype):
            dtype = np.dtype(dtype)
        if not dtype.isnative:
            raise Fallback("an array in a non-native byte order")
        if _REBUILDS_SUBCLASSES and state.get("subclass", np.ndarray) not in (np.ndarray, np.memmap):
            raise Fallback(f"an array of subclass {state['subclass']!r}")
        f = self._file
        if dtype.hasobject:
            # joblib pickles an object array as a nested plain pickle right after the wrapper.
            loaded = np.asarray(_Unpickler(f, type(self)).load())
            np.ndarray.__setstate__(self, loaded.__reduce__()[2])  # type: ignore[arg-type]
            return
        if state.get("numpy_array_alignment_bytes") is not None:  # joblib >= 1.2 pads to an aligned offset
            padding = f.read_exactly(1, "an array's padding")
            f.read_exactly(padding[0], "an array's padding")
        data = f.read_exactly(math.prod(shape) * dtype.itemsize, "an array's data")
        fortran: Any = state.get("order") == "F"  # a Python bool: numpy's parser takes no np.bool_ here
        np.ndarray.__setstate__(self, (1, shape, dtype, fortran, data))

    def __reduce__(self) -> Any:  # pickled again, it is a plain ndarray
        return self.view(np.ndarray).__reduce__()

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.view(np.ndarray).__reduce_ex__(protocol)


class _Unpickler(pickle.Unpickler):
    """The C unpickler, resolving joblib's array wrapper to ``array_class``."""

    def __init__(self, file: _NoPeek, array_class: type) -> None:
        super().__init__(file)
        self._array_class = array_class

    def find_class(self, module: str, name: str) -> Any:
        if module in _WRAPPER_MODULES:
            if name == "NumpyArrayWrapper":
                return self._array_class
            if name in ("NDArrayWrapper", "ZNDArrayWrapper"):
                raise Fallback(f"a file of joblib < 0.10 ({name})")
        return super().find_class(module, name)


def load(path: str) -> Any:
    """The object ``joblib.load(path)`` returns, read with the C unpickler when the file allows."""
    with open(path, "rb") as f:
        if f.read(1) != _PROTO:  # compressed, or a pickle of protocol 0 or 1
            return _joblib_load(path)
        f.seek(0)
        try:
            return read(f)
        except Fallback:
            pass
    return _joblib_load(path)


def read(f: io.BufferedIOBase) -> Any:
    """Unpickle a joblib stream from ``f`` (a binary file, or ``BytesIO``, positioned at its start);
    ``Fallback`` when it cannot."""
    source = _NoPeek(f)
    array_class = type("ndarray", (_LoadedArray,), {"_file": source, "__module__": __name__})
    obj = _Unpickler(source, array_class).load()
    return _plain_arrays(obj)


def _joblib_load(path: str) -> Any:
    import joblib

    return joblib.load(path)


_ATOMS = (str, bytes, int, float, bool, complex, type(None), type, np.generic, np.dtype)


def _plain_arrays(root: Any) -> Any:
    """``root`` with every ``_LoadedArray`` reachable through containers and ``__dict__``s swapped for a plain
    ``ndarray`` view of it (one view per array, so shared references stay shared)."""
    swapped: dict[int, Any] = {}  # id of a _LoadedArray or a tuple -> what replaces it
    seen: set[int] = set()
    keep: list[Any] = []  # the originals, alive until the walk ends (ids stay unique)
    stack: list[Any] = []

    def fix(value: Any) -> Any:
        """The replacement of ``value`` (itself when none); containers go on the stack to be visited."""
        if isinstance(value, _ATOMS):
            return value
        key = id(value)
        if key in swapped:
            return swapped[key]
        if isinstance(value, _LoadedArray):
            new: Any = value.view(np.ndarray)
            if value.dtype.hasobject:
                stack.append(new)
        elif type(value) is tuple:
            items = [fix(v) for v in value]
            new = value if all(a is b for a, b in zip(items, value, strict=True)) else tuple(items)
        else:
            if key not in seen:
                seen.add(key)
                stack.append(value)
            return value
        keep.append(value)
        swapped[key] = new
        return new

    result = fix(root)
    while stack:
        obj = stack.pop()
        if isinstance(obj, dict):
            for k, v in obj.items():
                if not isinstance(v, _ATOMS) and (new := fix(v)) is not v:
                    obj[k] = new
        elif isinstance(obj, list):
            for i, v in enumerate(obj):
                if not isinstance(v, _ATOMS) and (new := fix(v)) is not v:
                    obj[i] = new
        elif isinstance(obj, np.ndarray):
            if obj.dtype.hasobject and obj.flags.forc:  # reshape(-1) of a contiguous array is a view
                flat = obj.reshape(-1, order="A")
                for i, v in enumerate(flat):
                    if (new := fix(v)) is not v:
                        flat[i] = new
        elif isinstance(obj, (set, frozenset)):
            for v in obj:
                fix(v)
        else:
            try:
                attrs = object.__getattribute__(obj, "__dict__")
            except AttributeError:
                continue
            if isinstance(attrs, dict):
                fix(attrs)
    return result
