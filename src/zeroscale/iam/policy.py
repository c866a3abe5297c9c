"""IAM policy documents: validation and evaluation (pure).

Supported: ``Effect`` Allow or Deny; ``Action`` or ``NotAction`` and ``Resource`` or ``NotResource``, each a
string or a list, with ``*`` and ``?`` wildcards (actions compare case-insensitively, resources as they
are). An explicit Deny wins; nothing is allowed unless a statement allows it. ``Condition`` and
``Principal`` are refused when the policy is put (an identity policy names no principal).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from zeroscale.errors import ZeroscaleError

MAX_POLICY_BYTES = 2048 * 4  # IAM allows 2048 characters per inline user policy, counted without spaces


class MalformedPolicyDocument(ZeroscaleError):
    code = "MalformedPolicyDocument"
    status = 400


Decision = Literal["allow", "deny", "implicit"]


@dataclass(frozen=True)
class Statement:
    allow: bool
    actions: re.Pattern[str]
    not_actions: bool
    resources: re.Pattern[str]
    not_resources: bool

    def matches(self, action: str, resource: str) -> bool:
        if bool(self.actions.fullmatch(action)) == self.not_actions:
            return False
        return bool(self.resources.fullmatch(resource)) != self.not_resources


def _glob(patterns: list[str], *, ignore_case: bool) -> re.Pattern[str]:
    parts = ["".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in p) for p in patterns]
    return re.compile("|".join(f"(?:{p})" for p in parts) or "(?!)", re.IGNORECASE if ignore_case else 0)


def _strings(statement: dict[str, Any], key: str) -> list[str] | None:
    value = statement.get(key)
    if value is None:
        return None
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise MalformedPolicyDocument(
            f"Syntax errors in policy: {key} must be a string or a list of strings."
        )
    return values


def parse(document: str) -> list[Statement]:
    """Parse and check a policy document; raises MalformedPolicyDocument naming what is wrong."""
    try:
        doc = json.loads(document)
    except ValueError:
        raise MalformedPolicyDocument("Syntax errors in policy.") from None
    if not isinstance(doc, dict) or "Statement" not in doc:
        raise MalformedPolicyDocument("Syntax errors in policy: a policy needs a Statement.")
    raw = doc["Statement"]
    statements = [raw] if isinstance(raw, dict) else raw
    if not isinstance(statements, list) or not statements:
        raise MalformedPolicyDocument("Syntax errors in policy: Statement must be an object or a list.")
    out = []
    for st in statements:
        if not isinstance(st, dict):
            raise MalformedPolicyDocument("Syntax errors in policy: each Statement must be an object.")
        if "Principal" in st or "NotPrincipal" in st:
            raise MalformedPolicyDocument("Policy document should not specify a principal.")
        if "Condition" in st:
            raise MalformedPolicyDocument("Condition is not supported by zeroscale.")
        effect = st.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise MalformedPolicyDocument("Syntax errors in policy: Effect must be Allow or Deny.")
        actions, not_actions = _strings(st, "Action"), _strings(st, "NotAction")
        resources, not_resources = _strings(st, "Resource"), _strings(st, "NotResource")
        if (actions is None) == (not_actions is None):
            raise MalformedPolicyDocument("Syntax errors in policy: a statement needs Action or NotAction.")
        if (resources is None) == (not_resources is None):
            raise MalformedPolicyDocument("Policy statement must contain resources.")
        out.append(
            Statement(
                allow=effect == "Allow",
                actions=_glob(actions or not_actions or [], ignore_case=True),
                not_actions=actions is None,
                resources=_glob(resources or not_resources or [], ignore_case=False),
                not_resources=resources is None,
            )
        )
    return out


def evaluate(statements: list[Statement], action: str, resource: str) -> Decision:
    allowed = False
    for st in statements:
        if st.matches(action, resource):
            if not st.allow:
                return "deny"
            allowed = True
    return "allow" if allowed else "implicit"
