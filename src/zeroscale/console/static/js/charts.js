// Charts of SageMaker's metrics from the one-minute history (GET /zeroscale/v1/metrics), drawn with uPlot.
import { rest } from "./api.js";
import { errorBox, fmtNumber, h, showError } from "./dom.js";

// What each chart shows: series of [metric, statistic, scale] aggregated over the chosen variants.
const CHARTS = [
  { id: "invocations", title: "Invocations", unit: "count", series: [["Invocations", "Sum", "Invocations"]], counts: true },
  {
    id: "errors",
    title: "Errors",
    unit: "count",
    series: [
      ["Invocation4XXErrors", "Sum", "4XX errors"],
      ["Invocation5XXErrors", "Sum", "5XX errors"],
    ],
    counts: true,
  },
  {
    id: "latency",
    title: "Model and overhead latency",
    unit: "ms",
    series: [
      ["ModelLatency", "Average", "Model latency (avg)"],
      ["ModelLatency", "Maximum", "Model latency (max)"],
      ["OverheadLatency", "Average", "Overhead latency (avg)"],
    ],
    scale: 1 / 1000,
  },
  { id: "coldstarts", title: "Cold starts", unit: "count", series: [["ModelSetupTime", "SampleCount", "Cold starts"]], counts: true },
  {
    id: "setup",
    title: "Model setup time",
    unit: "ms",
    series: [
      ["ModelSetupTime", "Average", "Setup time (avg)"],
      ["ModelSetupTime", "Maximum", "Setup time (max)"],
    ],
    scale: 1 / 1000,
  },
  {
    id: "concurrency",
    title: "Concurrency",
    unit: "%",
    series: [
      ["ServerlessConcurrentExecutionsUtilization", "Maximum", "Concurrent executions utilization (max)"],
      ["ServerlessProvisionedConcurrencyUtilization", "Maximum", "Provisioned concurrency utilization (max)"],
    ],
    scale: 100,
  },
  {
    id: "workers",
    title: "Workers and queue",
    unit: "count",
    series: [
      ["Workers", "Maximum", "Workers (max)"],
      ["QueueDepth", "Maximum", "Queued requests (max)"],
    ],
  },
  { id: "memory", title: "Memory utilization", unit: "%", series: [["MemoryUtilization", "Maximum", "Memory utilization (max)"]] },
];

const COLORS = ["#0972d3", "#d91515", "#037f0c", "#8456ce", "#e07700"];
export const RANGES = [
  ["15m", "Last 15 minutes", 15],
  ["1h", "Last hour", 60],
  ["3h", "Last 3 hours", 180],
  ["12h", "Last 12 hours", 720],
  ["24h", "Last 24 hours", 1440],
];

// Sum the statistics of every variant per (metric, minute); averages are recomputed from sums and counts.
function combine(datapoints) {
  const out = new Map();
  for (const p of datapoints) {
    const key = `${p.MetricName}|${p.Minute}`;
    const c = out.get(key);
    if (!c) out.set(key, { Sum: p.Sum, SampleCount: p.SampleCount, Minimum: p.Minimum, Maximum: p.Maximum });
    else {
      c.Sum += p.Sum;
      c.SampleCount += p.SampleCount;
      c.Minimum = Math.min(c.Minimum, p.Minimum);
      c.Maximum = Math.max(c.Maximum, p.Maximum);
    }
  }
  for (const c of out.values()) c.Average = c.SampleCount ? c.Sum / c.SampleCount : 0;
  return out;
}

export function metricsPanel(endpointName) {
  const range = h("select", { id: "metrics-range" }, RANGES.map(([v, label]) => h("option", { value: v, selected: v === "1h" }, label)));
  const error = errorBox();
  const updated = h("span", { class: "muted", role: "status" });
  const grid = h("div", { class: "charts" });
  const plots = new Map();
  const figures = new Map();
  for (const spec of CHARTS) {
    const summary = h("span", { class: "chart-summary" });
    const plotBox = h("div", { class: "plot" });
    const figure = h(
      "figure",
      { class: "chart", "data-chart": spec.id, role: "group", "aria-label": spec.title },
      h("figcaption", {}, h("span", {}, `${spec.title} (${spec.unit})`), summary),
      plotBox,
    );
    figures.set(spec.id, { figure, summary, plotBox });
    grid.append(figure);
  }
  let timer = null;
  let stopped = false;

  const draw = (spec, xs, ys) => {
    const { figure, summary, plotBox } = figures.get(spec.id);
    const total = ys.reduce((acc, series) => acc + series.reduce((a, v) => a + (v ?? 0), 0), 0);
    const points = ys.reduce((acc, series) => acc + series.filter((v) => v !== null).length, 0);
    figure.dataset.points = String(points);
    figure.dataset.total = String(total);
    if (spec.counts) summary.textContent = `total ${fmtNumber(total)}`;
    else {
      const peak = Math.max(0, ...ys.flat().filter((v) => v !== null));
      summary.textContent = points ? `peak ${fmtNumber(peak, spec.unit === "ms" ? 2 : 1)}` : "no data";
    }
    figure.setAttribute("aria-label", `${spec.title}: ${summary.textContent}`);
    const data = [xs, ...ys];
    const old = plots.get(spec.id);
    if (old) {
      old.setData(data);
      return;
    }
    const width = Math.max(280, plotBox.clientWidth || 380);
    const plot = new window.uPlot(
      {
        width,
        height: 170,
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.1 : 1] } },
        axes: [{ stroke: "#5f6b7a" }, { stroke: "#5f6b7a", size: 56 }],
        legend: { show: true, live: false },
        series: [
          {},
          ...spec.series.map(([, , label], i) => ({
            label,
            stroke: COLORS[i % COLORS.length],
            width: 2,
            points: { show: true, size: 4 },
            spanGaps: !spec.counts,
          })),
        ],
      },
      data,
      plotBox,
    );
    plots.set(spec.id, plot);
  };

  const refresh = async () => {
    clearTimeout(timer);
    try {
      const doc = await rest("metrics", { endpoint: endpointName, since: range.value });
      if (stopped) return;
      showError(error, null);
      const byKey = combine(doc.Datapoints || []);
      const minutes = RANGES.find(([v]) => v === range.value)[2];
      const last = Math.floor(Date.now() / 60000) * 60;
      const xs = [];
      for (let t = last - (minutes - 1) * 60; t <= last; t += 60) xs.push(t);
      for (const spec of CHARTS) {
        const ys = spec.series.map(([metric, stat]) =>
          xs.map((t) => {
            const c = byKey.get(`${metric}|${t}`);
            if (!c) return spec.counts ? 0 : null;
            return c[stat] * (spec.scale || 1);
          }),
        );
        draw(spec, xs, ys);
      }
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (err) {
      if (!stopped) showError(error, err);
    }
    if (!stopped) timer = setTimeout(refresh, 15000);
  };
  range.addEventListener("change", refresh);
  const refreshButton = h("button", { type: "button", class: "secondary small", onclick: refresh }, "Refresh");
  const resize = () => {
    for (const [id, plot] of plots) {
      const box = figures.get(id).plotBox;
      if (box.clientWidth) plot.setSize({ width: box.clientWidth, height: 170 });
    }
  };
  window.addEventListener("resize", resize);
  const node = h(
    "div",
    {},
    h(
      "div",
      { class: "toolbar" },
      h("label", { for: "metrics-range" }, "Time range"),
      range,
      refreshButton,
      updated,
    ),
    error,
    grid,
  );
  // uPlot needs the element in the document to measure it: start once mounted.
  queueMicrotask(() => requestAnimationFrame(refresh));
  return {
    node,
    refresh,
    cleanup: () => {
      stopped = true;
      clearTimeout(timer);
      window.removeEventListener("resize", resize);
      for (const plot of plots.values()) plot.destroy();
    },
  };
}
