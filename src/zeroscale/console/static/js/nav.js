// Client-side navigation (History API); main.js registers the renderer.
let renderer = () => {};

export function setRenderer(render) {
  renderer = render;
}

export function navigate(path, { replace = false } = {}) {
  if (replace) history.replaceState(null, "", path);
  else history.pushState(null, "", path);
  renderer();
}
