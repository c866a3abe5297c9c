"""A model with several containers in the router, against the fake manager: one pool per container, the
serial chain (bodies and Content-Types passed on, Accept to the last), Direct routing, failures naming the
container, variant events once per variant, and new capacities reaching every container's pool."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from zeroscale.errors import ModelError, RuntimeValidationError
from zeroscale.events import EventBus
from zeroscale.metrics.registry import Metrics
from zeroscale.router.fleet import Fleet
from zeroscale.router.invocation import Invocation
from zeroscale.router.pipeline import Pipeline
from zeroscale.router.spec import ContainerSpec, PoolSpec
from zeroscale.workers.client import WorkerResponse
from zeroscale.workers.manager import WorkerHandle

from .fakes import FakeClock, FakeManager, Recorder, settings, spec


class StageManager(FakeManager):
    """Each worker answers its body plus its model's name, as ``x/<name>``; ``failing`` answers 500."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[bytes, bytes]]] = []  # (model, headers) per request
        self.failing = ""

    async def request(
        self,
        handle: WorkerHandle,
        method: bytes,
        path: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        timeout_s: float | None = None,
        max_answer: int | None = None,
    ) -> WorkerResponse:
        await super().request(handle, method, path, headers, body, timeout_s, max_answer)
        name = Path(handle.spec.model_dir).name
        self.seen.append((name, {k.lower(): v for k, v in headers}))
        if name == self.failing:
            return WorkerResponse(500, [], b"stage failed")
        return WorkerResponse(200, [(b"Content-Type", f"x/{name}".encode())], body + b"|" + name.encode())


def pipeline_spec(execution: str = "Serial", **kw: object) -> PoolSpec:
    containers = tuple(ContainerSpec(h, "sklearn", "sklearn", f"/m/{h}") for h in ("one", "two", "three"))
    return spec(containers=containers, execution=execution, model_dir="/m/one", **kw)


class Harness:
    def __init__(self, tmp: Path) -> None:
        self.manager = StageManager()
        self.recorder = Recorder()
        metrics = Metrics()
        self.fleet = Fleet(
            self.manager.as_manager(), settings(tmp), metrics, EventBus([self.recorder, metrics]), FakeClock()
        )

    def pipeline(self) -> Pipeline:
        route = self.fleet.route("ep")
        assert route is not None
        chosen = route.choose()
        assert isinstance(chosen, Pipeline)
        return chosen


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    await harness.fleet.close()


async def test_serial_chains_bodies_and_content_types(h: Harness) -> None:
    await h.fleet.activate("ep", [pipeline_spec()])
    route = h.fleet.route("ep")
    assert route is not None
    assert [p.spec.container for p in route.pools] == ["one", "two", "three"]
    assert h.fleet.budget.used_mb == 3 * 1024  # each container's worker holds the variant's memory size
    assert [(e.variant, e.kind) for e in h.recorder.variants] == [("AllTraffic", "activated")]

    headers = [
        (b"Content-Type", b"text/csv"),
        (b"Accept", b"x/final"),
        (b"X-Amzn-SageMaker-Inference-Id", b"i1"),
    ]
    inv = Invocation(b"in", headers)
    resp = await h.pipeline().invoke(inv)
    assert resp.body == b"in|one|two|three"
    assert resp.header(b"content-type") == b"x/three"
    assert [(m, hs.get(b"content-type")) for m, hs in h.manager.seen] == [
        ("one", b"text/csv"),
        ("two", b"x/one"),
        ("three", b"x/two"),
    ]
    assert [hs.get(b"accept") for _, hs in h.manager.seen] == [None, None, b"x/final"]
    assert all(hs.get(b"x-amzn-sagemaker-inference-id") == b"i1" for _, hs in h.manager.seen)
    assert inv.worker_id.startswith("three-")  # each container's workers carry its hostname
    assert inv.setup_s is not None and inv.setup_s == pytest.approx(3 * 0.025)  # every stage's cold start


async def test_a_failing_stage_is_named_and_stops_the_chain(h: Harness) -> None:
    await h.fleet.activate("ep", [pipeline_spec()])
    h.manager.failing = "two"
    with pytest.raises(ModelError) as err:
        await h.pipeline().invoke(Invocation(b"in", []))
    assert "from two" in err.value.message
    assert [m for m, _ in h.manager.seen] == ["one", "two"]


async def test_direct_needs_a_known_target(h: Harness) -> None:
    await h.fleet.activate("ep", [pipeline_spec("Direct")])
    with pytest.raises(RuntimeValidationError, match="X-Amzn-SageMaker-Target-Container-Hostname"):
        await h.pipeline().invoke(Invocation(b"in", []))
    with pytest.raises(RuntimeValidationError, match="one, two, three"):
        await h.pipeline().invoke(Invocation(b"in", [], container="four"))
    resp = await h.pipeline().invoke(Invocation(b"in", [], container="two"))
    assert resp.body == b"in|two"
    assert [m for m, _ in h.manager.seen] == ["two"]


async def test_serial_refuses_a_target(h: Harness) -> None:
    await h.fleet.activate("ep", [pipeline_spec()])
    with pytest.raises(RuntimeValidationError, match="TargetContainerHostname"):
        await h.pipeline().invoke(Invocation(b"in", [], container="two"))


async def test_new_capacities_reach_every_container(h: Harness) -> None:
    await h.fleet.activate("ep", [pipeline_spec()])
    await h.fleet.adjust("ep", {"AllTraffic": pipeline_spec(max_concurrency=7, provisioned=1)}, timeout_s=1.0)
    route = h.fleet.route("ep")
    assert route is not None
    assert [(p.spec.container, p.spec.max_concurrency, p.spec.provisioned) for p in route.pools] == [
        ("one", 7, 1),
        ("two", 7, 1),
        ("three", 7, 1),
    ]
    assert [e.kind for e in h.recorder.variants] == ["activated", "deactivated", "activated"]
    assert (await h.pipeline().invoke(Invocation(b"x", []))).body == b"x|one|two|three"
