// castbook web UI, first slice: the API key prompt, the Characters tab and a canvas that
// takes character nodes. Plain ES module, no bundler, no network beyond this server.

const KEY_STORAGE = "castbook.apiKey";
const DRAG_TYPE = "application/x-castbook-character";

const $ = (selector, root = document) => root.querySelector(selector);

const state = {
  characters: [],
  thumbnails: new Map(), // "id/sha" -> blob URL
  pendingDelete: null,
};

// ---- the API ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

async function api(path, { method = "GET", json, form, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${apiKey()}` };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart boundary
  }
  const response = await fetch(path, { method, headers, body });
  if (!response.ok) {
    let payload = null;
    try {
      payload = await response.json();
    } catch {
      payload = { error: `${response.status} ${response.statusText}` };
    }
    if (response.status === 401) askForKey(payload.error);
    throw new ApiError(response.status, payload);
  }
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

// ---- the key prompt -----------------------------------------------------------------------

function askForKey(message) {
  const dialog = $("#key-dialog");
  const error = $("#key-error");
  error.textContent = message || "";
  error.hidden = !message;
  $("#api-key").value = apiKey();
  if (!dialog.open) dialog.showModal();
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
  localStorage.setItem(KEY_STORAGE, key);
  try {
    await loadCharacters();
  } catch (exc) {
    if (!(exc instanceof ApiError && exc.status === 401)) {
      error.textContent = exc.message;
      error.hidden = false;
    }
    return;
  }
  $("#key-dialog").close();
}

// ---- the character library ----------------------------------------------------------------

async function loadCharacters() {
  state.characters = await api("/v1/characters");
  renderCards();
}

async function thumbnailUrl(character) {
  const sha = character.primary_image;
  if (!sha) return null;
  const cacheKey = `${character.id}/${sha}`;
  if (!state.thumbnails.has(cacheKey)) {
    const path = `/v1/characters/${encodeURIComponent(character.id)}/images/${sha}?thumbnail=true`;
    const response = await api(path, { raw: true });
    state.thumbnails.set(cacheKey, URL.createObjectURL(await response.blob()));
  }
  return state.thumbnails.get(cacheKey);
}

function forgetThumbnails(characterId) {
  for (const [cacheKey, url] of state.thumbnails) {
    if (cacheKey.startsWith(`${characterId}/`)) {
      URL.revokeObjectURL(url);
      state.thumbnails.delete(cacheKey);
    }
  }
}

function matches(character, query) {
  if (!query) return true;
  const haystack = [character.name, character.style_prompt, ...(character.tags || [])]
    .join(" ")
    .toLowerCase();
  return query
    .toLowerCase()
    .split(/\s+/)
    .every((word) => haystack.includes(word));
}

function cardFor(character) {
  const card = document.createElement("li");
  card.className = "card";
  card.draggable = true;
  card.dataset.id = character.id;
  card.dataset.name = character.name;

  const img = document.createElement("img");
  img.className = "thumb";
  img.alt = "";
  img.draggable = false;
  card.append(img);
  thumbnailUrl(character)
    .then((url) => {
      if (url) {
        img.src = url;
        img.alt = `${character.name} thumbnail`;
      }
    })
    .catch(() => img.classList.add("thumb-missing"));

  const text = document.createElement("div");
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = character.name;
  const tags = document.createElement("div");
  tags.className = "tags";
  for (const tag of character.tags || []) {
    const chip = document.createElement("span");
    chip.className = "tag";
    chip.textContent = tag;
    tags.append(chip);
  }
  text.append(name, tags);
  card.append(text);

  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "delete";
  remove.title = `Delete ${character.name}`;
  remove.setAttribute("aria-label", `Delete ${character.name}`);
  remove.textContent = "✕";
  remove.addEventListener("click", () => confirmDelete(character));
  card.append(remove);

  card.addEventListener("dragstart", (event) => {
    event.dataTransfer.setData(DRAG_TYPE, character.id);
    event.dataTransfer.setData("text/plain", character.id);
    event.dataTransfer.effectAllowed = "copy";
  });
  return card;
}

function renderCards() {
  const query = $("#search").value.trim();
  const list = $("#cards");
  list.replaceChildren();
  const shown = state.characters.filter((c) => matches(c, query));
  for (const character of shown) list.append(cardFor(character));
  $("#empty-library").hidden = state.characters.length > 0;
  $("#no-match").hidden = state.characters.length === 0 || shown.length > 0;
}

// ---- the "New character" form --------------------------------------------------------------

const FIELD_ALIASES = { traits: "distinctive_features", physical: "distinctive_features" };

function clearErrors(form) {
  for (const element of form.querySelectorAll("[data-error-for]")) {
    element.textContent = "";
    element.hidden = true;
  }
  for (const element of form.querySelectorAll(".field-invalid")) {
    element.classList.remove("field-invalid");
  }
}

function showError(form, field, message) {
  const root = (field || "").split(".")[0];
  const name = FIELD_ALIASES[root] || root;
  let slot = name ? form.querySelector(`.field-error[data-error-for="${name}"]`) : null;
  if (!slot) slot = form.querySelector('.form-error[data-error-for=""]');
  slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
  slot.hidden = false;
  const label = slot.previousElementSibling;
  const input = label && label.querySelector("input, textarea");
  if (input) input.classList.add("field-invalid");
}

function showApiError(form, exc, fallbackField = "") {
  const body = exc.body || {};
  if (Array.isArray(body.errors) && body.errors.length) {
    for (const problem of body.errors) showError(form, problem.field, problem.message);
    return;
  }
  // A name clash (409) names no field in the JSON, but it is the name's fault.
  const field = body.field || (body.type === "DuplicateNameError" ? "name" : fallbackField);
  showError(form, field, exc.message);
}

function lines(text, separator) {
  return text
    .split(separator)
    .map((part) => part.trim())
    .filter(Boolean);
}

async function createCharacter(event) {
  event.preventDefault();
  const form = $("#character-form");
  clearErrors(form);
  const name = form.elements.name.value.trim();
  if (!name) {
    showError(form, "name", "A name is required.");
    return;
  }
  const submit = $("#save-character");
  submit.disabled = true;
  try {
    let character;
    try {
      character = await api("/v1/characters", {
        method: "POST",
        json: {
          name,
          style_prompt: form.elements.style_prompt.value.trim(),
          distinctive_features: lines(form.elements.traits.value, /\n/),
          tags: lines(form.elements.tags.value, ","),
        },
      });
    } catch (exc) {
      showApiError(form, exc);
      return;
    }
    const file = form.elements.image.files[0];
    if (file) {
      const upload = new FormData();
      upload.append("image", file, file.name);
      upload.append("primary", "true");
      try {
        character = await api(`/v1/characters/${encodeURIComponent(character.id)}/images`, {
          method: "POST",
          form: upload,
        });
      } catch (exc) {
        // Keep create-with-image all or nothing, so fixing the image and retrying works.
        await api(`/v1/characters/${encodeURIComponent(character.id)}`, {
          method: "DELETE",
        }).catch(() => {});
        showApiError(form, exc, "image");
        return;
      }
    }
    form.reset();
    form.hidden = true;
    await loadCharacters();
  } finally {
    submit.disabled = false;
  }
}

function openForm() {
  const form = $("#character-form");
  clearErrors(form);
  form.hidden = false;
  form.elements.name.focus();
}

function closeForm() {
  const form = $("#character-form");
  form.reset();
  clearErrors(form);
  form.hidden = true;
}

// ---- deleting, with a confirmation ---------------------------------------------------------

function confirmDelete(character) {
  state.pendingDelete = character;
  $("#confirm-text").textContent =
    `Delete "${character.name}" and its reference images? This cannot be undone.`;
  $("#confirm-dialog").returnValue = "";
  $("#confirm-dialog").showModal();
}

async function onConfirmClosed() {
  const character = state.pendingDelete;
  state.pendingDelete = null;
  if (!character || $("#confirm-dialog").returnValue !== "confirm") return;
  const errorSlot = $("#list-error");
  errorSlot.hidden = true;
  try {
    await api(`/v1/characters/${encodeURIComponent(character.id)}`, { method: "DELETE" });
  } catch (exc) {
    errorSlot.textContent = exc.message;
    errorSlot.hidden = false;
    return;
  }
  forgetThumbnails(character.id);
  for (const node of canvasNodes()) {
    if (node.dataset.characterId === character.id) node.classList.add("missing");
  }
  await loadCharacters();
}

// ---- the canvas ----------------------------------------------------------------------------

let nextNodeId = 1;

function canvasNodes() {
  return [...$("#canvas").querySelectorAll(".node")];
}

function select(node) {
  for (const other of canvasNodes()) other.classList.toggle("selected", other === node);
  if (node) node.focus({ preventScroll: true });
}

function addCharacterNode(character, x, y) {
  const node = document.createElement("div");
  node.className = "node";
  node.tabIndex = 0;
  node.dataset.nodeId = `n${nextNodeId++}`;
  node.dataset.type = "character";
  node.dataset.characterId = character.id;
  node.style.left = `${Math.max(0, Math.round(x))}px`;
  node.style.top = `${Math.max(0, Math.round(y))}px`;

  const type = document.createElement("div");
  type.className = "node-type";
  type.textContent = "character";
  const body = document.createElement("div");
  body.className = "node-body";
  const cached = state.thumbnails.get(`${character.id}/${character.primary_image}`);
  if (cached) {
    const img = document.createElement("img");
    img.src = cached;
    img.alt = "";
    img.draggable = false;
    body.append(img);
  }
  const name = document.createElement("span");
  name.className = "node-name";
  name.textContent = character.name;
  body.append(name);
  node.append(type, body);

  node.addEventListener("pointerdown", (event) => startMove(event, node));
  $("#canvas").append(node);
  select(node);
  return node;
}

function startMove(event, node) {
  if (event.button !== 0) return;
  event.preventDefault();
  event.stopPropagation();
  select(node);
  const startX = event.clientX;
  const startY = event.clientY;
  const left = node.offsetLeft;
  const top = node.offsetTop;
  node.setPointerCapture(event.pointerId);
  const move = (e) => {
    node.style.left = `${Math.max(0, left + e.clientX - startX)}px`;
    node.style.top = `${Math.max(0, top + e.clientY - startY)}px`;
  };
  const stop = () => {
    node.removeEventListener("pointermove", move);
    node.removeEventListener("pointerup", stop);
    node.removeEventListener("pointercancel", stop);
  };
  node.addEventListener("pointermove", move);
  node.addEventListener("pointerup", stop);
  node.addEventListener("pointercancel", stop);
}

function setUpCanvas() {
  const canvas = $("#canvas");
  canvas.addEventListener("dragover", (event) => {
    const types = [...event.dataTransfer.types];
    if (types.includes(DRAG_TYPE) || types.includes("text/plain")) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      canvas.classList.add("drop-target");
    }
  });
  canvas.addEventListener("dragleave", () => canvas.classList.remove("drop-target"));
  canvas.addEventListener("drop", (event) => {
    event.preventDefault();
    canvas.classList.remove("drop-target");
    const id = event.dataTransfer.getData(DRAG_TYPE) || event.dataTransfer.getData("text/plain");
    const character = state.characters.find((c) => c.id === id);
    if (!character) return;
    const box = canvas.getBoundingClientRect();
    addCharacterNode(character, event.clientX - box.left, event.clientY - box.top);
  });
  canvas.addEventListener("pointerdown", (event) => {
    if (event.target === canvas) select(null);
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Delete" && event.key !== "Backspace") return;
    const target = event.target;
    if (target instanceof HTMLElement && target.closest("input, textarea, dialog")) return;
    const selected = canvasNodes().filter((n) => n.classList.contains("selected"));
    if (!selected.length) return;
    event.preventDefault();
    for (const node of selected) node.remove();
  });
}

// ---- start --------------------------------------------------------------------------------

function start() {
  $("#key-form").addEventListener("submit", saveKey);
  $("#key-dialog").addEventListener("cancel", (event) => {
    if (!apiKey()) event.preventDefault(); // no key, nothing to show: keep asking
  });
  $("#change-key").addEventListener("click", () => askForKey());
  $("#search").addEventListener("input", renderCards);
  $("#new-character").addEventListener("click", openForm);
  $("#cancel-character").addEventListener("click", closeForm);
  $("#character-form").addEventListener("submit", createCharacter);
  $("#confirm-dialog").addEventListener("close", onConfirmClosed);
  setUpCanvas();
  if (!apiKey()) {
    askForKey();
    return;
  }
  loadCharacters().catch((exc) => {
    if (!(exc instanceof ApiError && exc.status === 401)) {
      $("#list-error").textContent = exc.message;
      $("#list-error").hidden = false;
    }
  });
}

start();
