"""The cold-start breakdown: segments of a cold start from worker-log timestamps, the direct zygote
experiment and the first-predict experiment (bench/cold.py measures; this module lays it out)."""

from __future__ import annotations

import time

import joblib
import numpy as np

from bench.cold import ColdResult
from bench.common import Models, ms, pct

Bars = dict[str, list[tuple[str, float]]]


def _seg(records: list[dict[str, float]], a: str, b: str) -> list[float]:
    return [r[b] - r[a] for r in records if a in r and b in r]


def section(res: ColdResult, models: Models) -> tuple[str, Bars]:
    """The breakdown table (markdown) and the chart's bars."""
    model = joblib.load(models.rf_joblib)
    x = np.full((1, 10), 0.5)
    model.predict(x)
    warm_predict = []
    for _ in range(100):
        t = time.perf_counter()
        model.predict(x)
        warm_predict.append(time.perf_counter() - t)
    lines = [
        "## Cold-start breakdown",
        "",
        "Medians (ms) over the measured cold starts. **measured**: a difference of two CLOCK_MONOTONIC",
        "timestamps taken where the event happens (the client's timer; the model's inference.py printing",
        "into the worker log; the zygote's reply in the direct experiment; /metrics). **inferred**: a",
        "difference of medians from two different experiments.",
        "",
        "| segment | RandomForest (probe) | trivial (echo) | how |",
        "|---|---:|---:|---|",
    ]
    pr, ec = res.probes.get("probe", []), res.probes.get("echo", [])
    zp, ze = res.zygote.get("probe", []), res.zygote.get("echo", [])

    def row(label: str, a: list[float], b: list[float], how: str) -> None:
        def f(v: list[float]) -> str:
            return f"{ms(pct(v, 50)):.2f}" if v else "n/a"

        lines.append(f"| {label} | {f(a)} | {f(b)} | {how} |")

    row(
        "client: request sent -> response read (total)",
        _seg(pr, "send", "recv"),
        _seg(ec, "send", "recv"),
        "measured, client",
    )
    row(
        "1. request sent -> the worker runs the model's inference.py (SigV4, routing, fork request, fork, "
        "child set-up)",
        _seg(pr, "send", "import"),
        _seg(ec, "send", "import"),
        "measured: client -> worker log",
    )
    row(
        "2. inference.py imported -> model_fn called",
        _seg(pr, "import", "load0"),
        _seg(ec, "import", "load0"),
        "measured, worker log",
    )
    row(
        "3. model load (model_fn: the sklearn runtime's joblib reader)",
        _seg(pr, "load0", "load1"),
        _seg(ec, "load0", "load1"),
        "measured, worker log",
    )
    row(
        "4. model loaded -> request reaches predict (bind, listen, the ready byte, connect, forward, "
        "input decode)",
        _seg(pr, "load1", "predict0"),
        _seg(ec, "load1", "predict0"),
        "measured, worker log",
    )
    row(
        "5. first predict",
        _seg(pr, "predict0", "predict1"),
        _seg(ec, "predict0", "predict1"),
        "measured, worker log",
    )
    row(
        "6. prediction -> response read by the client (encode, relay)",
        _seg(pr, "predict1", "recv"),
        _seg(ec, "predict1", "recv"),
        "measured: worker log -> client",
    )
    row(
        "server: worker start -> first good /ping (zeroscale_model_setup_seconds)",
        res.setup_s.get("probe", []),
        res.setup_s.get("echo", []),
        "measured, /metrics histogram sum per cold start",
    )
    lines.append("| *direct zygote experiment (no server; socket polled every 1 ms)* | | | |")
    row(
        "zygote: fork request written -> zygote's 'forked' reply read (fork() in a "
        f"{res.zygote_rss_mb:.0f} MB parent)",
        _seg(zp, "request", "forked"),
        _seg(ze, "request", "forked"),
        "measured",
    )
    row(
        "zygote: fork request -> child runs inference.py",
        _seg(zp, "request", "import"),
        _seg(ze, "request", "import"),
        "measured",
    )
    row("zygote: model load", _seg(zp, "load0", "load1"), _seg(ze, "load0", "load1"), "measured")
    row(
        "zygote: model loaded -> socket answers /ping",
        _seg(zp, "load1", "ready"),
        _seg(ze, "load1", "ready"),
        "measured",
    )
    lines.append("| *inferred* | | | |")

    def diff(a: list[float], b: list[float]) -> list[float]:
        return [pct(a, 50) - pct(b, 50)] if a and b else []

    row(
        "server before the fork: request parse, SigV4, routing, fork request (1. minus zygote's request -> "
        "inference.py)",
        diff(_seg(pr, "send", "import"), _seg(zp, "request", "import")),
        diff(_seg(ec, "send", "import"), _seg(ze, "request", "import")),
        "inferred",
    )
    row(
        "readiness discovery + hand-off (4. minus zygote's loaded -> /ping): the ready byte (a spare's "
        "straight to the server), the server's connect and forward",
        diff(_seg(pr, "load1", "predict0"), _seg(zp, "load1", "ready")),
        diff(_seg(ec, "load1", "predict0"), _seg(ze, "load1", "ready")),
        "inferred",
    )
    row(
        "first-predict penalty (5. minus a warm predict of the same model in this process)",
        diff(_seg(pr, "predict0", "predict1"), warm_predict),
        [],
        "inferred",
    )
    fp = res.first_predict
    if fp:
        lines.append(
            "| *first-predict experiment (a fork of a process that preloaded the sklearn runtime)* | | | |"
        )
        for key, label in (
            ("as_is", "first predict after fork + model load (a fork of the zygote, no warm-up)"),
            ("spare", "the same after the runtime's warm (what a spare runs before it waits)"),
        ):
            runs = fp.get(key, [])
            faults = sorted(v[3] for v in runs if len(v) > 3)
            how = f"measured; its page faults p50 {faults[len(faults) // 2]}" if faults else "measured"
            row(label, [v[1] for v in runs], [], how)
        row("second predict (warm), for comparison", [v[2] for v in fp.get("as_is", [])], [], "measured")
        row(
            "importlib.metadata.entry_points() in a fresh fork (narwhals plugin discovery, reached from "
            "scikit-learn's input validation on the first call)",
            fp.get("entry_points_s", []),
            [],
            "measured",
        )
    bars: Bars = {}
    for label, recs in (("RandomForest (probe)", pr), ("trivial (echo)", ec)):
        if recs:
            bars[label] = [
                (
                    "request -> model code runs (server, fork, child set-up)",
                    ms(pct(_seg(recs, "send", "load0"), 50)),
                ),
                ("model load", ms(pct(_seg(recs, "load0", "load1"), 50))),
                (
                    "loaded -> request at model (ping poll, hand-off)",
                    ms(pct(_seg(recs, "load1", "predict0"), 50)),
                ),
                ("first predict", ms(pct(_seg(recs, "predict0", "predict1"), 50))),
                ("response -> client", ms(pct(_seg(recs, "predict1", "recv"), 50))),
            ]
    lines += [
        "",
        f"Cold starts matched to worker logs: RandomForest {len(pr)}, trivial {len(ec)}; zygote experiment: "
        f"{len(zp)} + {len(ze)} forks. A warm predict of the RandomForest in this process: p50 "
        f"{ms(pct(warm_predict, 50)):.2f} ms. Medians of segments do not add up exactly to the median total.",
    ]
    return "\n".join(lines), bars
