// One endpoint's page: settings, update to another configuration, variants with live workers, a test
// panel, metrics charts, live logs, and this endpoint's usage and cost.
import { ApiError, invoke, listAll, load, rest, sagemaker } from "../api.js";
import { metricsPanel } from "../charts.js";
import {
  TRANSITIONAL,
  breadcrumbs,
  confirmDialog,
  details,
  errorBox,
  field,
  fmtNumber,
  fmtTime,
  h,
  link,
  pageHeader,
  section,
  showError,
  statusBadge,
  table,
} from "../dom.js";
import { logsPanel } from "../logs.js";
import { navigate } from "../nav.js";
import { asyncPanel } from "./asyncpanel.js";
import { costLine, usageColumns } from "./usage.js";

const FAST_MS = 1000;
const SLOW_MS = 5000;
const CONTENT_TYPES = ["application/json", "text/csv", "application/jsonlines", "text/libsvm", "application/x-npy"];

function variantsTable(desc, pools) {
  const byVariant = new Map();
  for (const p of pools) {
    const v = byVariant.get(p.VariantName) || { workers: 0, busy: 0, queued: 0, rss: [], memory: p.MemorySizeInMB };
    v.workers += p.Workers;
    v.busy += p.Busy;
    v.queued += p.Queued;
    v.rss.push(...p.WorkerMemoryMB.filter((x) => x > 0));
    if (!p.Draining) v.memory = p.MemorySizeInMB;
    byVariant.set(p.VariantName, v);
  }
  const rows = desc.ProductionVariants || [];
  return table(
    [
      { label: "Variant name", value: (v) => v.VariantName },
      { label: "Type", value: (v) => (v.CurrentServerlessConfig ? "Serverless" : "Instances") },
      {
        label: "Compute",
        value: (v) => {
          const sc = v.CurrentServerlessConfig;
          if (!sc) {
            const desired = v.DesiredInstanceCount;
            const of = desired !== undefined && desired !== v.CurrentInstanceCount ? ` of ${desired}` : "";
            return `${v.CurrentInstanceCount}${of} instance(s)`;
          }
          const pc = sc.ProvisionedConcurrency ? `, provisioned ${sc.ProvisionedConcurrency}` : "";
          return `${sc.MemorySizeInMB} MB, max concurrency ${sc.MaxConcurrency}${pc}`;
        },
      },
      { label: "Current weight", value: (v) => String(v.CurrentWeight), class: "num" },
      {
        label: "Workers",
        value: (v) => {
          const live = byVariant.get(v.VariantName);
          return h("span", { "data-workers": String(live ? live.workers : 0) }, live ? `${live.workers} (${live.busy} busy, ${live.queued} queued)` : "0");
        },
        class: "num",
      },
      {
        label: "Worker memory",
        value: (v) => {
          const live = byVariant.get(v.VariantName);
          if (!live || !live.rss.length) return "none running";
          const peak = Math.max(...live.rss);
          return `${fmtNumber(peak, 1)} MB peak of ${live.memory} MB (${fmtNumber((100 * peak) / live.memory, 1)}%)`;
        },
      },
      { label: "Image", value: (v) => h("code", {}, (v.DeployedImages || [])[0]?.SpecifiedImage || "") },
    ],
    rows,
    { empty: "No variant is serving yet." },
  );
}

function testPanel(endpointName, variantsOf, afterSend) {
  const body = h("textarea", { id: "test-body", rows: "5", spellcheck: "false" }, "[[0.9, 0.1, 0.2, 0.3]]");
  const contentType = h("input", { id: "test-content-type", list: "content-types", value: "application/json", spellcheck: "false" });
  const accept = h("input", { id: "test-accept", list: "content-types", value: "application/json", spellcheck: "false" });
  const variant = h("select", { id: "test-variant" }, h("option", { value: "" }, "By weight"));
  const send = h("button", { type: "submit", class: "primary" }, "Send request");
  const result = h("div", { class: "result", "aria-live": "polite", hidden: true });
  const form = h(
    "form",
    {
      class: "form test-form",
      onsubmit: async (event) => {
        event.preventDefault();
        send.disabled = true;
        result.hidden = false;
        result.replaceChildren(h("p", { class: "muted" }, "Sending…"));
        try {
          const r = await invoke(endpointName, body.value, contentType.value.trim(), accept.value.trim(), variant.value);
          result.replaceChildren(renderResult(r));
          afterSend();
        } catch (err) {
          result.replaceChildren(errorBox(err));
        } finally {
          send.disabled = false;
        }
      },
    },
    field("Request body", body, "Sent as is, as the body of InvokeEndpoint."),
    h(
      "div",
      { class: "row" },
      field("Content type", contentType),
      field("Accept", accept),
      field("Target variant", variant),
    ),
    h("datalist", { id: "content-types" }, CONTENT_TYPES.map((t) => h("option", { value: t }))),
    h("div", { class: "actions" }, send),
    result,
  );
  const setVariants = (names) => {
    const current = variant.value;
    variant.replaceChildren(h("option", { value: "" }, "By weight"), ...names.map((n) => h("option", { value: n }, n)));
    variant.value = names.includes(current) ? current : "";
  };
  variantsOf(setVariants);
  return form;
}

function renderResult(r) {
  const latency = [
    r.serverMs !== null ? `${fmtNumber(r.serverMs, 1)} ms on the server` : null,
    `${fmtNumber(r.roundTripMs, 1)} ms round trip`,
  ]
    .filter(Boolean)
    .join(", ");
  const head = h(
    "p",
    { class: `result-status ${r.ok ? "ok" : "bad"}`, "data-status": String(r.status) },
    h("strong", {}, `Status ${r.status}`),
    r.ok ? " OK" : ` ${r.errorType}`,
    h("span", { class: "latency", "data-testid": "latency" }, ` · Latency ${latency}`),
  );
  if (r.ok) {
    return h(
      "div",
      {},
      head,
      details([
        ["Invoked variant", r.variant],
        ["Content type", r.contentType],
        ["Request ID", r.requestId],
      ]),
      h("pre", { class: "answer", "aria-label": "Response body" }, r.body),
    );
  }
  let doc = {};
  try {
    doc = JSON.parse(r.body);
  } catch {
    doc = { Message: r.body };
  }
  return h(
    "div",
    { class: "alert alert-error", role: "alert" },
    head,
    details([
      ["Error", r.errorType],
      ["Message", doc.Message || doc.message],
      ["Original status code", doc.OriginalStatusCode !== undefined ? String(doc.OriginalStatusCode) : undefined],
      ["Original message", doc.OriginalMessage ? h("pre", { class: "answer" }, doc.OriginalMessage) : undefined],
      ["Log stream ARN", doc.LogStreamArn ? h("code", {}, doc.LogStreamArn) : undefined],
      ["Request ID", r.requestId],
    ]),
  );
}

function usagePanel(endpointName) {
  const box = h("div", {}, h("p", { class: "muted" }, "Loading usage…"));
  const refresh = async () => {
    try {
      const report = await rest("usage", { group_by: "variant" });
      const rows = report.rows.filter((r) => r.key.startsWith(`${endpointName}/`));
      const sum = (k) => rows.reduce((acc, r) => acc + Number(r[k]), 0);
      const totals = {
        key: "Total",
        invocations: sum("invocations"),
        errors: sum("errors"),
        cold_starts: sum("cold_starts"),
        billed_s: sum("billed_s").toFixed(3),
        free_s: sum("free_s").toFixed(3),
        charged_s: sum("charged_s").toFixed(3),
        setup_s: sum("setup_s").toFixed(3),
        bytes_in: sum("bytes_in"),
        bytes_out: sum("bytes_out"),
        provisioned_s: sum("provisioned_s").toFixed(1),
        duration_cost: sum("duration_cost"),
        data_cost: sum("data_cost"),
        provisioned_cost: sum("provisioned_cost"),
        cost: sum("cost"),
      };
      box.replaceChildren(
        h("p", { "data-testid": "endpoint-cost" }, `Cost so far: ${costLine(totals, report.currency)}`),
        table(
          usageColumns("Variant", report.currency),
          rows.map((r) => ({ ...r, key: r.key.slice(endpointName.length + 1) })).concat(rows.length > 1 ? [totals] : []),
          { empty: "No invocations metered yet." },
        ),
        h("p", { class: "hint" }, "Free tier and the whole account: ", link("/console/usage", "Usage and cost"), "."),
      );
    } catch (err) {
      box.replaceChildren(errorBox(err));
    }
  };
  refresh();
  return { node: box, refresh };
}

export function endpointPage(endpointName) {
  const error = errorBox();
  const status = h("span", {});
  const settings = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const variantsBox = h("div", {});
  const updateSelect = h("select", { id: "update-config" });
  const updateButton = h("button", { type: "submit", class: "primary" }, "Update endpoint");
  const updateError = errorBox();
  const del = h("button", { type: "button", class: "danger" }, "Delete");
  const variantListeners = [];
  let last = null;
  let pools = [];
  let timer = null;
  let stopped = false;
  let deleting = false;
  let configShown = null;
  const asyncView = asyncPanel(endpointName);
  const testSection = section("Test inference");
  const asyncSection = section("Asynchronous inference");
  asyncSection.hidden = true;

  // An asynchronous endpoint takes InvokeEndpointAsync only: its section replaces the test panel.
  const showMode = async (configName) => {
    if (configName === configShown) return;
    configShown = configName;
    let asyncConfig = null;
    try {
      const c = await sagemaker("DescribeEndpointConfig", { EndpointConfigName: configName });
      asyncConfig = c.AsyncInferenceConfig || null;
    } catch {
      asyncConfig = null; // the configuration was deleted since: keep the test panel
    }
    if (stopped || configName !== configShown) return;
    asyncSection.hidden = !asyncConfig;
    testSection.hidden = Boolean(asyncConfig);
    // only one of the two forms is in the page, so their fields' labels stay unique
    if (asyncConfig) {
      asyncView.setConfig(asyncConfig);
      test.remove();
      asyncSection.append(asyncView.node);
    } else {
      asyncView.node.remove();
      testSection.append(test);
    }
  };

  const render = (desc) => {
    last = desc;
    showMode(desc.EndpointConfigName);
    status.replaceChildren(statusBadge(desc.EndpointStatus));
    settings.replaceChildren(
      details([
        ["Name", desc.EndpointName],
        ["ARN", h("code", {}, desc.EndpointArn)],
        ["Status", statusBadge(desc.EndpointStatus)],
        [
          "Endpoint configuration",
          link(`/console/endpoint-configs/${encodeURIComponent(desc.EndpointConfigName)}`, desc.EndpointConfigName, {
            "data-testid": "current-config",
          }),
        ],
        ["Creation time", fmtTime(desc.CreationTime)],
        ["Last updated", fmtTime(desc.LastModifiedTime)],
        ["Failure reason", desc.FailureReason ? h("pre", { class: "failure" }, desc.FailureReason) : undefined],
        ["URL", h("code", {}, `${location.origin}/endpoints/${desc.EndpointName}/invocations`)],
      ]),
    );
    variantsBox.replaceChildren(variantsTable(desc, pools));
    updateButton.disabled = desc.EndpointStatus !== "InService";
    for (const listener of variantListeners) listener((desc.ProductionVariants || []).map((v) => v.VariantName));
  };

  const poll = async () => {
    clearTimeout(timer);
    try {
      const [desc, live] = await Promise.all([
        sagemaker("DescribeEndpoint", { EndpointName: endpointName }),
        load(endpointName).catch(() => ({ Pools: [] })),
      ]);
      if (stopped) return;
      pools = live.Pools || [];
      render(desc);
      showError(error, null);
      timer = setTimeout(poll, TRANSITIONAL.has(desc.EndpointStatus) ? FAST_MS : SLOW_MS);
    } catch (err) {
      if (stopped) return;
      const gone = err instanceof ApiError && err.code === "ValidationException" && /Could not find endpoint/.test(err.message);
      if (gone && (deleting || (last && last.EndpointStatus === "Deleting"))) {
        navigate("/console/endpoints", { replace: true });
        return;
      }
      showError(error, err);
      timer = setTimeout(poll, SLOW_MS);
    }
  };

  const loadConfigs = async () => {
    try {
      const configs = await listAll("ListEndpointConfigs", "EndpointConfigs", { SortBy: "CreationTime", SortOrder: "Descending" });
      updateSelect.replaceChildren(...configs.map((c) => h("option", { value: c.EndpointConfigName }, c.EndpointConfigName)));
    } catch (err) {
      showError(updateError, err);
    }
  };

  const updateForm = h(
    "form",
    {
      class: "toolbar",
      onsubmit: async (event) => {
        event.preventDefault();
        showError(updateError, null);
        if (last && updateSelect.value === last.EndpointConfigName) {
          showError(updateError, new Error("The endpoint already uses this configuration: choose another one."));
          return;
        }
        updateButton.disabled = true;
        try {
          await sagemaker("UpdateEndpoint", { EndpointName: endpointName, EndpointConfigName: updateSelect.value });
          poll();
        } catch (err) {
          showError(updateError, err);
          updateButton.disabled = false;
        }
      },
    },
    field("New endpoint configuration", updateSelect),
    updateButton,
  );

  del.addEventListener("click", async () => {
    if (!(await confirmDialog("Delete endpoint", `Delete endpoint ${endpointName}? Its workers stop and invocations fail.`, "Delete"))) return;
    try {
      await sagemaker("DeleteEndpoint", { EndpointName: endpointName });
      deleting = true;
      poll();
    } catch (err) {
      showError(error, err);
    }
  });

  const metrics = metricsPanel(endpointName);
  const logsView = logsPanel(endpointName);
  const usage = usagePanel(endpointName);
  const followUps = [];
  const test = testPanel(
    endpointName,
    (listener) => variantListeners.push(listener),
    () => {
      // The minute in memory answers at once; the usage ledger is written about once a second.
      followUps.push(setTimeout(metrics.refresh, 250), setTimeout(usage.refresh, 1500));
    },
  );
  testSection.append(test);
  poll();
  loadConfigs();
  const usageTimer = setInterval(usage.refresh, 15000);

  const node = h(
    "div",
    {},
    breadcrumbs(["/console/endpoints", "Endpoints"], [null, endpointName]),
    pageHeader(h("span", {}, endpointName, " ", status), del),
    error,
    section("Endpoint settings", settings),
    section(
      "Change endpoint configuration",
      h("p", { class: "hint" }, "Move the endpoint to another configuration, serverless or provisioned instances, in one step: the current one keeps serving until the new one is ready."),
      updateError,
      updateForm,
    ),
    section("Production variants", variantsBox),
    testSection,
    asyncSection,
    section("Metrics", metrics.node),
    section("Logs", logsView.node),
    section("Usage and cost", usage.node),
  );
  return {
    node,
    cleanup: () => {
      stopped = true;
      clearTimeout(timer);
      clearInterval(usageTimer);
      followUps.forEach(clearTimeout);
      metrics.cleanup();
      logsView.cleanup();
      asyncView.cleanup();
    },
  };
}
