// Endpoint configurations: list, create (production variants: serverless or instances), view, delete.
import { currentSession, listAll, sagemaker } from "../api.js";
import {
  breadcrumbs,
  confirmDialog,
  details,
  errorBox,
  field,
  fmtTime,
  h,
  link,
  pageHeader,
  section,
  showError,
  submitting,
  table,
  uid,
} from "../dom.js";
import { navigate } from "../nav.js";

const INSTANCE_SUGGESTIONS = ["ml.t2.medium", "ml.m5.large", "ml.m5.xlarge", "ml.c5.large", "ml.c5.xlarge", "ml.c5.2xlarge"];

function list() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading endpoint configurations…"));
  listAll("ListEndpointConfigs", "EndpointConfigs", { SortBy: "CreationTime", SortOrder: "Descending" })
    .then((configs) => {
      body.replaceChildren(
        table(
          [
            {
              label: "Name",
              value: (c) => link(`/console/endpoint-configs/${encodeURIComponent(c.EndpointConfigName)}`, c.EndpointConfigName),
            },
            { label: "ARN", value: (c) => h("code", {}, c.EndpointConfigArn), class: "wide" },
            { label: "Creation time", value: (c) => fmtTime(c.CreationTime) },
          ],
          configs,
          { caption: `Endpoint configurations (${configs.length})`, empty: "No endpoint configurations yet." },
        ),
      );
    })
    .catch((err) => body.replaceChildren(errorBox(err)));
  return {
    node: h(
      "div",
      {},
      pageHeader(
        "Endpoint configurations",
        link("/console/endpoint-configs/create", "Create endpoint configuration", { class: "button primary" }),
      ),
      body,
    ),
  };
}

function option(value, text, selected = false) {
  return h("option", { value, selected }, text ?? value);
}

function variantEditor(index, models, onRemove) {
  const memorySizes = currentSession()?.MemorySizesMB || [1024, 2048, 3072, 4096, 5120, 6144];
  const name = h("input", { value: index === 0 ? "AllTraffic" : `Variant${index + 1}`, required: true, spellcheck: "false" });
  const model = h(
    "select",
    { required: true },
    models.length ? models.map((m) => option(m.ModelName)) : option("", "No models: create one first"),
  );
  const weight = h("input", { type: "number", min: "0", step: "any", value: "1" });
  const memory = h("select", {}, memorySizes.map((mb) => option(String(mb), `${mb} MB`, mb === 2048)));
  const maxConcurrency = h("input", { type: "number", min: "1", step: "1", value: "5" });
  const provisioned = h("input", { type: "number", min: "0", step: "1", placeholder: "none" });
  const instanceType = h("input", { list: "instance-types", value: "ml.m5.large", spellcheck: "false" });
  const instanceCount = h("input", { type: "number", min: "1", step: "1", value: "1" });
  const group = uid("type");
  const serverlessRadio = h("input", { type: "radio", name: group, value: "serverless", id: `${group}-s`, checked: true });
  const instanceRadio = h("input", { type: "radio", name: group, value: "instance", id: `${group}-i` });
  const serverlessBox = h(
    "div",
    { class: "subfields" },
    field("Memory size", memory, "Memory, and with it CPU, for each worker."),
    field("Max concurrency", maxConcurrency, "Most requests this variant serves at once (1-200); more are throttled."),
    field("Provisioned concurrency - optional", provisioned, "Workers kept warm at all times (at most the max concurrency)."),
  );
  const instanceBox = h(
    "div",
    { class: "subfields", hidden: true },
    field("Instance type", instanceType),
    field("Initial instance count", instanceCount, "Always-warm workers serving this variant."),
  );
  const sync = () => {
    serverlessBox.hidden = !serverlessRadio.checked;
    instanceBox.hidden = !instanceRadio.checked;
  };
  serverlessRadio.addEventListener("change", sync);
  instanceRadio.addEventListener("change", sync);
  const title = index === 0 ? "Production variant 1" : `Production variant ${index + 1}`;
  const node = h(
    "fieldset",
    { class: "variant" },
    h("legend", {}, title),
    field("Variant name", name),
    field("Model", model),
    h(
      "fieldset",
      {},
      h("legend", {}, "Compute"),
      h(
        "div",
        { class: "choices" },
        h("div", { class: "choice" }, serverlessRadio, h("label", { for: serverlessRadio.id }, "Serverless")),
        h("div", { class: "choice" }, instanceRadio, h("label", { for: instanceRadio.id }, "Provisioned instances")),
      ),
    ),
    serverlessBox,
    instanceBox,
    field("Initial variant weight", weight, "Share of traffic: this weight over the sum of all weights."),
    index > 0 ? h("button", { type: "button", class: "secondary small", onclick: () => onRemove(node) }, `Remove variant ${index + 1}`) : null,
  );
  const value = () => {
    const v = { VariantName: name.value.trim(), ModelName: model.value, InitialVariantWeight: Number(weight.value) };
    if (serverlessRadio.checked) {
      const sc = { MemorySizeInMB: Number(memory.value), MaxConcurrency: Number(maxConcurrency.value) };
      if (provisioned.value !== "" && Number(provisioned.value) > 0) sc.ProvisionedConcurrency = Number(provisioned.value);
      v.ServerlessConfig = sc;
    } else {
      v.InstanceType = instanceType.value.trim();
      v.InitialInstanceCount = Number(instanceCount.value);
    }
    return v;
  };
  return { node, value };
}

// AsyncInferenceConfig: off unless asked; the server checks the values (control/async_config.py).
function asyncEditor() {
  const enabled = h("input", { type: "checkbox", id: uid("async") });
  enabled.setAttribute("aria-describedby", `${enabled.id}-hint`);
  const output = h("input", { spellcheck: "false", placeholder: "s3://bucket/prefix" });
  const failure = h("input", { spellcheck: "false", placeholder: "s3://bucket/prefix" });
  const success = h("input", { spellcheck: "false", placeholder: "arn:aws:sns:..." });
  const errorTopic = h("input", { spellcheck: "false", placeholder: "arn:aws:sns:..." });
  const perInstance = h("input", { type: "number", min: "1", max: "1000", step: "1", placeholder: "1" });
  const box = h(
    "div",
    { class: "subfields", hidden: true },
    field("S3 output path", output, "Where each result is written, as <S3 output path>/<InferenceId>.out."),
    field("S3 failure path - optional", failure, "Where each failure is written (<InferenceId>-error.out); beside the output when empty."),
    field("Success notification topic - optional", success, "SNS topic ARN told of each completed request."),
    field("Error notification topic - optional", errorTopic, "SNS topic ARN told of each failed request."),
    field("Max concurrent invocations per instance - optional", perInstance, "Requests each worker runs at once (default 1)."),
  );
  enabled.addEventListener("change", () => {
    box.hidden = !enabled.checked;
  });
  const node = h(
    "div",
    {},
    h("div", { class: "choice" }, enabled, h("label", { for: enabled.id }, "Asynchronous invocation")),
    h("p", { class: "hint", id: `${enabled.id}-hint` }, "Requests name an S3 input with InvokeEndpointAsync; results go to S3, with optional notifications."),
    box,
  );
  const value = () => {
    if (!enabled.checked) return undefined;
    const out = { S3OutputPath: output.value.trim() };
    if (failure.value.trim()) out.S3FailurePath = failure.value.trim();
    const notify = {};
    if (success.value.trim()) notify.SuccessTopic = success.value.trim();
    if (errorTopic.value.trim()) notify.ErrorTopic = errorTopic.value.trim();
    if (Object.keys(notify).length) out.NotificationConfig = notify;
    const config = { OutputConfig: out };
    if (perInstance.value !== "") config.ClientConfig = { MaxConcurrentInvocationsPerInstance: Number(perInstance.value) };
    return config;
  };
  return { node, value };
}

function create() {
  const error = errorBox();
  const name = h("input", { required: true, maxlength: "63", spellcheck: "false" });
  const idle = h("input", { type: "number", min: "0", step: "any", placeholder: "server default" });
  const variantsBox = h("div", { class: "variants" }, h("p", { class: "muted" }, "Loading models…"));
  const editors = [];
  let models = [];
  const addButton = h("button", { type: "button", class: "secondary small", disabled: true }, "Add production variant");
  const remove = (node) => {
    const i = editors.findIndex((e) => e.node === node);
    if (i >= 0) editors.splice(i, 1);
    node.remove();
  };
  const add = () => {
    const editor = variantEditor(editors.length, models, remove);
    editors.push(editor);
    variantsBox.append(editor.node);
    return editor;
  };
  addButton.addEventListener("click", () => add().node.querySelector("input").focus());
  listAll("ListModels", "Models", { SortBy: "CreationTime", SortOrder: "Descending" })
    .then((found) => {
      models = found;
      variantsBox.replaceChildren();
      add();
      addButton.disabled = false;
    })
    .catch((err) => variantsBox.replaceChildren(errorBox(err)));
  const asyncConfig = asyncEditor();
  const submit = h("button", { type: "submit", class: "primary" }, "Create endpoint configuration");
  const form = h(
    "form",
    {
      class: "form",
      onsubmit: async (event) => {
        event.preventDefault();
        showError(error, null);
        const params = { EndpointConfigName: name.value.trim(), ProductionVariants: editors.map((e) => e.value()) };
        const asyncValue = asyncConfig.value();
        if (asyncValue) params.AsyncInferenceConfig = asyncValue;
        if (idle.value !== "") params.Tags = [{ Key: "zeroscale:idle-timeout-s", Value: String(idle.value) }];
        await submitting(submit, error, async () => {
          await sagemaker("CreateEndpointConfig", params);
          navigate(`/console/endpoint-configs/${encodeURIComponent(params.EndpointConfigName)}`);
        });
      },
    },
    error,
    section(
      "Endpoint configuration",
      field("Endpoint configuration name", name, "Up to 63 letters, digits and hyphens."),
      field("Idle timeout in seconds - optional", idle, "How long an idle serverless worker stays warm (tag zeroscale:idle-timeout-s)."),
    ),
    section("Production variants", variantsBox, addButton),
    section("Async invocation config", asyncConfig.node),
    h("datalist", { id: "instance-types" }, INSTANCE_SUGGESTIONS.map((t) => option(t))),
    h("div", { class: "actions" }, link("/console/endpoint-configs", "Cancel", { class: "button secondary" }), submit),
  );
  return {
    node: h(
      "div",
      {},
      breadcrumbs(["/console/endpoint-configs", "Endpoint configurations"], [null, "Create endpoint configuration"]),
      pageHeader("Create endpoint configuration"),
      form,
    ),
  };
}

export function variantColumns() {
  return [
    { label: "Variant name", value: (v) => v.VariantName },
    { label: "Model", value: (v) => (v.ModelName ? link(`/console/models/${encodeURIComponent(v.ModelName)}`, v.ModelName) : "") },
    { label: "Type", value: (v) => (v.ServerlessConfig ? "Serverless" : "Instances") },
    {
      label: "Compute",
      value: (v) => {
        const sc = v.ServerlessConfig;
        if (!sc) return `${v.InitialInstanceCount} x ${v.InstanceType}`;
        const pc = sc.ProvisionedConcurrency ? `, provisioned ${sc.ProvisionedConcurrency}` : "";
        return `${sc.MemorySizeInMB} MB, max concurrency ${sc.MaxConcurrency}${pc}`;
      },
    },
    { label: "Initial weight", value: (v) => String(v.InitialVariantWeight ?? 1) },
  ];
}

export function asyncDetails(config) {
  const out = config.OutputConfig || {};
  const notify = out.NotificationConfig || {};
  return details([
    ["S3 output path", h("code", {}, out.S3OutputPath)],
    ["S3 failure path", out.S3FailurePath ? h("code", {}, out.S3FailurePath) : "beside the output"],
    ["Success notification topic", notify.SuccessTopic ? h("code", {}, notify.SuccessTopic) : undefined],
    ["Error notification topic", notify.ErrorTopic ? h("code", {}, notify.ErrorTopic) : undefined],
    ["Include inference response in", (notify.IncludeInferenceResponseIn || []).join(", ")],
    ["Max concurrent invocations per instance", String(config.ClientConfig?.MaxConcurrentInvocationsPerInstance ?? 1)],
  ]);
}

function asyncSection(config) {
  return section("Async invocation config", asyncDetails(config));
}

function view(configName) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const error = errorBox();
  const del = h("button", { type: "button", class: "danger" }, "Delete");
  del.addEventListener("click", async () => {
    if (!(await confirmDialog("Delete endpoint configuration", `Delete endpoint configuration ${configName}?`, "Delete"))) return;
    try {
      await sagemaker("DeleteEndpointConfig", { EndpointConfigName: configName });
      navigate("/console/endpoint-configs");
    } catch (err) {
      showError(error, err);
    }
  });
  const createEndpoint = link(`/console/endpoints/create?config=${encodeURIComponent(configName)}`, "Create endpoint", {
    class: "button primary",
  });
  sagemaker("DescribeEndpointConfig", { EndpointConfigName: configName })
    .then((c) => {
      body.replaceChildren(
        section(
          "Endpoint configuration settings",
          details([
            ["Name", c.EndpointConfigName],
            ["ARN", h("code", {}, c.EndpointConfigArn)],
            ["Creation time", fmtTime(c.CreationTime)],
          ]),
        ),
        section("Production variants", table(variantColumns(), c.ProductionVariants || [])),
        ...(c.AsyncInferenceConfig ? [asyncSection(c.AsyncInferenceConfig)] : []),
      );
    })
    .catch((err) => body.replaceChildren(errorBox(err)));
  return {
    node: h(
      "div",
      {},
      breadcrumbs(["/console/endpoint-configs", "Endpoint configurations"], [null, configName]),
      pageHeader(configName, createEndpoint, del),
      error,
      body,
    ),
  };
}

export const configPages = { list, create, view };
