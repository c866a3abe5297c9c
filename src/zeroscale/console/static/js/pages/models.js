// Models: list, create (the seed's "Container definition 1"), view, delete.
import { listAll, rest, sagemaker } from "../api.js";
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

function list() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading models…"));
  const node = h(
    "div",
    {},
    pageHeader("Models", link("/console/models/create", "Create model", { class: "button primary" })),
    body,
  );
  listAll("ListModels", "Models", { SortBy: "CreationTime", SortOrder: "Descending" })
    .then((models) => {
      body.replaceChildren(
        table(
          [
            { label: "Name", value: (m) => link(`/console/models/${encodeURIComponent(m.ModelName)}`, m.ModelName) },
            { label: "ARN", value: (m) => h("code", {}, m.ModelArn), class: "wide" },
            { label: "Creation time", value: (m) => fmtTime(m.CreationTime) },
          ],
          models,
          { caption: `Models (${models.length})`, empty: "No models yet. Create one to deploy it." },
        ),
      );
    })
    .catch((err) => body.replaceChildren(errorBox(err)));
  return { node };
}

function radio(name, value, label, description, { checked = false, disabled = false } = {}) {
  const id = uid("opt");
  return h(
    "div",
    { class: `choice${disabled ? " disabled" : ""}` },
    h("input", { type: "radio", name, value, id, checked, disabled, "aria-describedby": `${id}-d` }),
    h("label", { for: id }, label),
    h("p", { class: "hint", id: `${id}-d` }, description),
  );
}

function envRow(rows, key = "", value = "") {
  const k = h("input", { "aria-label": "Environment variable key", placeholder: "KEY", value: key, spellcheck: "false" });
  const v = h("input", { "aria-label": "Environment variable value", placeholder: "value", value, spellcheck: "false" });
  const row = h(
    "div",
    { class: "env-row" },
    k,
    v,
    h("button", { type: "button", class: "secondary small", onclick: () => row.remove() }, "Remove"),
  );
  rows.append(row);
  return row;
}

function create() {
  const error = errorBox();
  const name = h("input", { name: "model-name", required: true, maxlength: "63", spellcheck: "false" });
  const role = h("input", { name: "execution-role", spellcheck: "false", placeholder: "arn:aws:iam::123456789012:role/..." });
  const image = h("input", {
    name: "image",
    list: "image-suggestions",
    spellcheck: "false",
    placeholder: "aws_account_id.dkr.ecr.region.amazonaws.com/repository[:tag]",
  });
  const suggestions = h("datalist", { id: "image-suggestions" });
  rest("images")
    .then((doc) => {
      for (const img of doc.Images || []) {
        const value = img.Image || img.Name;
        suggestions.append(h("option", { value }, img.Kind === "builtin" ? `built-in ${img.Runtime}` : "pushed image"));
      }
    })
    .catch(() => {});
  const artifacts = h("input", { name: "model-data-url", spellcheck: "false", placeholder: "s3://bucket/path-to-your-data/model.tar.gz" });
  const envRows = h("div", { class: "env-rows" });
  const submit = h("button", { type: "submit", class: "primary" }, "Create model");
  // "Use a model package resource": a version's ARN, or a group for its latest Approved version.
  const packageName = h("input", {
    name: "model-package",
    spellcheck: "false",
    placeholder: "arn:aws:sagemaker:region:account:model-package/group/1, or a group name",
  });
  const packagePart = h(
    "div",
    { hidden: true },
    field(
      "Model package",
      packageName,
      "A model package version's ARN deploys that version; a model package group's name or ARN deploys its latest Approved version.",
    ),
  );
  const imagePart = h(
    "div",
    {},
    h(
      "fieldset",
      {},
      h("legend", {}, "Provide model artifacts and inference image options"),
      radio("mode", "SingleModel", "Use a single model", "Use this to host a single model in this container.", {
        checked: true,
      }),
      radio("mode", "MultiModel", "Use multiple models", "Use this to host multiple models in this container."),
    ),
    field(
      "Location of inference code image",
      image,
      "Type the registry path where the inference code image is stored: aws_account_id.dkr.ecr.region.domain/repository[:tag] or [@digest], a built-in alias (sklearn, xgboost, pytorch, onnx) or a pushed image name:tag.",
    ),
    suggestions,
    field(
      "Location of model artifacts - optional",
      artifacts,
      "Type the URL where model artifacts are stored (s3://bucket/path-to-your-data/, or file:// on this server). The path must point to a single gzip compressed tar archive (.tar.gz suffix).",
    ),
  );
  const fromPackage = () => form.querySelector("input[name=input-option]:checked").value === "package";

  const form = h(
    "form",
    {
      class: "form",
      onsubmit: async (event) => {
        event.preventDefault();
        showError(error, null);
        const container = {};
        if (fromPackage()) {
          container.ModelPackageName = packageName.value.trim();
        } else {
          container.Mode = form.querySelector("input[name=mode]:checked").value;
          if (image.value.trim()) container.Image = image.value.trim();
          if (artifacts.value.trim()) container.ModelDataUrl = artifacts.value.trim();
        }
        const env = {};
        for (const row of envRows.querySelectorAll(".env-row")) {
          const [k, v] = row.querySelectorAll("input");
          if (k.value.trim()) env[k.value.trim()] = v.value;
        }
        if (Object.keys(env).length) container.Environment = env;
        const params = { ModelName: name.value.trim(), PrimaryContainer: container };
        if (role.value.trim()) params.ExecutionRoleArn = role.value.trim();
        await submitting(submit, error, async () => {
          await sagemaker("CreateModel", params);
          navigate(`/console/models/${encodeURIComponent(params.ModelName)}`);
        });
      },
    },
    error,
    section(
      "Model settings",
      field("Model name", name, "Up to 63 letters, digits and hyphens."),
      field("IAM role - optional", role, "Accepted and kept; zeroscale runs models with its own permissions."),
    ),
    section(
      "Container definition 1",
      h(
        "fieldset",
        {},
        h("legend", {}, "Container input options"),
        radio(
          "input-option",
          "artifacts",
          "Provide model artifacts and inference image location",
          "Use this for models trained using built-in algorithms, BYO algorithms, or models trained outside Amazon SageMaker.",
          { checked: true },
        ),
        radio(
          "input-option",
          "package",
          "Use a model package resource",
          "Use this for model packages that contain inference images and artifacts.",
        ),
      ),
      packagePart,
      imagePart,
      h(
        "fieldset",
        { class: "env" },
        h("legend", {}, "Environment variables - optional"),
        envRows,
        h("button", { type: "button", class: "secondary small", onclick: () => envRow(envRows).querySelector("input").focus() }, "Add environment variable"),
      ),
    ),
    h("div", { class: "actions" }, link("/console/models", "Cancel", { class: "button secondary" }), submit),
  );
  for (const option of form.querySelectorAll("input[name=input-option]")) {
    option.addEventListener("change", () => {
      packagePart.hidden = !fromPackage();
      imagePart.hidden = fromPackage();
      packageName.required = fromPackage();
    });
  }
  return {
    node: h(
      "div",
      {},
      breadcrumbs(["/console/models", "Models"], [null, "Create model"]),
      pageHeader("Create model"),
      form,
    ),
  };
}

function containerSection(c, i) {
  const source = (c.ModelDataSource || {}).S3DataSource;
  const rows = c.ModelPackageName
    ? [["Model package", h("code", {}, c.ModelPackageName)]]
    : [
        ["Location of inference code image", h("code", {}, c.Image || "")],
        [
          "Location of model artifacts",
          c.ModelDataUrl ? h("code", {}, c.ModelDataUrl) : source ? h("code", {}, `${source.S3Uri} (uncompressed)`) : "none",
        ],
        ["Mode", c.Mode === "MultiModel" ? "Use multiple models" : "Use a single model"],
      ];
  if (c.ContainerHostname) rows.push(["Container hostname", c.ContainerHostname]);
  return section(
    `Container definition ${i + 1}`,
    details(rows),
    table(
      [
        { label: "Key", value: ([k]) => h("code", {}, k) },
        { label: "Value", value: ([, v]) => h("code", {}, v) },
      ],
      Object.entries(c.Environment || {}),
      { caption: "Environment variables", empty: "No environment variables." },
    ),
  );
}

function view(modelName) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const error = errorBox();
  const del = h("button", { type: "button", class: "danger" }, "Delete");
  del.addEventListener("click", async () => {
    if (!(await confirmDialog("Delete model", `Delete model ${modelName}? Endpoint configurations that name it stop working.`, "Delete"))) return;
    try {
      await sagemaker("DeleteModel", { ModelName: modelName });
      navigate("/console/models");
    } catch (err) {
      showError(error, err);
    }
  });
  sagemaker("DescribeModel", { ModelName: modelName })
    .then((m) => {
      const containers = m.PrimaryContainer ? [m.PrimaryContainer] : m.Containers || [];
      body.replaceChildren(
        section(
          "Model settings",
          details([
            ["Name", m.ModelName],
            ["ARN", h("code", {}, m.ModelArn)],
            ["Creation time", fmtTime(m.CreationTime)],
            ["IAM role ARN", m.ExecutionRoleArn],
          ]),
        ),
        ...(containers.length > 1
          ? [section("Inference execution", details([["Mode", (m.InferenceExecutionConfig || {}).Mode || "Serial"]]))]
          : []),
        ...containers.map((c, i) => containerSection(c, i)),
      );
    })
    .catch((err) => body.replaceChildren(errorBox(err)));
  return {
    node: h(
      "div",
      {},
      breadcrumbs(["/console/models", "Models"], [null, modelName]),
      pageHeader(modelName, del),
      error,
      body,
    ),
  };
}

export const modelPages = { list, create, view };
