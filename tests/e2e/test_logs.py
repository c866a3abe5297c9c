"""Per-endpoint logs end to end: a real server, real workers, boto3's CloudWatch Logs client and the
`zeroscale logs` command."""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from e2e.conftest import handler_model
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy, wait_for

ZEROSCALE = Path(sys.executable).parent / "zeroscale"
GROUP = "/aws/sagemaker/Endpoints/"

CHATTY = """
import os, signal, sys


def model_fn(model_dir):
    print("loading the model")
    return "model"


def predict_fn(data, model):
    if data.get("say"):
        print(data["say"])
    for i in range(data.get("lines", 0)):
        print(f"line {i:05d}")
    if data.get("raise"):
        raise ValueError(data["raise"])
    if data.get("kill"):
        print(data["kill"])
        os.kill(os.getpid(), signal.SIGKILL)
    return {"ok": True}
"""
ARN = re.compile(
    r"^arn:aws:logs:us-east-1:000000000000:log-group:(?P<group>[^:]+):log-stream:(?P<stream>.+)$"
)


@pytest.fixture(scope="module")
def logs(server: ServerProcess) -> Any:
    return server.client("logs")


@pytest.fixture(scope="module")
def chatty_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return handler_model(tmp_path_factory.mktemp("chatty"), CHATTY)


@pytest.fixture(scope="module")
def endpoint(sm: Any, chatty_url: str) -> str:
    desc = deploy(sm, "Logs-Demo", chatty_url, max_concurrency=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    return "Logs-Demo"


def invoke(smr: Any, endpoint: str, payload: dict[str, Any]) -> Any:
    body = json.dumps(payload).encode()
    return smr.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json")


def model_error_arn(smr: Any, endpoint: str, payload: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ClientError) as err:
        invoke(smr, endpoint, payload)
    response = err.value.response
    assert response["Error"]["Code"] == "ModelError", response
    match = ARN.match(response["LogStreamArn"])
    assert match, response["LogStreamArn"]
    return match["group"], match["stream"]


def messages(logs: Any, group: str, stream: str, **kw: Any) -> list[str]:
    resp = logs.get_log_events(logGroupName=group, logStreamName=stream, **kw)
    return [e["message"] for e in resp["events"]]


def eventually(check: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    """Retry ``check`` (an assertion-raising callable) until it passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def assert_has(resp: dict[str, Any]) -> None:
    assert resp["events"], resp


def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZEROSCALE_"))}
    env.update(
        HOME=str(tmp_path),
        AWS_EC2_METADATA_DISABLED="true",
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
    )
    return env


def zeroscale_logs(server: ServerProcess, tmp_path: Path, *args: str) -> list[str]:
    proc = subprocess.run(
        [str(ZEROSCALE), "logs", *args, "--endpoint-url", server.url],
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


# ---- a model's print, everywhere ----
def test_print_reaches_get_log_events_filter_log_events_and_the_cli(
    server: ServerProcess, logs: Any, smr: Any, endpoint: str, tmp_path: Path
) -> None:
    marker = f"hello from predict {uuid.uuid4().hex}"
    before = int(time.time() * 1000)
    invoke(smr, endpoint, {"say": marker})
    group = GROUP + endpoint

    def found_once() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = logs.filter_log_events(logGroupName=group, filterPattern=f'"{marker}"')[
            "events"
        ]
        assert [e["message"] for e in found] == [marker]
        return found

    found = eventually(found_once)  # the zygote writes what the worker printed a moment after it printed
    after = int(time.time() * 1000)  # (its stamp is when the zygote read the line, maybe after the answer)
    stream = found[0]["logStreamName"]
    assert re.fullmatch(r"AllTraffic/\d{4}-[0-9a-f]{8}", stream)
    assert before <= found[0]["timestamp"] <= after

    events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
    text = [e["message"] for e in events]
    assert text[0] == "loading the model"
    assert any(re.match(r"\[zeroscale\] Worker \S+ started: cold start took \d+ ms", m) for m in text)
    assert marker in text
    stamps = [e["timestamp"] for e in events]
    assert stamps == sorted(stamps)

    lines = zeroscale_logs(server, tmp_path, endpoint)
    assert any(
        re.fullmatch(rf"\d{{4}}-\d\d-\d\dT[\d:.]+Z {re.escape(stream)} {marker}", line) for line in lines
    )
    assert any("AllTraffic/platform [zeroscale] Variant AllTraffic activated" in line for line in lines)
    assert zeroscale_logs(server, tmp_path, endpoint, "--filter", marker) == [
        line for line in lines if line.endswith(marker)
    ]
    refused = subprocess.run(
        [str(ZEROSCALE), "logs", endpoint, "--variant", "Other", "--endpoint-url", server.url],
        env=cli_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (
        refused.returncode == 2
        and f"endpoint {endpoint} has no variant Other (it has AllTraffic)" in refused.stderr
    )
    missing = subprocess.run(
        [str(ZEROSCALE), "logs", "no-such-endpoint", "--endpoint-url", server.url],
        env=cli_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "Endpoint no-such-endpoint does not exist (`zeroscale endpoints` lists them)." in missing.stderr
    assert zeroscale_logs(server, tmp_path, endpoint, "--since", "2h", "--filter", marker) != []
    assert zeroscale_logs(
        server, tmp_path, endpoint, "--since", str(int(time.time()) - 7200), "--filter", marker
    )
    assert zeroscale_logs(server, tmp_path, endpoint, "--since", "2099-01-01T00:00:00") == []


def test_a_model_errors_log_stream_arn_leads_to_its_traceback(logs: Any, smr: Any, endpoint: str) -> None:
    why = f"bad input {uuid.uuid4().hex[:8]}"
    group, stream = model_error_arn(smr, endpoint, {"raise": why})
    assert group == GROUP + endpoint

    def traceback_at_the_end() -> list[str]:
        text = messages(logs, group, stream)  # the end of the stream: what happened last
        assert f"ValueError: {why}" in text
        return text

    text = eventually(traceback_at_the_end)
    assert "Traceback (most recent call last):" in text
    assert any("predict_fn" in line for line in text)


def test_a_worker_killed_by_sigkill_keeps_its_last_line(logs: Any, smr: Any, endpoint: str) -> None:
    last = f"last words {uuid.uuid4().hex}"
    group, stream = model_error_arn(smr, endpoint, {"kill": last})

    def crashed_after_last_words() -> list[str]:
        text = messages(logs, group, stream, limit=2)
        assert text[0] == last, text
        assert text[1].startswith("[zeroscale] Worker "), text
        assert "crashed: the worker process was killed by signal 9" in text[1], text
        return text

    eventually(crashed_after_last_words)
    assert invoke(smr, endpoint, {})["ResponseMetadata"]["HTTPStatusCode"] == 200  # replaced


# ---- platform events ----
def test_cold_start_and_scale_in_are_logged(logs: Any, sm: Any, smr: Any, chatty_url: str) -> None:
    name = "logs-scale-in"
    tags = [{"Key": "zeroscale:idle-timeout-s", "Value": "1"}]
    # an environment of its own: a model not proven on this server yet, so the deploy starts a worker
    desc = deploy(sm, name, chatty_url, tags=tags, environment={"TEST_ENDPOINT": name})
    assert desc["EndpointStatus"] == "InService"
    group = GROUP + name

    def platform_lines() -> list[tuple[str, str]]:
        events = logs.filter_log_events(logGroupName=group, filterPattern='"[zeroscale]"')["events"]
        return [(e["logStreamName"], e["message"]) for e in events]

    def two_cold_starts_one_scale_in() -> list[tuple[str, str]]:
        got = platform_lines()
        kinds = [re.sub(r".*(activated|started|stopped).*", r"\1", m) for _, m in got]
        assert kinds[:2] == ["started", "activated"] or kinds[:2] == ["activated", "started"], got
        assert kinds[2:] == ["stopped", "started"], got
        return got

    wait_for(lambda: len(platform_lines()) >= 3)  # the deploy's worker scales in after 1 s idle
    invoke(smr, name, {"say": "wakes a new worker"})
    got = eventually(two_cold_starts_one_scale_in)
    streams = [s for s, m in got if "started" in m or "stopped" in m]
    assert streams[0] == streams[1] != streams[2]  # one worker's start and stop, then a new worker
    assert (
        "AllTraffic/platform",
        "[zeroscale] Variant AllTraffic activated: MemorySizeInMB 1024, "
        "MaxConcurrency 2, ProvisionedConcurrency 0.",
    ) in got
    assert any("stopped (scale-in" in m for _, m in got)


# ---- paging ----
def test_get_log_events_tokens_forward_backward_and_following(
    logs: Any, smr: Any, sm: Any, chatty_url: str
) -> None:
    name = "logs-paging"
    assert deploy(sm, name, chatty_url, max_concurrency=1)["EndpointStatus"] == "InService"
    group = GROUP + name
    invoke(smr, name, {"lines": 300})
    eventually(lambda: assert_has(logs.filter_log_events(logGroupName=group, filterPattern='"line 00299"')))
    (stream,) = [  # the worker's (not the platform's, nor its model's template's, if it has one by now)
        s["logStreamName"]
        for s in logs.describe_log_streams(logGroupName=group)["logStreams"]
        if s["logStreamName"] != "AllTraffic/platform"
        and not s["logStreamName"].startswith("AllTraffic/template-")
    ]

    # The platform's own lines (the worker's start) may land after the model's, a second or more later on a
    # loaded machine: page once that line is in and the stream is still.
    def started() -> None:
        got = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True, limit=10_000)
        assert any(e["message"].startswith("[zeroscale] Worker ") for e in got["events"]), "no start line yet"

    eventually(started)

    def length() -> int:
        got = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True, limit=10_000)
        return len(got["events"])

    counts = [length()]
    while len(counts) < 2 or counts[-1] != counts[-2]:
        time.sleep(0.5)
        counts.append(length())

    # Forward from the head, as the sagemaker SDK tails a stream: until a page comes back empty.
    forward: list[str] = []
    kw: dict[str, Any] = {"startFromHead": True}
    sizes: list[int] = []
    while True:
        resp = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=64, **kw)
        if not resp["events"]:
            assert resp["nextForwardToken"] == kw.get("nextToken")  # at the end the token stays
            break
        sizes.append(len(resp["events"]))
        forward += [e["message"] for e in resp["events"]]
        kw = {"nextToken": resp["nextForwardToken"]}
    assert [m for m in forward if m.startswith("line ")] == [f"line {i:05d}" for i in range(300)]
    # Every page is full until the stream's end as it stood still; a platform line that lands meanwhile
    # (the worker's, later) comes on a page of its own after that.
    still = next(i for i, total in enumerate(itertools.accumulate(sizes)) if total >= counts[-1])
    assert sizes[:still] == [64] * still and max(sizes) <= 64

    # Backward from the end (GetLogEvents' default) until the backward token stops moving.
    resp = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=50)
    backward = [e["message"] for e in resp["events"]]
    assert backward == forward[-50:]
    tail_token = resp["nextForwardToken"]
    while True:
        token = resp["nextBackwardToken"]
        resp = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=50, nextToken=token)
        if not resp["events"]:
            assert resp["nextBackwardToken"] == token
            break
        backward = [e["message"] for e in resp["events"]] + backward
    assert backward == forward

    # Following: the forward token of the tail gives exactly what was printed since.
    invoke(smr, name, {"say": "new since the tail"})

    def only_the_new_line() -> None:
        resp = logs.get_log_events(logGroupName=group, logStreamName=stream, nextToken=tail_token)
        assert [e["message"] for e in resp["events"]] == ["new since the tail"]

    eventually(only_the_new_line)

    # FilterLogEvents through boto3's paginator.
    paginator = logs.get_paginator("filter_log_events")
    pages_seen = 0
    found: list[str] = []
    for page in paginator.paginate(
        logGroupName=group, filterPattern='"line 0"', PaginationConfig={"PageSize": 70}
    ):
        pages_seen += 1
        found += [e["message"] for e in page["events"]]
    assert found == [f"line {i:05d}" for i in range(300)]
    assert pages_seen == 5


def test_describe_log_streams_ordering_and_groups(logs: Any, smr: Any, endpoint: str) -> None:
    group = GROUP + endpoint
    # A word of its own: '"most recent"' also matched an earlier test's "Traceback (most recent call last)",
    # so the wait could pass before this print was written.
    said = f"latest {uuid.uuid4().hex}"
    invoke(smr, endpoint, {"say": said})
    eventually(lambda: assert_has(logs.filter_log_events(logGroupName=group, filterPattern=f'"{said}"')))
    by_time = logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", descending=True)
    streams = by_time["logStreams"]
    assert len(streams) >= 3  # the killed worker's, its replacement's, the platform stream
    last_times = [s["lastEventTimestamp"] for s in streams]
    assert last_times == sorted(last_times, reverse=True)
    newest = streams[0]["logStreamName"]
    # its last events (the server may note the worker's start in its stream just after the model printed)
    assert said in messages(logs, group, newest, limit=3)

    by_name = logs.describe_log_streams(logGroupName=group)["logStreams"]
    names = [s["logStreamName"] for s in by_name]
    assert names == sorted(names)
    assert sorted(names) == sorted(s["logStreamName"] for s in streams)
    paged = [
        s["logStreamName"]
        for page in logs.get_paginator("describe_log_streams").paginate(
            logGroupName=group, PaginationConfig={"PageSize": 1}
        )
        for s in page["logStreams"]
    ]
    assert paged == names

    groups = logs.describe_log_groups(logGroupNamePrefix=GROUP)["logGroups"]
    assert group in [g["logGroupName"] for g in groups]
    assert logs.describe_log_groups(logGroupNamePrefix="/aws/sagemaker/TransformJobs")["logGroups"] == []


def test_unknown_groups_and_streams_are_resource_not_found(logs: Any, endpoint: str) -> None:
    for call, kw in [
        (logs.describe_log_streams, {"logGroupName": GROUP + "no-such-endpoint"}),
        (logs.get_log_events, {"logGroupName": GROUP + "no-such-endpoint", "logStreamName": "AllTraffic/x"}),
        (logs.get_log_events, {"logGroupName": GROUP + endpoint, "logStreamName": "AllTraffic/0000-none"}),
        (logs.filter_log_events, {"logGroupName": GROUP + "no-such-endpoint"}),
        # group names are case-sensitive, as on AWS: another case is another (missing) group, so a policy
        # that denies the group by its name cannot be gone round by writing it in capitals
        (logs.filter_log_events, {"logGroupName": GROUP + endpoint.upper()}),
        (logs.describe_log_streams, {"logGroupIdentifier": GROUP + endpoint.upper()}),
    ]:
        with pytest.raises(ClientError) as err:
            call(**kw)
        assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def _ctrl_c_as_in_a_terminal() -> None:
    """In the CLI's process before it starts: SIGINT handled by default and not blocked, as in a terminal,
    whatever the test process had. A suite started as a background job of a non-interactive shell
    (`.ci/run &`) runs with SIGINT ignored, as POSIX shells do for such jobs; the CLI inherited that and
    ignored the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_zeroscale_logs_follow_prints_new_events_until_ctrl_c(
    server: ServerProcess, smr: Any, endpoint: str, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [
            str(ZEROSCALE),
            "logs",
            endpoint.upper(),  # the CLI finds the endpoint's log group as its name was created
            "--follow",
            "--since",
            "1m",
            "--interval",
            "0.2",
            "--endpoint-url",
            server.url,
        ],
        env={**cli_env(tmp_path), "PYTHONFAULTHANDLER": "1"},  # a SIGABRT prints where it is
        preexec_fn=_ctrl_c_as_in_a_terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        marker = f"followed {uuid.uuid4().hex}"
        assert proc.stdout is not None
        seen: list[str] = []
        reader = threading.Thread(target=lambda: seen.extend(line.rstrip("\n") for line in proc.stdout or []))
        reader.start()
        wait_for(lambda: len(seen) > 0)  # the backlog since --since
        invoke(smr, endpoint, {"say": marker})
        wait_for(lambda: any(line.endswith(marker) for line in seen), timeout_s=20)
        time.sleep(0.5)  # a few more polls: the event must not be printed twice
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(10)
        except subprocess.TimeoutExpired:  # say where it is stuck (how the ignored SIGINT was found)
            proc.send_signal(signal.SIGABRT)
            proc.wait(10)
            where = proc.stderr.read() if proc.stderr else ""
            pytest.fail(f"no exit 10 s after Ctrl-C; its threads:\n{where}")
        assert code == 0, proc.stderr.read() if proc.stderr else ""
        reader.join(5)
        assert sum(line.endswith(marker) for line in seen) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---- a worker that prints far past --worker-log-mb-per-minute ----
def test_a_flooding_worker_is_cut_at_the_log_limit_and_says_how_much_it_dropped(
    server_factory: Callable[..., ServerProcess], chatty_url: str, tmp_path: Path
) -> None:
    capped = server_factory(worker_log_mb_per_minute=1)
    sm, smr, logs = capped.client("sagemaker"), capped.client("sagemaker-runtime"), capped.client("logs")
    desc = deploy(sm, "Flood", chatty_url)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    lines = 300_000  # "line 00000\n" each: 3.3 MB against 1 MB a minute; then the worker is SIGKILLed
    group, stream = model_error_arn(smr, "Flood", {"lines": lines, "kill": "gone"})

    def every_message() -> list[str]:  # GetLogEvents pages from the head until the token stays the same
        out: list[str] = []
        kw: dict[str, Any] = {"startFromHead": True}
        while True:
            resp = logs.get_log_events(logGroupName=group, logStreamName=stream, **kw)
            out += [e["message"] for e in resp["events"]]
            if resp["nextForwardToken"] == kw.get("nextToken"):
                return out
            kw["nextToken"] = resp["nextForwardToken"]

    def counted() -> list[str]:
        text = every_message()
        assert any(t.startswith("[zeroscale] Dropped ") for t in text), text[-3:]
        return text

    text = eventually(counted)
    file = capped.data_dir / "logs" / "flood" / stream.replace("/", os.sep, 1)
    size = Path(f"{file}.log").stat().st_size
    assert size < 1024 * 1024 + 1024, size  # the limit (stamps included) and the notes, not 3.3 MB + stamps
    assert text[0] == "loading the model"
    kept = [t for t in text if t.startswith("line ")]
    assert kept == [f"line {i:05d}" for i in range(len(kept))]  # the first lines, whole and in order
    passed = next(t for t in text if t.startswith("[zeroscale] This worker's output passed its limit"))
    assert "1048576 bytes a minute (zeroscale serve --worker-log-mb-per-minute)" in passed
    (dropped,) = [t for t in text if t.startswith("[zeroscale] Dropped ")]
    printed = sum(len(f"line {i:05d}\n") for i in range(lines)) + len("loading the model\ngone\n")
    kept_bytes = sum(len(t) + 1 for t in ["loading the model", *kept])
    assert dropped.startswith(f"[zeroscale] Dropped {printed - kept_bytes} bytes ("), dropped
    assert "gone" not in text  # dropped with the rest
    cli = zeroscale_logs(capped, tmp_path, "Flood", "--filter", "Dropped")
    assert any("[zeroscale] Dropped " in line for line in cli), cli


# ---- more logs than --log-max-mb ----
def test_past_the_logs_size_cap_the_least_recently_written_streams_go(
    server_factory: Callable[..., ServerProcess], chatty_url: str
) -> None:
    """Two endpoints print 750 kB each under a 1 MB cap for all logs. While their workers live, both streams
    stay (a live worker's stream is never deleted); once they are gone (one endpoint deleted, then a
    restart), the least recently written stream goes and the rest fit, read back whole through boto3."""
    capped = server_factory(log_max_mb=1)
    sm, smr, logs = capped.client("sagemaker"), capped.client("sagemaker-runtime"), capped.client("logs")
    streams: dict[str, str] = {}
    for name in ("Cap-Old", "Cap-New"):
        desc = deploy(sm, name, chatty_url)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        invoke(smr, name, {"lines": 30_000})  # "<ms>\tline 00000\n": 25 bytes each
        _, stream = model_error_arn(smr, name, {"raise": f"{name} is done"})
        streams[name] = stream
        path = capped.data_dir / "logs" / name.lower() / f"{stream}.log"
        wait_for(lambda path=path: path.stat().st_size > 750_000)  # type: ignore[misc]
    sm.delete_endpoint(EndpointName="Cap-Old")
    wait_for(lambda: not sm.list_endpoints(NameContains="Cap-Old")["Endpoints"])
    old = capped.data_dir / "logs" / "cap-old" / f"{streams['Cap-Old']}.log"
    new = capped.data_dir / "logs" / "cap-new" / f"{streams['Cap-New']}.log"
    assert new.exists()  # Cap-New's worker lives (Cap-Old's stream may go at any sweep from now)

    capped.restart()  # the first sweep runs at start: no worker is live now
    logs = capped.client("logs")
    wait_for(lambda: not old.exists())
    assert new.exists()
    described = logs.describe_log_streams(logGroupName=GROUP + "Cap-New")["logStreams"]
    assert streams["Cap-New"] in [s["logStreamName"] for s in described]
    events = logs.get_log_events(
        logGroupName=GROUP + "Cap-New", logStreamName=streams["Cap-New"], startFromHead=True, limit=10
    )["events"]
    assert "line 00000" in [e["message"] for e in events]
    total = sum(p.stat().st_size for p in (capped.data_dir / "logs").rglob("*.log"))
    assert total <= 1024 * 1024, total
