// The character dialog: create or edit every field of a character, manage its reference
// images, and fill the form from the Character Extractor's proposal for the user to review
// (it never saves by itself). library.js opens it; `onChange` is called after every change
// the server accepted, so the list (and the canvas) follow. The fields themselves (labels,
// kinds, limits) come from GET /v1/characters/fields, read once the key is known.

import { $, api, blobUrl, characterImagePath } from "./api.js";
import { make } from "./dom.js";
import {
  clearExtraction,
  fieldValue,
  listText,
  requestExtraction,
  showExtraction,
  unmark,
} from "./library-extract.js";

const EXTRACT_LABEL = "Extract from image";
// The ids these fields had before the form was built from the API; the others are field-<name>.
const FIELD_IDS = {
  style_prompt: "field-style",
  negative_prompt: "field-negative",
  distinctive_features: "field-traits",
};

const state = {
  fields: null, // GET /v1/characters/fields' list, once the form is built from it
  fieldsLoading: null, // its promise while it loads or once it did
  mode: "new", // or "edit"
  character: null, // edit: the character as the server last answered
  baseline: null, // the field values the form opened with, to send only what changed
  pending: [], // new: [{file, url}] chosen images, the primary one first
  extracting: null, // an AbortController while an extraction runs
  imagesBusy: false,
  saving: false,
  onChange: async () => {},
};

const formElement = () => $("#character-form");
const input = (name) => formElement().elements.namedItem(name);
const characterPath = (character) => `/v1/characters/${encodeURIComponent(character.id)}`;

// ---- errors under the field they name --------------------------------------------------------

const FIELD_ALIASES = { traits: "distinctive_features", primary_image: "image", images: "image" };

function fieldFor(field) {
  const parts = (field || "").split(".");
  // "physical.hair" is the hair field; "accessories.2" the accessories field.
  const root = parts[0] === "physical" && parts[1] ? parts[1] : parts[0];
  return FIELD_ALIASES[root] || root;
}

export function clearErrors(form) {
  for (const element of form.querySelectorAll("[data-error-for]")) {
    element.textContent = "";
    element.hidden = true;
  }
  for (const element of form.querySelectorAll(".field-invalid")) {
    element.classList.remove("field-invalid");
  }
}

function clearError(form, field) {
  const slot = form.querySelector(`[data-error-for="${field}"]`);
  if (!slot) return;
  slot.textContent = "";
  slot.hidden = true;
  const label = slot.previousElementSibling;
  const element = label && label.querySelector("input, textarea");
  if (element) element.classList.remove("field-invalid");
}

export function showError(form, field, message) {
  const name = fieldFor(field);
  let slot = name ? form.querySelector(`.field-error[data-error-for="${name}"]`) : null;
  if (!slot) slot = form.querySelector('.form-error[data-error-for=""]');
  slot.textContent = slot.textContent ? `${slot.textContent} ${message}` : message;
  slot.hidden = false;
  const label = slot.previousElementSibling;
  const element = label && label.querySelector("input, textarea");
  if (element) element.classList.add("field-invalid");
  slot.scrollIntoView({ block: "nearest" });
}

export function showApiError(form, exc, fallbackField = "", prefix = "") {
  const body = exc.body || {};
  if (Array.isArray(body.errors) && body.errors.length) {
    for (const problem of body.errors) {
      showError(form, problem.field || fallbackField, `${prefix}${problem.message}`);
    }
    return;
  }
  // A name clash (409) is the name's fault even where the JSON names no field.
  const field = body.field || (body.type === "DuplicateNameError" ? "name" : fallbackField);
  showError(form, field, `${prefix}${exc.message}`);
}

// ---- a confirmation, shared with the list ----------------------------------------------------

/** Ask in #confirm-dialog; resolves true when the user confirmed. */
export function confirmAction(text, confirmLabel = "Delete") {
  const dialog = $("#confirm-dialog");
  $("#confirm-text").textContent = text;
  $("#confirm-delete").textContent = confirmLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), {
      once: true,
    });
  });
}

// ---- building the fields from the API --------------------------------------------------------

function control(field) {
  const lines = field.kind === "list" && field.separator === "\n";
  const multiline = field.kind === "long_text" || lines;
  const element = document.createElement(multiline ? "textarea" : "input");
  element.name = field.name;
  element.id = FIELD_IDS[field.name] || `field-${field.name}`;
  if (multiline) element.rows = 3;
  else element.autocomplete = "off";
  if (field.kind !== "list") element.maxLength = field.max_length; // a list's limit is per entry
  element.required = field.required;
  element.placeholder = field.placeholder;
  return element;
}

/** A field's label, its input, and the slot its errors appear in. */
function fieldBox(field, className = "field") {
  const label = make("label", "", `${field.label} `);
  if (field.hint) label.append(make("small", "", `(${field.hint})`), " ");
  label.append(control(field));
  const error = make("p", "field-error");
  error.dataset.errorFor = field.name;
  error.hidden = true;
  const box = make("div", className);
  box.append(label, error);
  return box;
}

/** The fields of one section in a 6-column grid: rows of three, the first row takes the rest. */
function sectionBox(label, fields) {
  const box = make("fieldset", "traits");
  box.append(make("legend", "", label));
  const lead = fields.length % 3;
  fields.forEach((field, index) => {
    let span = "span-2";
    if (index < lead) span = lead === 1 ? "span-6" : "span-3";
    box.append(fieldBox(field, `field ${span}`));
  });
  return box;
}

/** Runs of neighbouring fields shown together: a section's fields, lists (two a row), or one. */
function runs(fields) {
  const key = (field) =>
    field.section
      ? `section ${field.section}`
      : field.kind === "list"
        ? "lists"
        : `field ${field.name}`;
  const result = [];
  for (const field of fields) {
    const last = result[result.length - 1];
    if (last && key(last[0]) === key(field)) last.push(field);
    else result.push([field]);
  }
  return result;
}

function buildFields({ fields, sections }) {
  const parts = [];
  for (const run of runs(fields)) {
    if (run[0].section) {
      parts.push(sectionBox(sections[run[0].section] || run[0].section, run));
      continue;
    }
    for (let i = 0; i < run.length; i += 2) {
      const row = run.slice(i, i + 2);
      if (row.length === 1) {
        parts.push(fieldBox(row[0]));
      } else {
        const pair = make("div", "field-pair");
        pair.append(...row.map((field) => fieldBox(field)));
        parts.push(pair);
      }
    }
  }
  $("#character-fields").replaceChildren(...parts);
  state.fields = fields;
}

/** Build the fields from the API (once; a failed try is tried again on the next call). */
function loadFields() {
  if (!state.fieldsLoading) {
    state.fieldsLoading = api("/v1/characters/fields")
      .then(buildFields)
      .catch((exc) => {
        state.fieldsLoading = null;
        throw exc;
      });
  }
  return state.fieldsLoading;
}

function showFieldsError(exc) {
  const message = make(
    "p",
    "form-error",
    `Could not load the character's fields: ${exc.message}. Close this form and open it ` +
      "again to retry.",
  );
  message.id = "fields-error";
  message.setAttribute("role", "alert");
  $("#character-fields").replaceChildren(message);
}

// ---- reading and filling the fields ----------------------------------------------------------

function entries(field, text) {
  return text
    .split(field.separator)
    .map((part) => part.trim())
    .filter(Boolean);
}

function readFields() {
  const values = {};
  for (const field of state.fields || []) {
    const text = input(field.name).value;
    values[field.name] = field.kind === "list" ? entries(field, text) : text.trim();
  }
  return values;
}

function fieldsOf(character) {
  const values = {};
  for (const field of state.fields) {
    const value = fieldValue(character, field);
    values[field.name] = field.kind === "list" ? [...(value || [])] : value || "";
  }
  return values;
}

function fillFields(values) {
  for (const field of state.fields) {
    const value = values[field.name];
    input(field.name).value = field.kind === "list" ? listText(field, value || []) : value || "";
  }
}

function changedFields() {
  const now = readFields();
  const changes = {};
  for (const [field, value] of Object.entries(now)) {
    if (JSON.stringify(value) !== JSON.stringify(state.baseline[field])) changes[field] = value;
  }
  return changes;
}

function isDirty() {
  return Object.keys(changedFields()).length > 0 || state.pending.length > 0;
}

// ---- reference images ------------------------------------------------------------------------

function imageItems() {
  if (state.mode === "edit") {
    const character = state.character;
    if (!character) return [];
    const items = character.images.map((image, index) => ({
      key: image.sha256,
      primary: image.sha256 === character.primary_image,
      label: `image ${index + 1} (${image.width}×${image.height})`,
      url: () => blobUrl(characterImagePath(character.id, image.sha256)),
    }));
    return [...items.filter((i) => i.primary), ...items.filter((i) => !i.primary)];
  }
  return state.pending.map((chosen, index) => ({
    key: index,
    primary: index === 0,
    label: chosen.file.name,
    url: () => Promise.resolve(chosen.url),
  }));
}

function renderImages() {
  const list = $("#image-list");
  list.replaceChildren();
  const items = imageItems();
  for (const item of items) {
    const entry = document.createElement("li");
    entry.className = item.primary ? "image-item primary" : "image-item";
    entry.dataset.key = String(item.key);
    const img = document.createElement("img");
    img.alt = item.label;
    item
      .url()
      .then((url) => {
        img.src = url;
      })
      .catch(() => img.classList.add("thumb-missing"));
    entry.append(img);
    if (item.primary) {
      const badge = document.createElement("span");
      badge.className = "primary-badge";
      badge.textContent = "Primary";
      entry.append(badge);
    } else {
      const makePrimary = document.createElement("button");
      makePrimary.type = "button";
      makePrimary.className = "make-primary";
      makePrimary.textContent = "Make primary";
      makePrimary.setAttribute("aria-label", `Make ${item.label} the primary image`);
      makePrimary.addEventListener("click", () => setPrimary(item.key));
      entry.append(makePrimary);
    }
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "remove-image";
    remove.textContent = "✕";
    remove.title = "Remove this image";
    remove.setAttribute("aria-label", `Remove ${item.label}`);
    remove.addEventListener("click", () => removeImage(item.key));
    entry.append(remove);
    list.append(entry);
  }
  $("#images-empty").hidden = items.length > 0;
  $("#images-note").hidden = state.mode !== "edit" || items.length === 0;
  $("#add-images").firstChild.textContent = items.length ? "Add images " : "Choose an image ";
  updateBusy();
}

/** Run an image change on the server (edit mode), then show the character it answers. */
async function changeImages(run) {
  const form = formElement();
  clearError(form, "image");
  state.imagesBusy = true;
  updateBusy();
  const opened = state.character;
  try {
    const updated = await run();
    if (state.character === opened) {
      state.character = updated;
      renderImages();
    }
    await state.onChange();
  } catch (exc) {
    showApiError(form, exc, "image");
  } finally {
    state.imagesBusy = false;
    updateBusy();
  }
}

function uploadForm(files, primary) {
  const upload = new FormData();
  for (const file of files) upload.append("image", file, file.name);
  if (primary) upload.append("primary", "true");
  return upload;
}

function addImages(files) {
  if (!files.length) return;
  if (state.mode === "edit") {
    const path = `${characterPath(state.character)}/images`;
    changeImages(() => api(path, { method: "POST", form: uploadForm(files, false) }));
    return;
  }
  clearError(formElement(), "image");
  const same = (a, b) =>
    a.name === b.name && a.size === b.size && a.lastModified === b.lastModified;
  for (const file of files) {
    // Picking the same file twice would only make the upload refuse the duplicate.
    if (state.pending.some((chosen) => same(chosen.file, file))) continue;
    state.pending.push({ file, url: URL.createObjectURL(file) });
  }
  renderImages();
}

function setPrimary(key) {
  if (state.mode === "edit") {
    const path = characterPath(state.character);
    changeImages(() => api(path, { method: "PATCH", json: { primary_image: key } }));
    return;
  }
  const [chosen] = state.pending.splice(key, 1);
  state.pending.unshift(chosen);
  renderImages();
}

async function removeImage(key) {
  if (state.mode === "edit") {
    const character = state.character;
    if (character.images.length === 1) {
      const confirmed = await confirmAction(
        `Remove the only reference image of "${character.name}"? Without one, generations ` +
          "cannot follow it and its consistency cannot be scored.",
        "Remove image",
      );
      if (!confirmed) return;
    }
    const path = `${characterPath(character)}/images/${key}`;
    changeImages(() => api(path, { method: "DELETE" }));
    return;
  }
  const [removed] = state.pending.splice(key, 1);
  URL.revokeObjectURL(removed.url);
  renderImages();
}

// ---- the Character Extractor (library-extract.js shows its proposal) -------------------------

/** The image to extract from: the primary chosen file, or the character's primary image. */
async function extractionImage() {
  if (state.mode === "new") {
    const chosen = state.pending[0];
    return chosen ? { blob: chosen.file, filename: chosen.file.name } : null;
  }
  const character = state.character;
  if (!character.primary_image) return null;
  const path = characterImagePath(character.id, character.primary_image, false);
  const blob = await (await api(path, { raw: true })).blob();
  const extension = (blob.type.split("/")[1] || "png").replace("jpeg", "jpg");
  return { blob, filename: `${character.name}.${extension}` };
}

async function extract() {
  const form = formElement();
  if (state.extracting) return;
  clearError(form, "image");
  clearExtraction(form);
  state.extracting = new AbortController();
  const { signal } = state.extracting;
  updateBusy();
  try {
    const image = await extractionImage();
    if (!image) {
      showError(form, "image", "Choose a reference image to extract from first.");
      return;
    }
    const local = $("#extract-local").checked;
    const extraction = await requestExtraction(image, { local, signal });
    if (signal.aborted) return;
    showExtraction(form, extraction, state.mode === "new" ? "Create" : "Save", state.fields);
    if (!input("name").value.trim()) input("name").focus();
  } catch (exc) {
    if (!signal.aborted) showApiError(form, exc, "image", "Extraction failed: ");
  } finally {
    if (state.extracting && state.extracting.signal === signal) state.extracting = null;
    updateBusy();
  }
}

// ---- busy state ------------------------------------------------------------------------------

function updateBusy() {
  const extracting = Boolean(state.extracting);
  const noFields = !state.fields;
  const button = $("#extract-character");
  button.disabled = extracting || state.imagesBusy || noFields || imageItems().length === 0;
  button.classList.toggle("busy", extracting);
  button.textContent = extracting ? "Extracting…" : EXTRACT_LABEL;
  $("#save-character").disabled = extracting || state.imagesBusy || state.saving || noFields;
  $("#field-image").disabled = extracting || state.imagesBusy;
  $("#add-images").classList.toggle("disabled", extracting || state.imagesBusy);
  $("#image-list").classList.toggle("busy", state.imagesBusy);
  formElement().setAttribute("aria-busy", String(extracting || state.imagesBusy));
}

// ---- saving ----------------------------------------------------------------------------------

async function createCharacter(values) {
  const form = formElement();
  let character;
  try {
    character = await api("/v1/characters", { method: "POST", json: values });
  } catch (exc) {
    showApiError(form, exc);
    return false;
  }
  if (state.pending.length) {
    const files = state.pending.map((chosen) => chosen.file);
    try {
      await api(`${characterPath(character)}/images`, {
        method: "POST",
        form: uploadForm(files, true),
      });
    } catch (exc) {
      // Keep create-with-images all or nothing, so fixing the images and retrying works.
      await api(characterPath(character), { method: "DELETE" }).catch(() => {});
      showApiError(form, exc, "image");
      return false;
    }
  }
  return true;
}

async function updateCharacter() {
  const changes = changedFields();
  if (!Object.keys(changes).length) return true;
  try {
    state.character = await api(characterPath(state.character), {
      method: "PATCH",
      json: changes,
    });
  } catch (exc) {
    showApiError(formElement(), exc);
    return false;
  }
  return true;
}

async function save(event) {
  event.preventDefault();
  const form = formElement();
  if (!state.fields || state.extracting || state.imagesBusy || state.saving) return;
  clearErrors(form);
  const values = readFields();
  if (!values.name) {
    showError(form, "name", "A name is required.");
    input("name").focus();
    return;
  }
  state.saving = true;
  updateBusy();
  let saved = false;
  try {
    saved = state.mode === "new" ? await createCharacter(values) : await updateCharacter();
    if (saved) {
      $("#character-dialog").close();
      await state.onChange();
    }
  } finally {
    state.saving = false;
    updateBusy();
  }
}

// ---- opening and closing ---------------------------------------------------------------------

/**
 * Open the dialog: empty for a new character, or pre-filled to edit `character`. Without the
 * fields (GET /v1/characters/fields failed) it opens with the reason instead of the fields.
 */
export async function openCharacterForm(character = null) {
  const form = formElement();
  const ready = await loadFields().then(
    () => true,
    (exc) => {
      showFieldsError(exc);
      return false;
    },
  );
  if ($("#character-dialog").open) return;
  reset();
  state.mode = character ? "edit" : "new";
  state.character = character;
  state.baseline = character && ready ? fieldsOf(character) : readFields();
  if (character && ready) fillFields(state.baseline);
  $("#character-form-title").textContent = character ? `Edit ${character.name}` : "New character";
  $("#save-character").textContent = character ? "Save" : "Create";
  $("#extract-hint").lastElementChild.textContent = character ? "Save" : "Create";
  form.dataset.mode = state.mode;
  renderImages();
  $("#character-dialog").showModal();
  if (ready) input("name").focus();
}

function reset() {
  const form = formElement();
  if (state.extracting) state.extracting.abort();
  state.extracting = null;
  for (const chosen of state.pending) URL.revokeObjectURL(chosen.url);
  state.pending = [];
  state.mode = "new";
  state.character = null;
  state.imagesBusy = false;
  state.saving = false;
  form.reset();
  clearErrors(form);
  clearExtraction(form);
}

function onCancelKey(event) {
  // Escape would throw away what was typed; Cancel says it on purpose.
  if (!isDirty()) return;
  event.preventDefault();
  const form = formElement();
  clearError(form, "");
  showError(form, "", "Unsaved changes: press Cancel to discard them.");
}

export function setUpCharacterForm({ onChange }) {
  state.onChange = onChange;
  const form = formElement();
  // Ready before the first New character; a failure is shown when the form opens.
  document.addEventListener("castbook:key", () => loadFields().catch(() => {}));
  form.addEventListener("submit", save);
  $("#cancel-character").addEventListener("click", () => $("#character-dialog").close());
  $("#character-dialog").addEventListener("close", () => {
    if (!$("#character-dialog").open) reset(); // not when it was opened again meanwhile
  });
  $("#character-dialog").addEventListener("cancel", onCancelKey);
  $("#extract-character").addEventListener("click", extract);
  $("#field-image").addEventListener("change", (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    addImages(files);
  });
  form.addEventListener("input", (event) => unmark(event.target));
}
