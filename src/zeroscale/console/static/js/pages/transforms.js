// Batch transform jobs: list (refreshing while any runs), create, and a job's page with its progress (files
// and records done, from GET /zeroscale/v1/transform/<name>) and a Stop button.
import { listAll, rest, sagemaker } from "../api.js";
import {
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
  polling,
  section,
  showError,
  statusBadge,
  submitting,
  table,
} from "../dom.js";
import { navigate } from "../nav.js";

const REFRESH_MS = 1000;
const RUNNING = new Set(["InProgress", "Stopping"]);
const INSTANCE_SUGGESTIONS = ["ml.m5.large", "ml.m5.xlarge", "ml.c5.large", "ml.c5.xlarge", "ml.c5.2xlarge"];
const CONTENT_TYPES = ["text/csv", "application/json", "application/jsonlines", "text/libsvm", "application/x-recordio-protobuf"];
const jobPath = (name) => `/console/transform-jobs/${encodeURIComponent(name)}`;

function list() {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading batch transform jobs…"));
  const stop = polling(body, REFRESH_MS, async (stopped) => {
    const jobs = await listAll("ListTransformJobs", "TransformJobSummaries", { SortBy: "CreationTime", SortOrder: "Descending" });
    if (stopped()) return false;
    body.replaceChildren(
      table(
        [
          { label: "Name", value: (j) => link(jobPath(j.TransformJobName), j.TransformJobName) },
          { label: "Status", value: (j) => statusBadge(j.TransformJobStatus) },
          { label: "Creation time", value: (j) => fmtTime(j.CreationTime) },
          { label: "End time", value: (j) => fmtTime(j.TransformEndTime) },
          { label: "Failure reason", value: (j) => j.FailureReason || "" },
        ],
        jobs,
        { caption: `Batch transform jobs (${jobs.length})`, empty: "No batch transform jobs yet." },
      ),
    );
    return jobs.some((j) => RUNNING.has(j.TransformJobStatus));
  });
  return {
    node: h(
      "div",
      {},
      pageHeader("Batch transform jobs", link("/console/transform-jobs/create", "Create batch transform job", { class: "button primary" })),
      body,
    ),
    cleanup: stop,
  };
}

function select(options, selected) {
  return h("select", {}, options.map(([value, text]) => h("option", { value, selected: value === selected }, text)));
}

function create() {
  const error = errorBox();
  const name = h("input", { required: true, maxlength: "63", spellcheck: "false" });
  const model = h("select", { required: true }, h("option", { value: "" }, "Loading…"));
  const input = h("input", { required: true, spellcheck: "false", placeholder: "s3://bucket/prefix/" });
  const contentType = h("input", { list: "transform-content-types", value: "text/csv", spellcheck: "false" });
  const splitType = select([["None", "None"], ["Line", "Line"], ["RecordIO", "RecordIO"]], "Line");
  const compression = select([["None", "None"], ["Gzip", "Gzip"]], "None");
  const output = h("input", { required: true, spellcheck: "false", placeholder: "s3://bucket/prefix" });
  const accept = h("input", { list: "transform-content-types", spellcheck: "false", placeholder: "the model's default" });
  const assemble = select([["None", "None"], ["Line", "Line"]], "Line");
  const instanceType = h("input", { list: "transform-instance-types", value: "ml.m5.large", required: true, spellcheck: "false" });
  const instanceCount = h("input", { type: "number", min: "1", step: "1", value: "1", required: true });
  const strategy = select([["MultiRecord", "MultiRecord"], ["SingleRecord", "SingleRecord"]], "MultiRecord");
  const concurrent = h("input", { type: "number", min: "1", step: "1", placeholder: "1" });
  const payload = h("input", { type: "number", min: "0", max: "100", step: "1", placeholder: "6" });
  listAll("ListModels", "Models", { SortBy: "CreationTime", SortOrder: "Descending" })
    .then((models) => {
      model.replaceChildren(
        ...(models.length
          ? models.map((m) => h("option", { value: m.ModelName }, m.ModelName))
          : [h("option", { value: "" }, "No models: create one first")]),
      );
    })
    .catch((err) => showError(error, err));
  const submit = h("button", { type: "submit", class: "primary" }, "Create batch transform job");
  const form = h(
    "form",
    {
      class: "form",
      onsubmit: async (event) => {
        event.preventDefault();
        const params = {
          TransformJobName: name.value.trim(),
          ModelName: model.value,
          TransformInput: {
            DataSource: { S3DataSource: { S3DataType: "S3Prefix", S3Uri: input.value.trim() } },
            SplitType: splitType.value,
            CompressionType: compression.value,
          },
          TransformOutput: { S3OutputPath: output.value.trim(), AssembleWith: assemble.value },
          TransformResources: { InstanceType: instanceType.value.trim(), InstanceCount: Number(instanceCount.value) },
          BatchStrategy: strategy.value,
        };
        if (contentType.value.trim()) params.TransformInput.ContentType = contentType.value.trim();
        if (accept.value.trim()) params.TransformOutput.Accept = accept.value.trim();
        if (concurrent.value !== "") params.MaxConcurrentTransforms = Number(concurrent.value);
        if (payload.value !== "") params.MaxPayloadInMB = Number(payload.value);
        await submitting(submit, error, async () => {
          await sagemaker("CreateTransformJob", params);
          navigate(jobPath(params.TransformJobName));
        });
      },
    },
    error,
    section(
      "Job configuration",
      field("Job name", name, "Up to 63 letters, digits and hyphens; unique in this server."),
      field("Model name", model, "The model whose container transforms the data."),
      h(
        "div",
        { class: "row" },
        field("Instance type", instanceType, "Each worker's memory, as for a real-time variant."),
        field("Instance count", instanceCount),
      ),
      h(
        "div",
        { class: "row" },
        field("Batch strategy", strategy, "MultiRecord: as many records per request as fit in the max payload size."),
        field("Max concurrent transforms - optional", concurrent, "Requests per instance at once (default 1)."),
        field("Max payload size (MB) - optional", payload, "Largest mini-batch (default 6)."),
      ),
    ),
    section(
      "Input data configuration",
      field("S3 location", input, "S3Prefix: every object under this prefix is transformed."),
      h(
        "div",
        { class: "row" },
        field("Content type", contentType),
        field("Split type", splitType, "How each object is cut into records."),
        field("Compression type", compression),
      ),
    ),
    section(
      "Output data configuration",
      field("S3 output path", output, "Each input object's answers go to <S3 output path>/<its key>.out."),
      h("div", { class: "row" }, field("Accept - optional", accept), field("Assemble with", assemble)),
    ),
    h("datalist", { id: "transform-instance-types" }, INSTANCE_SUGGESTIONS.map((t) => h("option", { value: t }))),
    h("datalist", { id: "transform-content-types" }, CONTENT_TYPES.map((t) => h("option", { value: t }))),
    h("div", { class: "actions" }, link("/console/transform-jobs", "Cancel", { class: "button secondary" }), submit),
  );
  return {
    node: h(
      "div",
      {},
      breadcrumbs(["/console/transform-jobs", "Batch transform jobs"], [null, "Create batch transform job"]),
      pageHeader("Create batch transform job"),
      form,
    ),
  };
}

function progressView(p) {
  const total = p.FilesTotal;
  const done = p.FilesDone ?? 0;
  const meter = h("progress", {
    id: "transform-progress",
    max: String(total || 1),
    value: String(total ? done : 0),
    "aria-label": "Files transformed",
  });
  return h(
    "div",
    { "data-testid": "transform-progress", "data-files-done": String(done), "data-records-done": String(p.RecordsDone ?? 0) },
    total === undefined
      ? h("p", { class: "muted" }, "Listing the input…")
      : h("div", { class: "meter-row" }, h("span", {}, "Files"), meter, h("span", {}, `${fmtNumber(done)} of ${fmtNumber(total)} done`)),
    details([
      ["Files done", total === undefined ? undefined : `${fmtNumber(done)} of ${fmtNumber(total)}`],
      ["Files failed", p.FilesFailed ? fmtNumber(p.FilesFailed) : undefined],
      ["Records done", p.RecordsDone === undefined ? undefined : fmtNumber(p.RecordsDone)],
    ]),
  );
}

function view(jobName) {
  const error = errorBox();
  const status = h("span", {});
  const settings = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const progress = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const stop = h("button", { type: "button", class: "danger", disabled: true }, "Stop");
  let timer = null;
  let stopped = false;

  const render = (d, p) => {
    const input = d.TransformInput || {};
    const output = d.TransformOutput || {};
    const resources = d.TransformResources || {};
    status.replaceChildren(statusBadge(d.TransformJobStatus));
    stop.disabled = d.TransformJobStatus !== "InProgress";
    settings.replaceChildren(
      details([
        ["Name", d.TransformJobName],
        ["ARN", h("code", {}, d.TransformJobArn)],
        ["Status", statusBadge(d.TransformJobStatus)],
        ["Failure reason", d.FailureReason ? h("pre", { class: "failure" }, d.FailureReason) : undefined],
        ["Model name", link(`/console/models/${encodeURIComponent(d.ModelName)}`, d.ModelName)],
        ["Creation time", fmtTime(d.CreationTime)],
        ["Start time", fmtTime(d.TransformStartTime)],
        ["End time", fmtTime(d.TransformEndTime)],
        ["Instances", `${resources.InstanceCount} x ${resources.InstanceType}`],
        ["Batch strategy", d.BatchStrategy],
        ["Max concurrent transforms", d.MaxConcurrentTransforms === undefined ? undefined : String(d.MaxConcurrentTransforms)],
        ["Max payload size (MB)", d.MaxPayloadInMB === undefined ? undefined : String(d.MaxPayloadInMB)],
        ["Input S3 location", h("code", {}, input.DataSource?.S3DataSource?.S3Uri)],
        ["Content type", input.ContentType],
        ["Split type", input.SplitType],
        ["Compression type", input.CompressionType],
        ["S3 output path", h("code", {}, output.S3OutputPath)],
        ["Accept", output.Accept],
        ["Assemble with", output.AssembleWith],
      ]),
    );
    progress.replaceChildren(progressView(p));
  };

  const poll = async () => {
    clearTimeout(timer);
    try {
      const [d, p] = await Promise.all([
        sagemaker("DescribeTransformJob", { TransformJobName: jobName }),
        rest(`transform/${encodeURIComponent(jobName)}`),
      ]);
      if (stopped) return;
      render(d, p);
      showError(error, null);
      if (RUNNING.has(d.TransformJobStatus)) timer = setTimeout(poll, REFRESH_MS);
    } catch (err) {
      if (!stopped) showError(error, err);
    }
  };

  stop.addEventListener("click", async () => {
    if (!(await confirmDialog("Stop batch transform job", `Stop batch transform job ${jobName}? Files not done yet get no output.`, "Stop"))) return;
    stop.disabled = true;
    try {
      await sagemaker("StopTransformJob", { TransformJobName: jobName });
    } catch (err) {
      showError(error, err);
    }
    poll();
  });
  poll();
  return {
    node: h(
      "div",
      {},
      breadcrumbs(["/console/transform-jobs", "Batch transform jobs"], [null, jobName]),
      pageHeader(h("span", {}, jobName, " ", status), stop),
      error,
      section("Progress", progress),
      section("Job settings", settings),
    ),
    cleanup: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

export const transformPages = { list, create, view };
