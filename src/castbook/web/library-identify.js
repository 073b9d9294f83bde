// "Who is this?" on the Characters tab: a picture dropped on the tab (or chosen with the
// button) goes to POST /v1/identify, and the answer shows under the bar: the character it
// shows with its score, or "No known character" below the open-set threshold, with the
// runners-up. The matching card is highlighted. Cards dragged within the page carry no
// files and are left alone.

import { $, api } from "./api.js";

const SHOWN = 3;

function hasFiles(event) {
  return Array.from(event.dataTransfer?.types || []).includes("Files");
}

function describe(match) {
  return `${match.name} (score ${Math.round(match.score)})`;
}

function highlight(id) {
  for (const card of document.querySelectorAll("#cards .card")) {
    card.classList.toggle("identified", id !== null && card.dataset.id === id);
  }
}

function show(file, result) {
  const output = $("#identify-result");
  const preview = document.createElement("img");
  preview.alt = `${file.name}`;
  preview.src = URL.createObjectURL(file);
  preview.addEventListener("load", () => URL.revokeObjectURL(preview.src), { once: true });
  const text = document.createElement("div");
  text.className = "identify-text";
  const verdict = document.createElement("div");
  verdict.className = "identify-verdict";
  const runners = document.createElement("div");
  runners.className = "identify-runners";
  if (result.error) {
    verdict.textContent = `Could not read ${file.name}: ${result.error}`;
    output.dataset.state = "error";
  } else if (result.known) {
    verdict.textContent = `Looks like ${describe(result.character)}`;
    output.dataset.state = "known";
  } else {
    verdict.textContent = "No known character";
    output.dataset.state = "unknown";
  }
  const others = (result.matches || []).filter(
    (match) => !result.character || match.id !== result.character.id,
  );
  if (others.length) runners.textContent = `Also: ${others.map(describe).join(", ")}`;
  text.append(verdict, runners);
  output.replaceChildren(preview, text);
  output.hidden = false;
  highlight(result.known ? result.character.id : null);
}

function showFailure(message) {
  const output = $("#identify-result");
  output.dataset.state = "error";
  output.textContent = message;
  output.hidden = false;
  highlight(null);
}

async function identify(file) {
  const output = $("#identify-result");
  output.hidden = false;
  output.dataset.state = "working";
  output.textContent = `Looking for ${file.name} among your characters…`;
  const form = new FormData();
  form.append("image", file, file.name);
  form.append("top", String(SHOWN));
  try {
    const answer = await api("/v1/identify", { method: "POST", form });
    show(file, answer.results[0]);
  } catch (exc) {
    showFailure(exc.message);
  }
}

export function setUpIdentify() {
  const panel = $("#characters-panel");
  const picker = $("#identify-file");
  $("#identify-image").addEventListener("click", () => picker.click());
  picker.addEventListener("change", () => {
    if (picker.files.length) identify(picker.files[0]);
    picker.value = "";
  });
  panel.addEventListener("dragover", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    panel.classList.add("identify-drop");
  });
  panel.addEventListener("dragleave", (event) => {
    if (!panel.contains(event.relatedTarget)) panel.classList.remove("identify-drop");
  });
  panel.addEventListener("drop", (event) => {
    panel.classList.remove("identify-drop");
    if (!hasFiles(event)) return;
    event.preventDefault();
    const file = Array.from(event.dataTransfer.files).find((f) => f.type.startsWith("image/"));
    if (file) identify(file);
    else showFailure("Drop a picture (PNG, JPEG or WebP) to find who it shows.");
  });
}
