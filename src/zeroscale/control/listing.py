"""List* semantics shared by every resource: filters, sort order and opaque pagination tokens.

Tokens are keyset cursors: base64 of the last returned record's sort key plus a fingerprint of the query,
so records created or deleted between pages neither repeat nor shift the remaining pages, and a token
replayed against a different query is rejected.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from zeroscale import safejson
from zeroscale.errors import ValidationException
from zeroscale.store.db import PageQuery, Record, Store

DEFAULT_MAX_RESULTS = 10
MAX_MAX_RESULTS = 100
SORT_ORDERS = ("Ascending", "Descending")
INVALID_TOKEN = "Invalid pagination token"

_TIME_FILTERS = ("CreationTimeBefore", "CreationTimeAfter", "LastModifiedTimeBefore", "LastModifiedTimeAfter")


def to_epoch(value: Any, field: str) -> float:
    """Epoch seconds from what a List* filter may carry: a number, a datetime, or a numeric/ISO string."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, datetime):
        seconds = (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    elif isinstance(value, str):
        try:
            seconds = float(value)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if seconds is None or not math.isfinite(seconds):
        raise ValidationException(
            f"Value '{value}' at '{field}' failed to satisfy constraint: Member must be a timestamp"
        )
    return seconds


def _enum_error(value: Any, field: str, allowed: Sequence[str]) -> ValidationException:
    return ValidationException(
        f"Value '{value}' at '{field}' failed to satisfy constraint: "
        f"Member must satisfy enum value set: [{', '.join(allowed)}]"
    )


@dataclass(frozen=True)
class _Query:
    scope: str  # what is listed (a kind of record): a token from one List* call is refused by another
    name_contains: str | None
    times: dict[str, float]
    status: str | None
    sort_by: str
    descending: bool
    max_results: int

    @classmethod
    def parse(cls, params: Mapping[str, Any], sort_keys: Sequence[str], scope: str) -> _Query:
        sort_by = params.get("SortBy") or "CreationTime"
        if sort_by not in sort_keys:
            raise _enum_error(sort_by, "SortBy", sort_keys)
        order = params.get("SortOrder") or "Descending"
        if order not in SORT_ORDERS:
            raise _enum_error(order, "SortOrder", SORT_ORDERS)
        max_results = params.get("MaxResults")
        if max_results is None:
            max_results = DEFAULT_MAX_RESULTS
        if (
            isinstance(max_results, bool)
            or not isinstance(max_results, int)
            or not 1 <= max_results <= MAX_MAX_RESULTS
        ):
            raise ValidationException(
                f"Value '{max_results}' at 'MaxResults' failed to satisfy constraint: "
                f"Member must have value between 1 and {MAX_MAX_RESULTS}"
            )
        contains = params.get("NameContains")
        status = params.get("StatusEquals")
        return cls(
            scope=scope,
            name_contains=contains.lower() if contains else None,
            times={f: to_epoch(params[f], f) for f in _TIME_FILTERS if params.get(f) is not None},
            status=status if status else None,
            sort_by=sort_by,
            descending=order == "Descending",
            max_results=max_results,
        )

    def matches(self, rec: Record) -> bool:
        if self.name_contains is not None and self.name_contains not in rec.name.lower():
            return False
        if self.status is not None and rec.status != self.status:
            return False
        t = self.times
        return not (
            ("CreationTimeBefore" in t and not rec.created_at < t["CreationTimeBefore"])
            or ("CreationTimeAfter" in t and not rec.created_at >= t["CreationTimeAfter"])  # documented: >=
            or ("LastModifiedTimeBefore" in t and not rec.modified_at < t["LastModifiedTimeBefore"])
            or ("LastModifiedTimeAfter" in t and not rec.modified_at > t["LastModifiedTimeAfter"])
        )

    def sort_key(self, rec: Record) -> tuple[Any, ...]:
        key = rec.name.lower()  # unique per kind, so every sort key is a total order
        if self.sort_by == "CreationTime":
            return (rec.created_at, key)
        if self.sort_by == "Status":
            return (rec.status or "", key)
        return (key,)

    def fingerprint(self) -> str:
        shape = [
            self.scope,
            self.name_contains,
            sorted(self.times.items()),
            self.status,
            self.sort_by,
            self.descending,
        ]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]

    def encode(self, rec: Record) -> str:
        body = json.dumps({"f": self.fingerprint(), "k": list(self.sort_key(rec))}, separators=(",", ":"))
        return base64.urlsafe_b64encode(body.encode()).decode()

    def decode(self, token: str) -> tuple[Any, ...]:
        try:
            body = safejson.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        except (ValueError, UnicodeError, binascii.Error):
            raise ValidationException(INVALID_TOKEN) from None
        if not isinstance(body, dict) or body.get("f") != self.fingerprint():
            raise ValidationException(INVALID_TOKEN)
        key = body.get("k")
        first: type | tuple[type, ...] = (int, float) if self.sort_by == "CreationTime" else str
        expected_len = 1 if self.sort_by == "Name" else 2
        if (
            not isinstance(key, list)
            or len(key) != expected_len
            or isinstance(key[0], bool)
            or not isinstance(key[0], first)
            or not all(isinstance(part, str) for part in key[1:])
        ):
            raise ValidationException(INVALID_TOKEN)
        if self.sort_by == "CreationTime":  # a time the database can compare (no 2**63 nor 1e400)
            raw: Any = key[0]
            try:
                key[0] = created = float(raw)
            except OverflowError:
                raise ValidationException(INVALID_TOKEN) from None
            if not math.isfinite(created):
                raise ValidationException(INVALID_TOKEN)
        return tuple(key)


def paginate(
    records: Sequence[Record],
    params: Mapping[str, Any],
    *,
    scope: str,
    sort_keys: Sequence[str] = ("Name", "CreationTime"),
) -> tuple[list[Record], str | None]:
    """Filter, sort and page ``records`` as a SageMaker List* call with ``params`` would.

    ``scope`` names what is listed (its tokens are its own); ``sort_keys`` are the SortBy values this
    operation accepts. Returns the page and the NextToken for the following page, or None on the last page.
    """
    query = _Query.parse(params, sort_keys, scope)
    selected = sorted(
        (rec for rec in records if query.matches(rec)), key=query.sort_key, reverse=query.descending
    )
    token = params.get("NextToken")
    if token:
        if not isinstance(token, str):
            raise ValidationException(INVALID_TOKEN)
        cursor = query.decode(token)
        if query.descending:
            selected = [rec for rec in selected if query.sort_key(rec) < cursor]
        else:
            selected = [rec for rec in selected if query.sort_key(rec) > cursor]
    page = selected[: query.max_results]
    next_token = query.encode(page[-1]) if len(selected) > query.max_results else None
    return page, next_token


def paginate_stored(
    store: Store,
    kind: str,
    params: Mapping[str, Any],
    *,
    sort_keys: Sequence[str] = ("Name", "CreationTime"),
    documents: bool = True,
) -> tuple[list[Record], str | None]:
    """``paginate`` over every stored record of ``kind``, done by the database: the same pages and tokens,
    at a cost that does not grow with the records that are not on the page."""
    query = _Query.parse(params, sort_keys, kind)
    token = params.get("NextToken")
    cursor: tuple[Any, ...] | None = None
    if token:
        if not isinstance(token, str):
            raise ValidationException(INVALID_TOKEN)
        cursor = query.decode(token)
    t = query.times
    selected = store.page(
        kind,
        PageQuery(
            sort_by=query.sort_by,
            descending=query.descending,
            limit=query.max_results + 1,
            after=cursor,
            name_contains=query.name_contains,
            status=query.status,
            created_after=t.get("CreationTimeAfter"),
            created_before=t.get("CreationTimeBefore"),
            modified_after=t.get("LastModifiedTimeAfter"),
            modified_before=t.get("LastModifiedTimeBefore"),
            documents=documents,
        ),
    )
    page = selected[: query.max_results]
    next_token = query.encode(page[-1]) if len(selected) > query.max_results else None
    return page, next_token
