// An asynchronous endpoint's requests: submit InvokeEndpointAsync from an S3 input location, the endpoint's
// latest requests (GET /zeroscale/v1/async?endpoint=NAME) and one request's status by InferenceId
// (GET /zeroscale/v1/async/<InferenceId>), refreshing while Queued or Running.
import { invokeAsync, rest } from "../api.js";
import { details, errorBox, field, fmtTime, h, showError, statusBadge, table } from "../dom.js";
import { asyncDetails } from "./configs.js";

const REFRESH_MS = 500;
const PENDING = new Set(["Queued", "Running"]);

function requestDetails(r) {
  return details([
    ["Inference ID", h("code", {}, r.InferenceId)],
    ["Status", statusBadge(r.Status)],
    ["Input location", r.InputLocation ? h("code", {}, r.InputLocation) : "inline, in the request"],
    ["Output location", r.Status === "Failed" ? undefined : h("code", {}, r.OutputLocation)],
    ["Failure location", r.Status === "Failed" ? h("code", {}, r.FailureLocation) : undefined],
    ["Failure reason", r.FailureReason ? h("pre", { class: "failure" }, r.FailureReason) : undefined],
    ["Creation time", fmtTime(r.CreationTime)],
    ["Start time", fmtTime(r.StartTime)],
    ["End time", fmtTime(r.EndTime)],
    ["Attempts", String(r.Attempts)],
  ]);
}

export function asyncPanel(endpointName) {
  let stopped = false;
  let listTimer = null;
  let lookupTimer = null;
  let config = null;

  const configBox = h("div", {});
  // submit
  const input = h("input", { required: true, spellcheck: "false", placeholder: "s3://bucket/key" });
  const contentType = h("input", { list: "async-content-types", value: "application/json", spellcheck: "false" });
  const accept = h("input", { list: "async-content-types", spellcheck: "false" });
  const inferenceId = h("input", { spellcheck: "false", maxlength: "64", placeholder: "a UUID" });
  const send = h("button", { type: "submit", class: "primary" }, "Submit async request");
  const submitError = errorBox();
  const submitted = h("div", { "aria-live": "polite" });
  // list and lookup
  const listBox = h("div", {}, h("p", { class: "muted" }, "Loading requests…"));
  const lookupId = h("input", { required: true, spellcheck: "false", maxlength: "64" });
  const lookupButton = h("button", { type: "submit" }, "Look up");
  const lookupError = errorBox();
  const lookupResult = h("div", { "aria-live": "polite", "data-testid": "async-request" });

  const refreshList = async () => {
    clearTimeout(listTimer);
    try {
      const doc = await rest("async", { endpoint: endpointName });
      if (stopped) return;
      const rows = doc.Requests || [];
      listBox.replaceChildren(
        table(
          [
            {
              label: "Inference ID",
              value: (r) => h("button", { type: "button", class: "link-button", onclick: () => lookUp(r.InferenceId) }, r.InferenceId),
            },
            { label: "Status", value: (r) => statusBadge(r.Status) },
            { label: "Creation time", value: (r) => fmtTime(r.CreationTime) },
            { label: "End time", value: (r) => fmtTime(r.EndTime) },
            { label: "Result", value: (r) => h("code", {}, r.Status === "Failed" ? r.FailureLocation : r.OutputLocation) },
          ],
          rows,
          { caption: `Latest requests (${rows.length})`, empty: "No asynchronous requests yet." },
        ),
      );
      if (rows.some((r) => PENDING.has(r.Status))) listTimer = setTimeout(refreshList, REFRESH_MS);
    } catch (err) {
      if (!stopped) listBox.replaceChildren(errorBox(err));
    }
  };

  const lookUp = async (id) => {
    clearTimeout(lookupTimer);
    if (id !== undefined) lookupId.value = id;
    const wanted = lookupId.value.trim();
    if (!wanted) return;
    showError(lookupError, null);
    try {
      const r = await rest(`async/${encodeURIComponent(wanted)}`);
      if (stopped || wanted !== lookupId.value.trim()) return;
      lookupResult.replaceChildren(requestDetails(r));
      if (PENDING.has(r.Status)) lookupTimer = setTimeout(() => lookUp(), REFRESH_MS);
    } catch (err) {
      lookupResult.replaceChildren();
      showError(lookupError, err);
    }
  };

  const submitForm = h(
    "form",
    {
      class: "form",
      onsubmit: async (event) => {
        event.preventDefault();
        showError(submitError, null);
        send.disabled = true;
        try {
          const r = await invokeAsync(endpointName, {
            inputLocation: input.value.trim(),
            contentType: contentType.value.trim(),
            accept: accept.value.trim(),
            inferenceId: inferenceId.value.trim(),
          });
          submitted.replaceChildren(
            h("p", { role: "status" }, "Accepted: ", h("code", { "data-testid": "inference-id" }, r.InferenceId)),
            details([["Output location", h("code", {}, r.OutputLocation)], ["Failure location", h("code", {}, r.FailureLocation)]]),
          );
          refreshList();
          lookUp(r.InferenceId);
        } catch (err) {
          showError(submitError, err);
        } finally {
          send.disabled = false;
        }
      },
    },
    submitError,
    field("Input location", input, "The S3 object whose content is the request body (InvokeEndpointAsync's InputLocation)."),
    h(
      "div",
      { class: "row" },
      field("Content type", contentType),
      field("Accept - optional", accept),
      field("Inference ID - optional", inferenceId),
    ),
    h("datalist", { id: "async-content-types" }, ["application/json", "text/csv", "application/jsonlines", "application/x-npy"].map((t) => h("option", { value: t }))),
    h("div", { class: "actions" }, send),
    submitted,
  );

  const lookupForm = h(
    "form",
    {
      class: "toolbar",
      onsubmit: (event) => {
        event.preventDefault();
        lookUp();
      },
    },
    field("Inference ID to look up", lookupId),
    lookupButton,
  );

  const node = h(
    "div",
    {},
    configBox,
    h("h3", {}, "Submit a request"),
    submitForm,
    h("h3", {}, "Requests"),
    listBox,
    lookupForm,
    lookupError,
    lookupResult,
  );

  return {
    node,
    // the endpoint configuration's AsyncInferenceConfig (shown above the form); the list loads on the first one
    setConfig: (asyncConfig) => {
      if (config === null) refreshList();
      config = asyncConfig;
      configBox.replaceChildren(asyncDetails(asyncConfig));
    },
    cleanup: () => {
      stopped = true;
      clearTimeout(listTimer);
      clearTimeout(lookupTimer);
    },
  };
}
