// An endpoint's logs, followed live: CloudWatch Logs' FilterLogEvents over the endpoint's log group,
// polled from the last event seen (events are deduplicated by eventId).
import { ApiError, logs } from "./api.js";
import { errorBox, fmtClock, h, showError } from "./dom.js";

const POLL_MS = 1500;
const KEEP = 2000;
const SINCE_MS = 3600 * 1000;

export function logsPanel(endpointName) {
  const group = `/aws/sagemaker/Endpoints/${endpointName}`;
  const follow = h("input", { type: "checkbox", id: "logs-follow", checked: true });
  const filter = h("input", { id: "logs-filter", type: "search", placeholder: "Filter pattern, e.g. Traceback", spellcheck: "false" });
  const status = h("span", { class: "muted", role: "status" });
  const error = errorBox();
  const list = h("ol", { class: "log-lines", "aria-label": "Log events", "aria-live": "off", tabindex: "0" });
  const empty = h("p", { class: "muted log-empty" }, "No log events yet. They appear here as the endpoint deploys and serves.");
  const seen = new Set();
  let lastTs = Date.now() - SINCE_MS;
  let timer = null;
  let stopped = false;
  let busy = false;

  const add = (events) => {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 24;
    for (const e of events) {
      if (seen.has(e.eventId)) continue;
      seen.add(e.eventId);
      lastTs = Math.max(lastTs, e.timestamp);
      list.append(
        h(
          "li",
          { class: /error|traceback|exception|failed/i.test(e.message) ? "log-line log-error" : "log-line" },
          h("time", { datetime: new Date(e.timestamp).toISOString() }, fmtClock(e.timestamp)),
          h("span", { class: "log-stream" }, e.logStreamName),
          h("span", { class: "log-message" }, e.message),
        ),
      );
    }
    while (list.childElementCount > KEEP) list.firstElementChild.remove();
    empty.hidden = list.childElementCount > 0;
    if (events.length && (atBottom || follow.checked)) list.scrollTop = list.scrollHeight;
  };

  const poll = async () => {
    clearTimeout(timer);
    if (busy) return;
    busy = true;
    try {
      let token;
      let pages = 0;
      do {
        const params = { logGroupName: group, startTime: lastTs, interleaved: true, limit: 1000 };
        if (filter.value.trim()) params.filterPattern = filter.value.trim();
        if (token) params.nextToken = token;
        const page = await logs("FilterLogEvents", params);
        if (stopped) return;
        add(page.events || []);
        token = page.nextToken;
        pages += 1;
      } while (token && pages < 10);
      showError(error, null);
      status.textContent = follow.checked ? "Following" : "Paused";
    } catch (err) {
      if (err instanceof ApiError && err.code === "ResourceNotFoundException") {
        status.textContent = "Waiting for the log group";
        showError(error, null);
      } else if (!stopped) showError(error, err);
    } finally {
      busy = false;
    }
    if (!stopped && follow.checked) timer = setTimeout(poll, POLL_MS);
  };

  const restart = () => {
    seen.clear();
    list.replaceChildren();
    lastTs = Date.now() - SINCE_MS;
    poll();
  };
  follow.addEventListener("change", () => (follow.checked ? poll() : clearTimeout(timer)));
  filter.addEventListener("change", restart);
  const node = h(
    "div",
    {},
    h(
      "div",
      { class: "toolbar" },
      h("div", { class: "choice" }, follow, h("label", { for: "logs-follow" }, "Follow live")),
      h("label", { for: "logs-filter" }, "Filter"),
      filter,
      status,
    ),
    h("p", { class: "hint" }, "Log group ", h("code", {}, group), ", the last hour and everything new."),
    error,
    empty,
    list,
  );
  poll();
  return {
    node,
    cleanup: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
