"""Metering end to end: the real server, real workers, boto3, the usage REST API and the CLI.

Billed durations follow the worker's measured processing time; reports reconcile with the raw records in
the server's database; a clean restart loses no record; provisioned concurrency is metered per second it is
provisioned, across a clean restart and a crash."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from decimal import Decimal as D
from decimal import localcontext
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from e2e.conftest import handler_model
from zeroscale.metering.ledger import Ledger
from zeroscale.metering.pricing import EXACT
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy, free_port, wait_for

# Every test here runs on SQLite and on PostgreSQL (the control plane, restarts, metering, metrics).
BACKENDS = ("sqlite", "postgresql")

SLEEP_S = 0.15
SLEEPY = f"""
import time


def model_fn(model_dir):
    return "sleepy"


def predict_fn(data, model):
    time.sleep({SLEEP_S})
    return {{"slept": {SLEEP_S}}}
"""
ECHO = """
def model_fn(model_dir):
    return "echo"


def predict_fn(data, model):
    return data
"""
ZEROSCALE = Path(sys.executable).parent / "zeroscale"
FREE_S = D("0.1")  # the module server's free tier: 0.1 s a month, so costs show and a request crosses it


def usage(server: ServerProcess, **query: str) -> tuple[int, dict[str, Any]]:
    url = f"{server.url}/zeroscale/v1/usage"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    req = AWSRequest("GET", url)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION).add_auth(req)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=dict(req.headers)), timeout=30) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as err:
        return int(err.code), json.loads(err.read())


def report(server: ServerProcess, **query: str) -> dict[str, Any]:
    status, body = usage(server, **query)
    assert status == 200, body
    assert body["reconciliation"]["reconciled"] is True
    return body


def ledger_of(server: ServerProcess) -> Ledger:
    return Ledger(server.db_url)


def row(rep: dict[str, Any], key: str) -> dict[str, Any]:
    return next(r for r in rep["rows"] if r["key"] == key)


@pytest.fixture(scope="module")
def priced(server_factory: Callable[..., ServerProcess], tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("metering")
    prices = root / "prices.json"
    prices.write_text(json.dumps({"free_tier": {"seconds_per_month": str(FREE_S)}}))
    server = server_factory(price_table=prices)
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    for name, code in (("sleepy", SLEEPY), ("idle", ECHO)):
        (root / name).mkdir()
        assert deploy(sm, name, handler_model(root / name, code))["EndpointStatus"] == "InService"
    for i in range(4):
        smr.invoke_endpoint(
            EndpointName="sleepy", Body=json.dumps({"i": i}).encode(), ContentType="application/json"
        )
    return server


def test_billed_duration_is_the_workers_processing_time(priced: ServerProcess) -> None:
    report(priced)  # writes what is queued
    led = ledger_of(priced)
    records = [r for r in led.invocations() if r.endpoint == "sleepy"]
    led.close()
    assert len(records) == 4
    for rec in records:
        assert rec.billed_ms >= SLEEP_S * 1000
        assert rec.billed_ms <= SLEEP_S * 1000 + 50, rec  # the sleep plus decoding and encoding
        assert rec.billed_ms - 1 < rec.model_s * 1000 <= rec.billed_ms  # the recorded time, rounded up
        assert (rec.memory_mb, rec.status, rec.error_code, rec.variant) == (1024, 200, "", "AllTraffic")
        assert rec.bytes_in == len(b'{"i": 0}') and rec.bytes_out == len(b'{"slept": 0.15}')
        assert rec.started_at < rec.at - rec.model_s
    # CreateEndpoint warmed a worker; the first request is the one that met it fresh
    assert records[0].setup_s is not None and records[0].setup_s > 0
    assert [r.setup_s for r in records[1:]] == [None, None, None]


def test_report_prices_the_records_and_splits_the_free_tier(priced: ServerProcess) -> None:
    rep = report(priced)
    sleepy = row(rep, "sleepy")
    led = ledger_of(priced)
    records = [r for r in led.invocations() if r.endpoint == "sleepy"]
    led.close()
    billed = D(sum(r.billed_ms for r in records)) / 1000
    assert D(sleepy["billed_s"]) == billed
    # the first request crossed the 0.1 s allowance: 0.1 s free, the rest billed at 1024 MB
    assert D(sleepy["free_s"]) == FREE_S
    assert D(sleepy["charged_s"]) == billed - FREE_S
    assert D(sleepy["duration_cost"]) == (billed - FREE_S) * D("0.000020")
    data = sum(r.bytes_in + r.bytes_out for r in records)
    with localcontext(EXACT):
        assert D(sleepy["data_cost"]) == D(data) / D(2**30) * D("0.016")
    assert sleepy["cold_starts"] == 1 and D(sleepy["setup_s"]) == D(repr(records[0].setup_s))
    assert D(sleepy["provisioned_s"]) == 0
    tier = rep["free_tier"]
    assert tier["first_resource_at"] is not None
    assert [D(m["used_s"]) for m in tier["months"]][:1] == [FREE_S]


def test_nothing_is_metered_while_an_endpoint_is_at_zero(priced: ServerProcess) -> None:
    rep = report(priced)
    assert "idle" not in [r["key"] for r in rep["rows"]]
    led = ledger_of(priced)
    assert [i for i in led.intervals() if i.endpoint == "idle"] == []
    led.close()


@pytest.mark.parametrize("group_by", ["endpoint", "variant", "day", "month"])
def test_every_grouping_reconciles_with_the_raw_records(priced: ServerProcess, group_by: str) -> None:
    rep = report(priced, group_by=group_by)
    led = ledger_of(priced)
    count = led.count_invocations()
    led.close()
    assert rep["group_by"] == group_by
    assert rep["total"] == rep["reconciliation"]["raw_total"]
    assert rep["total"]["invocations"] == rep["reconciliation"]["raw_records"] == count
    with localcontext(EXACT):
        for field in ("billed_s", "free_s", "charged_s", "duration_cost", "data_cost", "cost"):
            assert sum(D(r[field]) for r in rep["rows"]) == D(rep["total"][field]), field
    assert sum(r["invocations"] for r in rep["rows"]) == count


def test_time_range(priced: ServerProcess) -> None:
    assert report(priced, start="2000-01-01", end="2000-02-01")["rows"] == []
    everything = report(priced, start="2000-01-01")
    assert everything["total"]["invocations"] == report(priced)["total"]["invocations"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"start": "yesterday"}, "ISO 8601"),
        ({"start": "2025-02-01", "end": "2025-01-01"}, "after start"),
        ({"endpoint": "x"}, "Unknown query parameter"),
    ],
)
def test_bad_queries_are_validation_errors(
    priced: ServerProcess, query: dict[str, str], message: str
) -> None:
    status, body = usage(priced, **query)
    assert status == 400
    assert body["__type"] == "ValidationException" and message in body["message"]


def test_usage_needs_a_signature(priced: ServerProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{priced.url}/zeroscale/v1/usage", timeout=10)
    assert err.value.code == 403


def _cli(server: ServerProcess, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ZEROSCALE_"))}
    env.update(
        HOME=str(tmp_path),
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return subprocess.run(
        [str(ZEROSCALE), "usage", *args, "--endpoint-url", server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_table_csv_and_json(priced: ServerProcess, tmp_path: Path) -> None:
    table = _cli(priced, tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "ENDPOINT", "INVOCATIONS", "ERRORS", "BILLED_S", "FREE_S", "CHARGED_S", "SETUP_S", "DATA_MB",
        "PROVISIONED_S", "COST_USD",
    ]  # fmt: skip
    sleepy = next(line.split() for line in lines if line.startswith("sleepy "))
    total = next(line.split() for line in lines if line.startswith("TOTAL "))
    rep = report(priced)
    assert sleepy[1] == "4" and sleepy[4] == "0.100"
    assert total[1] == str(rep["total"]["invocations"])
    assert total[-1] == f"{D(rep['total']['cost']):.8f}"
    assert any(line.startswith("reconciled: the rows sum to the totals of") for line in lines)
    assert any(line.startswith("free tier (until ") for line in lines)

    as_csv = _cli(priced, tmp_path, "--format", "csv", "--group-by", "day")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert rows[-1]["day"] == "TOTAL"
    with localcontext(EXACT):
        for field in ("billed_s", "cost", "invocations"):
            assert sum(D(r[field]) for r in rows[:-1]) == D(rows[-1][field])

    as_json = _cli(priced, tmp_path, "--format", "json", "--group-by", "variant")
    assert as_json.returncode == 0, as_json.stderr
    doc = json.loads(as_json.stdout)
    assert doc["group_by"] == "variant" and doc["reconciliation"]["reconciled"] is True
    assert "sleepy/AllTraffic" in [r["key"] for r in doc["rows"]]

    bad = _cli(priced, tmp_path, "--start", "yesterday")
    assert bad.returncode != 0 and "ValidationException" in bad.stderr


def test_serve_rejects_a_bad_price_table(tmp_path: Path) -> None:
    bad = tmp_path / "prices.json"
    bad.write_text(json.dumps({"data_per_gb": "free"}))
    proc = subprocess.run(
        [str(ZEROSCALE), "serve", "--data-dir", str(tmp_path / "d"), "--price-table", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "data_per_gb" in proc.stderr


@pytest.fixture
def servers() -> Iterator[list[ServerProcess]]:
    started: list[ServerProcess] = []
    yield started
    for server in started:
        server.stop()


# The runtime's two ports: the main one, and the native data plane's, whose answers are journaled by the
# plane itself (its own journal, folded from its own position).
PORTS = pytest.mark.parametrize("port", ["main", "native"])


def _server(data: Path, port: str) -> ServerProcess:
    return ServerProcess(data, {"native_port": free_port()} if port == "native" else {})


def _runtime(server: ServerProcess) -> Any:
    native = "native_port" in server.flags
    return server.client("sagemaker-runtime", url=server.native_url if native else None)


@PORTS
def test_a_clean_restart_loses_no_usage_record(
    servers: list[ServerProcess], tmp_path: Path, port: str
) -> None:
    data = tmp_path / "data"
    server = _server(data, port).start()
    servers.append(server)
    sm, smr = server.client("sagemaker"), _runtime(server)
    assert deploy(sm, "echo", handler_model(tmp_path, ECHO))["EndpointStatus"] == "InService"
    for i in range(150):
        smr.invoke_endpoint(EndpointName="echo", Body=str(i).encode(), ContentType="application/json")
    server.stop(signal.SIGTERM)  # within a second of the last answer: records still queued in memory
    led = Ledger(server.db_url)
    assert led.count_invocations() == 150
    led.close()
    server.start()
    assert report(server)["total"]["invocations"] == 150
    smr = _runtime(server)
    for i in range(10):
        smr.invoke_endpoint(EndpointName="echo", Body=str(i).encode(), ContentType="application/json")
    assert report(server)["total"]["invocations"] == 160


@PORTS
def test_sigkill_under_load_loses_no_answered_request(
    servers: list[ServerProcess], tmp_path: Path, port: str
) -> None:
    """Four clients invoke as fast as they can; the server is SIGKILLed mid-stream. After a restart, every
    request that was answered is in the usage report (the journal), and nothing beyond what was sent."""
    server = _server(tmp_path / "data", port).start()
    servers.append(server)
    sm = server.client("sagemaker")
    assert deploy(sm, "echo", handler_model(tmp_path, ECHO))["EndpointStatus"] == "InService"
    answered = [0] * 4
    sent = [0] * 4
    stop = threading.Event()

    def client(k: int) -> None:
        smr = _runtime(server)
        while not stop.is_set():
            sent[k] += 1
            try:
                smr.invoke_endpoint(EndpointName="echo", Body=b"1", ContentType="application/json")
            except Exception:
                return
            answered[k] += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    wait_for(lambda: sum(answered) >= 300, timeout_s=30)
    if port == "native":
        # most of them answered by the plane, journaled by it: with more clients than workers, the plane
        # comes to hold both workers and its requests wait for them there (not each relayed to wait in the
        # pool, which took the plane's workers back as fast as it earned them: 10 of 300 on a loaded CI)
        so_far = sum(answered)
        served = re.search(
            r'^zeroscale_native_requests_total\{path="served"\} ([0-9.e+]+)$', server.metrics(), re.M
        )
        assert served is not None and float(served.group(1)) > so_far / 2, (served, so_far)
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(10)
    server.start()
    recorded = report(server)["total"]["invocations"]
    assert sum(answered) <= recorded <= sum(sent), (sum(answered), recorded, sum(sent))


def _fill(path: Path) -> None:
    """Write ``path`` until its file system has no byte left."""
    with open(path, "wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                continue


def test_a_full_disk_withholds_the_answers_it_cannot_meter(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    """An audit's data directory on a full file system: invocations were answered with their usage in memory
    only (the journal could not take it), and a SIGKILL then lost it all. Now an answer whose usage the
    journal cannot take is withheld (ServiceUnavailable, saying why), and every answer given is billed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(disk)], check=True)
    try:
        server = ServerProcess(disk / "data").start()
        servers.append(server)
        sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
        assert deploy(sm, "echo", handler_model(tmp_path, ECHO))["EndpointStatus"] == "InService"
        answered, refused = 0, []
        for _ in range(5):
            smr.invoke_endpoint(EndpointName="echo", Body=b"1", ContentType="application/json")
            answered += 1
        _fill(disk / "filler")
        for _ in range(500):  # the journal's last page may take a few more lines first
            try:
                smr.invoke_endpoint(EndpointName="echo", Body=b"1", ContentType="application/json")
            except smr.exceptions.ServiceUnavailable as err:
                refused.append(err.response["Error"]["Message"])
                if len(refused) == 3:
                    break
            else:
                answered += 1
        assert len(refused) == 3, (answered, refused)
        assert "cannot record this invocation's usage (No space left on device" in refused[0], refused[0]
        server.stop(signal.SIGKILL)
        (disk / "filler").unlink()
        server.start()
        assert report(server)["total"]["invocations"] == answered
        smr = server.client("sagemaker-runtime")
        smr.invoke_endpoint(EndpointName="echo", Body=b"1", ContentType="application/json")
        assert report(server)["total"]["invocations"] == answered + 1
        server.stop()
    finally:
        subprocess.run(["umount", "--lazy", str(disk)], check=False)


def test_metering_off_records_nothing(servers: list[ServerProcess], tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data", env={"ZEROSCALE_METERING": "false"}).start()
    servers.append(server)
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
    assert deploy(sm, "echo", handler_model(tmp_path, ECHO))["EndpointStatus"] == "InService"
    smr.invoke_endpoint(EndpointName="echo", Body=b"1", ContentType="application/json")
    assert report(server)["total"]["invocations"] == 0


def test_provisioned_concurrency_is_metered_per_second_provisioned(
    servers: list[ServerProcess], tmp_path: Path
) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    servers.append(server)
    before = time.time()
    desc = deploy(server.client("sagemaker"), "warm", handler_model(tmp_path, ECHO), provisioned=1)
    assert desc["EndpointStatus"] == "InService"
    in_service = time.time()
    time.sleep(1.2)
    rep = report(server)
    warm = row(rep, "warm")
    led = Ledger(server.db_url)
    (first,) = led.intervals()
    assert before <= first.started_at <= in_service and first.ended_at is None
    assert (first.concurrency, first.memory_mb) == (1, 1024)
    generated = _epoch(rep["generated_at"])
    # the open interval runs to the report's "now" (generated_at, printed to the microsecond)
    assert abs(D(warm["provisioned_s"]) - (D(repr(generated)) - D(repr(first.started_at)))) <= D("1e-6")
    assert D(warm["provisioned_cost"]) == D(warm["provisioned_s"]) * D("0.000004")
    assert D(warm["provisioned_s"]) >= D("1.2")

    # a clean restart: the interval ends at shutdown and a new one starts when the server re-activates
    stopping = time.time()
    server.stop(signal.SIGTERM)
    stopped = time.time()
    time.sleep(1.0)
    server.start()
    wait_for(lambda: len(led.intervals()) == 2, timeout_s=10)
    closed, reopened = led.intervals()
    assert closed.ended_at is not None and stopping <= closed.ended_at <= stopped
    assert reopened.started_at >= stopped + 1.0 and reopened.ended_at is None

    # a crash: the interval ends at the last second the server confirmed it, and nothing overlaps
    time.sleep(1.5)
    killed = time.time()
    server.stop(signal.SIGKILL)
    time.sleep(0.5)
    server.start()
    wait_for(lambda: len(led.intervals()) == 3, timeout_s=10)
    intervals = led.intervals()
    crashed = intervals[1]
    assert crashed.ended_at is not None and killed - 1.5 <= crashed.ended_at <= killed
    assert intervals[2].started_at > killed
    for a, b in itertools.pairwise(intervals):
        assert a.ended_at is not None and a.ended_at <= b.started_at
    total = report(server)
    now = _epoch(total["generated_at"])
    ends = [i.ended_at if i.ended_at is not None else now for i in intervals]
    expected = sum((D(repr(e)) - D(repr(i.started_at)) for i, e in zip(intervals, ends, strict=True)), D(0))
    assert abs(D(row(total, "warm")["provisioned_s"]) - expected) <= D("1e-6")
    led.close()


def _epoch(iso: str) -> float:
    from zeroscale.metering.reports import parse_time

    return parse_time(iso.replace("Z", "+00:00"))


def test_serve_help_lists_the_metering_flags() -> None:
    proc = subprocess.run([str(ZEROSCALE), "serve", "--help"], capture_output=True, text=True, timeout=60)
    out = " ".join(proc.stdout.split())
    assert "--metering / --no-metering" in out and "env var: ZEROSCALE_METERING" in out
    assert "--price-table" in out and "env var: ZEROSCALE_PRICE_TABLE" in out
