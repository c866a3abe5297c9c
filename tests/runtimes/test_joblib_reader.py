"""The C-unpickler reader of joblib files gives what ``joblib.load`` gives: the same values, dtypes,
layouts, types and shared objects, for real estimators and every kind of array joblib writes; what it cannot
read in place it hands to ``joblib.load``."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from zeroscale.runtimes import joblib_reader

RNG = np.random.RandomState(0)
X = RNG.rand(300, 6)
Y = (X[:, 0] + X[:, 3] > 1).astype(int)


def _both(tmp_path: Path, obj: Any, in_place: bool = True, **dump: Any) -> tuple[Any, Any]:
    """joblib.load's object and the reader's: read in place (``read``, no fallback) or by ``load``."""
    path = tmp_path / "model.joblib"
    joblib.dump(obj, path, **dump)
    if not in_place:
        return joblib.load(path), joblib_reader.load(str(path))
    with open(path, "rb") as f:
        return joblib.load(path), joblib_reader.read(f)


def _same(a: Any, b: Any) -> None:
    """Same type, and for arrays the same dtype, shape, layout and values."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert (a.flags.c_contiguous, a.flags.f_contiguous) == (b.flags.c_contiguous, b.flags.f_contiguous)
        assert a.flags.writeable == b.flags.writeable
        if a.dtype.hasobject:
            for x, y in zip(a.ravel(), b.ravel(), strict=True):
                _same(x, y)
        else:
            assert a.tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        _same(vars(a), vars(b))
    else:
        assert a == b or (a != a and b != b)  # NaN


ARRAYS = {
    "c2d": np.arange(12, dtype=np.float64).reshape(3, 4),
    "f2d": np.asfortranarray(np.arange(12, dtype=np.int32).reshape(3, 4)),
    "zero_d": np.array(7.5),
    "empty": np.empty((0, 3)),
    "structured": np.array([(1, 2.5), (3, 4.5)], dtype=[("a", "<i8"), ("b", "<f4")]),
    "bools": np.array([True, False, True]),
    "complex": np.array([1 + 2j, 3 - 4j]),
    "half": np.array([0.5, 1.5], dtype=np.float16),
    "dates": np.array(["2026-12-02", "1970-01-01"], dtype="datetime64[D]"),
    "text": np.array(["a", "bcdef"]),
    "objects": np.array([{"k": np.arange(3)}, None, "s", np.arange(2.0)], dtype=object),
    "nan": np.array([np.nan, 1.0]),
    "scalar": np.float32(2.5),
}


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_kind_of_array_reads_as_joblib_reads_it(tmp_path: Path, protocol: int) -> None:
    expected, got = _both(tmp_path, ARRAYS, protocol=protocol)
    _same(expected, got)


def test_shared_objects_stay_shared_and_containers_hold_plain_arrays(tmp_path: Path) -> None:
    a = np.arange(5.0)
    inner = {"w": a, "t": (a, (a, 1))}
    obj = {"p": inner, "q": inner, "l": [a, [a]], "o": np.array([a, None], dtype=object), "tuple": (inner, a)}
    expected, got = _both(tmp_path, obj)
    _same(expected, got)
    assert expected["p"] is expected["q"] and got["p"] is got["q"] and got["tuple"][0] is got["p"]
    inside = (
        got["p"]["w"],
        got["p"]["t"][0],
        got["p"]["t"][1][0],
        got["l"][1][0],
        got["o"][0],
        got["tuple"][1],
    )
    assert all(type(value) is np.ndarray for value in inside)


def _estimators() -> list[Any]:
    return [
        RandomForestClassifier(n_estimators=20, random_state=0).fit(X, Y),
        GradientBoostingClassifier(n_estimators=10, random_state=0).fit(X, Y),  # estimators_: an object array
        make_pipeline(StandardScaler(), LogisticRegression()).fit(X, Y),
        KNeighborsClassifier(algorithm="ball_tree").fit(X, Y),  # arrays inside a Cython BallTree
    ]


@pytest.mark.parametrize("model", _estimators(), ids=lambda m: type(m).__name__)
def test_estimators_answer_identically_and_keep_their_attribute_types(tmp_path: Path, model: Any) -> None:
    expected, got = _both(tmp_path, model)
    probe = np.random.RandomState(1).rand(200, 6)
    assert np.array_equal(expected.predict_proba(probe), got.predict_proba(probe))
    assert type(got.predict(probe)) is np.ndarray
    for name, value in vars(expected).items():
        assert type(getattr(got, name)) is type(value), name
    # Pickled again (a user's code may), it names no class of this reader.
    assert b"joblib_reader" not in pickle.dumps(got)
    assert np.array_equal(pickle.loads(pickle.dumps(got)).predict_proba(probe), expected.predict_proba(probe))


def test_a_plain_pickle_reads(tmp_path: Path) -> None:
    model = RandomForestClassifier(n_estimators=5, random_state=0).fit(X, Y)
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model, protocol=5))
    got = joblib_reader.load(str(path))
    assert np.array_equal(got.predict_proba(X), model.predict_proba(X))


@pytest.mark.parametrize(
    "obj, dump",
    [
        (ARRAYS, {"compress": 3}),  # zlib
        (ARRAYS, {"compress": ("gzip", 3)}),
        (ARRAYS, {"compress": ("bz2", 3)}),
        (ARRAYS, {"compress": ("xz", 3)}),
        (ARRAYS, {"compress": ("lzma", 3)}),
        ({"big": np.arange(6, dtype=">i4"), "fields": np.zeros(2, dtype=[("a", ">f8")])}, {}),
    ],
    ids=["zlib", "gzip", "bz2", "xz", "lzma", "big-endian"],
)
def test_what_it_cannot_read_in_place_joblib_reads(tmp_path: Path, obj: Any, dump: dict[str, Any]) -> None:
    expected, got = _both(tmp_path, obj, in_place=False, **dump)
    _same(expected, got)


def test_big_endian_arrays_are_left_to_joblib(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump({"big": np.arange(3, dtype=">i4")}, path)
    with open(path, "rb") as f, pytest.raises(joblib_reader.Fallback, match="byte order"):
        joblib_reader.read(f)
    assert joblib_reader.load(str(path))["big"].dtype == np.dtype("=i4")  # joblib's swap


def test_a_truncated_file_says_so(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump({"w": np.arange(100_000, dtype=np.float64)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # inside the array's bytes
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        joblib_reader.load(str(path))


@pytest.mark.parametrize("shape", [(10**15,), (-4,), (2**40, 2**40)])
def test_a_wrapper_claiming_more_than_the_file_holds_allocates_nothing(tmp_path: Path, shape: tuple) -> None:
    """A hostile (or damaged) wrapper announces an array larger than the file: an error, not an allocation."""
    from joblib.numpy_pickle import NumpyArrayWrapper

    path = tmp_path / "model.joblib"
    path.write_bytes(pickle.dumps(NumpyArrayWrapper(np.ndarray, shape, "C", np.dtype("f8")), protocol=4))
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        joblib_reader.load(str(path))
