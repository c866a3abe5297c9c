"""For tests and benchmarks of workers on Ray: a private network namespace for the calling thread (Ray binds
every interface and probes outside addresses: nothing may leave loopback), and a Ray cluster of several
nodes on 127.0.0.1 inside it (``ray.cluster_utils.Cluster``). Like ``testing.py``, nothing in the package
imports this.

    with private_network(), RayCluster(nodes=2) as cluster:
        server = ServerProcess(data, {"ray_address": cluster.address}).start()
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator
from typing import Any

CLONE_NEWNET = 0x40000000
MB = 1024 * 1024


def can_unshare() -> bool:
    return os.geteuid() == 0


@contextlib.contextmanager
def private_network() -> Iterator[None]:
    """Move the calling thread (and every process it starts from now on) into a new network namespace with
    only ``lo``, up; back to the original one at the end. Needs root (CAP_SYS_ADMIN)."""
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNET): {os.strerror(err)}")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True, capture_output=True)
            yield
        finally:
            if libc.setns(original, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back to the original network: {os.strerror(err)}")
    finally:
        os.close(original)


class RayCluster:
    """A head and ``nodes - 1`` more nodes on 127.0.0.1, each offering ``memory_mb`` to workers, one CPU."""

    def __init__(self, nodes: int = 2, memory_mb: int = 4096) -> None:
        self.size = nodes
        self.memory_mb = memory_mb
        self.cluster: Any = None
        self.extra: list[Any] = []  # the nodes beyond the head, in the order added
        self.head_killed = False

    def _node_args(self) -> dict[str, Any]:
        return {
            "num_cpus": 1,
            "memory": self.memory_mb * MB,
            "object_store_memory": 80 * MB,
            "node_ip_address": "127.0.0.1",
        }

    def start(self) -> RayCluster:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(
            initialize_head=True,
            connect=False,
            head_node_args={**self._node_args(), "include_dashboard": False},
        )
        for _ in range(self.size - 1):
            self.add_node()
        self.cluster.wait_for_nodes()
        return self

    def add_node(self) -> Any:
        node = self.cluster.add_node(**self._node_args())
        self.extra.append(node)
        return node

    def remove_node(self, node: Any) -> None:
        """The node's machine goes away: its raylet and every process it started (Ray's workers, and what
        they started: zeroscale's agent, zygotes and model workers) are killed at once."""
        import psutil

        raylet = psutil.Process(node.all_processes["raylet"][0].process.pid)
        doomed = raylet.children(recursive=True)
        self.cluster.remove_node(node, allow_graceful=False)
        for proc in doomed:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.extra.remove(node)

    def kill_head(self) -> None:
        """The head's machine goes away: its GCS, raylet and everything they started are killed at once. The
        other nodes' raylets give up on it after their ``gcs_rpc_server_reconnect_timeout_s`` (Ray's
        default 60 s; set ``RAY_gcs_rpc_server_reconnect_timeout_s`` before ``start`` to shorten it)."""
        import psutil

        head = self.cluster.head_node
        raylet = psutil.Process(head.all_processes["raylet"][0].process.pid)
        doomed = raylet.children(recursive=True)
        doomed += [psutil.Process(p.process.pid) for procs in head.all_processes.values() for p in procs]
        for proc in doomed:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.head_killed = True

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def node_ids(self) -> list[str]:
        """Every live node's Ray node id (the head's first)."""
        return [str(n.node_id) for n in (self.cluster.head_node, *self.extra)]

    def stop(self) -> None:
        if self.cluster is not None:
            if self.head_killed:  # what is left: the other nodes (their raylets may be gone already)
                for node in self.extra:
                    with contextlib.suppress(Exception):
                        node.kill_all_processes(check_alive=False, allow_graceful=False)
            else:
                self.cluster.shutdown()
            self.cluster = None

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
