// The Characters tab: cards with thumbnails, search, delete, and the dialogs to create and
// edit characters (library-form.js, with library-extract.js for Extract) and to export and
// import them (library-transfer.js); a picture dropped on the tab is identified
// (library-identify.js); a card's Train button trains its LoRA (library-train.js). Every change to the list is announced as a
// "castbook:characters" event (detail: the characters) so the canvas can follow it. A card's
// drag carries the character id as DRAG_TYPE (and text/plain).

import { $, api, blobUrl, characterImagePath, forgetBlobUrls } from "./api.js";
import {
  clearErrors,
  confirmAction,
  openCharacterForm,
  setUpCharacterForm,
  showApiError,
  showError,
} from "./library-form.js";
import { setUpIdentify } from "./library-identify.js";
import { openTraining, setUpTraining } from "./library-train.js";
import { setUpTransfer } from "./library-transfer.js";

export { clearErrors, showApiError, showError };

export const DRAG_TYPE = "application/x-castbook-character";

const state = {
  characters: [],
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

function searchQuery() {
  return $("#search").value.trim();
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

function shownCharacters() {
  const query = searchQuery();
  return state.characters.filter((c) => matches(c, query));
}

function iconButton(className, symbol, label, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = className;
  button.title = label;
  button.setAttribute("aria-label", label);
  button.textContent = symbol;
  button.addEventListener("click", onClick);
  return button;
}

function cardFor(character) {
  const card = document.createElement("li");
  card.className = "card";
  card.draggable = true;
  card.dataset.id = character.id;
  card.dataset.name = character.name;
  if (character.style_prompt) card.title = character.style_prompt;

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
      } else {
        img.classList.add("thumb-missing");
      }
    })
    .catch(() => img.classList.add("thumb-missing"));

  const text = document.createElement("div");
  text.className = "card-text";
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
  const meta = document.createElement("div");
  meta.className = "meta";
  const count = (character.images || []).length;
  meta.textContent = count ? `${count} image${count === 1 ? "" : "s"}` : "no reference image";
  meta.classList.toggle("warning", count === 0);
  text.append(name, tags, meta);
  card.append(text);

  const actions = document.createElement("div");
  actions.className = "card-actions";
  actions.append(
    iconButton("edit", "✎", `Edit ${character.name}`, () => openCharacterForm(character)),
    iconButton("train", "◆", `Train ${character.name}'s LoRA`, () => openTraining(character)),
    iconButton("delete", "✕", `Delete ${character.name}`, () => confirmDelete(character)),
  );
  card.append(actions);

  card.addEventListener("dblclick", (event) => {
    if (!event.target.closest("button")) openCharacterForm(character);
  });
  // The keyboard's drag: Enter on a focused card places the character on the canvas.
  card.tabIndex = 0;
  const images = count ? `${count} reference image${count === 1 ? "" : "s"}` : "no reference image";
  card.setAttribute("aria-label", `${character.name}, ${images}: Enter places it on the canvas`);
  card.addEventListener("keydown", (event) => {
    if (event.target !== card || event.key !== "Enter") return;
    event.preventDefault();
    document.dispatchEvent(new CustomEvent("castbook:place-character", { detail: character.id }));
  });
  card.addEventListener("dragstart", (event) => {
    event.dataTransfer.setData(DRAG_TYPE, character.id);
    event.dataTransfer.setData("text/plain", character.id);
    event.dataTransfer.effectAllowed = "copy";
  });
  return card;
}

function renderCards() {
  const list = $("#cards");
  list.replaceChildren();
  const shown = shownCharacters();
  for (const character of shown) list.append(cardFor(character));
  const total = state.characters.length;
  $("#empty-library").hidden = total > 0;
  $("#no-match").hidden = total === 0 || shown.length > 0;
  $("#library-count").textContent =
    total === 0
      ? ""
      : shown.length === total
        ? `${total} character${total === 1 ? "" : "s"}`
        : `${shown.length} of ${total} shown`;
}

// ---- deleting, with a confirmation ---------------------------------------------------------

async function confirmDelete(character) {
  const confirmed = await confirmAction(
    `Delete "${character.name}" and its reference images? This cannot be undone.`,
  );
  if (!confirmed) return;
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
  $("#new-character").addEventListener("click", () => openCharacterForm());
  setUpCharacterForm({ onChange: loadCharacters });
  setUpTransfer({
    all: characters,
    shown: shownCharacters,
    searching: () => Boolean(searchQuery()),
    onImported: loadCharacters,
  });
  setUpIdentify();
  setUpTraining();
}
