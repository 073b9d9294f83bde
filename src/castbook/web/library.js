// The Characters tab: cards with thumbnails, search, create, delete. Every change to the
// list is announced as a "castbook:characters" event (detail: the characters) so the canvas
// can follow it. A card's drag carries the character id as DRAG_TYPE (and text/plain).

import { $, api, blobUrl, characterImagePath, forgetBlobUrls } from "./api.js";

export const DRAG_TYPE = "application/x-castbook-character";

const state = {
  characters: [],
  pendingDelete: null,
};

export function characters() {
  return state.characters;
}

export async function loadCharacters() {
  state.characters = await api("/v1/characters");
  renderCards();
  document.dispatchEvent(new CustomEvent("castbook:characters", { detail: state.characters }));
}

export function thumbnailUrl(character, sha = character.primary_image) {
  if (!sha) return Promise.resolve(null);
  return blobUrl(characterImagePath(character.id, sha));
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

export function clearErrors(form) {
  for (const element of form.querySelectorAll("[data-error-for]")) {
    element.textContent = "";
    element.hidden = true;
  }
  for (const element of form.querySelectorAll(".field-invalid")) {
    element.classList.remove("field-invalid");
  }
}

export function showError(form, field, message) {
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

export function showApiError(form, exc, fallbackField = "") {
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
  forgetBlobUrls(`/v1/characters/${encodeURIComponent(character.id)}/`);
  await loadCharacters();
}

export function setUpLibrary() {
  $("#search").addEventListener("input", renderCards);
  $("#new-character").addEventListener("click", openForm);
  $("#cancel-character").addEventListener("click", closeForm);
  $("#character-form").addEventListener("submit", createCharacter);
  $("#confirm-dialog").addEventListener("close", onConfirmClosed);
}
