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
    """A head and ``nodes - 1`` more nodes on 127.0.0.1, each offering ``memory_mb`` to workers, one CPU.

    ``redis``: the head keeps its GCS state in a Redis server of its own (``redis-server`` on a free port,
    started here), Ray's GCS fault tolerance, so that ``restart_head`` brings the same cluster back."""

    def __init__(self, nodes: int = 2, memory_mb: int = 4096, *, redis: bool = False) -> None:
        self.size = nodes
        self.memory_mb = memory_mb
        self.cluster: Any = None
        self.extra: list[Any] = []  # the nodes beyond the head, in the order added
        self.head_killed = False
        self.redis = redis
        self._redis: subprocess.Popen[bytes] | None = None
        self._orphans: list[Any] = []  # the other nodes' raylets' children when the head was killed
        self._head: dict[str, Any] | None = None  # restart_head's: {"node_id", "pids"} (its own processes)

    def _node_args(self, memory_mb: int | None = None) -> dict[str, Any]:
        return {
            "num_cpus": 1,
            "memory": (self.memory_mb if memory_mb is None else memory_mb) * MB,
            "object_store_memory": 80 * MB,
            "node_ip_address": "127.0.0.1",
        }

    def _head_args(self) -> dict[str, Any]:
        args = {**self._node_args(), "include_dashboard": False}
        if self._redis is not None:
            address = f"127.0.0.1:{self._redis_port}"
            args.update(external_addresses=[address, address], num_redis_shards=1)
        return args

    def start(self) -> RayCluster:
        from ray.cluster_utils import Cluster

        if self.redis:
            self._start_redis()
        self.cluster = Cluster(initialize_head=True, connect=False, head_node_args=self._head_args())
        for _ in range(self.size - 1):
            self.add_node()
        self.cluster.wait_for_nodes()
        return self

    def _start_redis(self) -> None:
        import socket
        import time

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self._redis_port = s.getsockname()[1]
        args = f"--port {self._redis_port} --bind 127.0.0.1 --appendonly no".split()
        self._redis = subprocess.Popen(["redis-server", *args, "--save", ""], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self._redis_port)) == 0:
                    return
            if time.monotonic() > deadline or self._redis.poll() is not None:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.05)

    def add_node(self, memory_mb: int | None = None, temp_dir: str | None = None) -> Any:
        """One more node; ``temp_dir``: its own Ray temp directory (a driver can attach to it by that)."""
        extra = {"temp_dir": temp_dir} if temp_dir else {}
        node = self.cluster.add_node(**self._node_args(memory_mb), **extra)
        self.extra.append(node)
        return node

    def restart_head(self) -> str:
        """A killed head started again on the same address, with the same Redis (``redis=True``): the same
        cluster, a new head node. Returns its node id."""
        import json
        import sys

        assert self.head_killed and self._redis is not None
        port = int(self.address.rsplit(":", 1)[1])
        params = {**self._head_args(), "gcs_server_port": port, "num_gpus": 0}
        params.update(min_worker_port=0, max_worker_port=0)
        # In a process of its own: a second head started in this one, after a first cluster here, waits
        # about 30 s for Ray's client state of that first cluster to time out.
        out = subprocess.run(
            [sys.executable, "-c", _RESTART_HEAD, json.dumps(params)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self._head = json.loads(out.stdout.strip().splitlines()[-1])
        self.head_killed = False
        return str(self._head["node_id"])

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

        doomed = self._head_processes()
        for proc in doomed:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        self.head_killed = True
        # The other nodes' agents, known now: their raylets may end on their own before ``stop``.
        self._orphans += [proc for node in self.extra for proc in _raylet_children(node)]

    def _head_processes(self) -> list[Any]:
        """The head's processes and everything its raylet started."""
        import psutil

        if self._head is not None:
            pids: list[int] = self._head["pids"]
            raylet_pid = pids[0]
        else:
            head = self.cluster.head_node
            pids = [p.process.pid for procs in head.all_processes.values() for p in procs]
            raylet_pid = head.all_processes["raylet"][0].process.pid
        doomed: list[Any] = []
        with contextlib.suppress(psutil.Error):
            doomed += psutil.Process(raylet_pid).children(recursive=True)
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                doomed.append(psutil.Process(pid))
        return doomed

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def node_ids(self) -> list[str]:
        """Every live node's Ray node id (the head's first)."""
        head = self._head["node_id"] if self._head else self.cluster.head_node.node_id
        return [str(head), *(str(n.node_id) for n in self.extra)]

    def stop(self) -> None:
        if self.cluster is not None:
            if self._head is not None and not self.head_killed:  # a restarted head: not the Cluster's
                for proc in self._head_processes():
                    with contextlib.suppress(Exception):
                        proc.kill()
            if self.head_killed or self._head is not None:  # the other nodes (their raylets may be gone)
                for node in self.extra:
                    doomed = _raylet_children(node) + self._orphans  # left running by kill_all_processes
                    with contextlib.suppress(Exception):
                        node.kill_all_processes(check_alive=False, allow_graceful=False)
                    for proc in doomed:
                        with contextlib.suppress(Exception):
                            proc.kill()
            else:
                self.cluster.shutdown()
            self.cluster = None
        if self._redis is not None:
            self._redis.kill()
            self._redis.wait()
            self._redis = None

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _raylet_children(node: Any) -> list[Any]:
    import psutil

    try:
        return list(psutil.Process(node.all_processes["raylet"][0].process.pid).children(recursive=True))
    except (psutil.Error, KeyError, IndexError):
        return []


# restart_head's process: a head node from RayParams (JSON in argv[1]); prints its node id and its processes'
# pids, the raylet's first, and leaves them running.
_RESTART_HEAD = """
import json, sys
import ray._private.node
from ray._private.parameter import RayParams
node = ray._private.node.Node(
    RayParams(**json.loads(sys.argv[1])), head=True, shutdown_at_exit=False, spawn_reaper=False
)
raylet = node.all_processes["raylet"][0].process.pid
pids = [p.process.pid for procs in node.all_processes.values() for p in procs if p.process.pid != raylet]
print(json.dumps({"node_id": node.node_id, "pids": [raylet, *pids]}))
"""
