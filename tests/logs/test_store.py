"""The on-disk layout, the platform-event sink, retention (with a fake clock) and the CloudWatch
operations called directly (ordering, paging, errors)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from zeroscale.errors import InvalidParameterException, LogsResourceNotFound
from zeroscale.events import VariantEvent, WorkerEvent
from zeroscale.logs.cloudwatch import CloudWatchLogs
from zeroscale.logs.retention import Retention
from zeroscale.logs.sink import LogSink
from zeroscale.logs.store import LogStore
from zeroscale.router.spec import RouterSettings
from zeroscale.types import log_group_route
from zeroscale.workers.capture import encode

HOUR = 3600.0
NOW = 1_700_000_000.0


def write(path: Path, events: list[tuple[float, str]], mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(encode(int(at * 1000), m.encode()) for at, m in events))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


@pytest.fixture
def store(tmp_path: Path) -> LogStore:
    return LogStore(tmp_path / "logs")


def test_the_layout_is_the_one_the_router_writes(store: LogStore) -> None:
    router = RouterSettings(logs_dir=store.root, region="us-east-1", account_id="1")
    path = store.stream_path("My-Endpoint", "AllTraffic/0001-abcd")
    assert path == router.log_dir("My-Endpoint", "AllTraffic") / "0001-abcd.log"
    assert router.log_group("My-Endpoint") == store.group_name("My-Endpoint")
    for bad in ["AllTraffic", "../x/y", "AllTraffic/../../etc", ".hidden/x", "a/b/c"]:
        assert store.stream_path("e", bad) is None, bad


def test_sink_writes_platform_events_and_names_the_group(store: LogStore) -> None:
    sink = LogSink(store)
    sink.variant(VariantEvent("My-Endpoint", "AllTraffic", "activated", NOW, 2048, 5, 1))
    sink.worker(WorkerEvent("My-Endpoint", "AllTraffic", "0001-ab", "started", NOW + 1, setup_s=0.052))
    sink.worker(WorkerEvent("My-Endpoint", "AllTraffic", "", "failed", NOW + 2, detail="no /ping\nTraceback"))
    live = store.stream_path("My-Endpoint", "AllTraffic/0001-ab")
    assert sink.live_streams() == {live}
    sink.worker(WorkerEvent("My-Endpoint", "AllTraffic", "0001-ab", "stopped", NOW + 3))
    assert sink.live_streams() == set()
    sink.invocation(None)  # type: ignore[arg-type]  # the invoke path: does nothing at all

    (group,) = store.groups()
    assert group.name == "/aws/sagemaker/Endpoints/My-Endpoint"
    assert store.group("/aws/sagemaker/Endpoints/My-Endpoint") == group
    assert store.group("/aws/sagemaker/Endpoints/my-endpoint") is None  # case-sensitive, as on AWS
    assert store.group("/aws/sagemaker/Endpoints/other") is None
    streams = {s.name: s.path.read_text() for s in store.streams(group)}
    assert set(streams) == {"AllTraffic/platform", "AllTraffic/0001-ab"}
    platform = streams["AllTraffic/platform"]
    assert "Variant AllTraffic activated: MemorySizeInMB 2048, MaxConcurrency 5" in platform
    assert "[zeroscale] A worker failed to start: no /ping" in platform
    assert f"{int((NOW + 2) * 1000)}\t[zeroscale] Traceback\n" in platform  # one record per line
    worker = streams["AllTraffic/0001-ab"]
    assert "cold start took 52 ms" in worker
    assert "stopped (scale-in" in worker


def test_retention_deletes_old_streams_keeps_live_ones_and_drops_empty_groups(store: LogStore) -> None:
    old, fresh = NOW - 73 * HOUR, NOW - 71 * HOUR
    gone = write(store.root / "old-ep" / "AllTraffic" / "0001-a.log", [(old, "x")], mtime=old)
    (store.root / "old-ep" / ".name").write_text("Old-Ep\n")
    kept = write(store.root / "ep" / "AllTraffic" / "0002-b.log", [(fresh, "y")], mtime=fresh)
    live = write(store.root / "ep" / "AllTraffic" / "0003-c.log", [(old, "idle for days")], mtime=old)
    stale = write(store.root / "ep" / "Canary" / "platform.log", [(old, "z")], mtime=old)
    clock = [NOW]
    retention = Retention(store, 72 * HOUR, live=lambda: {live}, clock=lambda: clock[0])

    deleted = retention.sweep()
    assert sorted(s.path for s in deleted) == sorted([gone, stale])
    assert not (store.root / "old-ep").exists()  # the group went with its last stream
    assert not (store.root / "ep" / "Canary").exists()
    assert kept.exists() and live.exists()
    clock[0] = NOW + 2 * HOUR  # 73 h after `fresh` was written
    assert [s.path for s in retention.sweep()] == [kept]
    assert live.exists()
    assert Retention(store, 0, clock=lambda: NOW + 1000 * HOUR).sweep() == []  # 0 keeps everything
    assert retention.interval_s == 600.0
    assert Retention(store, 30).interval_s == 3.0


def test_past_the_size_cap_the_least_recently_written_streams_go_but_never_a_live_one(
    store: LogStore,
) -> None:
    line = "x" * 985  # a record of 1,000 bytes with its stamp and newline
    paths = {}
    for i, name in enumerate(["a", "b", "c", "d"]):  # a the oldest, d the newest, 10 kB each
        at = NOW - (10 - i) * HOUR
        paths[name] = write(store.root / "ep" / "AllTraffic" / f"{name}.log", [(at, line)] * 10, mtime=at)
    assert all(p.stat().st_size == 10_000 for p in paths.values())
    live = paths["a"]  # the oldest is a live worker's: kept whatever the cap
    retention = Retention(
        store,
        72 * HOUR,
        live=lambda: {live},
        clock=lambda: NOW,
        max_bytes=25_000,
        stream_bytes_per_minute=1000,
    )
    assert sorted(s.path for s in retention.sweep()) == sorted([paths["b"], paths["c"]])
    assert live.exists() and paths["d"].exists()
    assert retention.sweep() == []  # 20 kB left: under the cap
    # the next sweep: when one live stream at 1 kB a minute could fill the 5 kB left (5 minutes), or 2 at
    # the least a minute apart; without live streams, the age's interval (10 minutes)
    assert retention.left_bytes == 20_000
    assert retention.next_sweep_s(1) == 300.0
    assert retention.next_sweep_s(40) == 60.0
    assert retention.next_sweep_s(0) == 600.0
    # without an age limit the cap still applies; without either, nothing is deleted
    assert [s.path for s in Retention(store, 0, clock=lambda: NOW, max_bytes=1).sweep()] == [live, paths["d"]]
    write(store.root / "ep" / "AllTraffic" / "e.log", [(NOW, line)] * 10, mtime=NOW - 100 * HOUR)
    assert Retention(store, 0, clock=lambda: NOW).sweep() == []


@pytest.fixture
def cw(store: LogStore) -> CloudWatchLogs:
    root = store.root / "ep"
    (root.parent).mkdir(parents=True, exist_ok=True)
    write(root / "AllTraffic" / "0001-a.log", [(NOW + 1, "a1"), (NOW + 9, "a2")])
    write(root / "AllTraffic" / "0002-b.log", [(NOW + 2, "b1"), (NOW + 5, "b2")])
    write(root / "AllTraffic" / "0003-c.log", [(NOW + 3, "c1"), (NOW + 7, "c2")])
    write(root / "AllTraffic" / "platform.log", [(NOW, "activated")])
    write(root / "Canary" / "0004-d.log", [(NOW + 4, "d1")])
    write(store.root / "other" / "AllTraffic" / "0009-z.log", [(NOW, "z")])
    return CloudWatchLogs(store, "eu-west-1", "123456789012", retention_hours=72)


GROUP = "/aws/sagemaker/Endpoints/ep"


def names(out: dict[str, list[dict[str, str]]]) -> list[str]:
    return [s["logStreamName"] for s in out["logStreams"]]


def test_describe_log_streams_orders_and_pages(cw: CloudWatchLogs) -> None:
    by_name = cw.describe_log_streams({"logGroupName": GROUP})
    assert names(by_name) == [
        "AllTraffic/0001-a",
        "AllTraffic/0002-b",
        "AllTraffic/0003-c",
        "AllTraffic/platform",
        "Canary/0004-d",
    ]
    first = by_name["logStreams"][0]
    assert first["firstEventTimestamp"] == int((NOW + 1) * 1000)
    assert first["lastEventTimestamp"] == int((NOW + 9) * 1000)
    assert (
        first["arn"] == f"arn:aws:logs:eu-west-1:123456789012:log-group:{GROUP}:log-stream:AllTraffic/0001-a"
    )
    latest = cw.describe_log_streams({"logGroupName": GROUP, "orderBy": "LastEventTime", "descending": True})
    assert names(latest) == [
        "AllTraffic/0001-a",
        "AllTraffic/0003-c",
        "AllTraffic/0002-b",
        "Canary/0004-d",
        "AllTraffic/platform",
    ]
    oldest = cw.describe_log_streams({"logGroupName": GROUP, "orderBy": "LastEventTime"})
    assert names(oldest) == names(latest)[::-1]
    assert names(cw.describe_log_streams({"logGroupName": GROUP, "logStreamNamePrefix": "Can"})) == [
        "Canary/0004-d"
    ]
    for params in [{"orderBy": "LastEventTime", "descending": True}, {"descending": True}, {}]:
        whole = names(cw.describe_log_streams({"logGroupName": GROUP, **params}))
        paged: list[str] = []
        token = None
        while True:
            out = cw.describe_log_streams(
                {"logGroupName": GROUP, "limit": 2, **params, **({"nextToken": token} if token else {})}
            )
            paged += names(out)
            token = out.get("nextToken")
            if not token:
                break
        assert paged == whole, params


def test_errors_are_cloudwatchs(cw: CloudWatchLogs) -> None:
    with pytest.raises(LogsResourceNotFound, match="log group does not exist"):
        cw.describe_log_streams({"logGroupName": "/aws/sagemaker/Endpoints/nope"})
    with pytest.raises(LogsResourceNotFound, match="log stream does not exist"):
        cw.get_log_events({"logGroupName": GROUP, "logStreamName": "AllTraffic/0009-x"})
    with pytest.raises(InvalidParameterException, match="LastEventTime"):
        cw.describe_log_streams(
            {"logGroupName": GROUP, "orderBy": "LastEventTime", "logStreamNamePrefix": "A"}
        )
    with pytest.raises(InvalidParameterException, match="nextToken"):
        cw.get_log_events({"logGroupName": GROUP, "logStreamName": "AllTraffic/0001-a", "nextToken": "x/1"})
    with pytest.raises(InvalidParameterException, match="nextToken"):
        cw.filter_log_events({"logGroupName": GROUP, "nextToken": "bm9wZQ=="})


def test_log_groups_by_prefix_and_arn_identifiers(cw: CloudWatchLogs) -> None:
    out = cw.describe_log_groups({"logGroupNamePrefix": "/aws/sagemaker/Endpoints/"})
    assert [g["logGroupName"] for g in out["logGroups"]] == [GROUP, "/aws/sagemaker/Endpoints/other"]
    assert out["logGroups"][0]["retentionInDays"] == 3
    assert out["logGroups"][0]["logGroupArn"] == f"arn:aws:logs:eu-west-1:123456789012:log-group:{GROUP}"
    assert cw.describe_log_groups({"logGroupNamePrefix": "/aws/sagemaker/TransformJobs"})["logGroups"] == []
    page = cw.describe_log_groups({"limit": 1})
    rest = cw.describe_log_groups({"limit": 1, "nextToken": page["nextToken"]})
    assert [g["logGroupName"] for g in page["logGroups"] + rest["logGroups"]] == [
        GROUP,
        "/aws/sagemaker/Endpoints/other",
    ]
    assert "nextToken" not in rest
    arn = out["logGroups"][0]["arn"]  # with its ":*"
    events = cw.filter_log_events({"logGroupIdentifier": arn, "logStreamNames": ["Canary/0004-d"]})
    assert [e["message"] for e in events["events"]] == ["d1"]


def test_log_groups_by_identifiers_and_class(cw: CloudWatchLogs) -> None:
    def names(**params: object) -> list[str]:
        return [g["logGroupName"] for g in cw.describe_log_groups(params)["logGroups"]]

    arn = f"arn:aws:logs:eu-west-1:123456789012:log-group:{GROUP}"
    assert names(logGroupIdentifiers=[GROUP]) == [GROUP]
    assert names(logGroupIdentifiers=[arn, "/aws/sagemaker/Endpoints/other"]) == [
        GROUP,
        "/aws/sagemaker/Endpoints/other",
    ]
    assert names(logGroupIdentifiers=[arn + ":*"]) == [GROUP]
    assert names(logGroupIdentifiers=["/aws/sagemaker/Endpoints/none"]) == []
    with pytest.raises(InvalidParameterException, match="cannot be combined"):
        names(logGroupIdentifiers=[GROUP], logGroupNamePrefix="/aws")
    assert len(names(logGroupClass="STANDARD")) == 2  # every zeroscale log group is STANDARD
    assert names(logGroupClass="INFREQUENT_ACCESS") == []
    assert len(names(includeLinkedAccounts=False)) == 2


def test_hostile_tokens_are_invalid_tokens(cw: CloudWatchLogs) -> None:
    def token(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode()

    calls = [
        (cw.describe_log_streams, {"logGroupName": GROUP}),
        (cw.describe_log_streams, {"logGroupName": GROUP, "orderBy": "LastEventTime"}),
        (cw.filter_log_events, {"logGroupName": GROUP}),
        (cw.get_log_events, {"logGroupName": GROUP, "logStreamName": "AllTraffic/0001-a"}),
    ]
    for bad in [
        token(b"[" * 5000),
        token(b'[{"a": 1}]'),
        token(b'["x", 1, "y"]'),
        "f/" + "9" * 5000,
        "b/\u00b2",
    ]:
        for call, params in calls:
            with pytest.raises(InvalidParameterException, match="nextToken is invalid"):
                call({**params, "nextToken": bad})


def test_filter_log_events_across_streams_in_time_order(cw: CloudWatchLogs) -> None:
    out = cw.filter_log_events({"logGroupName": GROUP, "logStreamNamePrefix": "AllTraffic/"})
    assert [e["message"] for e in out["events"]] == ["activated", "a1", "b1", "c1", "b2", "c2", "a2"]
    out = cw.filter_log_events({"logGroupName": GROUP, "filterPattern": "?a2 ?d1", "startTime": 0})
    assert [(e["logStreamName"], e["message"]) for e in out["events"]] == [
        ("Canary/0004-d", "d1"),
        ("AllTraffic/0001-a", "a2"),
    ]


def test_transform_jobs_log_in_one_group(tmp_path: Path) -> None:
    """Every transform job's streams are in SageMaker's one group, /aws/sagemaker/TransformJobs, named
    <job>/<worker> (where the sagemaker SDK reads them); a prefix looks only at the jobs it names; an
    endpoint group can never name a job's directory (endpoint names have no colon)."""
    store = LogStore(tmp_path)
    assert store.group_name("transform-job:Score-May") == "/aws/sagemaker/TransformJobs"
    assert log_group_route("/aws/sagemaker/Endpoints/transform-job:Score-May") is None
    assert log_group_route("/aws/lambda/x") is None
    assert store.group("/aws/sagemaker/TransformJobs") is None  # no job yet
    for job in ("Score-May", "Score-June", "other"):
        store.remember(f"transform-job:{job}")
        store.append(f"transform-job:{job}", f"{job}/0001-ab", 1000, [f"hello {job}"])
    store.append("endpoint-a", "AllTraffic/0001-x", 1000, ["an endpoint's"])
    group = store.group("/aws/sagemaker/TransformJobs")
    assert group is not None and group.name == "/aws/sagemaker/TransformJobs" and len(group.dirs) == 3
    every = ["Score-June/0001-ab", "Score-May/0001-ab", "other/0001-ab"]
    assert [s.name for s in store.streams(group)] == every
    assert [s.name for s in store.streams(group, "Score-M")] == ["Score-May/0001-ab"]
    assert [s.name for s in store.streams(group, "score-may/")] == []  # stream names are case-sensitive
    found = store.stream(group, "other/0001-ab")
    assert found is not None and found.path.parent.parent.name == "transform-job:other"
    assert store.stream(group, "Score-May/0002-zz") is None
    assert [g.name for g in store.groups()] == [
        "/aws/sagemaker/Endpoints/endpoint-a",
        "/aws/sagemaker/TransformJobs",
    ]
    assert store.group("/aws/sagemaker/TransformJobs/Score-May") is None  # not SageMaker's name
