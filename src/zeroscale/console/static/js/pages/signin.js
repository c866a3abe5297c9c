import { signIn } from "../api.js";
import { errorBox, field, h, showError } from "../dom.js";

export function signInPage(done) {
  const params = new URLSearchParams(location.search);
  const key = h("input", { name: "access-key-id", autocomplete: "username", required: true, spellcheck: "false" });
  const secret = h("input", { name: "secret-access-key", type: "password", autocomplete: "current-password", required: true });
  const error = errorBox();
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const notice = params.get("expired")
    ? h("p", { class: "alert alert-info", role: "status" }, "Your session has ended. Sign in again.")
    : null;
  const form = h(
    "form",
    {
      class: "signin",
      "aria-labelledby": "signin-title",
      onsubmit: async (event) => {
        event.preventDefault();
        submit.disabled = true;
        showError(error, null);
        try {
          await signIn(key.value.trim(), secret.value);
          done(params.get("next"));
        } catch (err) {
          showError(error, err);
          secret.value = "";
          secret.focus();
        } finally {
          submit.disabled = false;
        }
      },
    },
    h("h1", { id: "signin-title", tabindex: "-1" }, "Sign in to zeroscale"),
    h(
      "p",
      { class: "muted" },
      "Use an access key of this server: the admin credentials are in the data directory's ",
      h("code", {}, "credentials"),
      " file (",
      h("code", {}, ".zeroscale/credentials"),
      " after ",
      h("code", {}, "make run"),
      ").",
    ),
    notice,
    error,
    field("Access key ID", key),
    field("Secret access key", secret),
    h("div", { class: "actions" }, submit),
  );
  queueMicrotask(() => key.focus());
  return { node: h("div", { class: "signin-wrap" }, form) };
}
