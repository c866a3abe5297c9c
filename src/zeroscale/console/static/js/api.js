// The console's calls to the server: SageMaker and CloudWatch Logs operations (the same tables boto3
// reaches), zeroscale's own REST routes, and InvokeEndpoint, all through the signed-in session.

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || "";
    this.details = details;
  }
}

let session = null;
let onSignedOut = () => {};

export function currentSession() {
  return session;
}

export function setSignedOutHandler(handler) {
  onSignedOut = handler;
}

async function request(method, path, { body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { ...headers }, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET" && method !== "HEAD" && session) init.headers["X-CSRF-Token"] = session.CsrfToken;
  if (body !== undefined) init.body = body;
  const resp = await fetch(`/console/api/${path}`, init);
  if (resp.status === 401 && path !== "session") {
    session = null;
    onSignedOut();
  }
  if (raw) return resp;
  const text = await resp.text();
  let doc = {};
  if (text) {
    try {
      doc = JSON.parse(text);
    } catch {
      doc = { message: text };
    }
  }
  if (!resp.ok) {
    const code = doc.__type || (resp.headers.get("x-amzn-errortype") || "").replace(/:$/, "");
    throw new ApiError(resp.status, code, doc.message || doc.Message, doc);
  }
  return doc;
}

export async function loadSession() {
  try {
    session = await request("GET", "session");
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) session = null;
    else throw err;
  }
  return session;
}

export async function signIn(accessKeyId, secretAccessKey) {
  session = await request("POST", "session", {
    body: JSON.stringify({ AccessKeyId: accessKeyId, SecretAccessKey: secretAccessKey }),
    headers: { "Content-Type": "application/json" },
  });
  return session;
}

export async function signOut() {
  try {
    await request("DELETE", "session");
  } finally {
    session = null;
  }
}

// A SageMaker operation, e.g. sagemaker("ListEndpoints", {MaxResults: 100}).
export function sagemaker(operation, params = {}) {
  return request("POST", `sagemaker/${operation}`, {
    body: JSON.stringify(params),
    headers: { "Content-Type": "application/x-amz-json-1.1" },
  });
}

// A CloudWatch Logs operation, e.g. logs("FilterLogEvents", {...}).
export function logs(operation, params = {}) {
  return request("POST", `logs/${operation}`, {
    body: JSON.stringify(params),
    headers: { "Content-Type": "application/x-amz-json-1.1" },
  });
}

// zeroscale's own REST API (/zeroscale/v1/<path>), e.g. rest("usage", {group_by: "endpoint"}).
export function rest(path, query = {}) {
  const qs = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") qs.append(key, value);
  }
  const suffix = qs.toString() ? `?${qs}` : "";
  return request("GET", `v1/${path}${suffix}`);
}

export function load(endpointName) {
  return request("GET", `load?endpoint=${encodeURIComponent(endpointName)}`);
}

// Every page of a List* operation.
export async function listAll(operation, key, params = {}) {
  const items = [];
  let token;
  do {
    const page = await sagemaker(operation, { MaxResults: 100, ...params, ...(token ? { NextToken: token } : {}) });
    items.push(...(page[key] || []));
    token = page.NextToken;
  } while (token);
  return items;
}

// InvokeEndpoint through the session. Resolves with what the runtime answered, errors included.
export async function invoke(endpointName, body, contentType, accept, targetVariant) {
  const headers = {};
  if (accept) headers.Accept = accept;
  if (targetVariant) headers["X-Amzn-SageMaker-Target-Variant"] = targetVariant;
  // A Blob with no type sends no Content-Type at all, as boto3 does when none is given.
  const payload = contentType ? new Blob([body], { type: contentType }) : new Blob([body]);
  if (contentType) headers["Content-Type"] = contentType;
  const started = performance.now();
  const resp = await request("POST", `invoke/${encodeURIComponent(endpointName)}`, {
    body: payload,
    headers,
    raw: true,
  });
  const text = await resp.text();
  const roundTripMs = performance.now() - started;
  const timing = /dur=([\d.]+)/.exec(resp.headers.get("server-timing") || "");
  return {
    status: resp.status,
    ok: resp.ok,
    body: text,
    contentType: resp.headers.get("content-type") || "",
    variant: resp.headers.get("x-amzn-invoked-production-variant") || "",
    errorType: (resp.headers.get("x-amzn-errortype") || "").replace(/:$/, ""),
    requestId: resp.headers.get("x-amzn-requestid") || "",
    serverMs: timing ? Number(timing[1]) : null,
    roundTripMs,
  };
}

// InvokeEndpointAsync through the session: the parameters travel as the runtime's X-Amzn-SageMaker-* headers.
// Resolves with {InferenceId, OutputLocation, FailureLocation}; a refusal throws an ApiError.
export async function invokeAsync(endpointName, { inputLocation, contentType, accept, inferenceId, timeoutSeconds }) {
  const headers = { "X-Amzn-SageMaker-InputLocation": inputLocation };
  if (contentType) headers["X-Amzn-SageMaker-Content-Type"] = contentType;
  if (accept) headers["X-Amzn-SageMaker-Accept"] = accept;
  if (inferenceId) headers["X-Amzn-SageMaker-Inference-Id"] = inferenceId;
  if (timeoutSeconds) headers["X-Amzn-SageMaker-InvocationTimeoutSeconds"] = String(timeoutSeconds);
  const resp = await request("POST", `invoke-async/${encodeURIComponent(endpointName)}`, { headers, raw: true });
  const text = await resp.text();
  let doc = {};
  try {
    doc = text ? JSON.parse(text) : {};
  } catch {
    doc = { message: text };
  }
  if (!resp.ok) {
    const code = (resp.headers.get("x-amzn-errortype") || "").replace(/:$/, "") || doc.__type;
    throw new ApiError(resp.status, code, doc.message || doc.Message, doc);
  }
  return {
    InferenceId: doc.InferenceId,
    OutputLocation: resp.headers.get("x-amzn-sagemaker-outputlocation") || "",
    FailureLocation: resp.headers.get("x-amzn-sagemaker-failurelocation") || "",
  };
}
