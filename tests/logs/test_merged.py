"""The CloudWatch Logs operations over several front ends' stores: each front end answers from its own files
(``logs.sources``) and the operation merges, so a stream is found wherever it lives, a group or stream held by
several (the ``platform`` stream) is one, and every kind of page continues exactly where the last one ended.
The other front ends here are real stores on disk read through the same ``LocalLogs`` a peer runs; the HTTP
between front ends is tested in ``tests/test_peers.py`` and ``tests/e2e/test_frontends.py``."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from zeroscale.errors import InvalidParameterException, LogsResourceNotFound
from zeroscale.logs.cloudwatch import CloudWatchLogs
from zeroscale.logs.sources import LocalLogs
from zeroscale.logs.store import LogStore
from zeroscale.peers import Gathered, Peer
from zeroscale.workers.capture import encode

GROUP = "/aws/sagemaker/Endpoints/Shared"
T0 = 1_700_000_000_000


def write(store: LogStore, stream: str, events: list[tuple[int, str]], endpoint: str = "Shared") -> None:
    store.remember(endpoint)
    path = store.stream_path(endpoint, stream)
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(b"".join(encode(T0 + ms, text.encode()) for ms, text in events))


class Cluster:
    """Three front ends' stores; ``view(i)`` is front end i's CloudWatch Logs, reading the others too."""

    def __init__(self, root: Path, ids: tuple[str, ...] = ("fe-a", "fe-b", "fe-c")) -> None:
        self.stores = {ident: LogStore(root / ident) for ident in ids}
        self.locals = {ident: LocalLogs(store, ident) for ident, store in self.stores.items()}
        self.down: set[str] = set()

    def view(self, ident: str) -> CloudWatchLogs:
        def others(op: str, args: dict[str, Any]) -> Gathered:
            # as over HTTP: the arguments and the answers go through JSON
            sent = json.loads(json.dumps(args))
            answers = tuple(
                (other, json.loads(json.dumps(local.run(op, sent))))
                for other, local in self.locals.items()
                if other != ident and other not in self.down
            )
            missing = tuple(Peer(other, "http://down") for other in self.locals if other in self.down)
            return Gathered(answers, missing)

        return CloudWatchLogs(self.stores[ident], "us-east-1", "000000000000", ident=ident, others=others)


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    c = Cluster(tmp_path)
    a, b, cc = (c.stores[i] for i in ("fe-a", "fe-b", "fe-c"))
    write(a, "AllTraffic/0001-aaaa", [(10, "a1"), (40, "a2"), (70, "a3")])
    write(b, "AllTraffic/0001-bbbb", [(20, "b1"), (50, "b2"), (80, "b3")])
    write(cc, "Canary/0001-cccc", [(30, "c1"), (60, "c2")])
    for n, store in enumerate((a, b, cc)):  # every front end writes its own platform stream
        write(store, "AllTraffic/platform", [(n, f"deployed on {n}"), (90 + n, f"updated on {n}")])
    write(b, "AllTraffic/0002-only", [(5, "other endpoint")], endpoint="Other")
    return c


def messages(answer: dict[str, Any]) -> list[str]:
    return [e["message"] for e in answer["events"]]


def test_every_front_end_sees_every_stream_and_the_platform_streams_as_one(cluster: Cluster) -> None:
    for ident in cluster.stores:
        cw = cluster.view(ident)
        streams = cw.describe_log_streams({"logGroupName": GROUP})["logStreams"]
        assert [s["logStreamName"] for s in streams] == [
            "AllTraffic/0001-aaaa",
            "AllTraffic/0001-bbbb",
            "AllTraffic/platform",
            "Canary/0001-cccc",
        ]
        platform = streams[2]
        assert platform["firstEventTimestamp"] == T0 and platform["lastEventTimestamp"] == T0 + 92
        sizes = [
            cluster.stores[i].stream(cluster.stores[i].group(GROUP), "AllTraffic/platform")
            for i in cluster.stores
        ]  # type: ignore[arg-type]
        assert platform["storedBytes"] == sum(s.size for s in sizes if s is not None)
        by_time = cw.describe_log_streams(
            {"logGroupName": GROUP, "orderBy": "LastEventTime", "descending": True}
        )
        assert [s["logStreamName"] for s in by_time["logStreams"]][:2] == [
            "AllTraffic/platform",
            "AllTraffic/0001-bbbb",
        ]
        groups = cw.describe_log_groups({})["logGroups"]
        assert [g["logGroupName"] for g in groups] == ["/aws/sagemaker/Endpoints/Other", GROUP]
        # a stream on one front end only, read through any of them
        out = cw.get_log_events(
            {"logGroupName": GROUP, "logStreamName": "AllTraffic/0001-bbbb", "startFromHead": True}
        )
        assert messages(out) == ["b1", "b2", "b3"]
        merged = cw.get_log_events({"logGroupName": GROUP, "logStreamName": "AllTraffic/platform"})
        assert messages(merged) == [
            "deployed on 0",
            "deployed on 1",
            "deployed on 2",
            "updated on 0",
            "updated on 1",
            "updated on 2",
        ]


def test_pages_started_on_one_front_end_continue_on_another(cluster: Cluster) -> None:
    """Forward, backward and search pages of one item, each next call sent to the next front end (as a
    load balancer would): every event once, in order."""
    views = [cluster.view(i) for i in cluster.stores]
    seen: list[str] = []
    params: dict[str, Any] = {"logGroupName": GROUP, "logStreamName": "AllTraffic/platform", "limit": 1}
    params["startFromHead"] = True
    for n in range(8):
        out = views[n % 3].get_log_events(params)
        seen += messages(out)
        if params.get("nextToken") == out["nextForwardToken"]:
            break
        params["nextToken"] = out["nextForwardToken"]
    assert seen == [f"{what} on {n}" for what in ("deployed", "updated") for n in range(3)]
    # back from a forward page: what came before it, and nothing before the first
    head = {"logGroupName": GROUP, "logStreamName": "AllTraffic/platform", "limit": 2, "startFromHead": True}
    first = views[0].get_log_events(head)
    second = views[1].get_log_events({**head, "nextToken": first["nextForwardToken"]})
    assert messages(second) == ["deployed on 2", "updated on 0"]
    before = views[2].get_log_events({**head, "nextToken": second["nextBackwardToken"]})
    assert messages(before) == messages(first) == ["deployed on 0", "deployed on 1"]
    assert messages(views[2].get_log_events({**head, "nextToken": first["nextBackwardToken"]})) == []
    # and back from the end, one by one
    back: list[str] = []
    params = {"logGroupName": GROUP, "logStreamName": "AllTraffic/platform", "limit": 1}
    for n in range(8):
        out = views[n % 3].get_log_events(params)
        if not out["events"]:
            break
        back = messages(out) + back
        params["nextToken"] = out["nextBackwardToken"]
    assert back == seen
    # a search across every stream of every front end
    found: list[str] = []
    search: dict[str, Any] = {"logGroupName": GROUP, "limit": 2}
    for n in range(20):
        out = views[n % 3].filter_log_events(search)
        found += messages(out)
        if "nextToken" not in out:
            break
        search["nextToken"] = out["nextToken"]
    assert found == [
        "deployed on 0",
        "deployed on 1",
        "deployed on 2",
        "a1",
        "b1",
        "c1",
        "a2",
        "b2",
        "c2",
        "a3",
        "b3",
        "updated on 0",
        "updated on 1",
        "updated on 2",
    ]
    # the same instant on two front ends' platform streams: both, once each, across a page boundary
    for store in (cluster.stores["fe-a"], cluster.stores["fe-c"]):
        write(store, "AllTraffic/platform", [(100, "same instant")])
    tied: list[str] = []
    search = {"logGroupName": GROUP, "startTime": T0 + 100, "limit": 1}
    for n in range(5):
        out = views[n % 3].filter_log_events(search)
        tied += [f"{e['message']} {e['eventId']}" for e in out["events"]]
        if "nextToken" not in out:
            break
        search["nextToken"] = out["nextToken"]
    assert len(tied) == 2 and len(set(tied)) == 2 and all(t.startswith("same instant") for t in tied)
    # describe pages
    names: list[str] = []
    page: dict[str, Any] = {"logGroupName": GROUP, "limit": 1}
    for n in range(6):
        out = views[n % 3].describe_log_streams(page)
        names += [s["logStreamName"] for s in out["logStreams"]]
        if "nextToken" not in out:
            break
        page["nextToken"] = out["nextToken"]
    assert names == [
        "AllTraffic/0001-aaaa",
        "AllTraffic/0001-bbbb",
        "AllTraffic/platform",
        "Canary/0001-cccc",
    ]
    groups: list[str] = []
    listing: dict[str, Any] = {"limit": 1}
    for n in range(4):
        out = views[n % 3].describe_log_groups(listing)
        groups += [g["logGroupName"] for g in out["logGroups"]]
        if "nextToken" not in out:
            break
        listing["nextToken"] = out["nextToken"]
    assert groups == ["/aws/sagemaker/Endpoints/Other", GROUP]


def test_what_no_front_end_holds_is_not_found_and_a_silent_one_is_left_out(cluster: Cluster) -> None:
    cw = cluster.view("fe-a")
    with pytest.raises(LogsResourceNotFound, match="log group does not exist"):
        cw.describe_log_streams({"logGroupName": "/aws/sagemaker/Endpoints/none"})
    with pytest.raises(LogsResourceNotFound, match="log stream does not exist"):
        cw.get_log_events({"logGroupName": GROUP, "logStreamName": "AllTraffic/0009-none"})
    # a group only another front end holds
    other = cw.filter_log_events({"logGroupName": "/aws/sagemaker/Endpoints/Other"})
    assert messages(other) == ["other endpoint"]
    cluster.down.add("fe-b")
    streams = cw.describe_log_streams({"logGroupName": GROUP})["logStreams"]
    assert "AllTraffic/0001-bbbb" not in [s["logStreamName"] for s in streams]
    with pytest.raises(LogsResourceNotFound, match="log group does not exist"):
        cw.filter_log_events({"logGroupName": "/aws/sagemaker/Endpoints/Other"})


def test_merged_tokens_refuse_what_they_could_not_have_made(cluster: Cluster) -> None:
    cw = cluster.view("fe-a")

    def token(raw: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(raw).encode()).decode()

    stream = {"logGroupName": GROUP, "logStreamName": "AllTraffic/platform"}
    for bad in [
        "f/" + token({"fe-a": -1}),
        "f/" + token({"fe-a": 2**64}),
        "b/" + token({"fe-a": "1"}),
        "b/" + token([1]),
        "x/" + token({}),
        "f" + token({}),
        "f/" + token({str(n): 0 for n in range(65)}),
    ]:
        with pytest.raises(InvalidParameterException, match="nextToken is invalid"):
            cw.get_log_events({**stream, "nextToken": bad})
    for bad in [token([1, "s", 2]), token([1, "s", 2, 3]), token(["1", "s", 2, "fe-a"])]:
        with pytest.raises(InvalidParameterException, match="nextToken is invalid"):
            cw.filter_log_events({"logGroupName": GROUP, "nextToken": bad})
