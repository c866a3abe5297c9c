"""Which node a worker on a Ray cluster goes to (pure: no cluster here)."""

from __future__ import annotations

from zeroscale.workers.placement import NodeView, choose


def node(
    node_id: str,
    *,
    free: int = 4096,
    pool: int = 0,
    template: bool = False,
    artifact: bool = False,
    answering: bool = True,
) -> NodeView:
    return NodeView(node_id, 8192, 8192 - free, pool, template, artifact, answering)


def test_only_a_node_with_room_for_the_memory_size() -> None:
    assert choose([node("a", free=1023), node("b", free=1024)], 1024) == node("b", free=1024)
    assert choose([node("a", free=512), node("b", free=1000)], 1024) is None
    assert choose([], 1024) is None


def test_a_node_that_missed_its_last_poll_only_where_no_answering_node_has_room() -> None:
    late = node("a", answering=False, template=True, free=8000)
    assert choose([late, node("b", pool=3)], 1024).node_id == "b"
    assert choose([late, node("b", free=512)], 1024).node_id == "a"
    assert choose([late], 1024).node_id == "a"
    assert choose([node("a", answering=False, free=512)], 1024) is None


def test_spreads_a_pools_workers_first() -> None:
    busy = node("a", pool=2, template=True, artifact=True, free=8000)
    assert choose([busy, node("b", pool=1)], 1024).node_id == "b"


def test_then_prefers_the_template_then_the_artifact_then_free_memory() -> None:
    assert choose([node("a", artifact=True), node("b", template=True)], 1024).node_id == "b"
    assert choose([node("a", free=8000), node("b", artifact=True, free=2048)], 1024).node_id == "b"
    assert choose([node("a", free=2048), node("b", free=8000)], 1024).node_id == "b"


def test_a_tie_is_broken_by_node_id() -> None:
    assert choose([node("b"), node("a")], 1024).node_id == "a"
