"""zeroscale's benchmarks, each against a baseline measured in the same run.

    make bench [ARGS=--quick]       # or: .venv/bin/python -m bench.run [--quick] [--only cold,overhead,...]

Scenarios (each module's docstring says exactly what it measures and how):
  cold        cold start (zero workers -> first response) of the reference RandomForest (100 trees, 10
              features) and of a trivial model, against a fresh Python process; the cold-start breakdown
              (worker-log timestamps, a direct zygote experiment, a first-predict experiment)
                                                                      bench/cold.py, bench/breakdown.py
  overhead    through zeroscale vs straight to the same warm worker, signed like a real client
                                                                                      bench/overhead.py
  throughput  trivial model, MaxConcurrency 2: zeroscale vs the same two workers hit directly; the floor
              (a bare uvicorn proxy) and a py-spy profile of the server
                                                  bench/throughput.py, bench/loadgen.py, bench/floor.py
  realtime    RandomForest on a real-time endpoint (ml.m5.large x1: two always-warm workers): req/s, p50
              and p99 through zeroscale vs the same two workers hit directly            bench/realtime.py
  burst       0 -> 50 concurrent clients on an idle endpoint with MaxConcurrency 50      bench/burst.py
  idle        processes held at zero; server RSS with 1,000 idle endpoints                bench/idle.py
  scale       10 / 1,000 / 10,000 endpoints at zero: idle CPU, RSS, Describe/List p50, first-invocation
              cold start, deploy rate from 16 clients (--scale-sizes to change)          bench/scale.py
  ray         the peer: Ray Serve (min_replicas=0) in a private network namespace     bench/ray_peer.py
  cluster     cold start and overhead of a worker on a Ray node (--ray-address) vs on this machine, in a
              private network namespace; requests/s through two front ends vs one on the cluster
                                                                                      bench/cluster.py
  spill       two front ends, MaxConcurrency 4: a client on one of them gets all 4 at once (spill-over);
              round trips wasted while both are saturated                              bench/spill.py
  noisy       a RandomForest endpoint beside three spinning ones, with the cpu cgroups'
              weights and without                                                      bench/noisy.py
  batch       batch transform records/s (MultiRecord, S3 in SeaweedFS) vs one process on the same data
                                                                                         bench/batch.py
  rollback    a canary rolled back by a CloudWatch alarm: alarm -> the old fleet takes all the traffic, vs a
              manual UpdateEndpoint back to the old configuration                     bench/rollback.py
  scaleout    a real-time variant scaled out by a step policy: alarm -> the new instance answers, vs
              UpdateEndpointWeightsAndCapacities directly                             bench/scaleout.py
  soak        2 minutes at 80% of capacity with cold starts and scale-to-zero cycles: errors, RSS growth,
              fds, leftover processes (bench/soak.py alone runs the 30-minute one)       bench/soak.py
  batching    dynamic batching: the RandomForest at MaxConcurrency 2, 32 closed-loop clients, req/s with
              ZEROSCALE_MAX_BATCH_SIZE=32 vs without; p50 at 1 client on vs off           bench/batching.py
  mme         multi-model endpoint: first request of an unloaded model vs a loaded one; cache-hit rate
              under a Zipf load vs an LRU cache of the same size on the same sequence; models per GB
                                                                                     bench/multimodel.py
  recent      CloudWatch's 10-s periods of the last 3 hours on 30 busy endpoints (simulated clock): memory
              held and a sample's time, vs the same data in one dict scanned by every sample
                                                                                        bench/recent.py

Prints one table (figure, value, baseline, ratio, target, met?) and writes bench/results/latest.md and the
PNG charts next to it (a run with --only, --skip or --endpoints writes to bench/results/partial/ instead).
The machine's other users are measured, not controlled: bench/machine.py reports the CPU they took during
each scenario; --wait-quiet waits for a quiet moment first, and the benchmark runs at nice -10 (as root).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import (
    batch,
    batching,
    breakdown,
    burst,
    cold,
    idle,
    multimodel,
    overhead,
    realtime,
    recent,
    rollback,
    runtimes,
    scale,
    scaleout,
    soak,
    throughput,
    warmcache,
)
from bench.common import REPO, RESULTS, ServerProcess, free_port, ms, pct
from bench.machine import Background, describe, wakeup_cost
from bench.report import (
    Row,
    chart_breakdown,
    chart_burst,
    chart_cold,
    chart_latency,
    console_table,
    markdown_table,
)

SCENARIOS = (
    "cold",
    "cache",
    "runtimes",
    "overhead",
    "throughput",
    "realtime",
    "burst",
    "idle",
    "scale",
    "ray",
    "cluster",
    "forward",
    "spill",
    "noisy",
    "batch",
    "rollback",
    "scaleout",
    "batching",
    "mme",
    "recent",
    "soak",
)
METHOD = (
    "",
    "How (each bench/ module's docstring has the details):",
    "- cold start: client-side, request sent -> response read, on a fresh TCP connection opened and a SigV4 "
    "signature computed before the timer starts; every endpoint at zero workers before each request; the "
    "naive runs interleaved with the zeroscale rounds.",
    "- overhead: pairs of requests, one through zeroscale (botocore's SigV4 signer, http.client keep-alive; "
    "signing timed apart and left out), one straight to the same worker's Unix socket; per pair zeroscale "
    "minus direct, then the percentiles of those differences. The "
    "raw-client rows use bench/loadgen.py at 1 connection with one pre-signed request; their 'idle CPUs "
    "polling' rows hold /dev/cpu_dma_latency at 0 (root only; a machine's setting, shown for reference: "
    "what of the overhead is the wake-ups of halted CPUs).",
    "- throughput and burst: pre-signed requests (SigV4 signatures are valid 15 minutes and zeroscale "
    "verifies every request in full), so the load generator is not the bottleneck.",
    "- a ratio is value / baseline value; a time figure's target applies to the value.",
)


@dataclass(frozen=True)
class Plan:
    cold_rounds: int
    naive_every: int  # one naive process per this many cold rounds
    zygote_rounds: int
    rf_requests: int
    echo_requests: int
    tp_duration_s: float
    tp_repeats: int
    burst_s: float
    idle_endpoints: int
    ray_rounds: int
    ray_requests: int
    cache_rounds: int = 15
    cache_endpoints: int = 30
    scale_sizes: tuple[int, ...] = (10, 1000, 10000)
    mme_models: int = 150
    mme_latency: int = 15
    mme_requests: int = 1500


FULL = Plan(15, 1, 10, 1000, 5000, 5.0, 2, 3.0, 1000, 5, 500, 15, 30)
QUICK = Plan(
    6, 1, 5, 300, 2000, 3.0, 1, 2.0, 1000, 3, 200, 6, 15,
    scale_sizes=(10, 1000), mme_models=100, mme_latency=6, mme_requests=500,
)  # fmt: skip
CACHE_CAP_MB = 100


@dataclass
class Run:
    plan: Plan
    root: Path
    bg: Background
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)  # extra markdown
    windows: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # name -> t0, t1, load1
    charts: dict[str, Callable[[Path], None]] = field(default_factory=dict)
    profile: bool = False
    cold: cold.ColdResult | None = None
    overhead: overhead.OverheadResult | None = None

    def scenario(self, name: str, fn: Callable[[], None]) -> None:
        print(f"== {name} ...", flush=True)
        t0 = time.monotonic()
        load = os.getloadavg()[0]
        try:
            fn()
        except Exception as exc:  # a failed scenario is reported, the others still run
            import traceback

            traceback.print_exc()
            self.notes.append(f"**{name} failed**: {type(exc).__name__}: {exc}")
        t1 = time.monotonic()
        self.windows[name] = (t0, t1, load)
        print(f"   {name}: {t1 - t0:.1f} s", flush=True)


# ---- scenarios ----
def run_cold_overhead_throughput(run: Run, models: Any, which: set[str]) -> None:
    plan = run.plan
    if "cold" in which:
        res = cold.ColdResult()
        run.cold = res
        run.scenario(
            "cold: zygote experiment",
            lambda: cold.zygote_experiment(models, run.root / "zyg", plan.zygote_rounds, res),
        )
        run.scenario(
            "cold: first-predict experiment",
            lambda: cold.first_predict_experiment(models, plan.zygote_rounds, res),
        )
    # the runtime also on the native data plane's port: the overhead and throughput rows measure both
    srv = ServerProcess(run.root / "a", {"native_port": free_port()}).start()
    try:
        if "cold" in which:
            assert run.cold is not None
            res = run.cold
            # The headline RandomForest and the trivial model on this server (the default warm-model
            # cache: a cold start forks the model's cached template); the probed models, whose worker
            # logs break a cold start down from the request to the model's load, on one with no cache (a
            # cold start forks the zygote's spare, which loads the model).
            nocache = ServerProcess(run.root / "nocache", {"warm_cache_mb": 0}).start()
            try:
                cold.deploy_cold(srv, models, ("rf", "echo"))
                cold.deploy_cold(nocache, models, ("probe", "echo"))

                def cold_rounds() -> None:
                    # naive runs interleaved with the measured rounds, so both see the same machine
                    for i in range(plan.cold_rounds):
                        cold.measure(srv, 1, res, ("rf", "echo"), {"echo": "echo-cached"})
                        cold.measure(nocache, 1, res, ("probe", "echo"))
                        if i % plan.naive_every == 0:
                            cold.naive(models, 1, res)
                    cold.collect_probes(nocache, res)

                run.scenario("cold", cold_rounds)
            finally:
                nocache.stop()
        if "overhead" in which:
            ores = overhead.OverheadResult()
            run.overhead = ores

            def do_overhead() -> None:
                overhead.deploy_warm(srv, models)
                requests = {"rf": plan.rf_requests, "echo": plan.echo_requests}
                overhead.measure(srv, requests, ores)
                overhead.measure(srv, requests, ores, native=True)

            run.scenario("overhead", do_overhead)
        if "throughput" in which:
            tres = throughput.ThroughputResult()

            def do_tp() -> None:
                throughput.deploy_tp(srv, models)
                throughput.measure(srv, plan.tp_duration_s, plan.tp_repeats, tres)
                if run.profile:
                    tres.profile = throughput.profile_server(srv, plan.tp_duration_s)

            run.scenario("throughput", do_tp)
            rows_throughput(run, tres)
    finally:
        srv.stop()
    if run.cold is not None:
        rows_cold(run, run.cold, models)
    if run.overhead is not None:
        rows_overhead(run, run.overhead)


def rows_cold(run: Run, res: cold.ColdResult, models: Any) -> None:
    if not res.latency_s.get("rf"):
        return
    rf, echo, probe = res.latency_s["rf"], res.latency_s["echo"], res.latency_s["probe"]
    echo_cached = res.latency_s.get("echo-cached", [])
    nrf, necho = res.naive_rf_s, res.naive_echo_s
    s = "cold start"
    ratio50 = pct(rf, 50) / pct(nrf, 50)
    run.rows += [
        Row(
            s,
            "cold start p50, RandomForest 100x10",
            ms(pct(rf, 50)),
            "ms",
            "naive: fresh process p50",
            ms(pct(nrf, 50)),
            "ratio <= 1/40",
            ratio50 <= 1 / 40,
        ),
        Row(
            s,
            "cold start p90, RandomForest",
            ms(pct(rf, 90)),
            "ms",
            "naive: fresh process p90",
            ms(pct(nrf, 90)),
        ),
        Row(
            s,
            "cold start p50, RandomForest + timestamp probe, no warm-model cache (zygote's spare + load)",
            ms(pct(probe, 50)),
            "ms",
            "plain RandomForest p50 (cached template)",
            ms(pct(rf, 50)),
        ),
        Row(
            s,
            "cold start p50, trivial model (transform_fn echo), no warm-model cache",
            ms(pct(echo, 50)),
            "ms",
            "naive: fresh process p50",
            ms(pct(necho, 50)),
            "<= 20 ms",
            ms(pct(echo, 50)) <= 20,
        ),
        Row(
            s,
            "cold start p90, trivial model, no warm-model cache",
            ms(pct(echo, 90)),
            "ms",
            "naive: fresh process p90",
            ms(pct(necho, 90)),
        ),
        *(
            [
                Row(
                    s,
                    "cold start p50, trivial model, cached template (its inference.py loaded there)",
                    ms(pct(echo_cached, 50)),
                    "ms",
                    "the same, no warm-model cache",
                    ms(pct(echo, 50)),
                )
            ]
            if echo_cached
            else []
        ),
    ]
    set_cold_chart(run)
    text, bars = breakdown.section(res, models)
    run.sections.append(text)
    if bars:
        run.charts["cold_breakdown.png"] = lambda p: chart_breakdown(p, bars)


def _ray_cold(run: Run) -> list[float]:
    data = getattr(run, "_ray", None)
    return list(data.get("cold_s", [])) if isinstance(data, dict) else []


def rows_overhead(run: Run, res: overhead.OverheadResult) -> None:
    s = "overhead"
    for model, label in (
        ("rf", "RandomForest"),
        ("echo", "trivial model"),
        ("rf-native", "RandomForest, native port"),
        ("echo-native", "trivial model, native port"),
    ):
        through, direct = res.through_s.get(model), res.direct_s.get(model)
        if not through or not direct:
            continue
        overhead_s = res.overhead_s(model)
        o50, o99 = ms(pct(overhead_s, 50)), ms(pct(overhead_s, 99))
        run.rows += [
            Row(
                s,
                f"{label}: p50 of (via zeroscale - direct) per pair (client signing excluded)",
                o50,
                "ms",
                "direct to the worker p50",
                ms(pct(direct, 50)),
                "<= 0.2 ms",
                o50 <= 0.2,
                ratio=pct(through, 50) / pct(direct, 50),
            ),
            Row(
                s,
                f"{label}: p99 of (via zeroscale - direct) per pair",
                o99,
                "ms",
                "direct to the worker p99",
                ms(pct(direct, 99)),
                "<= 1 ms",
                o99 <= 1.0,
                ratio=pct(through, 99) / pct(direct, 99),
            ),
        ]
    if res.sign_s:
        run.rows.append(
            Row(
                s,
                "client: SigV4 signing per request (botocore SigV4Auth) p50",
                ms(pct(res.sign_s, 50)),
                "ms",
                "its p99",
                ms(pct(res.sign_s, 99)),
            )
        )
        echo_t, echo_d = res.through_s.get("echo", []), res.direct_s.get("echo", [])
        if echo_t and echo_d:
            total = [a + b for a, b in zip(echo_t, res.sign_s[-len(echo_t) :], strict=True)]
            run.rows.append(
                Row(
                    s,
                    "trivial model: p50 of (via zeroscale incl. client signing - direct) per pair",
                    ms(pct(overhead.paired_overhead_s(total, echo_d), 50)),
                    "ms",
                    "direct p50",
                    ms(pct(echo_d, 50)),
                    ratio=pct(total, 50) / pct(echo_d, 50),
                )
            )
    run.charts["latency.png"] = lambda p: chart_latency(
        p,
        {
            f"warm {label}: through zeroscale vs direct to the worker": {
                "via zeroscale (excl. signing)": res.through_s.get(model, []),
                "direct (Unix socket)": res.direct_s.get(model, []),
            }
            for model, label in (("rf", "RandomForest"), ("echo", "trivial model"))
        },
    )


def rows_throughput(run: Run, res: throughput.ThroughputResult) -> None:
    s = "throughput"
    direct = res.median_rps("direct", 2)
    through = res.median_rps("zeroscale", 2)
    if direct and through:
        ok = through / direct >= 0.70
        run.rows.append(
            Row(s, "trivial model, MaxConcurrency 2: zeroscale, 2 clients", through, "req/s",
                "same 2 workers direct, 2 clients", direct, ">= 0.70 of direct", ok)
        )  # fmt: skip
    native = res.median_rps("zeroscale-native", 2)
    if direct and native:
        run.rows.append(
            Row(s, "trivial model, MaxConcurrency 2: zeroscale's native port, 2 clients", native, "req/s",
                "same 2 workers direct, 2 clients", direct, ">= 0.70 of direct", native / direct >= 0.70)
        )  # fmt: skip
    rf = throughput.RF_WORKERS
    extra = {
        ("zeroscale", 4): ("zeroscale, 4 clients (2 wait in zeroscale's queue)", "direct, 2 clients", direct),
        ("zeroscale-native", 4): ("zeroscale's native port, 4 clients (2 wait in the plane for its workers)",
                                  "direct, 2 clients", direct),
        ("zeroscale-wrk", 2): ("zeroscale, 2 clients, wrk -t1 as load generator", "direct, 2 clients",
                               direct),
        ("floor-proxy", 2): ("floor: bare uvicorn proxy to the same workers (bench/floor.py)",
                             "direct, 2 clients", direct),
        ("floor-noop", 2): ("floor: bare uvicorn app answering itself (no hop)", "direct, 2 clients", direct),
        ("rf-zeroscale", rf): (f"RandomForest, MaxConcurrency {rf} (one per core): zeroscale, {rf} clients",
                               f"same {rf} workers direct", res.median_rps("rf-direct", rf)),
        ("rf-zeroscale-native", rf): (f"RandomForest, MaxConcurrency {rf}: zeroscale's native port, {rf} "
                                      "clients", f"same {rf} workers direct",
                                      res.median_rps("rf-direct", rf)),
    }  # fmt: skip
    for r in res.runs:
        if (r.label, r.connections) in extra:
            figure, base, value = extra[(r.label, r.connections)]
            if r.label.startswith("rf-zeroscale") and value:  # a realistic model: the workers' time dominates
                run.rows.append(Row(s, figure, r.rps, "req/s", base, value, ">= 0.90 of direct",
                                    r.rps / value >= 0.90))  # fmt: skip
            else:
                run.rows.append(Row(s, figure, r.rps, "req/s", base, value))
    one = {r.label: r for r in res.runs if r.connections == 1}
    if "direct" in one and "zeroscale" in one:
        d = one["direct"].p50_s
        run.rows.append(
            Row("overhead", "trivial model, raw client (pre-signed, 1 connection): p50 zeroscale - direct",
                ms(one["zeroscale"].p50_s - d), "ms", "direct p50, same client", ms(d), "<= 0.2 ms",
                ms(one["zeroscale"].p50_s - d) <= 0.2, ratio=one["zeroscale"].p50_s / d)
        )  # fmt: skip
        if "zeroscale-native" in one:
            late = one["zeroscale-native"].p50_s
            run.rows.append(
                Row("overhead", "trivial model, raw client, native port: p50 zeroscale - direct",
                    ms(late - d), "ms", "direct p50, same client", ms(d), "<= 0.2 ms", ms(late - d) <= 0.2,
                    ratio=late / d)
            )  # fmt: skip
        if "floor-proxy" in one:
            run.rows.append(
                Row("overhead", "floor: bare uvicorn proxy, same client: p50 - direct p50",
                    ms(one["floor-proxy"].p50_s - d), "ms", "direct p50, same client", ms(d),
                    ratio=one["floor-proxy"].p50_s / d)
            )  # fmt: skip
    if "direct-polled" in one and "zeroscale-polled" in one:  # a machine's setting: no target
        d = one["direct-polled"].p50_s
        for label, figure in (
            ("zeroscale-polled", "trivial model, raw client, idle CPUs polling (reference): p50 - direct"),
            ("floor-proxy-polled", "floor: bare uvicorn proxy, idle CPUs polling: p50 - direct p50"),
        ):
            if label in one:
                run.rows.append(
                    Row("overhead", figure, ms(one[label].p50_s - d), "ms",
                        "direct p50, same client, polling", ms(d), ratio=one[label].p50_s / d)
                )  # fmt: skip
    lines = [
        "## Throughput runs",
        "",
        "All runs use bench/loadgen.py (closed loop, pre-built requests) except zeroscale-wrk. CPU is cores'",
        "worth over the run (CPU seconds / wall seconds): server = the zeroscale process (for floor-* runs:",
        "the bench/floor.py processes); workers = zygotes and workers; client = the load generator; others =",
        "every other process on the machine. The 1-client runs are latency runs (p50 is their figure).",
        "",
        "| run | clients | req/s | p50 | p99 | errors | server | workers | client | others "
        "| server CPU per request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res.runs:
        w = r.cpu.wall_s or 1.0
        g = r.cpu.groups_s
        per_req = g.get("server", 0.0) / (r.rps * w) * 1e6 if r.rps else math.nan
        lines.append(
            f"| {r.label} | {r.connections} | {r.rps:,.0f} | {ms(r.p50_s):.3f} ms | {ms(r.p99_s):.3f} ms | "
            f"{r.errors} | {g.get('server', 0) / w:.2f} | {g.get('workers', 0) / w:.2f} | "
            f"{g.get('client', 0) / w:.2f} | {r.cpu.others_cores:.2f} | {per_req:.0f} us |"
        )
    lines += [f"- {n}" for n in res.notes]
    prof = res.profile
    if prof.get("groups"):
        zs = [r for r in res.runs if r.label == "zeroscale" and r.connections == 2]
        costs = sorted(r.cpu.groups_s.get("server", 0.0) / (r.rps * r.cpu.wall_s) for r in zs if r.rps)
        us = costs[len(costs) // 2] * 1e6 if costs else math.nan
        lines += [
            "",
            "### Where the server's CPU goes (py-spy, trivial model, 2 clients)",
            "",
            f"{prof['samples']} samples at 200 Hz of the server process while bench/loadgen.py drove it at "
            f"{prof['load']['rps']:,.0f} req/s (the profiler slows it). Shares are inclusive (a function and "
            "what it calls); the per-request column applies each share to the "
            f"{us:.0f} us of server CPU per request measured above without the profiler (an estimate).",
            "",
            "| where | share of server samples | ~us per request |",
            "|---|---:|---:|",
            *(f"| {label} | {share * 100:.1f}% | {share * us:.0f} |" for label, share in prof["groups"]),
        ]
        unmatched = [label.strip() for label, share in prof["groups"] if not share]
        if unmatched:  # every group names a function on the invoke path: none is ever idle
            lines.append(
                f"- no sample matched {', '.join(unmatched)}: the function named there is no longer on the "
                "invoke path (renamed or moved): update bench/throughput.py PROFILE_GROUPS"
            )
    elif prof.get("error"):
        lines.append(f"- profile not taken: {prof['error']}")
    run.sections.append("\n".join(lines))


def run_cache(run: Run, models: Any) -> None:
    res = warmcache.CacheResult()
    hit = ServerProcess(run.root / "cache-hit", {}).start()
    miss = ServerProcess(run.root / "cache-miss", {"warm_cache_mb": 0}).start()
    try:
        warmcache.deploy_rf(hit, models)
        warmcache.deploy_rf(miss, models)
        run.scenario("cache: hit vs miss", lambda: warmcache.measure(hit, miss, run.plan.cache_rounds, res))
    finally:
        hit.stop()
        miss.stop()
    capped = ServerProcess(run.root / "cache-cap", {"warm_cache_mb": CACHE_CAP_MB}).start()
    try:
        run.scenario(
            f"cache: cap with {run.plan.cache_endpoints} endpoints",
            lambda: warmcache.measure_cap(
                capped, models, run.root, run.plan.cache_endpoints, CACHE_CAP_MB, res
            ),
        )
    finally:
        capped.stop()
    s = "cold start"
    if res.cold_s.get("hit") and res.cold_s.get("miss"):
        hit_pen = ms(pct(res.cold_s["hit"], 50) - pct(res.warm_s["hit"], 50))
        miss_pen = ms(pct(res.cold_s["miss"], 50) - pct(res.warm_s["miss"], 50))
        run.rows += [
            Row(
                s,
                "RandomForest cold start from a cached template: p50",
                ms(pct(res.cold_s["hit"], 50)),
                "ms",
                "same model, no warm cache (zygote fork + load)",
                ms(pct(res.cold_s["miss"], 50)),
            ),
            Row(
                s,
                "cold-start penalty, cached template (cold p50 - warm p50)",
                hit_pen,
                "ms",
                "warm p50",
                ms(pct(res.warm_s["hit"], 50)),
                "<= 15 ms",
                hit_pen <= 15,
                ratio=math.nan,
            ),
            Row(
                s,
                "cold-start penalty, model in no cache (cold p50 - warm p50)",
                miss_pen,
                "ms",
                "warm p50",
                ms(pct(res.warm_s["miss"], 50)),
                "<= 40 ms",
                miss_pen <= 40,
                ratio=math.nan,
            ),
            Row(
                s,
                "cold starts that forked a cached template",
                res.hits,
                "",
                "cold starts measured",
                float(len(res.cold_s["hit"])),
                f"= {len(res.cold_s['hit'])}",
                res.hits == len(res.cold_s["hit"]),
            ),
        ]
    if res.endpoints:
        run.rows.append(
            Row(
                "idle",
                f"warm cache with {res.endpoints} endpoints at zero: MB held",
                res.cached_bytes / 2**20,
                "MB",
                "cap (--warm-cache-mb)",
                float(res.cap_mb),
                f"<= {res.cap_mb} MB",
                res.cached_bytes <= res.cap_mb * 2**20,
            )
        )
        run.sections.append(
            "## Warm-model cache\n\n"
            f"{res.endpoints} endpoints, each its own copy of the RandomForest, invoked once and back at "
            f"zero under a {res.cap_mb} MB cap: {res.cached_entries:.0f} templates cached "
            f"({res.cached_bytes / 2**20:.1f} MB of private memory), {res.evictions:.0f} evicted for the "
            f"cap; the server's process tree: {res.processes} processes, {res.tree_rss_mb:.0f} MB resident "
            "(shared pages counted once per process)."
        )


def run_runtimes(run: Run) -> None:
    """Each built-in runtime's cold start (endpoint at zero, its zygote warm) and the penalty over a warm
    request right after it, same client (bench/runtimes.py): with the server's warm-model cache (a cold start
    forks the model's cached template) and without it (``--warm-cache-mb 0``: a zygote's spare loads the
    model, the target's "evicted from every cache" case)."""
    _runtime_penalties(run, "runtimes", None, "cold-start penalty", None)
    _runtime_penalties(run, "runtimes-no-cache", 0, "no-cache penalty", 40.0)


def _runtime_penalties(
    run: Run, scenario: str, cache_mb: int | None, label: str, target_ms: float | None
) -> None:
    rounds = 7 if run.plan is QUICK else 15
    out: list[dict[str, dict[str, Any]]] = []
    root = run.root / scenario
    root.mkdir()
    run.scenario(scenario, lambda: out.append(runtimes.run(root, list(runtimes.BUILDERS), rounds, cache_mb)))
    for name, r in (out[0] if out else {}).items():
        cold_p50, warm_p50 = ms(pct(r["cold"], 50)), ms(pct(r["warm"], 50))
        penalty = cold_p50 - warm_p50
        run.rows.append(
            Row(
                "cold start",
                f"{name}: {label} (cold p50 {cold_p50:.1f} ms - warm p50, {rounds} rounds)",
                penalty,
                "ms",
                "warm p50, same client",
                warm_p50,
                "" if target_ms is None else f"<= {target_ms:.0f} ms",
                None if target_ms is None else penalty <= target_ms,
                ratio=math.nan,
            )
        )


def run_realtime(run: Run, models: Any) -> None:
    res = realtime.RealtimeResult()
    srv = ServerProcess(run.root / "rt", {}).start()
    try:
        realtime.deploy_rt(srv, models)
        run.scenario(
            "realtime",
            lambda: realtime.measure(srv, run.plan.tp_duration_s, max(3, run.plan.tp_repeats), res),
        )
    finally:
        srv.stop()
    if not res.runs:
        return
    s = f"real-time ({realtime.INSTANCE_TYPE} x1)"
    label = "RandomForest 100x10, one row"
    d_rps, z_rps = res.median("direct", 2, "rps"), res.median("zeroscale", 2, "rps")
    run.rows.append(
        Row(s, f"{label}, 2 clients: zeroscale", z_rps, "req/s", "the same 2 workers direct", d_rps,
            ratio=z_rps / d_rps if d_rps else math.nan)
    )  # fmt: skip
    for conns in (1, 2):
        for q, attr in ((50, "p50_s"), (99, "p99_s")):
            d, z = res.median("direct", conns, attr), res.median("zeroscale", conns, attr)
            run.rows.append(
                Row(s, f"{label}, {conns} client{'s' if conns > 1 else ''}: p{q} via zeroscale", ms(z), "ms",
                    f"direct p{q}", ms(d), ratio=z / d if d else math.nan)
            )  # fmt: skip
    lines = [
        "## Real-time endpoint",
        "",
        f"One {realtime.INSTANCE_TYPE} instance (2 vCPUs: 2 always-warm workers), the reference "
        "RandomForest, bench/loadgen.py for both paths (pre-signed through zeroscale). Each run:",
        "",
        "| run | clients | req/s | p50 | p99 | errors |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {r.label} | {r.connections} | {r.rps:,.0f} | {ms(r.p50_s):.3f} ms | {ms(r.p99_s):.3f} ms "
            f"| {r.errors} |"
            for r in res.runs
        ),
    ]
    run.sections.append("\n".join(lines))


def run_recent(run: Run) -> None:
    results: list[recent.RecentResult] = []
    hours = 3.05 if run.plan is QUICK else recent.HOURS
    run.scenario("recent", lambda: results.append(recent.run(recent.ENDPOINTS, hours)))
    if not results:
        return
    res = results[0]
    packed, old = res.stores["packed"], res.stores["one dict"]
    what = f"CloudWatch 10-s periods, {res.endpoints} busy endpoints, {res.hours:g} h"
    baseline = "one dict, scanned by each sample"
    run.rows += [
        Row("recent", f"{what}: memory held", packed.memory_mb, "MB", baseline, old.memory_mb),
        Row(
            "recent",
            f"{what}: a sample (each second, on the event loop), p50",
            ms(statistics.median(packed.sample_s)),
            "ms",
            baseline,
            ms(statistics.median(old.sample_s)),
            "<= 1 ms",
            ms(statistics.median(packed.sample_s)) <= 1,
        ),
        Row(
            "recent",
            f"{what}: the last sample (3 hours held)",
            ms(packed.sample_s[-1]),
            "ms",
            baseline,
            ms(old.sample_s[-1]),
            "<= 1 ms",
            ms(packed.sample_s[-1]) <= 1,
        ),
        Row(
            "recent",
            f"{what}: a 1-hour query of one metric",
            ms(packed.query_s),
            "ms",
            baseline,
            ms(old.query_s),
        ),
    ]


def run_mme(run: Run) -> None:
    plan = run.plan
    res = multimodel.MmeResult()
    prefix = multimodel.build(run.root, multimodel.names(plan.mme_models, plan.mme_latency))
    srv = ServerProcess(run.root / "mme", {"memory_budget_mb": multimodel.BUDGET_MB}).start()
    try:
        multimodel.deploy_mme(srv, prefix)
        run.scenario(
            "mme",
            lambda: multimodel.measure(srv, plan.mme_models, plan.mme_latency, plan.mme_requests, res),
        )
    finally:
        srv.stop()
    if not res.requests:
        return
    s = "multi-model"
    loaded_p50 = ms(pct(res.loaded_s, 50))
    run.rows += [
        Row(
            s,
            "first request, model never fetched, memory free (extract + fork + load): p50",
            ms(pct(res.first_s, 50)),
            "ms",
            "loaded p50",
            loaded_p50,
        ),
        Row(
            s,
            "first request, model unloaded, memory full (unload LRU + fork + load): p50",
            ms(pct(res.unloaded_s, 50)),
            "ms",
            "loaded p50",
            loaded_p50,
        ),
        Row(s, "request to a loaded model: p50", loaded_p50, "ms"),
        Row(
            s,
            f"cache-hit rate, Zipf s={multimodel.ZIPF_S:g} over {res.models} models, {res.capacity} fit",
            100 * res.hit_rate,
            "%",
            "LRU cache of the same size, same sequence",
            100 * res.lru_rate,
            ">= 0.98 x LRU",
            res.hit_rate >= 0.98 * res.lru_rate,
        ),
        Row(s, "  Belady's optimal cache (upper bound), same sequence", 100 * res.opt_rate, "%"),
        Row(
            s,
            "  hit rate vs a cache that evicts at random (the Ray Serve peer's policy)",
            100 * res.hit_rate,
            "%",
            "random eviction, same size and sequence",
            100 * res.random_rate,
        ),
        Row(
            s,
            "models loaded per GB of budget",
            res.loaded_models / (res.budget_mb / 1024),
            "",
            f"{res.model_mb} MB each in the budget",
            1024 / res.model_mb,
        ),
        Row(
            s,
            "models per GB, measured (private memory of the workers)",
            1024 / res.uss_per_model_mb if res.uss_per_model_mb > 0 else math.nan,
            "",
        ),
    ]
    run.sections.append(
        "## Multi-model endpoint\n\n"
        f"{res.models} RandomForests behind one serverless endpoint (Mode=MultiModel), host budget "
        f"{res.budget_mb} MB ({res.capacity} models of {res.model_mb} MB fit), {res.requests} sequential "
        f"requests drawn Zipf(s={multimodel.ZIPF_S:g}): hit rate {100 * res.hit_rate:.1f}% vs "
        f"{100 * res.lru_rate:.1f}% for an exact LRU cache, {100 * res.random_rate:.1f}% for random eviction "
        f"and {100 * res.opt_rate:.1f}% for Belady's optimum on the same sequence. "
        f"{res.loaded_models:.0f} models loaded at the end; each costs "
        f"{res.uss_per_model_mb:.1f} MB of private memory (USS of the server's tree, after minus before)."
    )


def run_burst(run: Run, models: Any) -> None:
    res = burst.BurstResult()
    srv = ServerProcess(run.root / "b", burst.SERVER_FLAGS).start()
    try:
        burst.deploy_burst(srv, models)
        run.scenario("burst", lambda: burst.measure(srv, run.plan.burst_s, res))
    finally:
        srv.stop()
    if not res.all_s:
        return
    s = "burst"
    total = sum(res.statuses.values())
    failed = total - res.statuses.get(200, 0) + len([e for e in res.errors if "Error" in e])
    run.rows += [
        Row(
            s,
            f"0 -> {burst.CLIENTS} clients: p99 of all {len(res.all_s)} requests",
            ms(pct(res.all_s, 99)),
            "ms",
            "p50",
            ms(pct(res.all_s, 50)),
            "<= 500 ms",
            ms(pct(res.all_s, 99)) <= 500,
        ),
        Row(
            s,
            f"first wave ({len(res.first_s)} requests, cold or queued): p99",
            ms(pct(res.first_s, 99)),
            "ms",
            "p50",
            ms(pct(res.first_s, 50)),
            "<= 1500 ms",
            ms(pct(res.first_s, 99)) <= 1500,
        ),
        Row(
            s,
            "requests failed or throttled",
            float(failed),
            "",
            "requests sent",
            float(total),
            "0",
            failed == 0,
        ),
        Row(
            s,
            "max workers (/metrics zeroscale_workers, sampled every 20 ms)",
            res.max_workers_metric,
            "",
            "max worker processes seen (psutil, 50 ms)",
            float(res.max_worker_procs),
            "<= 50",
            res.max_workers_metric <= burst.CLIENTS and res.max_worker_procs <= burst.CLIENTS,
        ),
    ]
    server_cpu = res.cpu.groups_s.get("server", 0.0) if res.cpu else math.nan
    run.sections.append(
        "## Burst\n\n"
        f"{burst.CLIENTS} asyncio clients on one thread, {run.plan.burst_s:g} s, {total} requests, statuses "
        f"{res.statuses}; peak resident set of all workers together {res.max_workers_rss_mb:.0f} MB; "
        f"client CPU {res.client_cpu_s:.2f} s, server CPU {server_cpu:.2f} s over "
        f"{res.duration_s:.2f} s."
        + (f" Errors: {res.errors[:3]}" if res.errors else "")
        + _little(res, total)
    )
    run.charts["burst.png"] = lambda p: chart_burst(p, res.worker_samples, res.all_s, burst.CLIENTS)


def _little(res: burst.BurstResult, total: int) -> str:
    """What the burst's throughput alone implies for its latency (Little's law: requests outstanding = rate x
    mean latency): with every client's request outstanding, no order of service makes the mean smaller."""
    if not res.duration_s or not total or not res.all_s:
        return ""
    n = burst.CLIENTS
    rate = total / res.duration_s
    implied, measured = ms(n / rate), ms(sum(res.all_s) / len(res.all_s))
    return (
        f" Throughput {rate:.0f} req/s: with all {n} clients' requests outstanding at that rate the mean "
        f"latency is {implied:.0f} ms, whatever the order they are served in (Little's law; the mean "
        f"measured is {measured:.0f} ms, fewer being outstanding while the clients start and finish), so a "
        f"p99 of 500 ms needs more than {n / 0.5:.0f} req/s sustained."
    )


def run_batch(run: Run) -> None:
    quick = run.plan is QUICK
    results: list[batch.BatchResult] = []

    def measure() -> None:
        rows, repeats = (50_000, 1) if quick else (200_000, 3)
        results.append(batch.run(run.root / "batch", rows=rows, files=2, payload_mb=6, repeats=repeats))

    run.scenario("batch", measure)
    if results:
        res = results[0]
        through, base = pct(res.zeroscale_rps, 50), pct(res.baseline_rps, 50)
        run.rows.append(
            Row(
                "batch",
                f"batch transform, RandomForest, MultiRecord, {res.records} records: records/s",
                through,
                "rec/s",
                "one process, same mini-batches",
                base,
                ">= 0.8",
                res.ratio >= 0.8,
                ratio=res.ratio,
            )
        )


def run_rollback(run: Run) -> None:
    results: list[rollback.RollbackResult] = []
    rounds = 3 if run.plan is QUICK else 15
    run.scenario("rollback", lambda: results.append(rollback.run(run.root / "rollback", rounds)))
    if not results:
        return
    res = results[0]
    guarded, manual = pct(res.guarded_s, 50) * 1000, pct(res.manual_s, 50) * 1000
    run.rows.append(
        Row(
            "rollback",
            f"canary rollback: alarm -> old fleet takes all traffic (p50 of {rounds})",
            guarded,
            "ms",
            "manual UpdateEndpoint back",
            manual,
            "<= 1000 ms",
            guarded <= 1000,
        )
    )
    slowest = max(res.guarded_s) * 1000  # a lost wake-up of the guard showed here only (one tick, 0.5 s)
    run.rows.append(
        Row(
            "rollback",
            f"canary rollback: alarm -> old fleet takes all traffic, the slowest of {rounds}",
            slowest,
            "ms",
            "its p50",
            guarded,
            "<= 100 ms",
            slowest <= 100,
        )
    )
    run.rows.append(
        Row(
            "rollback",
            f"canary rollback: alarm -> InService, new fleet drained (p50 of {rounds})",
            pct(res.in_service_s, 50) * 1000,
            "ms",
        )
    )


def run_batching(run: Run) -> None:
    results: list[batching.BatchingResult] = []
    duration, repeats = (3.0, 1) if run.plan is QUICK else (5.0, 3)
    run.scenario("batching", lambda: results.append(batching.run(run.root / "batching", duration, repeats)))
    if not results:
        return
    res = results[0]
    off, on = res.median(res.rps, batching.OFF), res.median(res.rps, batching.ON)
    run.rows.append(
        Row(
            "batching",
            f"RandomForest, {batching.CLIENTS} clients, MaxConcurrency 2: req/s with batching",
            on,
            "req/s",
            "batching off",
            off,
            ">= 1.5x",
            res.ratio >= 1.5,
        )
    )
    p50_off, p50_on = res.median(res.p50_s, batching.OFF) * 1000, res.median(res.p50_s, batching.ON) * 1000
    run.rows.append(
        Row(
            "batching",
            "RandomForest, 1 client: p50 with batching",
            p50_on,
            "ms",
            "batching off",
            p50_off,
            "<= 1.1x",
            res.latency_ratio <= 1.1,
        )
    )


def _run_module(run: Run, name: str, cmd: list[str], out: Path) -> dict[str, Any] | None:
    """Scenario ``name``: ``cmd`` in a process of its own (it writes JSON to ``out``); that JSON, or None
    when it wrote none (the failure is in the run's notes)."""

    def go() -> None:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=600)
        if proc.returncode != 0 and not out.exists():
            stderr = proc.stderr.decode(errors="replace")[-1500:]
            raise RuntimeError(f"the {name} scenario exited {proc.returncode}: {stderr}")

    run.scenario(name, go)
    if not out.exists():
        return None
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _run_rounds(
    run: Run, name: str, *, quick: tuple[int, float], full: tuple[int, float]
) -> dict[str, Any] | None:
    """``bench/<name>.py --rounds R --seconds S --out <json>`` (R, S: ``quick`` or ``full`` by the plan),
    through ``_run_module``."""
    rounds, seconds = quick if run.plan is QUICK else full
    out = run.root / f"{name}.json"
    cmd = [sys.executable, "-m", f"bench.{name}", "--rounds", str(rounds), "--seconds", str(seconds)]
    return _run_module(run, name, [*cmd, "--out", str(out)], out)


def run_forward(run: Run) -> None:
    """Two front ends on one database, one holding a MaxConcurrency 1 endpoint: what the other's forward
    costs, against the holder's own latency (``bench/forward.py``), over HTTP and HTTPS."""
    out = run.root / "forward.json"
    requests = 300 if run.plan is QUICK else 1000
    cmd = [sys.executable, "-m", "bench.forward", "--requests", str(requests), "--out", str(out)]
    data = _run_module(run, "forward", cmd, out)
    if data is None:
        return
    for protocol, r in data.items():
        run.rows.append(
            Row(
                "forwarding",
                f"forwarded invocation, {protocol.upper()}, p50",
                r["forwarded"]["p50_ms"],
                "ms",
                "the holder's own",
                r["direct"]["p50_ms"],
            )
        )


def run_spill(run: Run) -> None:
    """Two front ends on one database, MaxConcurrency 4 (a share of 2 each): a client that sticks to one gets
    all 4 at once (a round of four 0.5-s invocations against the model's own 0.5 s), and the round trips
    spilling wastes while every front end is saturated (``bench/spill.py``)."""
    data = _run_rounds(run, "spill", quick=(3, 4.0), full=(5, 10.0))
    if data is None:
        return
    rounds_s = sorted(data["sticky"]["round_wall_s"])
    median = rounds_s[len(rounds_s) // 2]
    run.rows.append(
        Row("spill-over", "a client on one of two front ends, 4 invocations at once (MaxConcurrency 4): "
            "round time p50", median * 1000, "ms", "the model's own time", 500.0, "<= 1.2x (all 4 at once)",
            median <= 0.6)
    )  # fmt: skip
    sat = data["saturated"]
    run.rows.append(
        Row("spill-over", "every front end saturated: spills refused per invocation",
            sat["refused_per_invocation"], "per invocation", "one round trip per invocation (no refusals' "
            "memory)", 1.0)
    )  # fmt: skip


def run_noisy(run: Run) -> None:
    """A 3072-MB RandomForest endpoint beside three 1024-MB endpoints spinning 8 threads each, with the cpu
    cgroups' weights and without (``bench/noisy.py``): the quiet endpoint's p50 beside them against alone."""
    data = _run_rounds(run, "noisy", quick=(2, 3.0), full=(3, 4.0))
    if data is None:
        return
    for side, target in (("weighted", "<= 1.2x (its weight: a core)"), ("unweighted", "")):
        f = data[side]
        ratio = f["beside_p50_ms"] / f["alone_p50_ms"]
        label = "the cpu cgroups' weights" if side == "weighted" else "no weights (--no-worker-cgroups)"
        run.rows.append(
            Row("noisy neighbour", f"RandomForest 3072 MB beside 3 x 1024 MB spinning 8 threads, {label}: "
                "p50",
                f["beside_p50_ms"], "ms", "the same alone", f["alone_p50_ms"], target,
                ratio <= 1.2 if target else None)
        )  # fmt: skip


def run_scaleout(run: Run) -> None:
    results: list[scaleout.ScaleOutResult] = []
    rounds = 3 if run.plan is QUICK else 7
    run.scenario("scaleout", lambda: results.append(scaleout.run(run.root / "scaleout", rounds)))
    if not results:
        return
    res = results[0]
    policy, direct = pct(res.policy_s, 50) * 1000, pct(res.direct_s, 50) * 1000
    run.rows.append(
        Row(
            "scale-out",
            f"real-time scale-out: policy decision -> new instance answers (p50 of {rounds})",
            policy,
            "ms",
            "UpdateEndpointWeightsAndCapacities directly",
            direct,
            ratio=policy / direct if direct else math.nan,
        )
    )


def run_soak(run: Run) -> None:
    results: list[soak.SoakResult] = []
    duration = 45.0 if run.plan is QUICK else 120.0
    run.scenario(
        "soak",
        lambda: results.append(soak.run(run.root / "soak", duration, probe_s=5.0, warmup_s=duration / 4)),
    )
    if not results:
        return
    res = results[0]
    first, last = res.samples[0], res.samples[-1]
    warm_start, warm_end = res.rss_after_warmup
    s = "soak"
    figure = f"soak ({duration:.0f} s at 80% of capacity, cold starts mixed in): errors"
    requests = f"of {res.requests} requests, {res.cold_starts:.0f} cold starts"
    run.rows += [
        Row(s, figure, float(len(res.errors)), "", requests, float(res.requests), "0", not res.errors),
        Row(s, f"soak: server RSS at the end ({100 * res.rss_growth:+.1f}% after warm-up)", warm_end, "MB",
            "first sample after warm-up", warm_start, "< 1.05 (5% growth)", res.rss_growth < 0.05),
        Row(s, "soak: server open fds at the end", float(last.fds), "", "at the start", float(first.fds)),
        Row(s, "soak: processes under the server once idle, less the warm cache's, after",
            float(res.processes_after - res.cached_after), "", "before",
            float(res.processes_before - res.cached_before), "no growth", res.grew <= 0),
    ]  # fmt: skip
    run.sections.append("## Soak\n\n" + "\n".join(f"- {line}" for line in soak.report(res)))


def run_idle(run: Run, models: Any) -> None:
    res = idle.IdleResult()
    # The default memory budget (physical memory) admits 23 concurrent 1 GB workers; CreateEndpoint's warm
    # worker fails with "Not enough memory" instead of waiting once that many are starting (see notes).
    # Strict zero (--warm-cache-mb 0): what scale to zero leaves without the cache; what the cache keeps (a
    # template per model, within its cap) is the cache scenario's row.
    srv = ServerProcess(run.root / "c", {"memory_budget_mb": 2_000_000, "warm_cache_mb": 0}).start()
    try:
        run.scenario("idle: endpoint at zero", lambda: idle.measure_zero(srv, models, res))
        run.scenario(
            f"idle: {run.plan.idle_endpoints} endpoints",
            lambda: idle.measure_many(srv, models, run.plan.idle_endpoints, res),
        )
    finally:
        srv.stop()
    s = "idle"
    if len(res.snapshots) == 3:
        before, live, zero = res.snapshots
        worker_pids = set(live.pids) - set(before.pids)
        held = zero.processes - before.processes
        run.rows += [
            Row(
                s,
                "processes held by an endpoint at zero (--warm-cache-mb 0)",
                float(held),
                "",
                "with its worker running",
                float(live.processes - before.processes),
                "0",
                held == 0 and not worker_pids & set(zero.pids),
            ),
            Row(
                s,
                "memory held at zero: process tree RSS at zero - before deploy",
                zero.tree_rss_mb - before.tree_rss_mb,
                "MB",
                "with its worker: tree RSS - before",
                live.tree_rss_mb - before.tree_rss_mb,
            ),
        ]
    if res.endpoints:
        run.rows.append(
            Row(
                s,
                f"server RSS with {res.endpoints} idle endpoints deployed",
                res.server_rss_mb,
                "MB",
                "same server, nothing deployed",
                res.server_rss_empty_mb,
                "< 200 MB",
                res.server_rss_mb < 200,
            )
        )
        run.rows.append(
            Row(s, f"server CPU while idle, {res.endpoints} endpoints at zero (reconcile loop, timers)",
                res.idle_cpu_many * 100, "% of a core", "same server, nothing deployed",
                res.idle_cpu_empty * 100)
        )  # fmt: skip
        per = (res.server_rss_mb - res.server_rss_empty_mb) / res.endpoints * 1024
        run.sections.append(
            "## Idle\n\n"
            + "\n".join(
                f"- {sn.label}: {sn.processes} processes, server RSS {sn.server_rss_mb:.1f} MB, "
                f"tree RSS {sn.tree_rss_mb:.1f} MB"
                for sn in res.snapshots
            )
            + f"\n- {res.endpoints} endpoints deployed from {idle.THREADS} threads in {res.deploy_s:.1f} s "
            f"({res.endpoints / res.deploy_s:.0f}/s), at zero workers {res.settle_s:.1f} s later: "
            f"{res.processes} processes, server RSS {res.server_rss_mb:.1f} MB "
            f"(about {per:.0f} KB per endpoint), "
            f"tree RSS {res.tree_rss_mb:.1f} MB (the rest is the zygote, shared by every endpoint)."
            + (f"\n- failures: {res.failed[:5]}" if res.failed else "")
        )


def run_scale(run: Run, models: Any) -> None:
    res = scale.ScaleResult()
    srv = ServerProcess(run.root / "scale", {"memory_budget_mb": 2_000_000}).start()
    ref = ServerProcess(run.root / "scale-ref").start()
    sizes = list(run.plan.scale_sizes)
    try:
        run.scenario(
            f"scale: {', '.join(map(str, sizes))} endpoints",
            lambda: scale.measure(srv, models, sizes, res, ref),
        )
    finally:
        srv.stop()
        ref.stop()
    run.rows += scale_rows(res)
    run.sections.append(scale_section(res))


def scale_rows(res: scale.ScaleResult) -> list[Row]:
    """Each size against the server with nothing deployed (CPU), or the reference server holding the smallest
    size's endpoints, called in turn with it (DescribeEndpoint, ListEndpoints, first cold starts)."""
    if not res.sizes:
        return []
    s = "scale"
    rows: list[Row] = []
    for r in res.sizes:
        n = f"{r.endpoints} endpoints"
        cpu_pp = (r.idle_cpu - res.empty_cpu) * 100
        rows += [
            Row(
                s,
                f"server idle CPU, {n} at zero (median of {len(r.idle_cpu_windows)} windows)",
                r.idle_cpu * 100,
                "% of a core",
                "same server, nothing deployed",
                res.empty_cpu * 100,
                "within 1 point",
                abs(cpu_pp) <= 1.0,
            ),
            Row(
                s,
                f"server RSS, {n}",
                r.rss_mb,
                "MB",
                "same server, nothing deployed",
                res.empty_rss_mb,
                "<= 300 MB at 10,000" if r.endpoints >= 10000 else "",
                r.rss_mb <= 300 if r.endpoints >= 10000 else None,
            ),
            Row(
                s,
                f"server RSS, {n}, after {scale.SCRAPES} more /metrics scrapes",
                r.rss_scraped_mb,
                "MB",
                "before them",
                r.rss_mb,
                "<= 300 MB at 10,000" if r.endpoints >= 10000 else "",
                r.rss_scraped_mb <= 300 if r.endpoints >= 10000 else None,
            ),
        ]
        alternating = f"same, a server with {res.ref_endpoints} endpoints, called in turn"
        compared = [
            ("DescribeEndpoint p50", r.describe_s, r.ref_describe_s, alternating),
            (f"ListEndpoints page ({scale.PAGE}) p50", r.list_page_s, r.ref_list_page_s, alternating),
        ]
        compared.append(
            (
                "first-invocation cold start p50",
                r.cold_s,
                r.ref_cold_s,
                f"same, on the server with {res.ref_endpoints} endpoints (endpoints new to it), in turn",
            )
        )
        for label, values, base, baseline in compared:
            v, b = statistics.median(values), statistics.median(base)
            rows.append(Row(s, f"{label}, {n}", ms(v), "ms", baseline, ms(b), "within 20%", v <= b * 1.2))
    for r in res.sizes:
        # A rate over a handful of deployments is their start-up (the runtime's zygote, the first deploy-time
        # check): the target applies to a thousand or more.
        sustained = r.endpoints >= 1000
        rows.append(
            Row(
                s,
                f"deploy rate to {r.endpoints} endpoints ({r.deployed_now} new, {scale.THREADS} clients)",
                r.deploy_rate,
                "endpoints/s",
                "",
                math.nan,
                ">= 200/s" if sustained else "",
                r.deploy_rate >= 200 if sustained else None,
            )
        )
    return rows  # fmt: skip


def scale_section(res: scale.ScaleResult) -> str:
    lines = ["## Scale: endpoints at zero", ""]
    lines.append(
        f"- nothing deployed: idle CPU windows {[round(c * 100, 2) for c in res.empty_cpu_windows]} % of a "
        f"core, RSS {res.empty_rss_mb:.0f} MB"
    )
    for r in res.sizes:
        lines.append(
            f"- {r.endpoints} endpoints: idle CPU windows "
            f"{[round(c * 100, 2) for c in r.idle_cpu_windows]} %, "
            f"RSS {r.rss_mb:.0f} MB, DescribeEndpoint p50 {ms(statistics.median(r.describe_s)):.2f} ms "
            f"(p90 {ms(pct(r.describe_s, 90)):.2f}), ListEndpoints page p50 "
            f"{ms(statistics.median(r.list_page_s)):.2f} ms over {len(r.list_page_s)} pages, "
            f"the reference server's ({res.ref_endpoints} endpoints, called in turn): DescribeEndpoint "
            f"p50 {ms(statistics.median(r.ref_describe_s)):.2f} ms, ListEndpoints page p50 "
            f"{ms(statistics.median(r.ref_list_page_s)):.2f} ms, "
            f"cold starts {[round(ms(c), 1) for c in r.cold_s]} ms "
            f"(the reference server's, in turn: {[round(ms(c), 1) for c in r.ref_cold_s]} ms), "
            f"{r.deployed_now} deployed in {r.deploy_s:.1f} s "
            f"({scale.deploy_cores(r)})" + (f", failures: {r.failed[:3]}" if r.failed else "")
        )
    return "\n".join(lines)


def run_ray(run: Run, models: Any) -> None:
    if importlib.util.find_spec("ray") is None:
        run.notes.append("Ray Serve peer not measured: ray is not installed (pip install -e '.[bench]').")
        return
    out = run.root / "ray.json"
    cmd = [
        "unshare",
        "--net",
        "bash",
        "-c",
        'ip link set lo up && exec "$@"',
        "bash",
        sys.executable,
        "-m",
        "bench.ray_peer",
        "--model",
        str(models.rf_joblib),
        "--rounds",
        str(run.plan.ray_rounds),
        "--requests",
        str(run.plan.ray_requests),
        "--out",
        str(out),
    ]

    data = _run_module(run, "ray", cmd, out)
    if data is None:
        return
    run._ray = data  # type: ignore[attr-defined]
    if not data.get("ok"):
        run.notes.append(f"Ray Serve peer failed part-way; timings {data.get('timings_s')}")
    s = f"peer: Ray Serve {data.get('ray_version', '')}"
    zs_cold = run.cold.latency_s.get("rf", []) if run.cold else []
    if data.get("cold_s"):
        ray_cold = data["cold_s"]
        run.rows.append(
            Row(
                s,
                "Ray Serve cold start p50 (min_replicas=0 -> first response via proxy)",
                ms(pct(ray_cold, 50)),
                "ms",
                "zeroscale RandomForest cold p50",
                ms(pct(zs_cold, 50)) if zs_cold else math.nan,
            )
        )
    if data.get("proxy_s"):
        proxy, handle, inproc = data["proxy_s"], data["handle_s"], data["inproc_s"]
        zs = run.overhead
        zs_o = ms(pct(zs.overhead_s("rf"), 50)) if zs and zs.through_s.get("rf") else math.nan
        run.rows += [
            Row(
                s,
                "Ray: HTTP proxy p50 - in-process predict p50 (same JSON work)",
                ms(pct(proxy, 50) - pct(inproc, 50)),
                "ms",
                "zeroscale overhead p50, RandomForest",
                zs_o,
            ),
            Row(
                s,
                "Ray: DeploymentHandle p50 - in-process p50",
                ms(pct(handle, 50) - pct(inproc, 50)),
                "ms",
                "in-process p50",
                ms(pct(inproc, 50)),
            ),
            Row(
                s,
                "Ray: HTTP proxy p99 - in-process p99",
                ms(pct(proxy, 99) - pct(inproc, 99)),
                "ms",
                "in-process p99",
                ms(pct(inproc, 99)),
            ),
        ]
    t = data.get("timings_s", {})
    run.sections.append(
        "## Peer: Ray Serve\n\n"
        f"Ray {data.get('ray_version')} in a private network namespace (`unshare --net`, lo up), "
        "`ray.init(num_cpus=2)`, "
        "HTTP proxy on 127.0.0.1:8000, access log off. Cold deployment: autoscaling min_replicas=0, max 1, "
        "initial 0, target_ongoing_requests 1, upscale_delay_s 0, downscale(_to_zero)_delay_s 1, metrics "
        "every "
        "0.1 s. Warm deployment: 1 fixed replica. "
        f"Ray start {t.get('ray_start', 0):.1f} s, deploy {t.get('deploy', 0):.1f} s, "
        f"total {t.get('total', 0):.1f} s; "
        f"cold starts {[round(ms(x)) for x in data.get('cold_s', [])]} ms; waiting for scale-to-zero took "
        f"{[round(x, 1) for x in data.get('scale_to_zero_wait_s', [])]} s; proxy p50 "
        f"{ms(pct(data.get('proxy_s', []), 50)):.2f} ms, "
        f"handle p50 {ms(pct(data.get('handle_s', []), 50)):.2f} ms, "
        f"in-process p50 {ms(pct(data.get('inproc_s', []), 50)):.2f} ms "
        "(the driver shares 2 cores with Ray's "
        "raylet, GCS, controller, proxy and two replicas)."
    )


def run_cluster(run: Run) -> None:
    if importlib.util.find_spec("ray") is None:
        run.notes.append("Workers on Ray not measured: ray is not installed (pip install -e '.[ray]').")
        return
    out = run.root / "cluster.json"
    cmd = [
        "unshare",
        "--net",
        "bash",
        "-c",
        'ip link set lo up && exec "$@"',
        "bash",
        sys.executable,
        "-m",
        "bench.cluster",
        "--rounds",
        str(run.plan.cold_rounds),
        "--requests",
        str(run.plan.rf_requests),
        "--fe-rounds",
        str(run.plan.tp_repeats + 1),
        "--fe-seconds",
        str(run.plan.tp_duration_s / 2),
        "--out",
        str(out),
    ]

    data = _run_module(run, "cluster", cmd, out)
    if data is None:
        return
    if not data.get("ok"):
        run.notes.append(f"Workers on Ray: the run failed part-way; timings {data.get('timings_s')}")
        return
    s = "workers on Ray"
    cold, warm = data["cold_s"], data["warm_s"]
    local_o = pct(warm["local"], 50)
    for name, q in (("cold start p50", 50), ("cold start p99", 99)):
        value, base = ms(pct(cold["ray"], q)), ms(pct(cold["local"], q))
        run.rows.append(
            Row(
                s,
                f"RandomForest {name}, worker on a Ray node",
                value,
                "ms",
                "same, on this machine",
                base,
                "<= 2x local",
                value <= 2 * base,
            )
        )
    for q in (50, 99):
        value, base = ms(pct(warm["ray"], q)), ms(pct(warm["local"], q))
        run.rows.append(
            Row(
                s,
                f"RandomForest warm request p{q}, worker on a Ray node",
                value,
                "ms",
                "same, on this machine",
                base,
                "<= 2x local",
                value <= 2 * base,
            )
        )
    run.rows.append(
        Row(
            s,
            "added by the node's agent and relay, p50",
            ms(pct(warm["ray"], 50) - local_o),
            "ms",
            "warm request p50 on this machine",
            ms(local_o),
        )
    )
    fe = data.get("frontends")
    if fe:
        one = sorted(r["rps"] for r in fe["one"])[len(fe["one"]) // 2]
        two = sorted(r["rps"] for r in fe["two"])[len(fe["two"]) // 2]
        errors = sum(int(r["errors"]) for side in ("one", "two") for r in fe[side])
        run.rows.append(
            Row(
                s,
                "echo requests/s, two front ends on one database (2 connections each, one worker each)",
                two,
                "req/s",
                "one front end (4 connections, two workers)",
                one,
                ">= one front end, no errors",
                two >= one and errors == 0,
            )
        )
    t = data.get("timings_s", {})
    run.sections.append(
        "## Workers on Ray\n\n"
        f"Ray {data.get('ray_version')}, two nodes on 127.0.0.1 in a private network namespace "
        "(`testing_ray.RayCluster`); the front end is a driver, not a node, so every worker runs under a "
        "node's agent and is reached over TCP through its relay. The nodes share this machine: the figures "
        "are the "
        "agent's and the relay's cost, not a network's. "
        f"Ray start {t.get('ray_start', 0):.1f} s, total {t.get('total', 0):.1f} s; cold starts on Ray "
        f"{[round(ms(x)) for x in cold['ray']]} ms, "
        f"on this machine {[round(ms(x)) for x in cold['local']]} ms."
        + (
            " Front ends: the trivial echo model at MaxConcurrency 2 (ProvisionedConcurrency 2), "
            "`bench/loadgen.py` with 4 connections, alternating blocks; requests/s through one front end "
            f"{[round(r['rps']) for r in fe['one']]}, through two on one PostgreSQL database "
            f"{[round(r['rps']) for r in fe['two']]} (the front ends, the nodes' agents and workers and the "
            "load generator share this machine's cores)."
            if fe
            else ""
        )
    )


# ---- output ----
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="fewer rounds and shorter runs (about 2-3 minutes)"
    )
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--skip", default="", help="comma-separated scenarios to leave out")
    parser.add_argument("--endpoints", type=int, default=0, help="idle endpoints to deploy (default 1000)")
    parser.add_argument(
        "--scale-sizes", default="", help="the scale scenario's endpoint counts (default 10,1000,10000)"
    )
    parser.add_argument(
        "--nice",
        type=int,
        default=-10 if os.geteuid() == 0 else 0,
        help="scheduling priority for the benchmark and everything it starts (default -10 as root), so other "
        "users of a shared machine disturb the measurements less; baselines run at the same priority",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds for other processes to use less than 0.3 cores",
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the py-spy profile of the server (on by default)"
    )
    args = parser.parse_args()
    if args.nice:
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    plan = QUICK if args.quick else FULL
    if args.endpoints:
        plan = Plan(**{**plan.__dict__, "idle_endpoints": args.endpoints})
    if args.scale_sizes:
        plan = Plan(**{**plan.__dict__, "scale_sizes": tuple(int(n) for n in args.scale_sizes.split(","))})
    which = set(args.only.split(",")) if args.only else set(SCENARIOS)
    which -= set(filter(None, args.skip.split(",")))
    unknown = which - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    partial = which != set(SCENARIOS) or bool(args.endpoints) or bool(args.scale_sizes)
    out_dir = RESULTS / "partial" if partial else RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    bg = Background()
    if args.wait_quiet:
        quiet = bg.wait_quiet(args.wait_quiet)
        print(f"others use {quiet:.2f} cores" + (" (waited in vain)" if quiet >= 0.3 else ""), flush=True)
    t_start = time.monotonic()
    wake = wakeup_cost()
    with tempfile.TemporaryDirectory(prefix="zeroscale-bench-") as tmp:
        root = Path(tmp)
        run = Run(plan, root, bg, profile=not args.no_profile)
        from bench.common import build_models

        models = build_models(root)
        if which & {"cold", "overhead", "throughput"}:
            run_cold_overhead_throughput(run, models, which)
        if "cache" in which:
            run_cache(run, models)
        if "runtimes" in which:
            run_runtimes(run)
        if "realtime" in which:
            run_realtime(run, models)
        if "burst" in which:
            run_burst(run, models)
        if "idle" in which:
            run_idle(run, models)
        if "scale" in which:
            run_scale(run, models)
        if "ray" in which:
            run_ray(run, models)
            set_cold_chart(run)  # Ray's cold starts next to ours
        if "cluster" in which:
            run_cluster(run)
        if "forward" in which:
            run_forward(run)
        if "spill" in which:
            run_spill(run)
        if "noisy" in which:
            run_noisy(run)
        if "batch" in which:
            run_batch(run)
        if "rollback" in which:
            run_rollback(run)
        if "scaleout" in which:
            run_scaleout(run)
        if "batching" in which:
            run_batching(run)
        if "mme" in which:
            run_mme(run)
        if "recent" in which:
            run_recent(run)
        if "soak" in which:
            run_soak(run)
    bg.stop()
    order = {
        "cold start": 0,
        "overhead": 1,
        "throughput": 2,
        "burst": 3,
        "idle": 4,
        "scale": 5,
        "multi-model": 6,
    }
    rows = sorted(run.rows, key=lambda r: order.get(r.section, 5))
    print()
    print(console_table(rows))
    for note in run.notes:
        print("NOTE:", note)
    md = [
        f"# zeroscale benchmarks ({'quick' if args.quick else 'full'} run, "
        f"{time.strftime('%Y-%m-%d %H:%M')})",
        "",
        "`make bench` (`python -m bench.run`). Every baseline is measured in the same run, on the same "
        "machine.",
        "",
        markdown_table(rows),
        "",
        *(f"- {n}" for n in run.notes),
        *METHOD,
        "",
        *(s + "\n" for s in run.sections),
        describe(run.plan, t_start, run.windows, run.bg, wake),
        "",
    ]
    for name, draw in run.charts.items():
        try:
            draw(out_dir / name)
            md.insert(-1, f"![{name}]({name})")
        except Exception as exc:
            print(f"chart {name} failed: {exc}", file=sys.stderr)
    (out_dir / "latest.md").write_text("\n".join(md) + "\n")
    print(f"\nwrote {out_dir / 'latest.md'} ({time.monotonic() - t_start:.0f} s)")


def set_cold_chart(run: Run) -> None:
    res = run.cold
    if res is None or not res.latency_s.get("rf"):
        return
    series = {
        "zeroscale RandomForest": res.latency_s["rf"],
        "zeroscale RF + probe (no cache)": res.latency_s["probe"],
        "zeroscale trivial (echo, no cache)": res.latency_s["echo"],
        "naive process, RandomForest": res.naive_rf_s,
        "naive process, trivial": res.naive_echo_s,
    }
    ray = _ray_cold(run)
    if ray:
        series["Ray Serve min_replicas=0, RF"] = ray
    run.charts["cold_start.png"] = lambda p: chart_cold(p, series)


if __name__ == "__main__":
    main()
