// Endpoints: list with status (refreshing while any is changing), create from a configuration.
import { listAll, sagemaker } from "../api.js";
import {
  TRANSITIONAL,
  breadcrumbs,
  errorBox,
  field,
  fmtTime,
  h,
  link,
  pageHeader,
  polling,
  section,
  showError,
  statusBadge,
  submitting,
  table,
} from "../dom.js";
import { navigate } from "../nav.js";

const REFRESH_MS = 1000;

function list() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading endpoints…"));
  const stop = polling(body, REFRESH_MS, async (stopped) => {
    const endpoints = await listAll("ListEndpoints", "Endpoints", { SortBy: "CreationTime", SortOrder: "Descending" });
    if (stopped()) return false;
    body.replaceChildren(
      table(
        [
          { label: "Name", value: (e) => link(`/console/endpoints/${encodeURIComponent(e.EndpointName)}`, e.EndpointName) },
          { label: "Status", value: (e) => statusBadge(e.EndpointStatus) },
          { label: "ARN", value: (e) => h("code", {}, e.EndpointArn), class: "wide" },
          { label: "Creation time", value: (e) => fmtTime(e.CreationTime) },
          { label: "Last updated", value: (e) => fmtTime(e.LastModifiedTime) },
        ],
        endpoints,
        { caption: `Endpoints (${endpoints.length})`, empty: "No endpoints yet." },
      ),
    );
    return endpoints.some((e) => TRANSITIONAL.has(e.EndpointStatus));
  });
  return {
    node: h(
      "div",
      {},
      pageHeader("Endpoints", link("/console/endpoints/create", "Create endpoint", { class: "button primary" })),
      body,
    ),
    cleanup: stop,
  };
}

function create() {
  const wanted = new URLSearchParams(location.search).get("config");
  const error = errorBox();
  const name = h("input", { required: true, maxlength: "63", spellcheck: "false" });
  const config = h("select", { required: true }, h("option", { value: "" }, "Loading…"));
  listAll("ListEndpointConfigs", "EndpointConfigs", { SortBy: "CreationTime", SortOrder: "Descending" })
    .then((configs) => {
      config.replaceChildren(
        ...(configs.length
          ? configs.map((c) => h("option", { value: c.EndpointConfigName }, c.EndpointConfigName))
          : [h("option", { value: "" }, "No endpoint configurations: create one first")]),
      );
      if (wanted && configs.some((c) => c.EndpointConfigName === wanted)) config.value = wanted;
    })
    .catch((err) => showError(error, err));
  const submit = h("button", { type: "submit", class: "primary" }, "Create endpoint");
  const form = h(
    "form",
    {
      class: "form",
      onsubmit: async (event) => {
        event.preventDefault();
        showError(error, null);
        const params = { EndpointName: name.value.trim(), EndpointConfigName: config.value };
        await submitting(submit, error, async () => {
          await sagemaker("CreateEndpoint", params);
          navigate(`/console/endpoints/${encodeURIComponent(params.EndpointName)}`);
        });
      },
    },
    error,
    section(
      "Endpoint",
      field("Endpoint name", name, "Up to 63 letters, digits and hyphens; unique in this server."),
      field("Endpoint configuration", config, "The production variants this endpoint serves."),
    ),
    h("div", { class: "actions" }, link("/console/endpoints", "Cancel", { class: "button secondary" }), submit),
  );
  return {
    node: h(
      "div",
      {},
      breadcrumbs(["/console/endpoints", "Endpoints"], [null, "Create endpoint"]),
      pageHeader("Create endpoint"),
      form,
    ),
  };
}

export const endpointPages = { list, create };
