// The Character Extractor in the character form: ask POST /v1/characters/extract about a
// picture, then put its proposal into the form for the user to review. Fields it filled are
// highlighted ("proposed"), fields it could not see are marked ("unfilled") and named, and
// the analyser that answered is shown. Nothing here saves anything.

import { $, api } from "./api.js";

const UNKNOWN = "unknown";
const NOT_SEEN = "not determined from the picture";

/** `field`'s value in a character or an extraction (a grouped field sits in its group). */
export function fieldValue(record, field) {
  const holder = field.group ? record[field.group] || {} : record;
  return holder[field.name];
}

/** A list field's entries as the user types them: one per line, or "a, b". */
export function listText(field, items) {
  return items.join(field.separator === "\n" ? "\n" : `${field.separator} `);
}

function known(value) {
  const text = typeof value === "string" ? value.trim() : "";
  return text.toLowerCase() === UNKNOWN ? "" : text;
}

/** "physical.eyes" is the form's eyes field. */
function formField(name) {
  return name.slice(name.indexOf(".") + 1);
}

function sourceLabel(source) {
  if (source === "local") return "Local analyser (on the server, no vision-language model)";
  if (source.startsWith("vlm:")) return `Vision-language model ${source.slice(4)}`;
  return source || "unknown analyser";
}

/** The extraction for `image` ({blob, filename}); `local` asks for the local analyser. */
export async function requestExtraction(image, { local = false, signal } = {}) {
  const upload = new FormData();
  upload.append("image", image.blob, image.filename);
  if (local) upload.append("provider", "local");
  const result = await api("/v1/characters/extract", { method: "POST", form: upload, signal });
  return result.extraction;
}

/**
 * Fill `form`'s `fields` (GET /v1/characters/fields) with what `extraction` determined; mark
 * and name what it could not.
 */
export function showExtraction(form, extraction, saveLabel, fields) {
  const field = (name) => form.elements.namedItem(name);
  for (const described of fields) {
    const value = fieldValue(extraction, described);
    const text = Array.isArray(value) ? listText(described, value) : known(value);
    if (!text) continue; // not proposed (the name, tags), or not seen
    field(described.name).value = text;
    field(described.name).classList.add("proposed");
  }
  const unfilled = (extraction.unfilled || []).map(formField);
  for (const name of unfilled) {
    const element = field(name);
    if (element && !element.value.trim()) {
      element.classList.add("unfilled");
      element.dataset.placeholder = element.placeholder;
      element.placeholder = NOT_SEEN;
    }
  }

  const box = $("#extract-result");
  box.querySelector(".extract-source strong").textContent = sourceLabel(extraction.source || "");
  box.querySelector(".extract-review").textContent =
    `Review the highlighted fields, then press ${saveLabel}.`;
  const note = box.querySelector(".extract-note");
  note.textContent = extraction.note || ""; // the analyser's own account; never saved
  note.hidden = !note.textContent;
  const gaps = box.querySelector(".extract-unfilled");
  gaps.textContent = unfilled.length
    ? `Could not determine: ${unfilled.map((name) => name.replace(/_/g, " ")).join(", ")}.`
    : "";
  gaps.hidden = !unfilled.length;
  box.hidden = false;
}

/** A field the user edited is theirs now: no longer marked as proposed or unfilled. */
export function unmark(element) {
  element.classList.remove("proposed", "unfilled");
  if (element.dataset.placeholder !== undefined) {
    element.placeholder = element.dataset.placeholder;
    delete element.dataset.placeholder;
  }
}

export function clearExtraction(form) {
  for (const element of form.querySelectorAll(".proposed, .unfilled")) unmark(element);
  $("#extract-result").hidden = true;
}
