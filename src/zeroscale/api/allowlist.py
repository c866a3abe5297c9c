"""Refusing what zeroscale does not serve: every member of a request is looked up in an allow-list of
member paths, and any present member that is not on it is refused by name rather than silently ignored.

A table maps each implemented operation to the member paths it serves. A path is the member names from
the input shape down, joined with dots, without list indexes or map keys (``ProductionVariants.ModelName``
covers that member of every variant). A member is served only when its own path is listed: listing a
structure serves the structure, not its members, so a member that botocore adds to a served structure
later is refused until someone lists it. A rule may also serve a member only with some values
(``only(False)``) or up to a number of items (``at_most(1)``).

``Refusals.check`` walks the request along botocore's input shape. A member counts as present unless it is
null or an empty list or map (nothing would be dropped; an empty structure is present); members botocore
does not know are refused too.
Refusals name the member by its path in the request, with 1-based list indexes
(``ProductionVariants.1.CoreDumpConfig``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from zeroscale.errors import ValidationException

__all__ = ["ANY", "Refusals", "Rule", "Table", "at_most", "only", "refused_headers", "under"]


@dataclass(frozen=True)
class Rule:
    """How a listed member is served: any value, only ``values``, or at most ``max_items`` items."""

    values: tuple[Any, ...] | None = None
    max_items: int | None = None

    def problem(self, path: str, value: Any) -> str | None:
        if self.values is not None and value not in self.values:
            allowed = " or ".join(_show(v) for v in self.values)
            return f"{path}={_show(value)} (only {allowed})"
        if self.max_items is not None and isinstance(value, list) and len(value) > self.max_items:
            return f"{path} with {len(value)} items (at most {self.max_items})"
        return None


ANY = Rule()
# operation -> member path -> rule
Table = Mapping[str, Mapping[str, Rule]]


def only(*values: Any) -> Rule:
    return Rule(values=values)


def at_most(items: int) -> Rule:
    return Rule(max_items=items)


def under(prefix: str, members: Mapping[str, Rule]) -> dict[str, Rule]:
    """``members`` (paths relative to ``prefix``) as paths below ``prefix``."""
    return {f"{prefix}.{path}": rule for path, rule in members.items()}


def _show(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= 64 else text[:64] + "..."


def _absent(value: Any, shape: Any) -> bool:
    """Null, an empty list, or an empty map: nothing that could be dropped (an empty structure is present)."""
    if value is None or (isinstance(value, list) and not value):
        return True
    return isinstance(value, dict) and not value and shape is not None and shape.type_name == "map"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class Refusals:
    """The allow-list of one service: refuses, by name, every present member an operation does not serve."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def operations(self) -> frozenset[str]:
        return frozenset(self.table)

    def find(self, operation: str, input_shape: Any, params: Mapping[str, Any]) -> list[str]:
        """What ``params`` asks for that ``operation`` does not serve, as phrases naming each member."""
        rules = self.table.get(operation, {})
        found: list[str] = []
        if input_shape is not None:
            _walk(input_shape, params, "", (), rules, found)
        else:
            found.extend(_name(name) for name, value in params.items() if not _absent(value, None))
        return found

    def check(self, operation: str, input_shape: Any, params: Mapping[str, Any]) -> None:
        """ValidationException naming every member of ``params`` that ``operation`` does not serve."""
        found = self.find(operation, input_shape, params)
        if found:
            shown = ", ".join(found[:_MAX_NAMED])
            if len(found) > _MAX_NAMED:
                shown += f" and {len(found) - _MAX_NAMED} more"
            raise ValidationException(f"zeroscale does not support {shown} yet.")


_MAX_NAMED = 20


def _name(name: str) -> str:
    """A member name as a refusal shows it (a client may send any key, of any length)."""
    return name if len(name) <= 64 else name[:64] + "..."


# Where a member is in the request: (where its parent is, its name or 1-based index) pairs, () at the top;
# spelled out (``_spelled``) only for a refusal, not for every member of every request walked.
Where = tuple[Any, ...]


def _spelled(where: Where) -> str:
    parts: list[str] = []
    while where:
        where, segment = where
        parts.append(_name(str(segment)))
    return ".".join(reversed(parts))


def _walk(
    shape: Any,
    value: Mapping[str, Any],
    rule_path: str,
    where: Where,
    rules: Mapping[str, Rule],
    found: list[str],
) -> None:
    members = shape.members
    for name, sub in value.items():
        member = members.get(name)
        if sub is None or (not sub and _absent(sub, member)):
            continue
        here = (where, name)
        path = _join(rule_path, name)
        rule = rules.get(path) if member is not None else None
        if rule is None:
            found.append(_spelled(here))
            continue
        if rule.values is not None or rule.max_items is not None:
            problem = rule.problem(_spelled(here), sub)
            if problem is not None:
                found.append(problem)
                continue
        kind = member.type_name
        if kind == "structure" or kind == "list" or kind == "map":
            for struct, item, item_where in _structures(member, sub, here):
                _walk(struct, item, path, item_where, rules, found)


def _structures(shape: Any, value: Any, where: Where) -> Iterator[tuple[Any, dict[str, Any], Where]]:
    """The structures inside ``value`` (itself, or the items of lists and maps of them), with where they are.

    Values of the wrong JSON type are skipped: the shape validator reports those."""
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict) and not getattr(shape, "is_document_type", False):
        yield shape, value, where
    elif kind == "list" and isinstance(value, list):
        for index, item in enumerate(value, start=1):
            yield from _structures(shape.member, item, (where, index))
    elif kind == "map" and isinstance(value, dict):
        for key, item in value.items():
            yield from _structures(shape.value, item, (where, key))


def refused_headers(input_shape: Any, served: frozenset[str]) -> dict[bytes, str]:
    """For a REST operation: lower-cased header name -> ``"<Member> (header <Header-Name>)"``, for every
    header member not in ``served``."""
    out: dict[bytes, str] = {}
    for name, member in input_shape.members.items():
        if name not in served and member.serialization.get("location") == "header":
            header = member.serialization.get("name", name)
            out[header.lower().encode("latin-1")] = f"{name} (header {header})"
    return out
