"""Overhead: the same request through zeroscale and straight to the same warm worker, interleaved.

Per pair: one request signed with botocore's SigV4 signer and sent on a keep-alive connection to zeroscale,
then the same body sent on a keep-alive connection to the worker's Unix socket (the worker zeroscale routes
to: the endpoint has MaxConcurrency 1 and one warm worker). The signing time is measured on its own and kept
out of the "through" timer. The overhead a request paid is its pair's difference, through minus direct
(``paired_overhead_s``); the figures are percentiles of those differences (not differences of
percentiles, which need not describe any request). The client's signing cost is reported next to them.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field

from bench.common import (
    ROW,
    Models,
    ServerProcess,
    SignedClient,
    UnixHTTPConnection,
    deploy,
    direct_invoke,
    worker_sockets,
)

ECHO_BODY = b'{"echo": 1}'


@dataclass
class OverheadResult:
    through_s: dict[str, list[float]] = field(default_factory=dict)  # model -> after signing, send -> read
    direct_s: dict[str, list[float]] = field(default_factory=dict)
    sign_s: list[float] = field(default_factory=list)

    def overhead_s(self, model: str) -> list[float]:
        """Per pair: through zeroscale minus straight to the worker."""
        return paired_overhead_s(self.through_s.get(model, []), self.direct_s.get(model, []))


def paired_overhead_s(through: list[float], direct: list[float]) -> list[float]:
    """What zeroscale added to each request: its latency minus that of the direct request it was paired
    with (``through[i]`` and ``direct[i]`` were sent one after the other)."""
    return [t - d for t, d in zip(through, direct, strict=True)]


def deploy_warm(srv: ServerProcess, models: Models) -> None:
    sm = srv.client("sagemaker")
    deploy(sm, "rf-warm", f"file://{models.rf}", memory_mb=1024, max_concurrency=1)
    deploy(sm, "echo-warm", f"file://{models.echo}", memory_mb=1024, max_concurrency=1)


def measure(
    srv: ServerProcess, requests: dict[str, int], result: OverheadResult, *, native: bool = False
) -> None:
    """``native``: through the native data plane's port (the results under ``rf-native``, ``echo-native``):
    its first requests, relayed, earn it the key's grant and the worker's lease."""
    client = SignedClient(srv.native_url if native else srv.url)
    for model, endpoint, body in (("rf", "rf-warm", ROW), ("echo", "echo-warm", ECHO_BODY)):
        client.invoke(endpoint, body)
        sockets = worker_sockets(srv.data_dir, endpoint)
        if len(sockets) != 1:
            raise RuntimeError(f"{endpoint}: expected one warm worker, found {len(sockets)}")
        direct = UnixHTTPConnection(str(sockets[0]))
        for _ in range(100):
            client.invoke(endpoint, body)
            direct_invoke(direct, body)
        through: list[float] = []
        straight: list[float] = []
        gc.collect()
        gc.disable()
        try:
            for _ in range(requests[model]):
                sign_s, through_s = client.invoke(endpoint, body)
                result.sign_s.append(sign_s)
                through.append(through_s)
                t = time.perf_counter()
                direct_invoke(direct, body)
                straight.append(time.perf_counter() - t)
        finally:
            gc.enable()
        direct.close()
        key = f"{model}-native" if native else model
        result.through_s[key] = through
        result.direct_s[key] = straight
    client.close()
