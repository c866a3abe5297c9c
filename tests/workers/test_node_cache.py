"""A Ray node's artifact cache past its capacity, shared by two front ends' agents (no cluster: two real
``NodeAgent``s on one node directory, real zygotes and forked workers). What any agent's worker or template
uses stays; the rest goes, and the router is told what went."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

from artifacts.test_pyenv import make_wheel
from artifacts.test_s3 import aws_env  # noqa: F401 - a fixture
from s3server import SeaweedS3
from zeroscale.artifacts.cache import ArtifactCache, entry_source
from zeroscale.testing import make_tar
from zeroscale.workers.ray_agent import AgentConfig, NodeAgent

HANDLER = """
def model_fn(model_dir):
    return open(model_dir + "/name.txt").read()

def transform_fn(model, body, content_type, accept):
    return model, "text/plain"
"""


def model(tmp_path: Path, name: str) -> str:
    root = tmp_path / "models" / name
    (root / "code").mkdir(parents=True)
    (root / "code" / "inference.py").write_text(HANDLER)
    (root / "name.txt").write_text(name)
    return f"file://{root}"


def request(wid: str, source: str) -> dict[str, object]:
    return {"worker_id": wid, "runtime": "sklearn", "env": {}, "model_source": source, "memory_mb": 512}


def node(root: Path, **caches: Any) -> AgentConfig:
    """One node's agents' configuration (every agent of a node has the same), unconfined for speed."""
    return AgentConfig(
        node_id="n" * 16, root=str(root), host="127.0.0.1", sandbox=False, cgroups=False,
        startup_timeout_s=60, **caches,
    )  # fmt: skip


def invoke(port: int) -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=b"{}", method="POST")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return bytes(resp.read())


def entries(node_root: Path) -> set[str]:
    cache = next(node_root.glob("*/artifacts"))
    return {(p / "model" / "name.txt").read_text() for p in cache.iterdir() if len(p.name) == 64}


async def test_two_agents_keep_what_either_uses_and_evict_the_rest(tmp_path: Path) -> None:
    node_root = tmp_path / "nodes"
    config = node(node_root, artifact_cache_bytes=0)
    one, two = NodeAgent(config), NodeAgent(config)
    a, b, c = (model(tmp_path, name) for name in "abc")
    try:
        assert "pid" in await one.start(request("w-a", a))
        template = await one.start_template(request("t-c", c))
        assert "template" in template
        assert "pid" in await two.start(request("w-b", b))  # a new entry: a trim, which keeps all three
        assert entries(node_root) == {"a", "b", "c"}

        await one.stop("w-a", grace_s=5)
        assert entries(node_root) == {"a", "b", "c"}
        report = await one.poll(0.0)  # the poll after one's worker ended trims
        assert entries(node_root) == {"b", "c"}
        assert len(report["evicted"]) == 1
        assert (await one.poll(0.0))["evicted"] == []

        await one.close_template(str(template["template"]))
        await one.poll(0.0)
        assert entries(node_root) == {"b"}

        # a again, from its source: a worker of it serves what it loaded
        started = await one.start(request("w-a2", a))
        assert entries(node_root) == {"a", "b"}
        answer = await asyncio.to_thread(invoke, int(started["port"]))
        assert answer == b"a"
    finally:
        await one.close()
        await two.close()
    # Nothing holds anything once the agents are gone.
    survivor = NodeAgent(config)
    try:
        await survivor.poll(0.0)
        assert entries(node_root) == set()
    finally:
        await survivor.close()


IMPORTS = """
import zsnode

def model_fn(model_dir):
    return None

def transform_fn(model, body, content_type, accept):
    return zsnode.__file__, "text/plain"
"""


async def test_a_nodes_requirements_are_installed_there_and_go_with_their_last_worker(tmp_path: Path) -> None:
    node_root = tmp_path / "nodes"
    config = node(node_root, requirements_cache_bytes=0)
    code = tmp_path / "models" / "reqs" / "code"
    code.mkdir(parents=True)
    wheel = make_wheel(code, "zsnode")
    (code / "requirements.txt").write_text(f"--no-index\n./{wheel.name}\n")
    (code / "inference.py").write_text(IMPORTS)
    source = f"file://{code.parent}"
    agent = NodeAgent(config)
    try:
        started = await agent.start({**request("w", source), "requirements": True})
        where = Path((await asyncio.to_thread(invoke, int(started["port"]))).decode())
        installed = node_root / ("n" * 16) / "pyenvs"
        assert installed in where.parents and where.name == "zsnode.py"
        await agent.poll(0.0)
        assert where.is_file()  # its worker holds it
        await agent.stop("w", grace_s=5)
        await agent.poll(0.0)
        assert not where.exists() and not list(installed.glob("*/lib"))
    finally:
        await agent.close()


async def test_a_model_from_an_s3_prefix_is_fetched_by_the_node(
    tmp_path: Path,
    aws_env: SeaweedS3,  # noqa: F811
) -> None:
    """ModelDataSource: the front end's entry came from an S3 prefix (its source ends with /), and a node
    fetches it as one, object by object (it read the prefix as one archive's key, and failed)."""
    s3 = aws_env.client()
    s3.create_bucket(Bucket="node-prefix")
    s3.put_object(Bucket="node-prefix", Key="m/code/inference.py", Body=HANDLER.encode())
    s3.put_object(Bucket="node-prefix", Key="m/name.txt", Body=b"from-a-prefix")
    agent = NodeAgent(node(tmp_path / "nodes", s3_endpoint_url=aws_env.endpoint_url))
    try:
        started = await agent.start(request("w-p", "s3://node-prefix/m/"))
        assert "pid" in started, started
        assert await asyncio.to_thread(invoke, int(started["port"])) == b"from-a-prefix"
    finally:
        await agent.close()


async def test_a_node_runs_only_the_model_the_front_end_deployed(
    tmp_path: Path,
    aws_env: SeaweedS3,  # noqa: F811
) -> None:
    """The front end names the entry it deployed (its sha256) beside the source; a node that reads
    something else from the source (an S3 object rewritten in place, a ModelDataSource's ETag no longer
    true, a local file swapped for another's since the front end checked it) refuses to run it."""
    s3 = aws_env.client()
    s3.create_bucket(Bucket="node-sha")
    tar = tmp_path / "m.tar.gz"
    make_tar(tar, {"code/inference.py": HANDLER.encode(), "name.txt": b"deployed"})
    original = tar.read_bytes()
    s3.put_object(Bucket="node-sha", Key="m.tar.gz", Body=original)
    front = ArtifactCache(tmp_path / "front", s3_endpoint_url=aws_env.endpoint_url)
    found = entry_source(front.prepare("s3://node-sha/m.tar.gz"))  # as the front end read it
    assert found is not None and found[1] == "s3://node-sha/m.tar.gz"
    sha = found[0]
    make_tar(tar, {"code/inference.py": HANDLER.encode(), "name.txt": b"rewritten"})
    s3.put_object(Bucket="node-sha", Key="m.tar.gz", Body=tar.read_bytes())
    agent = NodeAgent(node(tmp_path / "nodes", s3_endpoint_url=aws_env.endpoint_url))
    deployed = {**request("w-1", "s3://node-sha/m.tar.gz"), "model_sha": sha}
    try:
        refused = await agent.start(deployed)
        assert refused["error"].startswith(
            "Model data s3://node-sha/m.tar.gz is not what the endpoint deployed: this node read sha256 "
        )
        assert refused["error"].endswith(
            f"the front end {sha}. It changed since the endpoint was deployed; update the endpoint to "
            "deploy it as it is now."
        )
        s3.put_object(Bucket="node-sha", Key="m.tar.gz", Body=original)  # what was deployed, back
        started = await agent.start(deployed)
        assert "pid" in started, started
        assert await asyncio.to_thread(invoke, int(started["port"])) == b"deployed"
    finally:
        await agent.close()
