// Usage and cost for the whole account: the report `zeroscale usage` prints (GET /zeroscale/v1/usage).
import { rest } from "../api.js";
import { details, errorBox, field, fmtNumber, h, pageHeader, section, showError, table } from "../dom.js";

const GROUPS = [
  ["endpoint", "Endpoint"],
  ["variant", "Variant"],
  ["day", "Day"],
  ["month", "Month"],
];

export function money(value, currency = "USD") {
  const n = Number(value);
  return `${n.toFixed(n !== 0 && Math.abs(n) < 0.01 ? 8 : 2)} ${currency}`;
}

function mb(bytes) {
  return fmtNumber(Number(bytes) / (1024 * 1024), 3);
}

function secs(value, digits = 3) {
  return fmtNumber(value, digits);
}

export function usageColumns(keyLabel, currency) {
  return [
    { label: keyLabel, value: (r) => r.key },
    { label: "Invocations", value: (r) => fmtNumber(r.invocations), class: "num" },
    { label: "Errors", value: (r) => fmtNumber(r.errors), class: "num" },
    { label: "Cold starts", value: (r) => fmtNumber(r.cold_starts), class: "num" },
    { label: "Billed s", value: (r) => secs(r.billed_s), class: "num" },
    { label: "Free tier s", value: (r) => secs(r.free_s), class: "num" },
    { label: "Charged s", value: (r) => secs(r.charged_s), class: "num" },
    { label: "Setup s", value: (r) => secs(r.setup_s), class: "num" },
    { label: "Data MB", value: (r) => mb(r.bytes_in + r.bytes_out), class: "num" },
    { label: "Provisioned s", value: (r) => secs(r.provisioned_s, 1), class: "num" },
    { label: `Cost (${currency})`, value: (r) => Number(r.cost).toFixed(8), class: "num nowrap" },
  ];
}

export function costLine(totals, currency) {
  return `duration ${money(totals.duration_cost, currency)} + data ${money(totals.data_cost, currency)} + provisioned ${money(
    totals.provisioned_cost,
    currency,
  )} = ${money(totals.cost, currency)}`;
}

function freeTier(report) {
  const ft = report.free_tier;
  if (!ft.months.length) {
    return h("p", {}, `The free tier (${fmtNumber(ft.seconds_per_month)} s of on-demand inference a month) starts with the first resource created.`);
  }
  return h(
    "div",
    {},
    h(
      "p",
      {},
      `${fmtNumber(ft.seconds_per_month)} seconds of on-demand inference duration free each month, until ${new Date(ft.ends_at).toLocaleDateString()}.`,
    ),
    ft.months.map((m) => {
      const used = Number(m.used_s);
      const allowance = Number(m.allowance_s);
      return h(
        "div",
        { class: "meter-row" },
        h("label", { for: `ft-${m.month}` }, m.month),
        h("meter", { id: `ft-${m.month}`, min: "0", max: String(allowance), value: String(used) }),
        h("span", {}, `${m.used_s} of ${fmtNumber(allowance)} s used, ${m.remaining_s} s left`),
      );
    }),
  );
}

export function usagePage() {
  const groupBy = h("select", {}, GROUPS.map(([v, label]) => h("option", { value: v }, label)));
  const start = h("input", { type: "date" });
  const end = h("input", { type: "date" });
  const error = errorBox();
  const body = h("div", {}, h("p", { class: "muted" }, "Loading the report…"));
  const load = async () => {
    showError(error, null);
    try {
      const report = await rest("usage", { group_by: groupBy.value, start: start.value, end: end.value });
      const currency = report.currency;
      const label = GROUPS.find(([v]) => v === report.group_by)[1];
      const total = { key: "Total", ...report.total };
      body.replaceChildren(
        section(
          "Summary",
          details([
            ["Total cost", h("strong", { "data-testid": "total-cost" }, money(report.total.cost, currency))],
            ["Breakdown", costLine(report.total, currency)],
            ["Invocations", fmtNumber(report.total.invocations)],
            ["Period", `${report.start ? new Date(report.start).toLocaleString() : "the beginning"} to ${new Date(report.end).toLocaleString()}`],
            [
              "Reconciled",
              report.reconciliation.reconciled
                ? `yes: the rows sum to the totals of ${report.reconciliation.raw_records} raw invocation records`
                : "NO: the rows do not sum to the raw records",
            ],
          ]),
        ),
        section("Free tier", freeTier(report)),
        section(
          `Usage by ${label.toLowerCase()}`,
          table(usageColumns(label, currency), [...report.rows, total], { caption: `Usage and cost by ${label.toLowerCase()}` }),
        ),
        section(
          "Prices",
          table(
            [
              { label: "Memory size", value: ([mbSize]) => `${mbSize} MB` },
              { label: `Duration per second (${currency})`, value: ([, p]) => p, class: "num" },
              { label: `Provisioned concurrency per second (${currency})`, value: ([mbSize]) => report.prices.provisioned_per_second?.[mbSize] ?? "", class: "num" },
            ],
            Object.entries(report.prices.duration_per_second || {}),
          ),
          h("p", { class: "hint" }, `Data processed: ${report.prices.data_per_gb} ${currency} per GB in and out.`),
        ),
      );
    } catch (err) {
      showError(error, err);
      body.replaceChildren();
    }
  };
  const form = h(
    "form",
    {
      class: "toolbar",
      onsubmit: (event) => {
        event.preventDefault();
        load();
      },
    },
    field("Group by", groupBy),
    field("Start date - optional", start),
    field("End date - optional", end),
    h("button", { type: "submit", class: "secondary" }, "Show report"),
  );
  load();
  return {
    node: h(
      "div",
      {},
      pageHeader("Usage and cost"),
      h("p", { class: "muted" }, "Every invocation is metered by the millisecond of inference duration at its memory size, plus data processed and provisioned concurrency. Idle endpoints cost nothing."),
      form,
      error,
      body,
    ),
  };
}
