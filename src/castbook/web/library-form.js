// The character dialog: create or edit every field of a character, manage its reference
// images, and fill the form from the Character Extractor's proposal for the user to review
// (it never saves by itself). library.js opens it; `onChange` is called after every change
// the server accepted, so the list (and the canvas) follow.

import { $, api, blobUrl, characterImagePath } from "./api.js";
import { clearExtraction, requestExtraction, showExtraction, unmark } from "./library-extract.js";

const TEXT_FIELDS = [
  "name",
  "style_prompt",
  "negative_prompt",
  "description",
  "hair",
  "eyes",
  "face",
  "body",
  "skin",
  "clothing",
];
const PHYSICAL = ["hair", "eyes", "face", "body", "skin"];
const LIST_SEPARATORS = { accessories: /\n/, distinctive_features: /\n/, tags: "," };
const EXTRACT_LABEL = "Extract from image";

const state = {
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

// ---- reading and filling the fields ----------------------------------------------------------

function lines(text, separator) {
  return text
    .split(separator)
    .map((part) => part.trim())
    .filter(Boolean);
}

function readFields() {
  const values = {};
  for (const field of TEXT_FIELDS) values[field] = input(field).value.trim();
  for (const [field, separator] of Object.entries(LIST_SEPARATORS)) {
    values[field] = lines(input(field).value, separator);
  }
  return values;
}

function fieldsOf(character) {
  const values = {};
  for (const field of TEXT_FIELDS) {
    values[field] = PHYSICAL.includes(field)
      ? (character.physical || {})[field] || ""
      : character[field] || "";
  }
  for (const field of Object.keys(LIST_SEPARATORS)) values[field] = [...(character[field] || [])];
  return values;
}

function fillFields(values) {
  for (const field of TEXT_FIELDS) input(field).value = values[field] || "";
  for (const [field, separator] of Object.entries(LIST_SEPARATORS)) {
    input(field).value = (values[field] || []).join(separator === "," ? ", " : "\n");
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
    showExtraction(form, extraction, state.mode === "new" ? "Create" : "Save");
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
  const button = $("#extract-character");
  button.disabled = extracting || state.imagesBusy || imageItems().length === 0;
  button.classList.toggle("busy", extracting);
  button.textContent = extracting ? "Extracting…" : EXTRACT_LABEL;
  $("#save-character").disabled = extracting || state.imagesBusy || state.saving;
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
  if (state.extracting || state.imagesBusy || state.saving) return;
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

/** Open the dialog: empty for a new character, or pre-filled to edit `character`. */
export function openCharacterForm(character = null) {
  const form = formElement();
  reset();
  state.mode = character ? "edit" : "new";
  state.character = character;
  state.baseline = character ? fieldsOf(character) : readFields();
  if (character) fillFields(state.baseline);
  $("#character-form-title").textContent = character ? `Edit ${character.name}` : "New character";
  $("#save-character").textContent = character ? "Save" : "Create";
  $("#extract-hint").lastElementChild.textContent = character ? "Save" : "Create";
  form.dataset.mode = state.mode;
  renderImages();
  $("#character-dialog").showModal();
  input("name").focus();
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
