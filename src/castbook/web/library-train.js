// Training a character's LoRA from its card (the Train button): the settings, the task's
// progress with Cancel, and when it is done the consistency report — the before/after sheet
// and the scores without and with the LoRA (POST /v1/characters/{id}/train; docs/training.md).
// The dialog can be closed while the task runs: it keeps running, and opening the dialog for
// that character again follows it.

import { $, api, blobUrl } from "./api.js";
import { clearErrors, showApiError, showError } from "./library-form.js";
import { isRunnable, presetExplanation, presetLabel } from "./preset-status.js";

const POLL_MS = 500;
const FINISHED = new Set(["succeeded", "failed", "cancelled"]);

const state = {
  character: null, // the character the dialog shows
  running: new Map(), // character id -> task id, while a task of this page runs
  watching: null, // task id the dialog follows
};

export function setUpTraining() {
  $("#train-form").addEventListener("submit", (event) => {
    event.preventDefault();
    startTraining();
  });
  $("#train-cancel-task").addEventListener("click", cancelTraining);
  $("#train-preset").addEventListener("change", showPresetWarning);
  $("#train-close").addEventListener("click", () => $("#train-dialog").close());
  $("#train-dialog").addEventListener("close", () => {
    state.watching = null; // the task goes on; the dialog stops following it
  });
}

/** Open the dialog for `character`: its LoRAs so far, and its running task if there is one. */
export async function openTraining(character) {
  state.character = character;
  const form = $("#train-form");
  clearErrors(form);
  $("#train-title").textContent = `Train ${character.name}'s LoRA`;
  const count = (character.images || []).length;
  $("#train-images").textContent =
    `${count} reference image${count === 1 ? "" : "s"}: at least 3 are needed; ` +
    "10–20 varied ones (angles, expressions, framings) train a LoRA that generalises.";
  $("#train-images").classList.toggle("warning", count < 3);
  showReport(null);
  showProgress(null);
  $("#train-dialog").showModal();
  await Promise.all([fillPresets(), showLoras(character)]);
  const task = state.running.get(character.id);
  if (task) follow(task);
}

/**
 * The base models: the server's local diffusers presets (only they have a UNet to train; the
 * server says why others cannot), read again at each opening so a download made meanwhile
 * shows. A preset whose models are not on this server is marked as on the canvas's nodes
 * ("sd15-ip-adapter — not installed", its title saying what is missing): training with it
 * fails. The choice made stays; the first time, sd15-ip-adapter if it can run, else the first
 * preset that can, else sd15-ip-adapter all the same.
 */
async function fillPresets() {
  const select = $("#train-preset");
  let presets = [];
  try {
    presets = (await api("/v1/presets")).filter((p) => p.backend === "diffusers");
  } catch {
    if (select.options.length) return; // keep what was read before
    presets = [];
  }
  const chosen = select.value;
  const pullHint = "Download it from a node on the canvas that uses it (or castbook models pull).";
  select.replaceChildren(
    ...presets.map((preset) => {
      const label = presetLabel(preset);
      const option = new Option(preset.description ? `${label} — ${preset.description}` : label, preset.id);
      const why = presetExplanation(preset, { fails: "Training", pullHint });
      if (why) {
        option.dataset.models = preset.models.state;
        option.title = why;
      }
      return option;
    }),
  );
  const preferred =
    presets.find((p) => p.id === chosen) ||
    presets.find((p) => p.id === "sd15-ip-adapter" && isRunnable(p)) ||
    presets.find((p) => isRunnable(p)) ||
    presets.find((p) => p.id === "sd15-ip-adapter");
  if (preferred) select.value = preferred.id;
  showPresetWarning();
}

/** Under the select: why the chosen base model cannot train here (nothing when it can). */
function showPresetWarning() {
  const option = $("#train-preset").selectedOptions[0];
  const note = $("#train-preset-note");
  note.textContent = option && option.dataset.models ? option.title : "";
  note.hidden = !note.textContent;
}

async function showLoras(character) {
  const slot = $("#train-loras");
  slot.textContent = "";
  try {
    const { loras } = await api(`/v1/characters/${encodeURIComponent(character.id)}/loras`);
    slot.textContent = loras.length
      ? "Trained: " +
        loras.map((l) => `${l.base_model} (${l.steps} steps, rank ${l.rank})`).join("; ") +
        ". Training again for the same base model replaces it."
      : "No LoRA yet.";
  } catch {
    slot.textContent = "";
  }
}

function settings() {
  const form = $("#train-form");
  const number = (name) => Number(form.elements[name].value);
  const prior = form.elements.prior_preservation.checked;
  return {
    preset: form.elements.preset.value,
    steps: number("steps"),
    rank: number("rank"),
    resolution: number("resolution"),
    report_prompts: number("report_prompts"),
    prior_preservation: prior,
    // Sent only with prior preservation on (the server checks it either way).
    ...(prior ? { class_images: number("class_images") } : {}),
  };
}

async function startTraining() {
  const form = $("#train-form");
  const character = state.character;
  clearErrors(form);
  showReport(null);
  const button = $("#train-start");
  button.disabled = true;
  try {
    const task = await api(`/v1/characters/${encodeURIComponent(character.id)}/train`, {
      method: "POST",
      json: settings(),
    });
    state.running.set(character.id, task.id);
    follow(task.id);
  } catch (exc) {
    button.disabled = false;
    showApiError(form, exc);
  }
}

async function cancelTraining() {
  const task = state.watching;
  if (!task) return;
  $("#train-cancel-task").disabled = true;
  try {
    await api(`/v1/tasks/${encodeURIComponent(task)}/cancel`, { method: "POST" });
  } catch (exc) {
    showApiError($("#train-form"), exc);
  }
}

/** Poll the task until it ends or the dialog stops following it. */
async function follow(taskId) {
  state.watching = taskId;
  $("#train-start").disabled = true;
  $("#train-cancel-task").disabled = false;
  showProgress({ status: "queued", progress: { step: 0, total: 0, message: "queued" } });
  for (;;) {
    let task;
    try {
      task = await api(`/v1/tasks/${encodeURIComponent(taskId)}`);
    } catch (exc) {
      if (state.watching === taskId) showApiError($("#train-form"), exc);
      return;
    }
    if (state.watching !== taskId) return;
    showProgress(task);
    if (FINISHED.has(task.status)) {
      finished(task);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function showProgress(task) {
  const box = $("#train-progress");
  box.hidden = !task;
  $("#train-cancel-task").hidden = !task || FINISHED.has(task.status);
  if (!task) return;
  const { step = 0, total = 0, message = "" } = task.progress || {};
  const bar = $("#train-bar");
  if (total) {
    bar.max = total;
    bar.value = step;
  } else {
    bar.removeAttribute("value"); // indeterminate while the model loads
  }
  $("#train-status").textContent = `${task.status}${message ? `: ${message}` : ""}`;
  box.dataset.status = task.status;
}

function finished(task) {
  const character = state.character;
  state.running.delete(character.id);
  $("#train-start").disabled = false;
  if (task.status === "failed") {
    showError($("#train-form"), (task.error_data || {}).field || "", task.error || "failed");
  }
  if (task.status === "succeeded" || (task.result && task.result.sha256)) {
    showLoras(character);
  }
  showReport(task);
}

/** The consistency report: mean and worst without and with the LoRA, and the sheet. */
function showReport(task) {
  const box = $("#train-report");
  const report = task && task.result && task.result.consistency;
  box.hidden = !report;
  if (!report) return;
  const table = $("#train-scores");
  table.replaceChildren();
  if (report.error) {
    $("#train-report-note").textContent = `No report: ${report.error}`;
    $("#train-sheet").hidden = true;
    return;
  }
  const head = table.insertRow();
  for (const label of ["", "without", "with", "gain"]) {
    const cell = document.createElement("th");
    cell.textContent = label;
    head.append(cell);
  }
  for (const key of ["mean", "worst"]) {
    const row = table.insertRow();
    row.dataset.figure = key;
    const gain = report.gain[key];
    const values = [
      key,
      report.without[key].toFixed(1),
      report.with[key].toFixed(1),
      `${gain >= 0 ? "+" : ""}${gain.toFixed(1)}`,
    ];
    for (const value of values) row.insertCell().textContent = value;
    row.cells[3].className = gain >= 0 ? "gain" : "loss";
  }
  const prompts = report.renders.filter((r) => !r.lora).length;
  $("#train-report-note").textContent =
    `${prompts} prompt${prompts === 1 ? "" : "s"} with fixed seeds, scored 0–100 against the ` +
    `references${report.references ? "" : " (rendered without them: the preset has no IP-Adapter)"}.`;
  const sheet = $("#train-sheet");
  sheet.hidden = false;
  sheet.removeAttribute("src");
  const output = (task.outputs || []).find((o) => o.id === report.sheet);
  if (!output) return;
  blobUrl(new URL(output.url).pathname).then((url) => {
    sheet.src = url;
  });
}
