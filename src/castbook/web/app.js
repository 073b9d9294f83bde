// castbook web UI: the API key prompt, the sidebar tabs, and the parts of the page
// (library.js: the Characters tab; canvas.js: the workflow canvas; settings-providers.js:
// the Settings tab). Plain ES modules, no
// bundler, no network beyond this server.

import { $, ApiError, apiKey, onUnauthorized, setApiKey } from "./api.js";
import { setUpCanvas } from "./canvas.js";
import { setUpGallery } from "./canvas-gallery.js";
import { setUpPromptPreviews } from "./canvas-prompt.js";
import { loadCharacters, setUpLibrary } from "./library.js";
import { setUpProviders } from "./settings-providers.js";

// ---- the key prompt -----------------------------------------------------------------------

let keyAccepted = false; // the server took the current key (a call with it succeeded)
const refusals = new Set(); // what the server said when it refused a key (HTTP 401)

function askForKey(message) {
  const dialog = $("#key-dialog");
  const error = $("#key-error");
  if (message) {
    keyAccepted = false;
    refusals.add(message);
  }
  error.textContent = message || "";
  error.hidden = !message;
  $("#api-key").value = apiKey();
  if (!dialog.open) dialog.showModal();
}

/** The prompt closed (Escape, or a good key): without a key the server accepts, the page
 * says so and offers the prompt again, instead of waiting for node types that never come. */
function onKeyDialogClosed() {
  $("#key-needed").hidden = keyAccepted;
}

/** A refusal shown in a form that stayed open (Save, then the key prompt) is stale once a
 * good key is saved: take it out, leaving any other message there. */
function clearRefusals() {
  for (const slot of document.querySelectorAll(".form-error, .field-error")) {
    let text = slot.textContent;
    for (const message of refusals) text = text.split(message).join("");
    if (text === slot.textContent) continue;
    slot.textContent = text.trim();
    if (!slot.textContent) slot.hidden = true;
  }
  refusals.clear();
}

function keyWorks() {
  keyAccepted = true;
  $("#key-needed").hidden = true;
  clearRefusals();
}

async function saveKey(event) {
  event.preventDefault();
  const key = $("#api-key").value.trim();
  const error = $("#key-error");
  if (!key) {
    error.textContent = "paste an API key";
    error.hidden = false;
    return;
  }
  setApiKey(key);
  try {
    await loadCharacters();
  } catch (exc) {
    if (!(exc instanceof ApiError && exc.status === 401)) {
      error.textContent = exc.message;
      error.hidden = false;
    }
    return;
  }
  keyWorks();
  $("#key-dialog").close();
  document.dispatchEvent(new CustomEvent("castbook:key"));
}

// ---- sidebar tabs -------------------------------------------------------------------------

function showTab(name) {
  for (const tab of document.querySelectorAll(".tabs .tab")) {
    const active = tab.dataset.tab === name;
    tab.classList.toggle("active", active);
    tab.setAttribute("aria-selected", String(active));
  }
  for (const panel of document.querySelectorAll(".sidebar .panel")) {
    panel.hidden = panel.dataset.panel !== name;
  }
}

// ---- start --------------------------------------------------------------------------------

function start() {
  onUnauthorized(askForKey);
  $("#key-form").addEventListener("submit", saveKey);
  $("#key-dialog").addEventListener("cancel", (event) => {
    if (!apiKey()) event.preventDefault(); // no key, nothing to show: keep asking
  });
  $("#key-dialog").addEventListener("close", onKeyDialogClosed);
  $("#change-key").addEventListener("click", () => askForKey());
  $("#enter-key").addEventListener("click", () => askForKey());
  for (const tab of document.querySelectorAll(".tabs .tab")) {
    tab.addEventListener("click", () => showTab(tab.dataset.tab));
  }
  setUpLibrary();
  setUpCanvas();
  setUpGallery();
  setUpPromptPreviews();
  setUpProviders();
  if (!apiKey()) {
    askForKey();
    return;
  }
  document.dispatchEvent(new CustomEvent("castbook:key"));
  loadCharacters().then(keyWorks, (exc) => {
    if (!(exc instanceof ApiError && exc.status === 401)) {
      $("#list-error").textContent = exc.message;
      $("#list-error").hidden = false;
    }
  });
}

start();
