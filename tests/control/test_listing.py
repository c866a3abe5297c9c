from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from zeroscale.control import listing
from zeroscale.control.listing import paginate_stored, to_epoch
from zeroscale.errors import ValidationException
from zeroscale.store import Record, Store


def paginate(records: Any, params: Any, **kw: Any) -> tuple[list[Record], str | None]:
    """``listing.paginate`` of endpoints (every test here lists one kind)."""
    return listing.paginate(records, params, scope="endpoint", **kw)


ALL_SORTS = ("Name", "CreationTime", "Status")

# name, created_at, modified_at, status
ROWS = [
    ("alpha", 100.0, 500.0, "InService"),
    ("Bravo", 200.0, 400.0, "Creating"),
    ("charlie-model", 300.0, 300.0, "Failed"),
    ("Delta-Model", 400.0, 200.0, "InService"),
    ("echo", 500.0, 100.0, "Deleting"),
]


def put(store: Store, name: str, created: float, modified: float, status: str | None) -> None:
    store.insert(Record("endpoint", name, f"arn:{name.lower()}", created, modified, status, {}))


@pytest.fixture
def records(store: Store) -> list[Record]:
    for row in ROWS:
        put(store, *row)
    return store.list("endpoint")


def names(params: dict[str, Any], records: list[Record]) -> list[str]:
    page, token = paginate(records, {"MaxResults": 100, **params}, sort_keys=ALL_SORTS)
    assert token is None
    return [r.name for r in page]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["echo", "Delta-Model", "charlie-model", "Bravo", "alpha"]),
        ({"NameContains": "model"}, ["Delta-Model", "charlie-model"]),
        ({"NameContains": "MODEL"}, ["Delta-Model", "charlie-model"]),
        ({"NameContains": "rav"}, ["Bravo"]),
        ({"NameContains": "zzz"}, []),
        ({"CreationTimeBefore": 300.0}, ["Bravo", "alpha"]),
        ({"CreationTimeAfter": 300}, ["echo", "Delta-Model", "charlie-model"]),  # >=, as documented
        ({"CreationTimeAfter": 300.5}, ["echo", "Delta-Model"]),
        (
            {"CreationTimeAfter": 100.0, "CreationTimeBefore": 500.0},
            ["Delta-Model", "charlie-model", "Bravo", "alpha"],
        ),
        ({"CreationTimeBefore": datetime.fromtimestamp(250, UTC)}, ["Bravo", "alpha"]),
        ({"CreationTimeBefore": "1970-01-01T00:04:10Z"}, ["Bravo", "alpha"]),
        ({"CreationTimeBefore": "1970-01-01T00:04:10+00:00"}, ["Bravo", "alpha"]),
        ({"CreationTimeBefore": "250"}, ["Bravo", "alpha"]),
        ({"LastModifiedTimeBefore": 300.0}, ["echo", "Delta-Model"]),
        ({"LastModifiedTimeAfter": 300.0}, ["Bravo", "alpha"]),
        ({"StatusEquals": "InService"}, ["Delta-Model", "alpha"]),
        ({"StatusEquals": "Updating"}, []),
        ({"StatusEquals": "InService", "NameContains": "ALPHA"}, ["alpha"]),
    ],
)
def test_filters(records: list[Record], params: dict[str, Any], expected: list[str]) -> None:
    assert names(params, records) == expected


@pytest.mark.parametrize(
    ("sort_by", "order", "expected"),
    [
        ("Name", "Ascending", ["alpha", "Bravo", "charlie-model", "Delta-Model", "echo"]),
        ("Name", "Descending", ["echo", "Delta-Model", "charlie-model", "Bravo", "alpha"]),
        ("CreationTime", "Ascending", ["alpha", "Bravo", "charlie-model", "Delta-Model", "echo"]),
        ("CreationTime", "Descending", ["echo", "Delta-Model", "charlie-model", "Bravo", "alpha"]),
        ("Status", "Ascending", ["Bravo", "echo", "charlie-model", "alpha", "Delta-Model"]),
        ("Status", "Descending", ["Delta-Model", "alpha", "charlie-model", "echo", "Bravo"]),
        (None, "Ascending", ["alpha", "Bravo", "charlie-model", "Delta-Model", "echo"]),
        ("Name", None, ["echo", "Delta-Model", "charlie-model", "Bravo", "alpha"]),
    ],
)
def test_sorting(records: list[Record], sort_by: str | None, order: str | None, expected: list[str]) -> None:
    params = {k: v for k, v in (("SortBy", sort_by), ("SortOrder", order)) if v is not None}
    assert names(params, records) == expected


def test_a_token_is_for_the_list_call_that_made_it() -> None:
    # a ListModels token was taken by ListEndpointConfigs as its cursor
    records = [Record("model", f"m{i}", "", float(i), float(i), None, {}) for i in range(5)]
    _, token = listing.paginate(records, {"MaxResults": 2, "SortBy": "Name"}, scope="model")
    with pytest.raises(ValidationException, match="Invalid pagination token"):
        listing.paginate(records, {"NextToken": token, "SortBy": "Name"}, scope="endpoint-config")
    page, _ = listing.paginate(records, {"NextToken": token, "SortBy": "Name"}, scope="model")
    assert [r.name for r in page] == ["m2", "m1", "m0"]  # Descending, the default


def test_default_page_size_is_10(store: Store) -> None:
    for i in range(12):
        put(store, f"r{i:02d}", float(i), float(i), None)
    page, token = paginate(store.list("endpoint"), {})
    assert len(page) == 10 and token is not None
    assert page[0].name == "r11"  # CreationTime, Descending


def make_25(store: Store) -> list[Record]:
    statuses = ["InService", "Creating", "Failed"]
    for i in range(25):
        # Repeated creation times and statuses exercise the tie-breaks.
        put(store, f"Rec-{(i * 7) % 25:02d}", float(i // 3), float(i), statuses[i % 3])
    return store.list("endpoint")


@pytest.mark.parametrize("sort_by", ALL_SORTS)
@pytest.mark.parametrize("order", ["Ascending", "Descending"])
def test_pagination_collects_each_record_exactly_once(store: Store, sort_by: str, order: str) -> None:
    records = make_25(store)
    query: dict[str, Any] = {"SortBy": sort_by, "SortOrder": order, "MaxResults": 10}
    pages: list[list[str]] = []
    token: str | None = None
    while True:
        page, token = paginate(
            records, {**query, **({"NextToken": token} if token else {})}, sort_keys=ALL_SORTS
        )
        pages.append([r.name for r in page])
        if token is None:
            break
    assert [len(p) for p in pages] == [10, 10, 5]
    collected = [n for p in pages for n in p]
    assert sorted(collected) == sorted(r.name for r in records)
    assert collected == names({"SortBy": sort_by, "SortOrder": order}, records)


def test_pagination_survives_changes_between_pages(store: Store) -> None:
    for i in range(6):
        put(store, f"m{i}", float(i), float(i), None)
    page1, token = paginate(store.list("endpoint"), {"MaxResults": 3, "SortOrder": "Ascending"})
    assert [r.name for r in page1] == ["m0", "m1", "m2"]
    store.delete("endpoint", "m0")
    put(store, "m9", 9.0, 9.0, None)
    page2, token = paginate(
        store.list("endpoint"), {"MaxResults": 3, "SortOrder": "Ascending", "NextToken": token}
    )
    assert [r.name for r in page2] == ["m3", "m4", "m5"]
    page3, token = paginate(
        store.list("endpoint"), {"MaxResults": 3, "SortOrder": "Ascending", "NextToken": token}
    )
    assert [r.name for r in page3] == ["m9"] and token is None


def test_max_results_may_change_between_pages(store: Store) -> None:
    records = make_25(store)
    page1, token = paginate(records, {"MaxResults": 20})
    page2, token2 = paginate(records, {"MaxResults": 3, "NextToken": token})
    assert len(page1) == 20 and len(page2) == 3 and token2 is not None


def _forge(body: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "not-a-token!!",
        "%%%%",
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        _forge([1, 2]),
        _forge({"f": "0" * 16, "k": [1.0, "x"]}),
    ],
)
def test_bad_token(records: list[Record], token: str) -> None:
    with pytest.raises(ValidationException) as err:
        paginate(records, {"NextToken": token})
    assert err.value.code == "ValidationException"
    assert err.value.message == "Invalid pagination token"


@pytest.mark.parametrize(
    "other",
    [
        {"SortBy": "Name"},
        {"SortOrder": "Ascending"},
        {"NameContains": "a"},
        {"CreationTimeAfter": 1.0},
        {"StatusEquals": "InService"},
    ],
)
def test_token_from_another_query_is_rejected(store: Store, other: dict[str, Any]) -> None:
    records = make_25(store)
    _, token = paginate(records, {"MaxResults": 2}, sort_keys=ALL_SORTS)
    with pytest.raises(ValidationException, match=r"^Invalid pagination token$"):
        paginate(records, {**other, "MaxResults": 2, "NextToken": token}, sort_keys=ALL_SORTS)


def test_token_with_wrong_key_types_is_rejected(store: Store) -> None:
    records = make_25(store)
    _, token = paginate(records, {"MaxResults": 2, "SortBy": "Name"})
    assert token is not None
    body = json.loads(base64.urlsafe_b64decode(token))
    body["k"] = [5]
    with pytest.raises(ValidationException, match=r"^Invalid pagination token$"):
        paginate(records, {"MaxResults": 2, "SortBy": "Name", "NextToken": _forge(body)})


@pytest.mark.parametrize("first", [2**63, 10**30, -(2**70), 10**400])
def test_a_token_forged_with_a_time_no_database_holds_is_refused(store: Store, first: int) -> None:
    """Not an error of the database (SQLite binds no integer past 2**63): the token's own refusal."""
    make_25(store)
    params = {"MaxResults": 2, "SortBy": "CreationTime"}
    _, token = paginate_stored(store, "endpoint", params)
    assert token is not None
    body = json.loads(base64.urlsafe_b64decode(token))
    body["k"][0] = first
    forged = {**params, "NextToken": _forge(body)}
    if abs(first) < 10**300:  # a float the database compares: a page like any other (Descending: all of
        page, _ = paginate_stored(store, "endpoint", forged)  # them below 2**63, none below -2**70)
        assert len(page) == (2 if first > 0 else 0)
        return
    with pytest.raises(ValidationException, match=r"^Invalid pagination token$"):
        paginate_stored(store, "endpoint", forged)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"SortBy": "Status"}, "Value 'Status' at 'SortBy' failed to satisfy constraint"),
        ({"SortOrder": "Sideways"}, "Value 'Sideways' at 'SortOrder' failed to satisfy constraint"),
        ({"MaxResults": 0}, "Value '0' at 'MaxResults'"),
        ({"MaxResults": 101}, "Value '101' at 'MaxResults'"),
        ({"CreationTimeBefore": "yesterday"}, "Value 'yesterday' at 'CreationTimeBefore'"),
    ],
)
def test_invalid_query(records: list[Record], params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationException) as err:
        paginate(records, params)  # default sort keys: Name, CreationTime
    assert err.value.message.startswith(message)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (5, 5.0),
        (1.5, 1.5),
        ("7.25", 7.25),
        (datetime(2024, 1, 1, tzinfo=UTC), 1704067200.0),
        (datetime(2024, 1, 1), 1704067200.0),  # naive means UTC
        ("2024-01-01T00:00:00Z", 1704067200.0),
    ],
)
def test_to_epoch(value: Any, expected: float) -> None:
    assert to_epoch(value, "X") == expected


# ---- the database's pages are the same as paginate's over every record ----
@pytest.fixture
def any_store(db_url: str) -> Iterator[Store]:
    s = Store(db_url)
    yield s
    s.close()


# Names that sort differently by code point than by a locale's rules, and LIKE's wildcards and escape.
_SPELLINGS = ["a-b", "a_b", "A%b", "ab", "a\\b", "Zeta", "zeta-2", "é-model", "E-model", "_x", "x_", "m.1"]


def test_pages_from_the_database_equal_pages_over_every_record(any_store: Store) -> None:
    rng = random.Random(7)
    statuses = [None, "InService", "Creating", "Failed"]
    for i in range(120):
        name = f"{rng.choice(_SPELLINGS)}-{i}" if i % 3 else rng.choice(_SPELLINGS) + str(i)
        created = float(rng.choice([100, 200, 300])) + (0.5 if i % 4 == 0 else 0.0)  # many ties
        put(any_store, name, created, float(rng.randrange(100, 400)), rng.choice(statuses))
    queries: list[dict[str, Any]] = [{}]
    for _ in range(40):
        q: dict[str, Any] = {"MaxResults": rng.choice([1, 3, 7, 100])}
        if rng.random() < 0.5:
            q["SortBy"] = rng.choice(ALL_SORTS)
        if rng.random() < 0.5:
            q["SortOrder"] = rng.choice(["Ascending", "Descending"])
        if rng.random() < 0.4:
            q["NameContains"] = rng.choice(["a", "_", "%", "\\", "-1", "É", "ZET", "b"])
        if rng.random() < 0.3:
            q["StatusEquals"] = rng.choice(statuses[1:])
        if rng.random() < 0.3:
            q[rng.choice(["CreationTimeAfter", "CreationTimeBefore"])] = 200.0
        if rng.random() < 0.3:
            q[rng.choice(["LastModifiedTimeAfter", "LastModifiedTimeBefore"])] = 250
        queries.append(q)
    every = any_store.list("endpoint")
    for q in queries:
        token: str | None = None
        pages = 0
        while True:
            params = {**q, **({"NextToken": token} if token else {})}
            expected, expected_token = paginate(every, params, sort_keys=ALL_SORTS)
            got, got_token = paginate_stored(any_store, "endpoint", params, sort_keys=ALL_SORTS)
            assert [r.name for r in got] == [r.name for r in expected], q
            assert got_token == expected_token
            pages += 1
            token = got_token
            if token is None:
                break
        assert pages >= 1
