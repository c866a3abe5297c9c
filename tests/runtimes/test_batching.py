"""Dynamic batching in the worker: the settings, the frames, the pure merge and split, and
``Handler.invoke_batch`` against real models (each answer byte for byte what the request alone gets)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression

from zeroscale.runtimes import batching
from zeroscale.runtimes.batching import BatchSettings, batch_settings, merge, split
from zeroscale.runtimes.handler import Handler
from zeroscale.runtimes.registry import get_runtime


# ---- settings ----
def test_settings_absent_and_off() -> None:
    assert batch_settings({}) is None
    assert batch_settings({"ZEROSCALE_MAX_BATCH_SIZE": "1"}) is None  # 1: off
    assert batch_settings({"ZEROSCALE_MAX_BATCH_SIZE": " 8 "}) == BatchSettings(8, 0.0)
    assert batch_settings(
        {"ZEROSCALE_MAX_BATCH_SIZE": "1000", "ZEROSCALE_MAX_BATCH_DELAY_MS": "2.5"}
    ) == BatchSettings(1000, 0.0025)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"ZEROSCALE_MAX_BATCH_SIZE": "0"}, "ZEROSCALE_MAX_BATCH_SIZE=0 is out of range"),
        ({"ZEROSCALE_MAX_BATCH_SIZE": "1001"}, "ZEROSCALE_MAX_BATCH_SIZE=1001 is out of range"),
        ({"ZEROSCALE_MAX_BATCH_SIZE": "-3"}, "ZEROSCALE_MAX_BATCH_SIZE=-3 is out of range"),
        ({"ZEROSCALE_MAX_BATCH_SIZE": "eight"}, "ZEROSCALE_MAX_BATCH_SIZE='eight' is not an integer"),
        ({"ZEROSCALE_MAX_BATCH_SIZE": "2.5"}, "ZEROSCALE_MAX_BATCH_SIZE='2.5' is not an integer"),
        ({"ZEROSCALE_MAX_BATCH_DELAY_MS": "5"}, "ZEROSCALE_MAX_BATCH_DELAY_MS is set but"),
        (
            {"ZEROSCALE_MAX_BATCH_SIZE": "4", "ZEROSCALE_MAX_BATCH_DELAY_MS": "1001"},
            "ZEROSCALE_MAX_BATCH_DELAY_MS=1001 is out of range",
        ),
        (
            {"ZEROSCALE_MAX_BATCH_SIZE": "4", "ZEROSCALE_MAX_BATCH_DELAY_MS": "-1"},
            "ZEROSCALE_MAX_BATCH_DELAY_MS=-1 is out of range",
        ),
        (
            {"ZEROSCALE_MAX_BATCH_SIZE": "4", "ZEROSCALE_MAX_BATCH_DELAY_MS": "nan"},
            "ZEROSCALE_MAX_BATCH_DELAY_MS=nan is out of range",
        ),
        (
            {"ZEROSCALE_MAX_BATCH_SIZE": "4", "ZEROSCALE_MAX_BATCH_DELAY_MS": "soon"},
            "ZEROSCALE_MAX_BATCH_DELAY_MS='soon' is not a number",
        ),
    ],
)
def test_settings_refused_by_name(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match="^" + named.replace("(", r"\(")):
        batch_settings(env)


def test_unsupported_names_the_reason() -> None:
    ok = {"user_code": False, "image": False, "several": False, "multi_model": False}
    assert batching.unsupported("sklearn", **ok) == ""
    assert batching.unsupported("xgboost", **ok) == ""
    assert "pytorch runtime" in batching.unsupported("pytorch", **ok)
    assert "own inference code" in batching.unsupported("sklearn", **{**ok, "user_code": True})
    assert "bring-your-own" in batching.unsupported("byo/x", **{**ok, "image": True})
    for why in (
        batching.unsupported("onnx", **ok),
        batching.unsupported("sklearn", **{**ok, "several": True}),
    ):
        assert why.startswith("ZEROSCALE_MAX_BATCH_SIZE is set but")


def test_mergeable_types() -> None:
    assert batching.mergeable_type(b"")  # the default: JSON
    assert batching.mergeable_type(b"Text/CSV; charset=utf-8")
    assert batching.mergeable_type(b"application/x-npy")
    assert not batching.mergeable_type(b"application/x-npz")
    assert not batching.mergeable_type(b"text/libsvm")
    assert not batching.mergeable_type(b"image/jpeg")


# ---- frames ----
@pytest.mark.parametrize("bodies", [[], [b""], [b"a"], [b"", b"xyz", b"\x00" * 70_000, b"[[1,2]]"]])
def test_body_frames_round_trip(bodies: list[bytes]) -> None:
    assert batching.unpack_bodies(batching.pack_bodies(bodies)) == bodies


def test_answer_frames_round_trip() -> None:
    answers = [(200, b"[1]", b"application/json"), (415, b"", b""), (500, b"x" * 100_000, b"text/plain")]
    assert batching.unpack_answers(batching.pack_answers(answers)) == [(s, b, k) for s, b, k in answers]


@pytest.mark.parametrize("cut", [0, 3, 4, 7, 9])
def test_frames_cut_short_or_too_long_are_refused(cut: int) -> None:
    frame = batching.pack_bodies([b"abc", b"de"])
    with pytest.raises(ValueError):
        batching.unpack_bodies(frame[:cut])
    with pytest.raises(ValueError):
        batching.unpack_bodies(frame + b"!")
    answers = batching.pack_answers([(200, b"abc", b"text/csv")])
    with pytest.raises(ValueError):
        batching.unpack_answers(answers[: cut + 4])
    with pytest.raises(ValueError):
        batching.unpack_answers(answers + b"\x00")


# ---- merge and split ----
def test_merge_groups_by_dtype_and_width() -> None:
    a = np.ones((2, 3))
    b = np.zeros((1, 3))
    c = np.ones((4, 2))  # another width
    d = np.ones((3, 3), dtype=np.int64)  # another dtype: concatenating would turn it into floats
    e = np.ones(3)  # 1-D: alone
    f = np.empty((0, 3))  # no rows: alone
    g = np.array([["a", "b", "c"]])  # strings: alone
    h = np.ones((5, 3))
    groups = merge([a, b, c, d, e, f, g, None, h, {"x": 1}])
    assert len(groups) == 1
    (group,) = groups
    assert group.indexes == (0, 1, 8)
    assert group.rows == (2, 1, 5)
    assert group.data.shape == (8, 3)
    assert np.array_equal(group.data, np.concatenate([a, b, h]))
    assert merge([]) == []
    assert merge([a]) == []  # one request: nothing to merge


def test_split_by_rows_and_refusals() -> None:
    prediction = np.arange(6)
    parts = split(prediction, (1, 2, 3))
    assert parts is not None
    assert [p.tolist() for p in parts] == [[0], [1, 2], [3, 4, 5]]
    assert split(prediction, (2, 2)) is None  # not one prediction per row
    assert split(np.float64(1.0), (1,)) is None
    assert split([0, 1], (1, 1)) is None  # not an array
    two_d = np.arange(12).reshape(6, 2)
    parts = split(two_d, (4, 2))
    assert parts is not None and [p.shape for p in parts] == [(4, 2), (2, 2)]


def test_split_keeps_a_fortran_prediction_fortran() -> None:
    """np.save writes the memory order: each part is laid out as the model's own answer for it would be."""
    fortran = np.asfortranarray(np.arange(12.0).reshape(6, 2))
    parts = split(fortran, (1, 3, 2))
    assert parts is not None
    for part, alone in zip(parts, (fortran[:1], fortran[1:4], fortran[4:]), strict=True):
        expected = io.BytesIO()
        np.save(expected, np.asfortranarray(alone.copy(order="F")))
        got = io.BytesIO()
        np.save(got, part)
        assert got.getvalue() == expected.getvalue()


# ---- the handler, with real models ----
def _sklearn_handler(tmp_path: Path, model: Any, env: dict[str, str] | None = None) -> Handler:
    import joblib

    joblib.dump(model, tmp_path / "model.joblib")
    runtime = get_runtime("sklearn")
    return Handler.load(str(tmp_path), runtime.model_fn, env=env or {}, defaults=runtime.defaults)


def _bodies(rows: list[np.ndarray], content_type: str) -> list[bytes]:
    out = []
    for r in rows:
        if content_type == "application/json":
            out.append(json.dumps(r.tolist()).encode())
        elif content_type == "text/csv":
            out.append("\n".join(",".join(repr(float(v)) for v in row) for row in r).encode())
        else:
            buf = io.BytesIO()
            np.save(buf, r)
            out.append(buf.getvalue())
    return out


@pytest.fixture(scope="module")
def forest() -> RandomForestClassifier:
    rng = np.random.RandomState(3)
    x = rng.rand(300, 4)
    return RandomForestClassifier(n_estimators=20, random_state=0).fit(x, (x[:, 0] > x[:, 2]).astype(int))


@pytest.mark.parametrize("content_type", ["application/json", "text/csv", "application/x-npy"])
@pytest.mark.parametrize("accept", ["application/json", "text/csv", "application/x-npy"])
def test_invoke_batch_equals_invoke_alone(
    tmp_path: Path, forest: RandomForestClassifier, content_type: str, accept: str
) -> None:
    handler = _sklearn_handler(tmp_path, _Counting(forest))
    assert handler.batches
    rng = np.random.RandomState(11)
    rows = [rng.rand(n, 4) for n in (1, 7, 2, 30, 1, 5)]
    bodies = _bodies(rows, content_type)
    headers = {"content-type": content_type, "accept": accept}
    batch = handler.invoke_batch(bodies, headers)
    assert handler.model.calls == [46]  # one predict call for all the rows
    alone = [handler.invoke(b, headers) for b in bodies]
    assert batch == alone
    assert all(status == 200 for status, _, _ in batch)


def test_predict_proba_shaped_answers_split_exactly(tmp_path: Path) -> None:
    """A 2-D prediction per row (the handler's predict_fn is the runtime's; a model whose predict answers a
    row of numbers per row)."""
    rng = np.random.RandomState(5)
    x = rng.rand(200, 3)
    model = _ProbaModel(
        RandomForestClassifier(n_estimators=10, random_state=0).fit(x, (x[:, 1] > 0.5).astype(int))
    )
    handler = _sklearn_handler(tmp_path, model)
    bodies = _bodies([rng.rand(n, 3) for n in (3, 1, 4)], "application/json")
    headers = {"content-type": "application/json", "accept": "application/x-npy"}
    assert handler.invoke_batch(bodies, headers) == [handler.invoke(b, headers) for b in bodies]


class _Counting:
    """A model that notes how many rows each predict call got (a forest inside: each row on its own)."""

    zeroscale_rows_independent = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def predict(self, x: Any) -> Any:
        self.calls.append(len(x))
        return self.inner.predict(x)


class _ProbaModel:
    zeroscale_rows_independent = True

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def predict(self, x: Any) -> Any:
        return self.inner.predict_proba(x)


def test_unmergeable_requests_get_their_own_answers(tmp_path: Path, forest: RandomForestClassifier) -> None:
    handler = _sklearn_handler(tmp_path, _Counting(forest))
    headers = {"content-type": "application/json", "accept": "application/json"}
    bodies = [
        b"[[0.1, 0.2, 0.3, 0.4]]",
        b"[0.1, 0.2, 0.3, 0.4]",  # 1-D: sklearn's own error
        b"[[0.1, 0.2, 0.3]]",  # 3 columns: the width error
        b"not json",  # a decode error
        b"[[1, 2, 3, 4]]",  # ints: merged only with ints
        b"[[0.5, 0.5, 0.5, 0.5], [0.9, 0.1, 0.9, 0.1]]",
        b'{"instances": []}',  # an object: alone
        b"[]",  # no rows
    ]
    batch = handler.invoke_batch(bodies, headers)
    # the first and the sixth merged (3 rows); the rest alone, each with its own error or answer
    assert handler.model.calls == [3, 4, 1, 1, 1, 0]
    alone = [handler.invoke(b, headers) for b in bodies]
    assert batch == alone
    assert [s for s, _, _ in batch] == [200, 500, 500, 400, 200, 200, 500, 500]


def test_csv_quoting_and_blank_fields(tmp_path: Path, forest: RandomForestClassifier) -> None:
    """CSV the fast parser refuses (blank fields are NaN; quoted fields are strings) is decoded the same way
    in a batch, and never merged with rows of another kind."""
    handler = _sklearn_handler(tmp_path, forest)
    headers = {"content-type": "text/csv", "accept": "text/csv"}
    bodies = [b"0.1,0.2,0.3,0.4\n", b'"0.1",0.2,0.3,0.4\n', b"0.1,,0.3,0.4\r\n0.2,0.2,0.2,0.2\n", b"\n\n"]
    assert handler.invoke_batch(bodies, headers) == [handler.invoke(b, headers) for b in bodies]


def test_npy_dtypes_are_not_mixed(tmp_path: Path, forest: RandomForestClassifier) -> None:
    handler = _sklearn_handler(tmp_path, forest)
    headers = {"content-type": "application/x-npy", "accept": "application/json"}
    rng = np.random.RandomState(2)
    arrays = [
        rng.rand(3, 4),
        rng.rand(2, 4).astype(np.float32),
        rng.rand(2, 4).astype(np.float32),
        (rng.rand(4, 4) * 10).astype(np.int32),
        np.asfortranarray(rng.rand(5, 4)),
        rng.rand(1, 4).astype(">f8"),  # big-endian: its own group
    ]
    bodies = []
    for a in arrays:
        buf = io.BytesIO()
        np.save(buf, a)
        bodies.append(buf.getvalue())
    assert handler.invoke_batch(bodies, headers) == [handler.invoke(b, headers) for b in bodies]


def test_a_model_not_known_to_predict_rows_alone_is_answered_one_request_at_a_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A linear model goes through BLAS, whose rounding may depend on the batch's shape: never merged."""
    rng = np.random.RandomState(6)
    x = rng.rand(200, 4)
    model = LinearRegression().fit(x, x @ [1.0, 2.0, 3.0, 4.0])
    handler = _sklearn_handler(tmp_path, model, {"ZEROSCALE_MAX_BATCH_SIZE": "8"})
    assert handler.batches and not handler.merges  # a frame's requests are answered one by one
    headers = {"content-type": "application/json", "accept": "application/json"}
    bodies = _bodies([rng.rand(n, 4) for n in (3, 1, 7)], "application/json")
    assert handler.invoke_batch(bodies, headers) == [handler.invoke(b, headers) for b in bodies]
    assert (
        "sklearn.linear_model._base.LinearRegression is not known to predict each row"
        in capsys.readouterr().err
    )
    assert batching.rows_independent(RandomForestClassifier()) and not batching.rows_independent(object())


def test_a_gradient_boosting_started_from_a_linear_model_is_not_merged() -> None:
    """An audit: with ``init=LinearRegression()`` the first stage is a matrix product, which rounds
    differently with the number of rows: merged, 86 of 200 answers changed (in the 7th digit)."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    rng = np.random.RandomState(9)
    x = rng.rand(300, 6)
    y = x @ rng.rand(6) * 10
    assert batching.rows_independent(GradientBoostingRegressor(n_estimators=5).fit(x, y))
    assert batching.rows_independent(GradientBoostingRegressor(n_estimators=5, init="zero").fit(x, y))
    linear = GradientBoostingRegressor(n_estimators=5, init=LinearRegression()).fit(x, y)
    assert not batching.rows_independent(linear)


@pytest.mark.parametrize("env", [{}, {"ZEROSCALE_MAX_BATCH_SIZE": "1"}])
def test_no_word_of_batching_when_it_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], env: dict[str, str]
) -> None:
    """A model that never asked to batch (the default, or a batch size of 1) hears nothing about it."""
    rng = np.random.RandomState(6)
    x = rng.rand(50, 4)
    handler = _sklearn_handler(tmp_path, LinearRegression().fit(x, x @ [1.0, 2.0, 3.0, 4.0]), env)
    assert handler.invoke(b"[[0.1,0.2,0.3,0.4]]", {"content-type": "application/json"})[0] == 200
    assert "batching" not in capsys.readouterr().err


def test_user_code_never_batches(tmp_path: Path, forest: RandomForestClassifier) -> None:
    import joblib

    joblib.dump(forest, tmp_path / "model.joblib")
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "inference.py").write_text(
        "def predict_fn(data, model):\n    return model.predict(data) * 0 + len(data)\n"
    )
    runtime = get_runtime("sklearn")
    handler = Handler.load(str(tmp_path), runtime.model_fn, env={}, defaults=runtime.defaults)
    assert not handler.batches
    headers = {"content-type": "application/json", "accept": "application/json"}
    bodies = [b"[[0.1,0.2,0.3,0.4]]", b"[[0.1,0.2,0.3,0.4],[0.1,0.2,0.3,0.4]]"]
    assert handler.invoke_batch(bodies, headers) == [
        (200, b"[1]", "application/json"),
        (200, b"[2, 2]", "application/json"),
    ]


def test_xgboost_algorithm_mode_batches_exactly(tmp_path: Path) -> None:
    xgboost = pytest.importorskip("xgboost")
    rng = np.random.RandomState(4)
    x = rng.rand(300, 5)
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 3, "nthread": 1},
        xgboost.DMatrix(x, label=(x[:, 0] + x[:, 4] > 1).astype(int)),
        num_boost_round=20,
    )
    booster.save_model(str(tmp_path / "model.json"))
    (tmp_path / "model.json").rename(tmp_path / "xgboost-model")
    runtime = get_runtime("xgboost")
    handler = Handler.load(str(tmp_path), runtime.model_fn, env={}, defaults=runtime.defaults)
    assert handler.batches
    for content_type in ("text/csv", "application/json", "application/x-npy"):
        for accept in ("text/csv", "application/json", "application/jsonlines"):
            bodies = _bodies([rng.rand(n, 5) for n in (4, 1, 9)], content_type)
            bodies.append(b"[0.1, 0.2, 0.3, 0.4, 0.5]" if content_type == "application/json" else bodies[0])
            headers = {"content-type": content_type, "accept": accept}
            assert handler.invoke_batch(bodies, headers) == [handler.invoke(b, headers) for b in bodies]


# ---- the worker's route ----
def _serve(tmp_path: Path, with_batch: bool) -> tuple[Any, str]:
    import threading

    from zeroscale.runtimes.container import ContainerServer
    from zeroscale.runtimes.worker import bind

    def invoke(body: bytes, headers: Any) -> tuple[int, bytes, str]:
        return (418, b"teapot", "text/plain") if body == b"fail" else (200, body[::-1], "text/x\r\nX-Evil: 1")

    def batch(bodies: list[bytes], headers: Any) -> list[tuple[int, Any, str]]:
        assert headers["content-type"] == "text/csv"
        out: list[tuple[int, Any, str]] = [invoke(b, headers) for b in bodies]
        out.append((200, iter([b"a", b"b"]), "text/plain"))  # a streamed answer is joined
        return out

    path = str(tmp_path / "w.sock")
    server = ContainerServer(bind(path, None, ""), invoke, batch if with_batch else None)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, path


def test_the_worker_answers_a_batch_frame(tmp_path: Path) -> None:
    from .unixhttp import UnixHTTPConnection

    server, path = _serve(tmp_path, True)
    try:
        conn = UnixHTTPConnection(path)
        frame = batching.pack_bodies([b"abc", b"fail", b""])
        conn.request("POST", "/zeroscale/batch", body=frame, headers={"Content-Type": "text/csv"})
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("content-type") == batching.FRAME_TYPE.decode()
        assert batching.unpack_answers(resp.read()) == [
            (200, b"cba", b"text/x  X-Evil: 1"),  # the header value exactly as /invocations would send it
            (418, b"teapot", b"text/plain"),
            (200, b"", b"text/x  X-Evil: 1"),
            (200, b"ab", b"text/plain"),
        ]
        conn.request("POST", "/zeroscale/batch", body=frame[:-3], headers={"Content-Type": "text/csv"})
        resp = conn.getresponse()
        assert resp.status == 400
        assert resp.read().startswith(b"Bad batch: ")
        conn.request("POST", "/invocations", body=b"xyz", headers={"Content-Type": "text/csv"})
        assert conn.getresponse().read() == b"zyx"  # the connection is kept
    finally:
        assert server.drain(5)


def test_a_worker_without_batching_has_no_batch_route(tmp_path: Path) -> None:
    from .unixhttp import UnixHTTPConnection

    server, path = _serve(tmp_path, False)
    try:
        conn = UnixHTTPConnection(path)
        conn.request("POST", "/zeroscale/batch", body=batching.pack_bodies([b"a"]))
        resp = conn.getresponse()
        assert resp.status == 404
        resp.read()
    finally:
        assert server.drain(5)
