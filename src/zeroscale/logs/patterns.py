"""CloudWatch Logs filter patterns for unstructured events, as far as zeroscale understands them:

- ``term`` / ``"a quoted phrase"``: the event contains it (case-sensitive); several terms must all match;
- ``?term``: at least one of the ``?`` terms matches; ``-term``: the event must not contain it;
- ``%regular expression%``: the event matches it, in RE2's syntax (no backreference or lookaround, as
  CloudWatch's own regular expressions have none), matched in time linear in the event by RE2: a tenant's
  pattern, run over every event read, took Python's backtracking engine hours on a line of 40 characters
  (``^(?:.|.){0,40}x``), holding the interpreter, so the whole server stood still;
- an empty pattern matches everything.

JSON (``{ ... }``) and space-delimited (``[ ... ]``) patterns are refused with InvalidParameterException.
"""

from __future__ import annotations

from collections.abc import Callable

import re2

from zeroscale.errors import InvalidParameterException

Matcher = Callable[[str], bool]
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is the caller's error, said in the answer, not the server's log


def _terms(pattern: str) -> list[tuple[str, str]]:
    """(kind, text) pairs: kind is "+" (required), "?" (any of) or "-" (excluded)."""
    terms: list[tuple[str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern[i].isspace():
            i += 1
            continue
        kind = "+"
        if pattern[i] in "?-" and i + 1 < n and not pattern[i + 1].isspace():
            kind = pattern[i]
            i += 1
        if pattern[i] == '"':
            i += 1
            text: list[str] = []
            while i < n and pattern[i] != '"':
                if pattern[i] == "\\" and i + 1 < n:
                    i += 1
                text.append(pattern[i])
                i += 1
            if i >= n:
                raise InvalidParameterException(f"Invalid filter pattern: unterminated quote in {pattern!r}.")
            i += 1
            terms.append((kind, "".join(text)))
        else:
            start = i
            while i < n and not pattern[i].isspace():
                i += 1
            terms.append((kind, pattern[start:i]))
    return terms


def compile_pattern(pattern: str | None) -> Matcher | None:
    """A predicate on an event's message; None when the pattern matches everything."""
    text = (pattern or "").strip()
    if not text:
        return None
    if text[0] in "{[":
        raise InvalidParameterException(
            "zeroscale supports filter patterns of terms, quoted phrases, ?any, -excluded and %regex%; "
            "JSON and space-delimited patterns are not supported."
        )
    if len(text) >= 2 and text[0] == "%" and text[-1] == "%":
        try:
            regex = re2.compile(text[1:-1], _OPTIONS)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else ""
            why = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else str(reason)
            raise InvalidParameterException(f"Invalid filter pattern {text!r}: {why}.") from None
        return lambda message: regex.search(message) is not None
    terms = _terms(text)
    required = [t for k, t in terms if k == "+"]
    any_of = [t for k, t in terms if k == "?"]
    excluded = [t for k, t in terms if k == "-"]

    def match(message: str) -> bool:
        return (
            all(t in message for t in required)
            and (not any_of or any(t in message for t in any_of))
            and not any(t in message for t in excluded)
        )

    return match
