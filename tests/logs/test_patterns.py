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


def test_a_regex_takes_time_linear_in_the_event_whatever_the_pattern() -> None:
    """An audit's pattern, on the tenant's own log group: Python's backtracking took 32 s on a line of 28
    characters, doubling with every two more, and held the interpreter meanwhile (the whole server stood
    still); RE2 answers at once. (No timing asserted: the answer comes, and the suite's timeout would say.)"""
    line = "a" * 100_000
    for n in (28, 40, 1000):
        assert not matches(f"%^(?:.|.){{0,{n}}}\x01%", line)
    assert not matches("%(a|aa)+$%", line + "b")
    assert matches("%(a|aa)+b$%", line + "b")


@pytest.mark.parametrize(
    "pattern",
    ['{ $.level = "ERROR" }', "[ip, user]", '"unterminated', "%(%", r"%(a)\1%", "%(?=a)%", "%a{2000}%"],
)
def test_unsupported_or_broken_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(InvalidParameterException):
        compile_pattern(pattern)
