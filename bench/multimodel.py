"""Multi-model endpoints: first-request latency of an unloaded model against a loaded one, the cache-hit
rate under a Zipf load against an LRU cache of the same size simulated on the very same request sequence,
and models served per GB.

One server with ``--memory-budget-mb BUDGET_MB`` (the host budget bounds how many models stay loaded; the
variant's MemorySizeInMB, 1024, is larger) and one serverless endpoint with ``Mode=MultiModel`` over a
``file://`` prefix of ``MODELS`` distinct RandomForests (10 trees, each its own seed and its own answer)
plus ``LATENCY`` more for the latency rounds. One client, requests one at a time, each signed before the
timer starts, on a keep-alive connection:

1. latency: for each ``lat-i``: a first request (never fetched, memory not full yet: extract + fork +
   load), then the same model again (loaded). After phase 2 has unloaded them (least recently used), each
   once more (its artifact still on disk, but the memory full: the least recently used model's worker
   stopped until it exits, then fork + load), then again (loaded).
2. Zipf: ``ZIPF_REQUESTS`` requests over the ``MODELS`` models, rank r drawn with probability ~ 1/r^S
   (a fixed seed). Hits are the server's own ``zeroscale_model_cache_hits_total`` over its lookups. The
   bounds come from the same sequence: an LRU cache holding ``capacity`` models (capacity = the budget /
   one model's size in the budget, what zeroscale's accounting allows), Belady's optimal cache of the
   same capacity (no online policy does better), and a cache of the same capacity that evicts at random
   (what Ray Serve's model multiplexing amounts to when requests land on replicas regardless of the
   models they hold; averaged over 20 seeds).
3. models per GB: the LoadedModelCount gauge after phase 2, per GB of the budget; and measured: the
   unique set size (USS: private pages) of the server's process tree after phase 2 minus before any
   model was loaded, per loaded model.
"""

from __future__ import annotations

import http.client
import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import numpy as np
import psutil
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from sklearn.ensemble import RandomForestClassifier

from bench.common import (
    ACCESS_KEY,
    JSON,
    REGION,
    SECRET_KEY,
    ServerProcess,
    make_tar,
    metric,
    tree,
    wait_final,
)

ENDPOINT = "mme"
BUDGET_MB = 400
ZIPF_S = 1.0
ROW = b"[[0.5, 0.5, 0.5, 0.5]]"


@dataclass
class MmeResult:
    first_s: list[float] = field(default_factory=list)  # never fetched: extract + fork + load
    unloaded_s: list[float] = field(default_factory=list)  # artifact on disk, not loaded: fork + load
    loaded_s: list[float] = field(default_factory=list)
    requests: int = 0
    models: int = 0
    capacity: int = 0
    model_mb: int = 0
    hit_rate: float = 0.0
    lru_rate: float = 0.0
    opt_rate: float = 0.0
    random_rate: float = 0.0
    loaded_models: float = 0.0
    budget_mb: int = BUDGET_MB
    uss_per_model_mb: float = 0.0


def build(root: Path, names: list[str]) -> Path:
    """A directory of model archives, one per name (the prefix)."""
    prefix = root / "mme-models"
    prefix.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(1)
    X = rng.rand(300, 4)
    for i, name in enumerate(names):
        y = (X[:, i % 4] > 0.5).astype(int)
        model = RandomForestClassifier(n_estimators=10, random_state=i).fit(X, y)
        joblib.dump(model, root / "m.joblib")
        make_tar(prefix / name, {"model.joblib": root / "m.joblib"})
    return prefix


def deploy_mme(srv: ServerProcess, prefix: Path) -> None:
    sm = srv.client("sagemaker")
    sm.create_model(
        ModelName=ENDPOINT,
        PrimaryContainer={"Image": "sklearn", "ModelDataUrl": f"file://{prefix}/", "Mode": "MultiModel"},
    )
    sm.create_endpoint_config(
        EndpointConfigName=ENDPOINT,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": ENDPOINT,
                "ServerlessConfig": {"MemorySizeInMB": 1024, "MaxConcurrency": 4},
            }
        ],
    )
    sm.create_endpoint(EndpointName=ENDPOINT, EndpointConfigName=ENDPOINT)
    desc = wait_final(sm, ENDPOINT)
    if desc["EndpointStatus"] != "InService":
        raise RuntimeError(f"{ENDPOINT}: {desc.get('FailureReason')}")


class TargetClient:
    """Keep-alive HTTP/1.1 with a SigV4 signature over the target-model header."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn = http.client.HTTPConnection(url.split("//", 1)[1], timeout=120)
        self.signer = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "sagemaker", REGION)

    def headers(self, target: str) -> dict[str, str]:
        path = f"/endpoints/{ENDPOINT}/invocations"
        req = AWSRequest(
            "POST",
            self.url + path,
            data=ROW,
            headers={"Content-Type": JSON, "X-Amzn-SageMaker-Target-Model": target},
        )
        self.signer.add_auth(req)
        return dict(req.headers.items())

    def invoke(self, target: str) -> float:
        headers = self.headers(target)
        t0 = time.perf_counter()
        self.conn.request("POST", f"/endpoints/{ENDPOINT}/invocations", body=ROW, headers=headers)
        resp = self.conn.getresponse()
        data = resp.read()
        elapsed = time.perf_counter() - t0
        if resp.status != 200:
            raise RuntimeError(f"{target}: {resp.status}: {data!r}")
        return elapsed

    def close(self) -> None:
        self.conn.close()


def zipf_sequence(n_models: int, n_requests: int, s: float, seed: int = 7) -> list[int]:
    weights = [1.0 / (rank**s) for rank in range(1, n_models + 1)]
    order = list(range(n_models))
    random.Random(seed).shuffle(order)  # popularity is not the order models were created in
    picks = random.Random(seed + 1).choices(range(n_models), weights=weights, k=n_requests)
    return [order[p] for p in picks]


def lru_hits(seq: list[int], capacity: int, warm: list[int] | None = None) -> int:
    cache: OrderedDict[int, None] = OrderedDict((m, None) for m in (warm or [])[-capacity:])
    hits = 0
    for m in seq:
        if m in cache:
            hits += 1
            cache.move_to_end(m)
            continue
        cache[m] = None
        if len(cache) > capacity:
            cache.popitem(last=False)
    return hits


def opt_hits(seq: list[int], capacity: int) -> int:
    """Belady: on a miss with a full cache, drop the model used again furthest in the future."""
    next_use: list[int] = [0] * len(seq)
    last: dict[int, int] = {}
    for i in range(len(seq) - 1, -1, -1):
        next_use[i] = last.get(seq[i], len(seq) + i)
        last[seq[i]] = i
    cache: dict[int, int] = {}  # model -> its next use
    hits = 0
    for i, m in enumerate(seq):
        if m in cache:
            hits += 1
        elif len(cache) >= capacity:
            del cache[max(cache, key=lambda k: cache[k])]
        cache[m] = next_use[i]
    return hits


def random_hits(seq: list[int], capacity: int, seed: int) -> int:
    rng = random.Random(seed)
    cache: list[int] = []
    members: set[int] = set()
    hits = 0
    for m in seq:
        if m in members:
            hits += 1
            continue
        if len(cache) >= capacity:
            victim = cache.pop(rng.randrange(len(cache)))
            members.discard(victim)
        cache.append(m)
        members.add(m)
    return hits


def uss_mb(srv: ServerProcess) -> float:
    assert srv.proc is not None
    total = 0
    for proc in tree(srv.proc.pid):
        try:
            total += proc.memory_full_info().uss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def measure(srv: ServerProcess, models: int, latency: int, requests: int, res: MmeResult) -> None:
    client = TargetClient(srv.url)
    client.invoke("lat-warmup.tar.gz")  # the zygote's first fork, apart from the figures
    time.sleep(0.5)
    before_mb = uss_mb(srv)
    for i in range(latency):
        res.first_s.append(client.invoke(f"lat-{i}.tar.gz"))
        res.loaded_s.append(client.invoke(f"lat-{i}.tar.gz"))
    seq = zipf_sequence(models, requests, ZIPF_S)
    text = srv.metrics()
    hits0 = metric(text, "zeroscale_model_cache_hits_total", ENDPOINT)
    lookups0 = metric(text, "zeroscale_model_cache_lookups_total", ENDPOINT)
    for m in seq:
        client.invoke(f"m-{m}.tar.gz")
    text = srv.metrics()
    hits = metric(text, "zeroscale_model_cache_hits_total", ENDPOINT) - hits0
    lookups = metric(text, "zeroscale_model_cache_lookups_total", ENDPOINT) - lookups0
    res.loaded_models = metric(text, "zeroscale_loaded_models", ENDPOINT)
    res.uss_per_model_mb = (uss_mb(srv) - before_mb) / max(1.0, res.loaded_models)
    res.requests, res.models = int(lookups), models
    res.hit_rate = hits / lookups if lookups else 0.0
    # what the budget allows: each model's size in it is the extracted archive (1 MB, rounded up) plus a
    # forked worker's own memory
    from zeroscale.router.multimodel import WORKER_OVERHEAD_MB

    res.model_mb = 1 + WORKER_OVERHEAD_MB
    res.capacity = BUDGET_MB // res.model_mb
    res.lru_rate = lru_hits(seq, res.capacity) / len(seq)
    res.opt_rate = opt_hits(seq, res.capacity) / len(seq)
    res.random_rate = sum(random_hits(seq, res.capacity, k) for k in range(20)) / (20 * len(seq))
    for i in range(latency):  # phase 2 unloaded them: their artifacts are on disk
        res.unloaded_s.append(client.invoke(f"lat-{i}.tar.gz"))
        res.loaded_s.append(client.invoke(f"lat-{i}.tar.gz"))
    client.close()


def names(models: int, latency: int) -> list[str]:
    return (
        [f"m-{i}.tar.gz" for i in range(models)]
        + [f"lat-{i}.tar.gz" for i in range(latency)]
        + ["lat-warmup.tar.gz"]
    )
