"""The shipped Grafana dashboard queries only series /metrics exposes; every catalog name is exposed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from metrics.builders import activated, model_error, pool, record, started
from zeroscale.asyncinf.gauges import BacklogCollector
from zeroscale.asyncinf.queue import Backlog
from zeroscale.events import WorkerEvent
from zeroscale.metrics.catalog import CATALOG
from zeroscale.metrics.registry import Metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "zeroscale.json"


def exposed_names() -> set[str]:
    """Every sample name /metrics shows once a provisioned variant has served, failed and started."""
    metrics = Metrics()
    metrics.watch(lambda: [pool(provisioned=1, loaded_models=2)])
    metrics.variant(activated(provisioned=1))
    metrics.invocation(record(provisioned=True))
    metrics.invocation(model_error(500))
    metrics.worker(started())
    metrics.worker(WorkerEvent("ep", "AllTraffic", "w1", "crashed", 0.0))
    # The server registers the asynchronous queue's gauges beside them.
    metrics.registry.register(BacklogCollector(lambda: [Backlog("ep", 2, 1, 0.0)], lambda: [pool()]))
    # a multi-model endpoint's: a load that waited for a download, a cache hit, a model loaded and unloaded
    metrics.invocation(record(target_model="m", cache_hit=False, model_wait_s=0.2, download_s=0.1))
    metrics.invocation(record(target_model="m", cache_hit=True))
    metrics.worker(started(model="m"))
    metrics.worker(WorkerEvent("ep", "AllTraffic", "w2", "evicted", 0.0, model="m", unload_s=0.01))
    # a variant with dynamic batching: two requests that shared a predict call
    metrics.invocation(record(batch_size=2, batch_first=True))
    metrics.invocation(record(batch_size=2))
    text = metrics.render().decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_dashboard_query_uses_exposed_series() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {name for expr in exprs for name in re.findall(r"\bzeroscale_[a-z0-9_]+", expr)}
    assert len(used) >= 14
    assert used <= exposed_names(), used - exposed_names()
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for wanted in ("Invocations", "Errors", "latency", "Workers", "Memory", "Concurrency", "Cold starts"):
        assert wanted in titles


def test_every_catalog_metric_has_its_series() -> None:
    names = exposed_names()
    for info in CATALOG:
        base = info.prometheus
        assert {base, f"{base}_count"} & names, base
