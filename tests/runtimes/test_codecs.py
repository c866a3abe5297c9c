from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.sparse  # type: ignore[import-untyped]

from zeroscale.runtimes import codecs


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_json_decodes_to_array_and_keeps_objects() -> None:
    out = codecs.decode(b"[[1.5, 2], [3, 4]]", "application/json")
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, [[1.5, 2], [3, 4]])
    assert codecs.decode(b'{"instances": [[1, 2]]}', "application/json") == {"instances": [[1, 2]]}


def test_content_type_parameters_and_case_are_ignored() -> None:
    out = codecs.decode(b"1,2\n", "Text/CSV; charset=utf-8")
    np.testing.assert_array_equal(out, [[1.0, 2.0]])


def test_csv_is_one_float_row_per_line() -> None:
    out = codecs.decode(b"1,2,3\n4.5,5,6\n\n", "text/csv")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[1, 2, 3], [4.5, 5, 6]])
    single = codecs.decode(b"1,2,3", "text/csv")
    assert single.shape == (1, 3)
    column = codecs.decode(b"1\r\n2\r\n", "text/csv")
    assert column.shape == (2, 1)


def test_csv_empty_field_is_nan_and_text_stays_text() -> None:
    out = codecs.decode(b"1,,3\n", "text/csv")
    assert np.isnan(out[0, 1])
    text = codecs.decode(b"red, 1\nblue,2\n", "text/csv")
    assert text.tolist() == [["red", "1"], ["blue", "2"]]


def test_npy_round_trip_and_no_pickles() -> None:
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = codecs.decode(npy(array), "application/x-npy")
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, array)
    body, content_type = codecs.encode(array, "application/x-npy")
    assert content_type == "application/x-npy"
    np.testing.assert_array_equal(np.load(io.BytesIO(body)), array)
    with pytest.raises(codecs.DecodeError):
        codecs.decode(npy(np.array([{"a": 1}], dtype=object)), "application/x-npy")


def test_npz_single_multiple_and_sparse() -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.ones((2, 2)))
    np.testing.assert_array_equal(codecs.decode(buffer.getvalue(), "application/x-npz"), np.ones((2, 2)))
    buffer = io.BytesIO()
    np.savez(buffer, a=np.zeros(2), b=np.ones(3))
    out = codecs.decode(buffer.getvalue(), "application/x-npz")
    assert sorted(out) == ["a", "b"]
    matrix = scipy.sparse.random(4, 5, density=0.3, format="csr", random_state=0)
    buffer = io.BytesIO()
    scipy.sparse.save_npz(buffer, matrix)
    sparse = codecs.decode(buffer.getvalue(), "application/x-npz")
    assert scipy.sparse.issparse(sparse)
    np.testing.assert_array_equal(sparse.toarray(), matrix.toarray())


def test_unsupported_content_type_is_415_and_bad_body_400() -> None:
    with pytest.raises(codecs.UnsupportedContentType) as err:
        codecs.decode(b"x", "image/png")
    assert err.value.status_code == 415
    assert "image/png" in str(err.value)
    with pytest.raises(codecs.DecodeError) as bad:
        codecs.decode(b"[1, 2", "application/json")
    assert bad.value.status_code == 400
    with pytest.raises(codecs.DecodeError):
        codecs.decode(b"\x93NUMPY garbage", "application/x-npy")


def test_json_encoding_handles_numpy_values() -> None:
    body, content_type = codecs.encode(np.array([1, 2, 3]), "application/json")
    assert (body, content_type) == (b"[1, 2, 3]", "application/json")
    assert codecs.encode(np.float32(0.5), "application/json")[0] == b"0.5"
    nested = {"labels": np.array(["a", "b"]), "score": np.int64(7), "probs": [np.float64(0.25)]}
    assert json.loads(codecs.encode(nested, "application/json")[0]) == {
        "labels": ["a", "b"],
        "score": 7,
        "probs": [0.25],
    }
    floats = np.random.default_rng(0).random(5)
    assert json.loads(codecs.encode(floats, "application/json")[0]) == floats.tolist()


def test_csv_encoding_is_one_row_per_line() -> None:
    assert codecs.encode(np.array([[1, 2], [3, 4]]), "text/csv") == (b"1,2\n3,4\n", "text/csv")
    assert codecs.encode(np.array([0, 1, 1]), "text/csv")[0] == b"0\n1\n1\n"
    assert codecs.encode(np.float64(2.5), "text/csv")[0] == b"2.5\n"
    assert codecs.encode(["x", "y"], "text/csv")[0] == b"x\ny\n"
    floats = np.random.default_rng(1).random(4)
    decoded = codecs.decode(codecs.encode(floats, "text/csv")[0], "text/csv")
    np.testing.assert_array_equal(decoded.ravel(), floats)
    # the shapes the one-join paths (1-D, 2-D arrays) do not take, and the empty ones
    assert codecs.encode(np.arange(8).reshape(2, 2, 2), "text/csv")[0] == b"[0, 1],[2, 3]\n[4, 5],[6, 7]\n"
    assert codecs.encode(np.array([]), "text/csv")[0] == b""
    assert codecs.encode(np.zeros((0, 3)), "text/csv")[0] == b""
    assert codecs.encode(np.array([[1.5], [2.0]]), "text/csv")[0] == b"1.5\n2.0\n"
    assert codecs.encode(np.array([True, False]), "text/csv")[0] == b"True\nFalse\n"


def test_accept_lists_pick_the_first_supported() -> None:
    assert codecs.encode([1], "text/html, text/csv;q=0.9, application/json")[1] == "text/csv"
    with pytest.raises(codecs.UnsupportedAccept) as err:
        codecs.encode([1], "image/png")
    assert err.value.status_code == 406


def test_a_sample_of_zeros_is_refused_past_its_bound_however_large_the_shape() -> None:
    """``zeros`` (a rehearsal's sample) gives none for a shape past ``SAMPLE_MAX_VALUES``, counted exactly:
    a product that overflows 64 bits (numpy's ``prod`` of (1, 2**40, 2**40) is 0) is still refused."""
    from zeroscale.runtimes.codecs import SAMPLE_MAX_VALUES, zeros

    assert zeros((1, 3)) == [[0.0, 0.0, 0.0]]
    assert zeros((1, SAMPLE_MAX_VALUES + 1)) is None
    assert zeros((1, 2**40, 2**40)) is None
    assert zeros(()) is None and zeros((1, 0)) is None
