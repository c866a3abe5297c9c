"""Which cluster node a new worker goes to (workers on a Ray cluster, ``ray_workers.py``). Pure: the caller
hands over what it knows of each node, nothing here reads a clock or the network.

The order of preference, each a tie-break of the one before:

1. room: the node's memory (its Ray ``memory`` resource) less the MemorySizeInMB of the workers placed
   there must hold the new worker's MemorySizeInMB (a node without room is never chosen);
2. answering: a node whose agent answered its last poll before one that did not (a loaded machine, or one
   going away: the caller's start waits for it to answer or to be lost);
3. spread: fewest workers of the same pool (endpoint variant), so losing a node costs a pool a share of
   its workers, not all of them;
4. a template of the model on the node (the worker is a fork of the loaded model: no model load);
5. the model's artifact already in the node's cache (no download);
6. the most free memory, then the node id (a stable answer).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NodeView:
    node_id: str
    capacity_mb: int  # memory the node offers workers
    reserved_mb: int  # MemorySizeInMB of the workers placed there (live or starting)
    pool_workers: int  # workers of the pool being placed
    has_template: bool
    has_artifact: bool
    answering: bool = True  # its agent answered its last poll

    @property
    def free_mb(self) -> int:
        return self.capacity_mb - self.reserved_mb


def choose(nodes: Iterable[NodeView], memory_mb: int) -> NodeView | None:
    """The node for a worker of ``memory_mb``, or None when no node has room."""
    fits = [n for n in nodes if n.free_mb >= memory_mb]
    if not fits:
        return None
    return min(
        fits,
        key=lambda n: (
            not n.answering,
            n.pool_workers,
            not n.has_template,
            not n.has_artifact,
            -n.free_mb,
            n.node_id,
        ),
    )
