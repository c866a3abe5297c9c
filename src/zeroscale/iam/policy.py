"""IAM policy documents: validation and evaluation (pure).

Supported: ``Effect`` Allow or Deny; ``Action`` or ``NotAction`` and ``Resource`` or ``NotResource``, each a
string or a list, with ``*`` (any characters, none or many, newlines included) and ``?`` (any one
character) wildcards; actions compare case-insensitively, resources as they are. Matching never
backtracks (see ``Wildcard``): its cost stays linear in practice in the caller-chosen name, which is
checked on the event loop before any other validation. An explicit Deny wins; nothing is allowed unless
a statement allows it. ``Condition`` and ``Principal`` are refused when the policy is put (an identity
policy names no principal).

Documents are checked as strictly as AWS checks them, so that what a reviewer reads is what is evaluated:
no duplicate key, element names exactly as spelt above (plus ``Version``, ``Id``, ``Sid``), ``Version``
2012-10-17 or 2008-10-17, each action ``*`` or ``<service>:<action>``, each resource ``*`` or an ``arn:``
pattern.

Policy variables in a resource (``arn:aws:iam::*:user/${aws:username}``) are substituted with the caller's
values when a user's policies are compiled, as AWS substitutes them: only under ``"Version": "2012-10-17"``
(under 2008-10-17 AWS matches them as text, which would make a Deny that names one match nothing: refused),
names compared case-insensitively, ``${aws:username, 'default'}`` taking its value. zeroscale's users have
``aws:username``, ``aws:userid`` and ``aws:PrincipalType`` (``User``); any other variable, and the
``${*}``, ``${?}`` and ``${$}`` escapes, are refused by name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from zeroscale import safejson
from zeroscale.errors import ZeroscaleError

MAX_POLICY_BYTES = 2048 * 4  # IAM allows 2048 characters per inline user policy, counted without spaces


class MalformedPolicyDocument(ZeroscaleError):
    code = "MalformedPolicyDocument"
    status = 400


Decision = Literal["allow", "deny", "implicit"]


def _fold(text: str) -> str:
    """``text`` with each character lower-cased where that keeps it one character (so positions agree)."""
    if text.isascii():
        return text.lower()
    return "".join(low if len(low := c.lower()) == 1 else c for c in text)


@dataclass(frozen=True)
class Wildcard:
    """One ``*``/``?`` pattern, matched without backtracking.

    The pattern is cut at each ``*`` into pieces that hold only literal characters and ``?`` (any one
    character). The first piece must start the value, the last must end it, and the pieces between are
    found left to right, each at its leftmost place after the one before: for pieces of fixed length,
    leftmost is never worse than any later place, so no choice is ever taken back. The cost is at most
    len(pattern) x len(value) (``str.find`` or a fixed-length regex search per piece), and linear in
    practice, whatever the value holds.
    """

    pieces: tuple[str, ...]  # the pattern split at "*": one piece when it has no "*"
    ignore_case: bool
    _finders: tuple[re.Pattern[str] | None, ...]  # for a piece with "?", its fixed-length regex

    @classmethod
    def compile(cls, pattern: str, *, ignore_case: bool) -> Wildcard:
        pieces = tuple((_fold(pattern) if ignore_case else pattern).split("*"))
        finders = tuple(
            re.compile("".join("." if c == "?" else re.escape(c) for c in piece), re.DOTALL)
            if "?" in piece
            else None
            for piece in pieces
        )
        return cls(pieces, ignore_case, finders)

    def _at(self, i: int, value: str, pos: int) -> bool:
        """Whether piece ``i`` appears in ``value`` starting exactly at ``pos``."""
        finder = self._finders[i]
        if finder is None:
            return value.startswith(self.pieces[i], pos)
        return finder.match(value, pos) is not None

    def _find(self, i: int, value: str, start: int, end: int) -> int:
        """Where piece ``i`` first appears in ``value[start:end]``, or -1."""
        finder = self._finders[i]
        if finder is None:
            return value.find(self.pieces[i], start, end)
        found = finder.search(value, start, end)
        return -1 if found is None else found.start()

    def matches(self, value: str) -> bool:
        if self.ignore_case:
            value = _fold(value)
        pieces = self.pieces
        if len(pieces) == 1:
            return len(value) == len(pieces[0]) and self._at(0, value, 0)
        if len(value) < sum(map(len, pieces)):
            return False
        end = len(value) - len(pieces[-1])
        if not (self._at(0, value, 0) and self._at(len(pieces) - 1, value, end)):
            return False
        pos = len(pieces[0])
        for i in range(1, len(pieces) - 1):
            if not pieces[i]:
                continue  # "**"
            found = self._find(i, value, pos, end)
            if found < 0:
                return False
            pos = found + len(pieces[i])
        return True


def _any(patterns: list[str], *, ignore_case: bool) -> tuple[Wildcard, ...]:
    return tuple(Wildcard.compile(p, ignore_case=ignore_case) for p in patterns)


@dataclass(frozen=True)
class Statement:
    allow: bool
    actions: tuple[Wildcard, ...]
    not_actions: bool
    resources: tuple[Wildcard, ...]
    not_resources: bool

    def matches(self, action: str, resource: str) -> bool:
        if any(w.matches(action) for w in self.actions) == self.not_actions:
            return False
        return any(w.matches(resource) for w in self.resources) != self.not_resources


_VERSIONS = ("2012-10-17", "2008-10-17")
_TOP_ELEMENTS = ("Version", "Id", "Statement")
_STATEMENT_ELEMENTS = ("Sid", "Effect", "Action", "NotAction", "Resource", "NotResource")
_REFUSED_ELEMENTS = ("Principal", "NotPrincipal", "Condition")  # each refused with its own reason
# "*", or a service prefix (no wildcards) and an action name that may hold them.
_ACTION = re.compile(r"\*|[A-Za-z0-9-]+:[A-Za-z0-9*?]+")
# ${name} or ${name, 'default'}: what the name may hold is checked against VARIABLES.
_VARIABLE = re.compile(r"\$\{\s*([^},']*?)\s*(?:,\s*'([^']*)'\s*)?\}")
VARIABLES = ("aws:username", "aws:userid", "aws:PrincipalType")
_VARIABLE_VERSION = "2012-10-17"


def _malformed(reason: str) -> MalformedPolicyDocument:
    return MalformedPolicyDocument(f"Syntax errors in policy: {reason}")


def _shown(value: str) -> str:
    return json.dumps(value if len(value) <= 80 else value[:80] + "...")


def _check_elements(obj: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    """Element names are case-sensitive, as in AWS: ``condition`` or ``Conditions`` is no ``Condition``."""
    for key in obj:
        if key in allowed:
            continue
        near = [
            name for name in allowed + _REFUSED_ELEMENTS if name.lower() in (key.lower(), key.lower()[:-1])
        ]
        hint = ""
        if near and near[0] in _REFUSED_ELEMENTS:
            hint = f" (element names are case-sensitive, and {near[0]} is not supported by zeroscale)"
        elif near:
            hint = f" (element names are case-sensitive: did you mean {near[0]}?)"
        raise _malformed(
            f"unknown element {_shown(key)} in {where}{hint}; zeroscale supports {', '.join(allowed)}."
        )


def _strings(statement: dict[str, Any], key: str, version: str | None) -> list[str] | None:
    if key not in statement:
        return None
    value = statement[key]
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise _malformed(f"{key} must be a string or a list of strings.")
    for v in values:
        if "${" in v:
            _check_variables(key, v, version)
        if key.endswith("Action") and not _ACTION.fullmatch(v):
            raise _malformed(
                f'{key} {_shown(v)} must be "*" or "<service>:<action>", a service prefix such as sagemaker '
                "(without wildcards), a colon and an action name (letters and digits, * and ?)."
            )
        if key.endswith("Resource") and v != "*" and not v.startswith("arn:"):
            raise MalformedPolicyDocument(f'Resource {_shown(v)} must be in ARN format or "*".')
    return values


def _check_variables(key: str, value: str, version: str | None) -> None:
    if not key.endswith("Resource"):
        raise MalformedPolicyDocument(
            f"Policy variables may only be used in a Resource: {key} {_shown(value)}."
        )
    if version != _VARIABLE_VERSION:
        raise MalformedPolicyDocument(
            f'Policy variables need "Version": "{_VARIABLE_VERSION}" (without it AWS matches them as text): '
            f"{key} {_shown(value)}."
        )
    known = {name.lower() for name in VARIABLES}
    for found in re.finditer(r"\$\{[^}]*\}?", value):
        match = _VARIABLE.fullmatch(found.group())
        if match is None or match.group(1).lower() not in known:
            raise MalformedPolicyDocument(
                f"Policy variable {_shown(found.group())} in {key} is not supported by zeroscale: it "
                f"substitutes {', '.join('${' + name + '}' for name in VARIABLES)} (with an optional , "
                "'default')."
            )


def substitute(value: str, context: Mapping[str, str]) -> str:
    """``value`` with each policy variable replaced by the caller's value (``context``: lower-case names)
    or its default; a value holding ``*`` or ``?`` would be a wildcard, and is refused."""

    def one(match: re.Match[str]) -> str:
        got = context.get(match.group(1).lower(), match.group(2))
        if got is None or "*" in got or "?" in got:
            raise MalformedPolicyDocument(f"Policy variable {_shown(match.group())} has no usable value.")
        return got

    return _VARIABLE.sub(one, value)


def parse(document: str, context: Mapping[str, str] | None = None) -> list[Statement]:
    """Parse and check a policy document; raises MalformedPolicyDocument naming what is wrong. ``context``:
    the values of policy variables (``principal``), substituted in resources (None: checked only).

    Strict, as AWS is: JSON with no duplicate key (``safejson``: which of two ``Effect`` keys counts would
    otherwise depend on the parser), only the elements zeroscale evaluates, spelled exactly, and a known
    ``Version``; anything else is refused rather than ignored.
    """
    try:
        doc = safejson.loads(document)
    except ValueError as exc:
        raise _malformed(f"{exc}.") from None
    if not isinstance(doc, dict) or "Statement" not in doc:
        raise _malformed("a policy needs a Statement.")
    _check_elements(doc, _TOP_ELEMENTS, "the policy")
    if "Version" in doc and doc["Version"] not in _VERSIONS:
        raise _malformed(f"Version must be {' or '.join(_VERSIONS)}.")
    if "Id" in doc and not isinstance(doc["Id"], str):
        raise _malformed("Id must be a string.")
    raw = doc["Statement"]
    statements = [raw] if isinstance(raw, dict) else raw
    if not isinstance(statements, list) or not statements:
        raise _malformed("Statement must be an object or a list.")
    out = []
    for st in statements:
        if not isinstance(st, dict):
            raise _malformed("each Statement must be an object.")
        if "Principal" in st or "NotPrincipal" in st:
            raise MalformedPolicyDocument("Policy document should not specify a principal.")
        if "Condition" in st:
            raise MalformedPolicyDocument("Condition is not supported by zeroscale.")
        _check_elements(st, _STATEMENT_ELEMENTS, "a statement")
        if "Sid" in st and not isinstance(st["Sid"], str):
            raise _malformed("Sid must be a string.")
        effect = st.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise _malformed("Effect must be Allow or Deny.")
        version = doc.get("Version")
        actions, not_actions = _strings(st, "Action", version), _strings(st, "NotAction", version)
        resources, not_resources = _strings(st, "Resource", version), _strings(st, "NotResource", version)
        if context is not None:
            resources = [substitute(r, context) for r in resources] if resources else resources
            not_resources = (
                [substitute(r, context) for r in not_resources] if not_resources else not_resources
            )
        if (actions is None) == (not_actions is None):
            raise _malformed("a statement needs Action or NotAction.")
        if (resources is None) == (not_resources is None):
            raise MalformedPolicyDocument("Policy statement must contain resources.")
        out.append(
            Statement(
                allow=effect == "Allow",
                actions=_any(actions or not_actions or [], ignore_case=True),
                not_actions=actions is None,
                resources=_any(resources or not_resources or [], ignore_case=False),
                not_resources=resources is None,
            )
        )
    return out


def principal(user_name: str, user_id: str) -> dict[str, str]:
    """An IAM user's policy variables (``parse``'s context)."""
    return {"aws:username": user_name, "aws:userid": user_id, "aws:principaltype": "User"}


def deny_everything() -> list[Statement]:
    """A Deny of every action on every resource: for a user whose stored policies no longer parse."""
    anything = (Wildcard.compile("*", ignore_case=False),)
    return [
        Statement(allow=False, actions=anything, not_actions=False, resources=anything, not_resources=False)
    ]


def evaluate(statements: list[Statement], action: str, resource: str) -> Decision:
    allowed = False
    for st in statements:
        if st.matches(action, resource):
            if not st.allow:
                return "deny"
            allowed = True
    return "allow" if allowed else "implicit"
