from __future__ import annotations

import pytest

from zeroscale.errors import InvalidParameterException
from zeroscale.logs.patterns import compile_pattern


def matches(pattern: str, message: str) -> bool:
    match = compile_pattern(pattern)
    assert match is not None
    return match(message)


def test_empty_matches_everything() -> None:
    assert compile_pattern(None) is None
    assert compile_pattern("   ") is None


def test_terms_are_all_required_and_case_sensitive() -> None:
    assert matches("ERROR", "an ERROR here")
    assert not matches("ERROR", "an error here")
    assert matches("bad input", "ValueError: bad input here")
    assert not matches("bad input", "bad things")


def test_quoted_phrases_keep_spaces_and_escapes() -> None:
    assert matches('"bad input here"', "ValueError: bad input here")
    assert not matches('"input bad"', "bad input")
    assert matches(r'"say \"hi\""', 'they say "hi" to you')
    assert matches('"a:b=c [x]"', "key a:b=c [x] value")


def test_any_of_and_excluded() -> None:
    assert matches("?ERROR ?WARN", "WARN disk")
    assert not matches("?ERROR ?WARN", "INFO disk")
    assert matches("Exception -Timeout", "ValueException")
    assert not matches("Exception -Timeout", "TimeoutException")
    assert matches("-", "a - b")  # a lone dash is a term, not an exclusion


def test_regex() -> None:
    assert matches("%worker [0-9]{4}%", "worker 0001 started")
    assert not matches("%^worker%", "a worker")


@pytest.mark.parametrize("pattern", ['{ $.level = "ERROR" }', "[ip, user]", '"unterminated', "%(%"])
def test_unsupported_or_broken_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidParameterException):
        compile_pattern(pattern)
