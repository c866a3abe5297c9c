"""The results table (figure, value, baseline, ratio, target, met?), bench/results/latest.md, the charts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ms, pct


@dataclass(frozen=True)
class Row:
    section: str
    figure: str
    value: float
    unit: str  # "ms", "req/s", "MB", "" (a count)
    baseline: str = ""
    baseline_value: float = math.nan
    target: str = ""
    met: bool | None = None  # None: no target (information)
    ratio: float = math.nan  # value / baseline_value unless given

    def ratio_text(self) -> str:
        r = self.ratio
        if math.isnan(r) and not math.isnan(self.baseline_value) and self.baseline_value:
            r = self.value / self.baseline_value
        if math.isnan(r):
            return ""
        return f"{r:.3f}" if abs(r) >= 0.1 else f"{r:.4f}"


def _num(value: float, unit: str) -> str:
    if math.isnan(value):
        return "n/a"
    if unit in ("", "count"):
        return f"{value:.0f}"
    if unit == "req/s":
        return f"{value:,.0f} req/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "% of a core":
        return f"{value:.1f}% of a core"
    if unit == "ms":
        return f"{value:.3f} ms" if abs(value) < 10 else f"{value:.1f} ms"
    return f"{value:g} {unit}"


def _met(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "**NO**")


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| figure | value | baseline | baseline value | ratio | target | met? |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    section = ""
    for r in rows:
        if r.section != section:
            section = r.section
            lines.append(f"| **{section}** | | | | | | |")
        base = _num(r.baseline_value, r.unit) if r.baseline else ""
        lines.append(
            f"| {r.figure} | {_num(r.value, r.unit)} | {r.baseline} | {base} | {r.ratio_text()} "
            f"| {r.target} | "
            f"{_met(r.met)} |"
        )
    return "\n".join(lines)


def console_table(rows: Sequence[Row]) -> str:
    head = ("figure", "value", "baseline", "base value", "ratio", "target", "met?")
    cells = [head]
    for r in rows:
        base = _num(r.baseline_value, r.unit) if r.baseline else ""
        cells.append(
            (
                f"[{r.section}] {r.figure}",
                _num(r.value, r.unit),
                r.baseline,
                base,
                r.ratio_text(),
                r.target,
                _met(r.met).replace("*", ""),
            )
        )
    widths = [min(60, max(len(c[i]) for c in cells)) for i in range(len(head))]
    out = []
    for i, c in enumerate(cells):
        out.append("  ".join(str(v)[:60].ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# ---- charts ----
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def chart_cold(path: Path, series: dict[str, list[float]]) -> None:
    """Cold-start latency distributions (seconds in, ms on a log axis)."""
    plt = _plt()
    names = [n for n, v in series.items() if v]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.4), dpi=80)
    data = [[ms(x) for x in series[n]] for n in names]
    ax.boxplot(data, vert=False, whis=(0, 100), widths=0.5)
    for i, values in enumerate(data, start=1):
        ax.scatter(values, [i] * len(values), s=10, alpha=0.6, color="tab:blue", zorder=3)
        ax.annotate(f"p50 {pct(values, 50):.0f} ms", (pct(values, 50), i + 0.3), fontsize=7, ha="center")
    ax.set_yticks(range(1, len(names) + 1), names, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("cold start: request sent -> response read (ms, log scale)")
    ax.set_title("Cold start (endpoint at zero workers -> first response) vs baselines", fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_breakdown(path: Path, bars: dict[str, list[tuple[str, float]]]) -> None:
    """Stacked horizontal bars: model -> [(segment, ms)]."""
    plt = _plt()
    colors = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]
    fig, ax = plt.subplots(figsize=(9, 1.0 * len(bars) + 1.6), dpi=80)
    labels = list(bars)
    seen: set[str] = set()
    for i, label in enumerate(labels):
        left = 0.0
        for j, (segment, value) in enumerate(bars[label]):
            ax.barh(
                i, value, left=left, color=colors[j % len(colors)], label=None if segment in seen else segment
            )
            if value > 2.5:
                ax.text(
                    left + value / 2, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color="white"
                )
            seen.add(segment)
            left += value
        ax.text(left + 0.5, i, f"{left:.1f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_xlabel("ms (medians of each segment over the measured cold starts)")
    ax.set_title("Cold-start breakdown (worker-log timestamps, CLOCK_MONOTONIC)", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_latency(path: Path, panels: dict[str, dict[str, list[float]]]) -> None:
    """CDFs of warm latency: panel title -> {series: seconds}."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.4), dpi=80)
    if len(panels) == 1:
        axes = [axes]
    for ax, (title, series) in zip(axes, panels.items(), strict=True):
        for name, values in series.items():
            if not values:
                continue
            xs = sorted(ms(v) for v in values)
            ys = [(i + 1) / len(xs) for i in range(len(xs))]
            ax.plot(xs, ys, label=f"{name} (p50 {pct(xs, 50):.3f}, p99 {pct(xs, 99):.3f})")
        ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("ms (log scale)")
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def chart_burst(path: Path, samples: list[tuple[float, float]], latencies: list[float], limit: int) -> None:
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2), dpi=80)
    if samples:
        a.step([t for t, _ in samples], [w for _, w in samples], where="post")
    a.axhline(limit, color="tab:red", linestyle="--", linewidth=1, label=f"MaxConcurrency {limit}")
    a.set_xlabel("s since the burst started")
    a.set_ylabel("zeroscale_workers (from /metrics)")
    a.set_title("Workers during the burst", fontsize=9)
    a.legend(fontsize=7)
    a.grid(alpha=0.3)
    if latencies:
        b.hist([ms(x) for x in latencies], bins=40)
    b.set_xlabel("request latency (ms)")
    b.set_ylabel("requests")
    b.set_title("Burst request latencies (all requests)", fontsize=9)
    b.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
