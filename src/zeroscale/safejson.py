"""Parsing JSON that a client sent, and so may be hostile, without ever failing in an unplanned way.

``loads`` accepts what RFC 8259 accepts and a JSON 1.1 service can use, and raises ``JsonRejected`` (a
ValueError) with a short reason for everything else:

- bytes that are not UTF-8 (a byte-order mark included), or a lone UTF-16 surrogate escape (``"\\ud800"``),
  which no later ``str.encode`` could handle;
- nesting deeper than ``max_depth`` arrays and objects, found by a scan before parsing, so the parser's
  recursion never nears Python's limit;
- ``NaN``, ``Infinity`` and ``-Infinity`` (not JSON), numbers that overflow a double, and number literals
  longer than ``MAX_NUMBER_CHARS`` (an integer of thousands of digits costs quadratic time to convert);
- an object with the same key twice (parsers disagree on which one wins).
"""

from __future__ import annotations

import json
import math
import re
from itertools import accumulate
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_NUMBER_CHARS", "JsonRejected", "loads"]

MAX_DEPTH = 64
MAX_NUMBER_CHARS = 64

# A JSON string (after a successful parse every '"' in the text starts or ends one, or is escaped).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# What can make a lone surrogate: an escape of one (a pair's halves too), or one in a str given to ``loads``
# (text decoded from UTF-8 holds none). Without any, the value needs no check by encoding it.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class JsonRejected(ValueError):
    """The text is not JSON that zeroscale accepts; ``str(exc)`` says why."""


def _constant(name: str) -> Any:
    raise JsonRejected(f"{name} is not a JSON number")


def _number(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:
        raise JsonRejected(f"a number literal is longer than {MAX_NUMBER_CHARS} characters")
    return text


def _int(text: str) -> int:
    return int(_number(text))


def _float(text: str) -> float:
    value = float(_number(text))
    if not math.isfinite(value):
        raise JsonRejected(f"the number {text} is out of range")
    return value


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise JsonRejected(f"the key {json.dumps(key)[:80]} appears more than once in one object")
            seen.add(key)
    return out


def _check_depth(text: str, max_depth: int) -> None:
    if text.count("[") + text.count("{") <= max_depth:
        return  # the common case: too few brackets to nest that deep, no scan needed
    # the brackets outside strings, in order: the depth after each is the running sum of their steps (in C:
    # a loop in Python over a body of 500 queries' brackets cost as much as parsing it)
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > max_depth:
        raise JsonRejected(f"arrays and objects are nested more than {max_depth} deep")


def loads(data: bytes | str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The value ``data`` holds; JsonRejected says why not."""
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonRejected(f"the body is not valid UTF-8 (byte {exc.start})") from None
    else:
        text = data
    _check_depth(text, max_depth)
    try:
        value = json.loads(
            text,
            object_pairs_hook=_object,
            parse_constant=_constant,
            parse_int=_int,
            parse_float=_float,
        )
    except JsonRejected:
        raise
    except RecursionError:  # not reachable after the depth scan; kept so it can never become a 500
        raise JsonRejected(f"arrays and objects are nested more than {max_depth} deep") from None
    except ValueError as exc:
        raise JsonRejected(str(exc)) from None
    if _SURROGATE_ESCAPE.search(text) is None and (
        isinstance(data, bytes) or _SURROGATE.search(text) is None
    ):
        return value  # nothing could have made a lone surrogate (the common case: no encoding to check)
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise JsonRejected("a string holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff)") from None
    return value
