"""Parsing hostile JSON: everything that is not plain, usable JSON is a JsonRejected (a ValueError) with a
reason, never a RecursionError, an OverflowError or a value that breaks later code."""

from __future__ import annotations

import json
import time

import pytest

from zeroscale import safejson
from zeroscale.safejson import MAX_DEPTH, JsonRejected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b'{"a": [1, 2.5, true, null, "x"]}', {"a": [1, 2.5, True, None, "x"]}),
        ('{"emoji": "\\ud83d\\ude00"}', {"emoji": "\U0001f600"}),  # a surrogate pair is one character
        (json.dumps("[" * 70), "[" * 70),
        (json.dumps({"k": '"' + "{[" * 70}), {"k": '"' + "{[" * 70}),
        (b"-0.0", -0.0),
        (b"1" * safejson.MAX_NUMBER_CHARS, int("1" * safejson.MAX_NUMBER_CHARS)),
        (b"1.7976931348623157e308", 1.7976931348623157e308),
        (b'["\\\\ud800"]', ["\\ud800"]),  # an escaped backslash, then the text "ud800"
    ],
    ids=[
        "plain",
        "surrogate-pair",
        "brackets-in-a-string",
        "escaped-quote",
        "minus-zero",
        "long-int",
        "max",
        "backslash-u-text",
    ],
)
def test_accepts_plain_json(text: bytes | str, value: object) -> None:
    assert safejson.loads(text) == value


def test_depth_up_to_the_limit_is_fine() -> None:
    nested = "[" * MAX_DEPTH + "]" * MAX_DEPTH
    assert safejson.loads(nested) is not None
    objects = '{"a":' * MAX_DEPTH + "1" + "}" * MAX_DEPTH
    assert isinstance(safejson.loads(objects), dict)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b"[" * 5000 + b"]" * 5000, "nested more than 64 deep"),
        (b"[" * 100_000, "nested more than 64 deep"),
        (b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), "nested more than 64 deep"),
        (b'[{"a": [' * 30 + b"]}]" * 30, "nested more than 64 deep"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b"[Infinity]", "Infinity is not a JSON number"),
        (b"-Infinity", "-Infinity is not a JSON number"),
        (b"1e999", "out of range"),
        (b"-1e400", "out of range"),
        (b"9" * 5000, "longer than 64 characters"),
        (b"0." + b"1" * 100, "longer than 64 characters"),
        (b'{"a": 1, "a": 2}', 'the key "a" appears more than once'),
        (b'{"x": {"b": 1, "b": 1}}', 'the key "b" appears more than once'),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b'{"a": "\xed\xa0\x80"}', "not valid UTF-8"),  # a surrogate encoded as UTF-8
        (b"\xef\xbb\xbf{}", "BOM"),
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"\\udfff": 1}', "lone UTF-16 surrogate"),
        (b'{"a": "\x00"}', "Invalid control character"),
        (b"{", "Expecting property name"),
        (b"", "Expecting value"),
        (b"[1,]", "Expecting value"),
    ],
)
def test_rejects_hostile_json(text: bytes, reason: str) -> None:
    with pytest.raises(JsonRejected) as err:
        safejson.loads(text)
    assert reason in str(err.value)
    assert isinstance(err.value, ValueError)


def test_a_lone_surrogate_in_text_given_as_str_is_refused() -> None:
    """Text decoded from UTF-8 holds no surrogate (only an escape can make one); a str given may."""
    with pytest.raises(JsonRejected, match="lone UTF-16 surrogate"):
        safejson.loads('{"a": "\ud800"}')


def test_a_deep_body_is_refused_quickly() -> None:
    body = b"[" * 1_000_000 + b"]" * 1_000_000
    started = time.perf_counter()
    with pytest.raises(JsonRejected):
        safejson.loads(body)
    assert time.perf_counter() - started < 1.0


def test_a_wide_shallow_body_is_fine() -> None:
    body = json.dumps([[i, {"k": [i]}] for i in range(20_000)]).encode()
    assert len(safejson.loads(body)) == 20_000
