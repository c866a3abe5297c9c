"""Workers on a Ray cluster (``zeroscale serve --ray-address``): two Ray nodes on 127.0.0.1 inside a private
network namespace, a real server connected to them, a real S3 (SeaweedFS) for the model, real boto3; and two
front ends on one PostgreSQL database sharing the cluster.

The whole module runs in the namespace (the fixture moves the test's thread there and back), so it starts its
own S3 rather than the session's, which listens in the machine's own namespace. The session's PostgreSQL is
reached through its Unix socket (a path: not bound to a network namespace), its database made beforehand.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy
from click.testing import CliRunner

from artifacts.test_pyenv import make_wheel
from e2e.conftest import handler_model
from pgserver import PostgresServer
from s3server import SeaweedS3
from zeroscale.cli.main import cli
from zeroscale.testing import ACCESS_KEY, REGION, SECRET_KEY, ServerProcess, deploy, make_tar, wait_for
from zeroscale.testing_ray import RayCluster, can_unshare, private_network

pytest.importorskip("ray")
pytestmark = [
    pytest.mark.cluster,
    pytest.mark.skipif(not can_unshare(), reason="a private network namespace needs root"),
]
BUCKET = "cluster-models"
KEY = "sklearn/model.tar.gz"


@dataclass
class Setup:
    ray: RayCluster
    s3: SeaweedS3
    server: ServerProcess
    node_dir: Path
    url: str
    database_url: str  # an empty PostgreSQL database, over the Unix socket


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, sklearn_model: Any, postgres: PostgresServer
) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("ray")
    database = postgres.create_database("raycluster").rsplit("/", 1)[1]  # over TCP: before the namespace
    database_url = f"postgresql+psycopg://postgres@/{database}?host={postgres.data}&port={postgres.port}"
    with private_network(), SeaweedS3(root / "s3") as s3, pytest.MonkeyPatch.context() as env:
        for name, value in s3.env().items():  # the nodes' own credentials for S3 (an instance role's)
            env.setenv(name, value)
        with RayCluster(nodes=2, memory_mb=8192) as ray:
            yield from _serve(root, s3, ray, sklearn_model, database_url)


def _serve(
    root: Path, s3: SeaweedS3, ray: RayCluster, sklearn_model: Any, database_url: str
) -> Iterator[Setup]:
    s3.client().create_bucket(Bucket=BUCKET)
    s3.client().upload_file(str(sklearn_model.tar), BUCKET, KEY)
    node_dir = root / "nodes"
    server = ServerProcess(
        root / "data",
        {
            "ray_address": ray.address,
            "ray_node_dir": node_dir,
            "ray_node_timeout_s": 2,
            "s3_endpoint_url": s3.endpoint_url,
        },
        env=s3.env(),
    )
    server.start(timeout_s=120)
    try:
        yield Setup(ray, s3, server, node_dir, f"s3://{BUCKET}/{KEY}", database_url)
    finally:
        server.stop()


def _workers(server: ServerProcess, endpoint: str) -> list[dict[str, Any]]:
    """``zeroscale workers ENDPOINT --json``, once no worker is still starting (a scale-out's may be)."""
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}
    deadline = time.monotonic() + 30
    while True:
        out = CliRunner().invoke(cli, ["workers", endpoint, "--json", "--endpoint-url", server.url], env=env)
        assert out.exit_code == 0, out.output
        workers: list[dict[str, Any]] = json.loads(out.output)["Workers"]
        if all(w["State"] != "starting" for w in workers) or time.monotonic() > deadline:
            return workers
        time.sleep(0.1)


def _invoke_many(smr: Any, endpoint: str, body: bytes, count: int, threads: int) -> list[Any]:
    def one(_: int) -> Any:
        try:
            resp = smr.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType="application/json")
            return json.loads(resp["Body"].read())
        except Exception as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def test_concurrent_requests_are_answered_by_workers_on_both_nodes(setup: Setup, sklearn_model: Any) -> None:
    server = setup.server
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime", max_pool_connections=16)
    desc = deploy(sm, "spread", setup.url, memory_mb=1024, max_concurrency=4)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    rows = sklearn_model.X[:10]
    want = sklearn_model.expected(rows)
    results = _invoke_many(smr, "spread", sklearn_model.json_body(rows), count=64, threads=8)
    assert results == [want] * 64

    workers = _workers(server, "spread")
    nodes = {w["Node"] for w in workers}
    assert len(nodes) == 2, workers  # spread: the pool's workers on both nodes
    node_ids = setup.ray.node_ids()
    assert {n.split("/")[1] for n in nodes} == {i[:8] for i in node_ids}
    # Each node filled its own artifact cache from S3.
    for node_id in node_ids:
        assert list((setup.node_dir / node_id[:16] / "artifacts").glob("*/model/model.joblib")), node_id
    # The sandbox confines workers on the nodes too: a uid of their own (the nodes share this machine).
    for w in workers:
        status = Path(f"/proc/{w['Pid']}/status").read_text()
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        assert uid >= 1_000_000_000, w

    # /metrics shows the nodes.
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    for node in nodes:
        assert f'zeroscale_node_workers{{node="{node}"}}' in text

    # What the workers printed on either node reaches the endpoint's log group.
    logs = server.client("logs")
    group = "/aws/sagemaker/Endpoints/spread"
    streams = {s["logStreamName"] for s in logs.describe_log_streams(logGroupName=group)["logStreams"]}
    for w in workers:
        stream = f"AllTraffic/{w['WorkerId']}"
        assert stream in streams
        # The worker's own line, printed on its node, and the node in the start line.
        assert _events_with(logs, group, stream, "zeroscale worker ready"), (w["Node"], stream)
        assert _events_with(logs, group, stream, f"started on node {w['Node']}: cold start took")


def _metric(server: ServerProcess, name: str) -> float:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def _templates() -> list[psutil.Process]:
    """Templates on the cluster's nodes: children of a zygote under a Ray actor (a node's agent; not a local
    server's, which another test running beside this module may have) with children of their own."""
    found = []
    for proc in psutil.process_iter():
        try:
            parent = proc.parent()
            if parent is None or "zeroscale.workers.forkserver" not in " ".join(parent.cmdline()):
                continue
            on_a_node = any(" ".join(p.cmdline()).startswith("ray::") for p in parent.parents())
            if on_a_node and proc.children():
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_scale_out_on_a_node_forks_its_template_and_zero_keeps_it_warm(
    setup: Setup, sklearn_model: Any
) -> None:
    server = setup.server
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime", max_pool_connections=16)
    idle = [{"Key": "zeroscale:idle-timeout-s", "Value": "3"}]
    desc = deploy(sm, "templated", setup.url, memory_mb=1024, max_concurrency=3, tags=idle)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    rows = sklearn_model.X[:20]
    want = sklearn_model.expected(rows)
    body = sklearn_model.json_body(rows)
    assert _invoke_many(smr, "templated", body, count=1, threads=1) == [want]
    # The template loads the model beside the first worker, on its node, in the background.
    wait_for(lambda: any(setup.node_dir.glob("*/logs/*/template-*.log")), timeout_s=20)
    time.sleep(1.5)
    assert _invoke_many(smr, "templated", body, count=90, threads=6) == [want] * 90
    assert max((len(t.children()) for t in _templates()), default=0) >= 1, "no replica of the template"

    # At zero the template goes to the warm-model cache (its private memory and its parked replica's
    # reported by its node) with one replica forked ahead of need and parked beside it on its node, and
    # the next cold start is that replica's first request: no fork on its path.
    wait_for(lambda: server.workers("templated") == 0, timeout_s=30)
    wait_for(lambda: _metric(server, "zeroscale_warm_cache_entries") == 1, timeout_s=10)
    assert (
        0
        < _metric(server, "zeroscale_warm_cache_bytes")
        <= _metric(server, "zeroscale_warm_cache_capacity_bytes")
    )
    (template,) = _templates()
    parked = [p.pid for p in template.children()]
    assert len(parked) == 1, "no replica parked beside the cached template"
    hits = _metric(server, "zeroscale_warm_cache_hits_total")
    assert _invoke_many(smr, "templated", body, count=1, threads=1) == [want]
    assert _metric(server, "zeroscale_warm_cache_hits_total") == hits + 1
    assert [p.pid for p in template.children()] == parked  # the parked replica took it: no fork
    sm.delete_endpoint(EndpointName="templated")


def _events_with(logs: Any, group: str, stream: str, text: str, wait_s: float = 10.0) -> list[str]:
    deadline = time.monotonic() + wait_s
    while True:
        events = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)["events"]
        found = [e["message"] for e in events if text in e["message"]]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


SLEEPY = """
import os, time


def model_fn(model_dir):
    return "sleepy"


def predict_fn(data, model):
    time.sleep(data.get("sleep", 0))
    return {"pid": os.getpid()}
"""
TTL_S = 2.0


@pytest.fixture(scope="module")
def pair(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    """Two more front ends on the same cluster and one PostgreSQL database, with the same directory on the
    nodes (as two front ends with the default --ray-node-dir would)."""
    root = tmp_path_factory.mktemp("pair")
    flags = {
        "ray_address": setup.ray.address,
        "ray_node_dir": setup.node_dir,
        "ray_node_timeout_s": 2,
        "database_url": setup.database_url,
        "frontend_ttl_s": TTL_S,
    }
    servers = [ServerProcess(root / name, flags) for name in ("a", "b")]
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            for started in [pool.submit(s.start, 120) for s in servers]:
                started.result()
        yield servers
    finally:
        for server in servers:
            server.stop()


def _pid(server: ServerProcess, endpoint: str, sleep_s: float = 0.0) -> int:
    resp = server.client("sagemaker-runtime").invoke_endpoint(
        EndpointName=endpoint, Body=json.dumps({"sleep": sleep_s}).encode(), ContentType="application/json"
    )
    return int(json.loads(resp["Body"].read())["pid"])


def _max_concurrency(server: ServerProcess, endpoint: str) -> float:
    labels = f'endpoint_name="{endpoint}",variant_name="AllTraffic"'
    return _metric(server, f"zeroscale_max_concurrency{{{labels}}}")


def _node_reserved(server: ServerProcess) -> dict[str, float]:
    """``zeroscale_node_reserved_mb`` per node, as this front end sees it."""
    prefix = "zeroscale_node_reserved_mb{"
    lines = [line for line in server.metrics().splitlines() if line.startswith(prefix)]
    return {line.split("}")[0]: float(line.split()[-1]) for line in lines}


def _agent_of(pid: int) -> int:
    """The Ray actor process (a node's agent) a worker descends from."""
    for proc in psutil.Process(pid).parents():
        if " ".join(proc.cmdline()).startswith("ray::"):
            return proc.pid
    raise AssertionError(f"worker {pid} is not under a Ray actor")


def test_two_front_ends_share_the_cluster_and_max_concurrency(
    setup: Setup, pair: list[ServerProcess], tmp_path: Path
) -> None:
    """One endpoint, MaxConcurrency 2, served by two front ends with workers on the cluster: both answer,
    each from its share (one worker, a call it has no room for spilled to the other's), never more than two
    workers in all; one front end killed takes only
    its own worker with it, and the other grows to the whole MaxConcurrency."""
    a, b = pair
    model = handler_model(tmp_path, SLEEPY)
    desc = deploy(a.client("sagemaker"), "shared", model, memory_mb=1024, max_concurrency=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    for server in (a, b):
        wait_for(lambda s=server: _max_concurrency(s, "shared") == 1, timeout_s=10)

    pids: dict[str, set[int]] = {"a": set(), "b": set()}
    errors: list[BaseException] = []
    peak = 0
    done = threading.Event()

    def hit(name: str, server: ServerProcess) -> None:
        try:
            for _ in range(3):
                pids[name].add(_pid(server, "shared", sleep_s=0.2))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def sample() -> None:  # the live workers of both front ends, while the load runs
        nonlocal peak
        while not done.is_set():
            peak = max(peak, a.workers("shared") + b.workers("shared"))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [
        threading.Thread(target=hit, args=(name, server))
        for name, server in (("a", a), ("b", b))
        for _ in range(5)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    sampler.join()
    assert not errors, errors
    # two workers in all (a front end whose one worker is busy may spill a call to the other's)
    served = pids["a"] | pids["b"]
    assert len(served) == 2, pids
    assert 1 <= peak <= 2, peak
    # Each front end's worker runs on a node of the cluster, under that front end's own agent.
    node_ids = {i[:8] for i in setup.ray.node_ids()}
    # either front end lists both front ends' workers; each worker says which front end runs it
    ids = {
        name: (server.data_dir / "frontend-id").read_text().strip() for name, server in (("a", a), ("b", b))
    }
    every = {name: _workers(server, "shared") for name, server in (("a", a), ("b", b))}
    assert [w["WorkerId"] for w in every["a"]] == [w["WorkerId"] for w in every["b"]]
    listed = {name: [w for w in every["a"] if w["Frontend"] == ident] for name, ident in ids.items()}
    for workers in listed.values():
        (worker,) = workers
        assert worker["Pid"] in served and worker["Node"].split("/")[1] in node_ids, worker
    assert len({_agent_of(w["Pid"]) for ws in listed.values() for w in ws}) == 2  # one agent per front end
    # Each places against every front end's workers on a node: both see the same reservations per node
    # (the nodes' agents keep a ledger), which hold at least the two workers here.
    wait_for(lambda: _node_reserved(a) == _node_reserved(b), timeout_s=10)
    assert sum(_node_reserved(a).values()) >= 2 * 1024

    # SIGKILL of A: Ray ends the agents A owned, and with them A's worker; B's worker serves on, and once
    # A's heartbeat is stale B takes the whole MaxConcurrency.
    (a_pid, b_pid) = (listed[name][0]["Pid"] for name in ("a", "b"))
    assert {a_pid, b_pid} == served
    a.stop(signal.SIGKILL)
    wait_for(lambda: not psutil.pid_exists(a_pid), timeout_s=30)
    assert psutil.pid_exists(b_pid)
    assert _pid(b, "shared") == b_pid
    wait_for(lambda: _max_concurrency(b, "shared") == 2, timeout_s=TTL_S * 5)
    b.client("sagemaker").delete_endpoint(EndpointName="shared")

    # SIGTERM of B is a graceful stop (Ray's client would end the process at once): it leaves the front
    # ends' table, which only a clean stop does.
    ident = (b.data_dir / "frontend-id").read_text().strip()
    assert ident in _frontend_ids(setup.database_url)
    b.stop()
    assert ident not in _frontend_ids(setup.database_url)


def _frontend_ids(database_url: str) -> set[str]:
    engine = sqlalchemy.create_engine(database_url)
    try:
        with engine.connect() as conn:
            return {str(row[0]) for row in conn.execute(sqlalchemy.text("SELECT id FROM frontends"))}
    finally:
        engine.dispose()


EXAMPLE_IMAGE = Path(__file__).resolve().parents[2] / "examples" / "byo-image"


def test_a_bring_your_own_image_runs_on_the_nodes(setup: Setup, tmp_path: Path) -> None:
    """An image pushed to the front end serves from the cluster's nodes: each node that runs a worker of it
    registers its own copy of the image's files (sent once through Ray's object store, checked to be the
    content deployed), and the worker answers through the node's relay, its output in the log group."""
    server = setup.server
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}
    push = ["images", "push", "byo-linear:1.0", str(EXAMPLE_IMAGE), "--endpoint-url", server.url]
    out = CliRunner().invoke(cli, push, env=env)
    assert out.exit_code == 0, out.output
    found = re.search(r"sha256:([0-9a-f]{64})", out.output)
    assert found is not None, out.output
    digest = found.group(1)
    model = tmp_path / "model.json"
    model.write_text(json.dumps({"weights": [2.0], "bias": 1.0}))
    url = f"file://{make_tar(tmp_path / 'linear.tar.gz', {'model.json': model})}"
    desc = deploy(server.client("sagemaker"), "byo", url, image="byo-linear:1.0", max_concurrency=2)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    smr = server.client("sagemaker-runtime")
    for x in range(4):
        body = f"{x}\n".encode()
        answer = smr.invoke_endpoint(EndpointName="byo", Body=body, ContentType="text/csv", Accept="text/csv")
        assert answer["Body"].read().strip() == str(2.0 * x + 1.0).encode()
    (worker,) = _workers(server, "byo")
    node_ids = {i[:8]: i for i in setup.ray.node_ids()}
    node_id = node_ids[worker["Node"].split("/")[1]]
    copy = setup.node_dir / node_id[:16] / "images" / "image" / digest / digest
    assert (copy / "serve").read_bytes() == (EXAMPLE_IMAGE / "serve").read_bytes()
    server.client("sagemaker").delete_endpoint(EndpointName="byo")


def test_an_image_past_the_nodes_cap_is_refused_by_name_and_one_within_it_runs(
    setup: Setup, tmp_path: Path
) -> None:
    """A front end with --ray-node-images-mb 1: an image of 1.5 MB fits no node, so its deployment fails
    with the nodes' words (the cap, and what to do), nothing of it unpacked on them; the example image, far
    under the cap, serves from the nodes."""
    node_dir = tmp_path / "nodes"
    flags = {"ray_address": setup.ray.address, "ray_node_dir": node_dir, "ray_node_images_mb": 1}
    server = ServerProcess(tmp_path / "data", flags).start(timeout_s=120)
    try:
        env = {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }
        large = tmp_path / "large"
        shutil.copytree(EXAMPLE_IMAGE, large)
        (large / "weights.bin").write_bytes(b"w" * (3 * 1024 * 1024 // 2))
        for ref, source in (("large:1", large), ("small:1", EXAMPLE_IMAGE)):
            push = ["images", "push", ref, str(source), "--endpoint-url", server.url]
            out = CliRunner().invoke(cli, push, env=env)
            assert out.exit_code == 0, out.output
        model = tmp_path / "model.json"
        model.write_text(json.dumps({"weights": [2.0], "bias": 1.0}))
        url = f"file://{make_tar(tmp_path / 'linear.tar.gz', {'model.json': model})}"
        sm = server.client("sagemaker")
        desc = deploy(sm, "too-large", url, image="large:1", max_concurrency=1)
        assert desc["EndpointStatus"] == "Failed"
        reason = desc["FailureReason"]
        assert "it alone is larger than the node's cap for images, 1 MB" in reason, reason
        assert "Raise --ray-node-images-mb" in reason, reason
        assert not list(node_dir.glob("*/images/image/*/*/weights.bin"))
        desc = deploy(sm, "small", url, image="small:1", max_concurrency=1)
        assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
        smr = server.client("sagemaker-runtime")
        answer = smr.invoke_endpoint(
            EndpointName="small", Body=b"3\n", ContentType="text/csv", Accept="text/csv"
        )
        assert answer["Body"].read().strip() == b"7.0"
    finally:
        server.stop()


NAMED = """
def model_fn(model_dir):
    return open(model_dir + "/name.txt").read()


def transform_fn(model, body, content_type, accept):
    return model, "text/plain"
"""


_MODEL_BYTES = len(NAMED) + len("gone")  # code/inference.py and name.txt ("kept" is as long)


def _cache_bytes(server: ServerProcess) -> float:
    """zeroscale_node_artifact_cache_bytes over the nodes."""
    prefix = "zeroscale_node_artifact_cache_bytes{"
    return sum(float(line.split()[-1]) for line in server.metrics().splitlines() if line.startswith(prefix))


def _node_entries(node_dir: Path) -> list[str]:
    """The models in the nodes' artifact caches, by the name each holds."""
    return sorted(p.read_text() for p in node_dir.glob("*/artifacts/*/model/name.txt"))


def test_the_nodes_artifact_caches_keep_only_what_workers_use_at_capacity_zero(
    setup: Setup, tmp_path: Path
) -> None:
    """``--artifact-cache-mb 0`` holds the nodes' caches too: a deleted endpoint's model leaves the node it
    was on once its worker and template are gone; a live endpoint's stays, and it still answers."""
    flags = {
        "ray_address": setup.ray.address,
        "ray_node_dir": tmp_path / "nodes",
        "ray_node_timeout_s": 2,
        "s3_endpoint_url": setup.s3.endpoint_url,
        "artifact_cache_mb": 0,
    }
    server = ServerProcess(tmp_path / "data", flags, env=setup.s3.env())
    server.start(timeout_s=120)
    try:
        sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime")
        for name in ("gone", "kept"):
            (tmp_path / name).mkdir()
            model = handler_model(tmp_path / name, NAMED, {"name.txt": name.encode()})
            desc = deploy(sm, name, model, memory_mb=1024)
            assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
            resp = smr.invoke_endpoint(EndpointName=name, Body=b"{}", ContentType="application/json")
            assert resp["Body"].read() == name.encode()
        assert _node_entries(tmp_path / "nodes") == ["gone", "kept"]
        wait_for(lambda: _cache_bytes(server) == 2 * _MODEL_BYTES, timeout_s=10)  # what the nodes report
        sm.delete_endpoint(EndpointName="gone")
        wait_for(lambda: _node_entries(tmp_path / "nodes") == ["kept"], timeout_s=30)
        wait_for(lambda: _cache_bytes(server) == _MODEL_BYTES, timeout_s=10)
        resp = smr.invoke_endpoint(EndpointName="kept", Body=b"{}", ContentType="application/json")
        assert resp["Body"].read() == b"kept"
        sm.delete_endpoint(EndpointName="kept")
    finally:
        server.stop()


IMPORTS_ITS_REQUIREMENT = """
import zsnode


def model_fn(model_dir):
    return None


def transform_fn(model, body, content_type, accept):
    return zsnode.__file__, "text/plain"
"""


def test_a_models_requirements_are_installed_on_the_node_from_its_own_copy(
    setup: Setup, tmp_path: Path
) -> None:
    """code/requirements.txt (a wheel shipped in the model: the cluster's namespace has no index) is
    installed on the front end at deploy time and again on the node its worker runs on, into the node's
    directory: a worker imports the node's copy, not a path of the front end's data directory, which
    another machine would not have."""
    wheel = make_wheel(tmp_path, "zsnode")
    requirements = f"--no-index\n./{wheel.name}\n".encode()
    files = {"code/requirements.txt": requirements, f"code/{wheel.name}": wheel.read_bytes()}
    model = handler_model(tmp_path, IMPORTS_ITS_REQUIREMENT, files)
    sm, smr = setup.server.client("sagemaker"), setup.server.client("sagemaker-runtime")
    desc = deploy(sm, "node-reqs", model, memory_mb=1024)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    resp = smr.invoke_endpoint(EndpointName="node-reqs", Body=b"{}", ContentType="application/json")
    where = Path(resp["Body"].read().decode())
    assert setup.node_dir in where.parents, where
    assert where.parts[-4] == "pyenvs" and where.name == "zsnode.py", where  # pyenvs/<key>/lib/zsnode.py
    assert list((setup.server.data_dir / "pyenvs").glob("*/lib/zsnode.py"))  # the front end's own install
    sm.delete_endpoint(EndpointName="node-reqs")


def test_a_node_removed_under_load_costs_only_its_requests(setup: Setup, sklearn_model: Any) -> None:
    server = setup.server
    sm, smr = server.client("sagemaker"), server.client("sagemaker-runtime", max_pool_connections=16)
    desc = deploy(sm, "survive", setup.url, memory_mb=1024, max_concurrency=4)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    rows = sklearn_model.X[:5]
    want = sklearn_model.expected(rows)
    body = sklearn_model.json_body(rows)
    assert _invoke_many(smr, "survive", body, count=32, threads=8) == [want] * 32
    assert len({w["Node"] for w in _workers(server, "survive")}) == 2

    lost = setup.ray.extra[0]
    lost_name = next(w["Node"] for w in _workers(server, "survive") if w["Node"].endswith(lost.node_id[:8]))
    stop = time.monotonic() + 6.0  # past the server's --ray-node-timeout-s (2 s)

    def load(_: int) -> list[Any]:
        out = []
        while time.monotonic() < stop:
            out += _invoke_many(smr, "survive", body, count=1, threads=1)
        return out

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        clients = [pool.submit(load, i) for i in range(6)]
        time.sleep(1.0)
        # Counted as the node goes: the load may have started a worker on it since the first requests (six
        # clients, four workers at most; once there are four, none starts until one ends).
        on_lost = sum(1 for w in _workers(server, "survive") if w["Node"] == lost_name)
        setup.ray.remove_node(lost)
        during = [r for c in clients for r in c.result()]
    failed = [r for r in during if isinstance(r, Exception)]
    # Only what ran on the lost node's workers fails: one request each at most (the request that finds its
    # worker gone ends it), and every failure says the worker went away: its connection closed, or its node
    # was lost (Ray said so, or the node did not answer for --ray-node-timeout-s while a request waited).
    assert len(failed) <= on_lost, failed
    gone = ("closed its connection", "was lost", f"node {lost_name} did not answer")
    assert all(any(g in str(e) for g in gone) for e in failed), failed
    ok = [r for r in during if not isinstance(r, Exception)]
    assert len(ok) > 50 and all(r == want for r in ok)

    # Now the pool's workers are all on the node that is left, and every request succeeds.
    workers = _workers(server, "survive")
    assert workers and {w["Node"] for w in workers} != {lost_name}
    assert all(w["Node"] != lost_name for w in workers), workers
    assert _invoke_many(smr, "survive", body, count=32, threads=8) == [want] * 32

    # A node that joins gets an agent within seconds, and new workers spread to it.
    joined = setup.ray.add_node()
    joined_name = f"/{joined.node_id[:8]}"
    wait_for(lambda: joined_name in _node_series(server), timeout_s=60)
    sm.delete_endpoint(EndpointName="survive")
    desc = deploy(sm, "rejoin", setup.url, memory_mb=1024, max_concurrency=4)
    assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
    assert _invoke_many(smr, "rejoin", body, count=32, threads=8) == [want] * 32
    assert any(w["Node"].endswith(joined_name) for w in _workers(server, "rejoin"))


def _node_series(server: ServerProcess) -> str:
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
        return "\n".join(
            line for line in resp.read().decode().splitlines() if line.startswith("zeroscale_node_workers{")
        )


def test_the_head_lost_answers_service_unavailable_naming_the_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cluster of its own (its head is killed): once the head is gone and no node is left, an invocation
    that needs a new worker answers ServiceUnavailable at once, naming the cluster, and the front end lives
    on. The nodes' raylets give up on the head after 4 s here (Ray's default is 60 s)."""
    monkeypatch.setenv("RAY_gcs_rpc_server_reconnect_timeout_s", "4")
    model = handler_model(tmp_path, SLEEPY)
    with private_network(), RayCluster(nodes=2, memory_mb=4096) as ray:
        server = ServerProcess(
            tmp_path / "data",
            {"ray_address": ray.address, "ray_node_timeout_s": 2},
            env={"RAY_gcs_rpc_server_reconnect_timeout_s": None},  # the front end's own default
        ).start(timeout_s=120)
        try:
            desc = deploy(server.client("sagemaker"), "headless", model, memory_mb=1024, max_concurrency=1)
            assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
            _pid(server, "headless")
            ray.kill_head()
            answers: list[tuple[float, str]] = []

            def unavailable() -> bool:
                t0 = time.monotonic()
                try:
                    _pid(server, "headless")
                    answers.append((time.monotonic() - t0, "ok"))
                    return False
                except Exception as exc:
                    answers.append((time.monotonic() - t0, str(exc)))
                    return "ServiceUnavailable" in str(exc) and "head has not answered" in str(exc)

            wait_for(unavailable, timeout_s=45, interval_s=0.5)
            last = answers[-1][1]
            assert f"The Ray cluster at {ray.address} is unavailable" in last, answers
            assert all(seconds < 15 for seconds, _ in answers), answers  # answered, never a hang
            assert server.proc is not None and server.proc.poll() is None
            assert "does not answer" in server.log()
            # SIGTERM is still a graceful stop (uvicorn ends by raising the signal again once done), not
            # an abort in Ray's client.
            server.proc.send_signal(signal.SIGTERM)
            assert server.proc.wait(30) in (0, -signal.SIGTERM), server.log()[-2000:]
        finally:
            server.stop()


def test_a_restarted_head_with_its_state_in_redis_serves_again_without_a_restart(tmp_path: Path) -> None:
    """Ray's GCS fault tolerance (the head's state in Redis), the front end attached to the second node's
    raylet (``--ray-temp-dir``; a driver attached to the head's loses its Ray job when the head comes back):
    the head killed, the worker on the second node still answers; the head restarted on the same address,
    the same front end process puts an agent on the new head node and places a new endpoint's worker there."""
    model = handler_model(tmp_path, SLEEPY)
    temp_dir = tempfile.mkdtemp(prefix="rayft", dir="/tmp")  # short: Ray's Unix socket paths live in it
    with private_network(), RayCluster(nodes=1, memory_mb=4096, redis=True) as ray:
        second = ray.add_node(memory_mb=1024, temp_dir=temp_dir)  # room for one 1024 MB worker
        ray.cluster.wait_for_nodes()
        server = ServerProcess(
            tmp_path / "data",
            {"ray_address": ray.address, "ray_node_timeout_s": 2, "ray_temp_dir": temp_dir},
            env={"RAY_gcs_rpc_server_reconnect_timeout_s": None},
        ).start(timeout_s=120)
        try:
            sm = server.client("sagemaker")
            desc = deploy(sm, "before", model, memory_mb=1024, max_concurrency=1)
            assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
            pid = _pid(server, "before")
            on_second = [w["Node"].endswith(str(second.node_id)[:8]) for w in _workers(server, "before")]
            ray.kill_head()
            wait_for(lambda: "does not answer" in server.log(), timeout_s=20)
            if on_second == [True]:  # the second node's worker serves through the outage
                assert _pid(server, "before") == pid
            new_head = ray.restart_head()
            wait_for(lambda: f"/{new_head[:8]} at" in server.log(), timeout_s=30)
            assert "answers again" in server.log()
            # 2048 MB: only the new head node has room for it.
            desc = deploy(sm, "after", model, memory_mb=2048, max_concurrency=1)
            assert desc["EndpointStatus"] == "InService", desc.get("FailureReason")
            _pid(server, "after")
            assert any(w["Node"].endswith(new_head[:8]) for w in _workers(server, "after"))
            assert server.proc is not None and server.proc.poll() is None
        finally:
            server.stop()
            shutil.rmtree(temp_dir, ignore_errors=True)
