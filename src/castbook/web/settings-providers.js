// The Settings tab: hosted providers and their keys. GET /v1/providers lists them with keys
// masked (admin keys only: any other key gets a 403, and the tab says an admin key is
// needed); a key is typed into a password field, sent once (POST …/keys) and cleared; the
// answer and the list only ever show it masked. "Test" makes one cheap authenticated call
// per key on the server (POST …/test) and shows which keys work; the list keeps each key's
// last error and cool-down. "Edit" opens a form for the base URL, model and preferred tier
// (PATCH …, only the fields changed; a field emptied goes back to the kind's default).
// Removing asks twice (the button turns into "Really remove?").

import { $, ApiError, api } from "./api.js";
import { make } from "./dom.js";

const path = (name) => `/v1/providers/${encodeURIComponent(name)}`;

function showError(message) {
  const error = $("#providers-error");
  error.textContent = message || "";
  error.hidden = !message;
}

function panelShown() {
  return !$("#settings-panel").hidden;
}

/** Load the providers into the tab (called when it is shown, and after every change). */
export async function loadProviders() {
  let providers;
  try {
    providers = await api("/v1/providers");
  } catch (exc) {
    const forbidden = exc instanceof ApiError && exc.status === 403;
    $("#providers-admin-only").hidden = !forbidden;
    $("#provider-form").hidden = true;
    $("#providers-empty").hidden = true;
    $("#provider-list").replaceChildren();
    if (!forbidden && !(exc instanceof ApiError && exc.status === 401)) showError(exc.message);
    return;
  }
  $("#providers-admin-only").hidden = true;
  $("#provider-form").hidden = false;
  showError("");
  $("#providers-empty").hidden = providers.length > 0;
  $("#provider-list").replaceChildren(...providers.map(providerItem));
}

/** Run `work`; on an API error show its message (in `where`, else the tab's) and reload. */
async function change(work, where) {
  try {
    await work();
  } catch (exc) {
    if (where) {
      where.textContent = exc.message;
      where.hidden = false;
    } else {
      showError(exc.message);
    }
    return false;
  }
  await loadProviders();
  return true;
}

/** A button that asks "Really …?" on the first click and acts on the second. */
function confirmingButton(label, title, act) {
  const button = make("button", "secondary compact", label);
  button.type = "button";
  button.title = title;
  button.addEventListener("click", () => {
    if (button.dataset.armed !== "yes") {
      button.dataset.armed = "yes";
      button.textContent = `Really ${label.toLowerCase()}?`;
      button.classList.replace("secondary", "danger");
      return;
    }
    act();
  });
  return button;
}

function keyStatus(key) {
  if (key.cooling_for) return `cooling down for ${key.cooling_for} s more: ${key.last_error || ""}`;
  if (key.last_error) return `last test failed: ${key.last_error}`;
  if (key.checked_at) return `worked when tested (${key.checked_at})`;
  return "not tested yet";
}

function keyItem(provider, key) {
  const item = make("li", "provider-key");
  item.dataset.index = String(key.index);
  item.append(
    make("span", "key-index", `#${key.index}`),
    make("code", "key-masked", key.key),
    make("span", "tag", key.tier),
  );
  if (provider.source === "file") {
    item.append(
      confirmingButton("Remove", `Remove key ${key.key}`, () =>
        change(() => api(`${path(provider.name)}/keys/${key.index}`, { method: "DELETE" })),
      ),
    );
  }
  const status = make("span", "key-status", keyStatus(key));
  if (key.last_error) status.classList.add("failed");
  item.append(status);
  return item;
}

function keyForm(provider) {
  const form = make("form", "key-form");
  form.noValidate = true;
  const input = make("input");
  input.type = "password";
  input.name = "key";
  input.autocomplete = "off";
  input.placeholder = "Paste an API key";
  input.setAttribute("aria-label", `New API key for ${provider.name}`);
  const tier = make("select");
  tier.name = "tier";
  tier.setAttribute("aria-label", "Tier");
  tier.append(new Option("free", "free"), new Option("paid", "paid", true, true));
  const add = make("button", "compact", "Add key");
  add.type = "submit";
  const error = make("p", "form-error");
  error.hidden = true;
  form.append(input, tier, add);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const key = input.value.trim();
    if (!key) {
      error.textContent = "paste a key first";
      error.hidden = false;
      return;
    }
    input.value = ""; // the page keeps no copy of the key, whatever the answer
    await change(
      () => api(`${path(provider.name)}/keys`, { method: "POST", json: { key, tier: tier.value } }),
      error,
    );
  });
  return [form, error];
}

const PREFER_CHOICES = [
  ["", "paid keys first (default)"],
  ["free", "free keys first"],
  ["paid", "paid keys first"],
];

function labelled(text, control) {
  const label = make("label", "", text);
  label.append(control);
  return label;
}

/** The inline form that edits a provider: only what changed is sent. */
function editForm(provider, item) {
  const form = make("form", "provider-edit");
  form.noValidate = true;
  form.hidden = true;
  const input = (name, value, placeholder) => {
    const field = make("input");
    field.name = name;
    field.autocomplete = "off";
    field.value = value || "";
    field.placeholder = placeholder;
    return field;
  };
  const baseUrl = input("base_url", provider.base_url, "empty: the kind's default");
  const model = input("model", provider.model, "empty: the kind's default");
  const prefer = make("select");
  prefer.name = "prefer";
  for (const [value, text] of PREFER_CHOICES) {
    prefer.append(new Option(text, value, false, value === (provider.prefer || "")));
  }
  const save = make("button", "compact", "Save");
  save.type = "submit";
  const cancel = make("button", "secondary compact", "Cancel");
  cancel.type = "button";
  const actions = make("div", "form-actions");
  actions.append(save, cancel);
  const error = make("p", "form-error");
  error.hidden = true;
  form.append(
    labelled("Base URL ", baseUrl),
    labelled("Model ", model),
    labelled("Image work tries ", prefer),
    error,
    actions,
  );
  cancel.addEventListener("click", () => {
    form.hidden = true;
    item.querySelector(".edit-provider").hidden = false;
  });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.hidden = true;
    const now = { base_url: baseUrl.value.trim(), model: model.value.trim(), prefer: prefer.value };
    const changes = {};
    for (const [name, value] of Object.entries(now)) {
      if (value !== (provider[name] || "")) changes[name] = value || null; // "" → the default
    }
    if (!Object.keys(changes).length) {
      cancel.click();
      return;
    }
    await change(() => api(path(provider.name), { method: "PATCH", json: changes }), error);
  });
  return form;
}

function testResult(list, answer) {
  list.replaceChildren(
    ...answer.checks.map((check) => {
      const line = make("li", check.ok ? "ok" : "failed");
      const who = check.key ? `${check.key} (${check.tier})` : "no key";
      line.textContent = check.ok ? `${who}: ${check.message}` : `${who}: failed — ${check.message}`;
      return line;
    }),
  );
}

function providerItem(provider) {
  const item = make("li", "provider");
  item.dataset.provider = provider.name;
  const head = make("div", "provider-head");
  head.append(make("strong", "provider-name", provider.name), make("span", "tag", provider.kind));
  const where = make(
    "p",
    "provider-where",
    `${provider.base_url}${provider.model ? ` · ${provider.model}` : ""} · image work: ` +
      `${provider.image_keys_first} keys first`,
  );
  item.append(head, where);
  if (provider.source === "environment") {
    item.append(make("p", "hint", "From the server's environment (CASTBOOK_EXTRACT_API_KEY …): change it there."));
  }
  const keys = make("ul", "provider-keys");
  keys.append(...provider.keys.map((key) => keyItem(provider, key)));
  if (!provider.keys.length) keys.append(make("li", "empty", "No keys yet."));
  item.append(keys);
  if (provider.source === "file") item.append(...keyForm(provider));

  const results = make("ul", "test-result");
  const actions = make("div", "provider-actions");
  const test = make("button", "secondary compact", "Test");
  test.type = "button";
  test.title = "One cheap authenticated call per key: which keys work?";
  test.addEventListener("click", async () => {
    test.disabled = true;
    test.textContent = "Testing…";
    try {
      const answer = await api(`${path(provider.name)}/test`, { method: "POST" });
      await loadProviders();
      // The list was rebuilt: show the answer under the new item.
      const fresh = document.querySelector(`.provider[data-provider="${CSS.escape(provider.name)}"]`);
      if (fresh) testResult(fresh.querySelector(".test-result"), answer);
    } catch (exc) {
      showError(exc.message);
      test.disabled = false;
      test.textContent = "Test";
    }
  });
  actions.append(test);
  let edit = null;
  if (provider.source === "file") {
    edit = editForm(provider, item);
    const open = make("button", "secondary compact edit-provider", "Edit");
    open.type = "button";
    open.title = `Change ${provider.name}'s base URL, model or preferred tier`;
    open.addEventListener("click", () => {
      edit.hidden = false;
      open.hidden = true;
      edit.elements.base_url.focus();
    });
    actions.append(open);
    actions.append(
      confirmingButton("Remove provider", `Remove ${provider.name} and all its keys`, () =>
        change(() => api(path(provider.name), { method: "DELETE" })),
      ),
    );
  }
  item.append(actions);
  if (edit) item.append(edit);
  item.append(results);
  return item;
}

async function addProvider(event) {
  event.preventDefault();
  const form = $("#provider-form");
  const error = $("#provider-form-error");
  error.hidden = true;
  const value = (name) => form.elements[name].value.trim() || null;
  const body = { name: value("name") || "", kind: form.elements.kind.value };
  for (const name of ["base_url", "model", "prefer"]) if (value(name)) body[name] = value(name);
  const done = await change(() => api("/v1/providers", { method: "POST", json: body }), error);
  if (done) form.reset();
}

export function setUpProviders() {
  $("#provider-form").addEventListener("submit", addProvider);
  $("#tab-settings").addEventListener("click", () => loadProviders());
  document.addEventListener("castbook:key", () => {
    if (panelShown()) loadProviders();
  });
}
