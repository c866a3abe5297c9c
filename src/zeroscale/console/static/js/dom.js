// Small DOM helpers: h() builds elements, the rest are the console's recurring pieces.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function link(href, text, attrs = {}) {
  return h("a", { href, "data-link": "", ...attrs }, text);
}

let counter = 0;
export function uid(prefix = "f") {
  counter += 1;
  return `${prefix}-${counter}`;
}

// A labelled form field; `control` is an input/select/textarea element.
export function field(label, control, hint) {
  if (!control.id) control.id = uid();
  const hintEl = hint ? h("p", { class: "hint", id: `${control.id}-hint` }, hint) : null;
  if (hintEl) control.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: control.id }, label), hintEl, control);
}

export function fmtTime(epochSeconds) {
  if (epochSeconds === undefined || epochSeconds === null) return "";
  const d = new Date(epochSeconds * 1000);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function fmtClock(epochMs) {
  const d = new Date(epochMs);
  const pad = (n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtNumber(value, digits = 0) {
  const n = Number(value);
  if (!Number.isFinite(n)) return String(value ?? "");
  return n.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

const STATUS_CLASS = {
  InService: "ok",
  Creating: "busy",
  Updating: "busy",
  SystemUpdating: "busy",
  RollingBack: "busy",
  Deleting: "busy",
  Failed: "bad",
  OutOfService: "bad",
  UpdateRollbackFailed: "bad",
  // transform jobs and asynchronous requests
  InProgress: "busy",
  Stopping: "busy",
  Completed: "ok",
  Stopped: "plain",
  Queued: "busy",
  Running: "busy",
};

export function statusBadge(status) {
  return h("span", { class: `status status-${STATUS_CLASS[status] || "plain"}`, "data-status": status }, status);
}

export const TRANSITIONAL = new Set(["Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting"]);

// A table from column definitions: [{label, value: row => node|string}].
export function table(columns, rows, { caption, empty = "Nothing here yet." } = {}) {
  const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col", class: c.class }, c.label))));
  const body = h(
    "tbody",
    {},
    rows.length
      ? rows.map((row) => h("tr", {}, columns.map((c) => h("td", { class: c.class }, c.value(row)))))
      : h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, empty)),
  );
  return h("div", { class: "table-wrap" }, h("table", {}, caption ? h("caption", {}, caption) : null, head, body));
}

// Key/value pairs as a description list.
export function details(pairs) {
  return h(
    "dl",
    { class: "details" },
    pairs.filter(([, v]) => v !== undefined && v !== null && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]),
  );
}

// An error shown where it happened (role=alert so screen readers announce it).
export function errorBox(err) {
  const box = h("div", { class: "alert alert-error", role: "alert" });
  if (err) showError(box, err);
  else box.hidden = true;
  return box;
}

export function showError(box, err) {
  box.replaceChildren();
  if (!err) {
    box.hidden = true;
    return;
  }
  box.hidden = false;
  if (err.code) box.append(h("strong", {}, `${err.code}: `));
  box.append(err.message || String(err));
}

// A form's action: its button disabled while it runs; a failure is shown in ``box`` (and scrolled to).
export async function submitting(button, box, action) {
  showError(box, null);
  button.disabled = true;
  try {
    await action();
  } catch (err) {
    showError(box, err);
    box.scrollIntoView({ block: "nearest" });
  } finally {
    button.disabled = false;
  }
}

// Run ``step(isStopped)`` now, and again every ``ms`` for as long as it returns true (a list with something
// in progress); a failure is shown in ``box``. Returns the page's cleanup, which stops it.
export function polling(box, ms, step) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    try {
      if ((await step(() => stopped)) && !stopped) timer = setTimeout(run, ms);
    } catch (err) {
      if (!stopped) box.replaceChildren(errorBox(err));
    }
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export function pageHeader(title, ...actions) {
  return h("div", { class: "pagehead" }, h("h1", { tabindex: "-1" }, title), h("div", { class: "actions" }, actions));
}

export function breadcrumbs(...items) {
  return h(
    "nav",
    { class: "crumbs", "aria-label": "Breadcrumb" },
    h("ol", {}, items.map(([href, text]) => h("li", {}, href ? link(href, text) : h("span", { "aria-current": "page" }, text)))),
  );
}

// A confirmation dialog (native <dialog>: focus-trapped, Escape cancels). Resolves true on confirm.
export function confirmDialog(title, message, confirmLabel) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "dialog", "aria-labelledby": "dialog-title" },
      h("h2", { id: "dialog-title" }, title),
      h("p", {}, message),
      h(
        "form",
        { method: "dialog", class: "actions" },
        h("button", { value: "cancel", type: "submit", class: "secondary" }, "Cancel"),
        h("button", { value: "confirm", type: "submit", class: "danger" }, confirmLabel),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "confirm");
      dialog.remove();
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}

export function section(title, ...children) {
  const id = uid("sec");
  return h("section", { class: "panel", "aria-labelledby": id }, h("h2", { id }, title), children);
}
