// The Character Extractor in the character form: ask POST /v1/characters/extract about a
// picture, then put its proposal into the form for the user to review. Fields it filled are
// highlighted ("proposed"), fields it could not see are marked ("unfilled") and named, and
// the analyser that answered is shown. Nothing here saves anything.

import { $, api } from "./api.js";

const UNKNOWN = "unknown";
const PHYSICAL = ["hair", "eyes", "face", "body", "skin"];
const NOT_SEEN = "not determined from the picture";

function known(value) {
  const text = typeof value === "string" ? value.trim() : "";
  return text.toLowerCase() === UNKNOWN ? "" : text;
}

/** "physical.eyes" is the form's eyes field. */
function formField(name) {
  return name.startsWith("physical.") ? name.slice("physical.".length) : name;
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

/** Fill `form` with what `extraction` determined; mark and name what it could not. */
export function showExtraction(form, extraction, saveLabel) {
  const field = (name) => form.elements.namedItem(name);
  const physical = extraction.physical || {};
  const proposal = {
    style_prompt: known(extraction.style_prompt),
    description: known(extraction.description),
    clothing: known(extraction.clothing),
    accessories: extraction.accessories || [],
    distinctive_features: extraction.distinctive_features || [],
  };
  for (const trait of PHYSICAL) proposal[trait] = known(physical[trait]);
  for (const [name, value] of Object.entries(proposal)) {
    if (Array.isArray(value) ? value.length === 0 : !value) continue;
    field(name).value = Array.isArray(value) ? value.join("\n") : value;
    field(name).classList.add("proposed");
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
