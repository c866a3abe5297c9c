// The console's entry: session check, the router (History API) and the shell around each page.
import { currentSession, loadSession, setSignedOutHandler, signOut } from "./api.js";
import { errorBox, h } from "./dom.js";
import { configPages } from "./pages/configs.js";
import { endpointPage } from "./pages/endpoint.js";
import { endpointPages } from "./pages/endpoints.js";
import { modelPages } from "./pages/models.js";
import { signInPage } from "./pages/signin.js";
import { navigate, setRenderer } from "./nav.js";
import { transformPages } from "./pages/transforms.js";
import { usagePage } from "./pages/usage.js";

const main = document.getElementById("main");
let cleanup = null;

const routes = [
  [/^\/console\/?$/, () => endpointPages.list()],
  [/^\/console\/models\/?$/, () => modelPages.list()],
  [/^\/console\/models\/create$/, () => modelPages.create()],
  [/^\/console\/models\/([^/]+)$/, (name) => modelPages.view(name)],
  [/^\/console\/endpoint-configs\/?$/, () => configPages.list()],
  [/^\/console\/endpoint-configs\/create$/, () => configPages.create()],
  [/^\/console\/endpoint-configs\/([^/]+)$/, (name) => configPages.view(name)],
  [/^\/console\/endpoints\/?$/, () => endpointPages.list()],
  [/^\/console\/endpoints\/create$/, () => endpointPages.create()],
  [/^\/console\/endpoints\/([^/]+)$/, (name) => endpointPage(name)],
  [/^\/console\/transform-jobs\/?$/, () => transformPages.list()],
  [/^\/console\/transform-jobs\/create$/, () => transformPages.create()],
  [/^\/console\/transform-jobs\/([^/]+)$/, (name) => transformPages.view(name)],
  [/^\/console\/usage\/?$/, () => usagePage()],
];

function safeNext(next) {
  return next && next.startsWith("/console/") && !next.startsWith("/console/signin") ? next : "/console/endpoints";
}

async function render() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const path = location.pathname;
  if (path === "/console/signin") {
    if (currentSession()) {
      navigate(safeNext(new URLSearchParams(location.search).get("next")), { replace: true });
      return;
    }
    shell(false);
    mount(signInPage((next) => navigate(safeNext(next), { replace: true })));
    return;
  }
  if (!currentSession()) {
    navigate(`/console/signin?next=${encodeURIComponent(path + location.search)}`, { replace: true });
    return;
  }
  shell(true);
  for (const [pattern, page] of routes) {
    const match = pattern.exec(path);
    if (match) {
      mount(page(...match.slice(1).map(decodeURIComponent)));
      highlight(path);
      return;
    }
  }
  mount({ node: h("div", {}, h("h1", { tabindex: "-1" }, "Page not found"), h("p", {}, `Nothing at ${path}.`)) });
}

function mount(page) {
  main.replaceChildren(page.node);
  cleanup = page.cleanup || null;
  const heading = main.querySelector("h1");
  if (heading) {
    document.title = `${heading.textContent} · zeroscale console`;
    if (document.activeElement && document.activeElement !== document.body) heading.focus({ preventScroll: true });
  }
}

function shell(signedIn) {
  document.getElementById("sidenav").hidden = !signedIn;
  document.getElementById("who").hidden = !signedIn;
  const s = currentSession();
  if (signedIn && s) {
    document.getElementById("who-key").textContent = s.AccessKeyId;
    document.getElementById("who-region").textContent = s.Region;
  }
}

function highlight(path) {
  const section = path.split("/")[2] || "endpoints";
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

document.addEventListener("click", (event) => {
  const a = event.target.closest("a[data-link]");
  if (!a || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin) return;
  event.preventDefault();
  navigate(url.pathname + url.search);
});

window.addEventListener("popstate", render);

document.getElementById("sign-out").addEventListener("click", async () => {
  try {
    await signOut();
  } finally {
    navigate("/console/signin", { replace: true });
  }
});

setSignedOutHandler(() => {
  if (location.pathname !== "/console/signin") {
    navigate(`/console/signin?next=${encodeURIComponent(location.pathname)}&expired=1`, { replace: true });
  }
});

setRenderer(render);

async function start() {
  try {
    await loadSession();
  } catch (err) {
    main.replaceChildren(errorBox(err));
    return;
  }
  render();
}

start();
