// Models on nodes. GET /v1/presets says, for each preset, whether its models are on this
// server (`models`: state, runnable, sizes, pullable). The preset selects mark the presets
// that cannot run yet; a node whose preset (chosen, or its mode's default) cannot run shows
// "Model not installed" with a Download button: POST /v1/models/{preset}/pull (admin keys
// only) starts a task, followed live like a run (its events, polling as a fallback), with
// the task id kept in localStorage so a reload picks the download up again. The Run
// button's warning (canvas-run.js) asks missingModels() which nodes would fail.

import { ApiError, api, readEvents } from "./api.js";
import { catalog, defaultPresetFor, nodeSpec, presetsFor, workflow } from "./canvas-graph.js";
import { make } from "./dom.js";
import {
  downloadSize,
  isRunnable,
  missingParts,
  presetExplanation as explainPreset,
  presetLabel,
} from "./preset-status.js";

const PULLS_STORAGE = "castbook.pulls"; // {preset id: task id} of downloads under way
const POLL_MS = 1000;
const FINISHED = ["succeeded", "failed", "cancelled"];
export const ADMIN_ONLY =
  "Only an admin key can download models on this server (castbook keys create --admin)";

/** Downloads this page follows, by preset id: {taskId, eventsPath, step, total, message,
 * cancelling, error}; an entry with `error` is a download that failed (shown until retried). */
const pulls = new Map();
let hooks = { onStatus() {} };

export function setModelHooks(modelHooks) {
  hooks = { ...hooks, ...modelHooks };
}

// ---- what /v1/presets says --------------------------------------------------------------------

function presetById(id) {
  return catalog.presets.find((preset) => preset.id === id);
}

/** Why a preset is marked in a node's select: what is missing and how to get it. */
function presetExplanation(preset) {
  const size = isRunnable(preset) ? null : downloadSize(preset.models);
  return explainPreset(preset, {
    pullHint: `Choose it to download it from the node${size ? ` (${size})` : ""}.`,
  });
}

/** Whether a preset's backend takes no reference image (so no character's picture). */
export function takesNoReferences(preset) {
  return Boolean(preset) && preset.max_references === 0;
}

const NO_REFERENCES = "takes no reference images: the wired characters' pictures cannot be sent";

/** Whether the node a select belongs to has characters wired in. */
function hasCharacters(select) {
  const element = select.closest(".node");
  const node = element && workflow.nodes.get(element.dataset.nodeId);
  return Boolean(node && (node.links.characters || []).length);
}

/** The preset select: presets that do what the node does; "" is the server's default. With
 * characters wired in, presets that take no reference image are left out (the chosen one
 * stays, marked), and the list is filled again as the select is opened: wires change. */
export function fillPresetSelect(select, type, value) {
  const characters = hasCharacters(select);
  const fallback = defaultPresetFor(type);
  const first = new Option(fallback ? `default (${presetLabel(fallback)})` : "default", "");
  if (fallback) first.title = presetExplanation(fallback) || `The server's default: ${fallback.id}`;
  if (characters && takesNoReferences(fallback)) {
    first.textContent = `default (${fallback.id} — no references)`;
    first.title = `${fallback.id} ${NO_REFERENCES}.`;
  }
  const options = [first];
  const left = [];
  for (const preset of presetsFor(type)) {
    const refused = characters && takesNoReferences(preset);
    if (refused && preset.id !== value) {
      left.push(preset.id);
      continue;
    }
    const option = new Option(refused ? `${preset.id} — no references` : presetLabel(preset), preset.id);
    const why = refused ? `${preset.id} ${NO_REFERENCES}.` : presetExplanation(preset);
    const title = [preset.description, why].filter(Boolean).join("\n");
    if (title) option.title = title;
    if (!isRunnable(preset)) option.dataset.models = preset.models.state;
    if (refused) option.dataset.references = "none";
    options.push(option);
  }
  if (value && !options.some((o) => o.value === value)) {
    options.push(new Option(`${value} (not on this server)`, value));
  }
  select.replaceChildren(...options);
  select.value = value || "";
  if (left.length) {
    select.dataset.leftOut = left.join(" ");
    select.title = `Not offered with characters wired in (they take no reference images): ${left.join(", ")}`;
  } else {
    delete select.dataset.leftOut;
  }
  if (!select.dataset.refills) {
    select.dataset.refills = "true";
    const refill = () => {
      const element = select.closest(".node");
      const node = element && workflow.nodes.get(element.dataset.nodeId);
      if (node) fillPresetSelect(select, node.type, node.values.preset || "");
    };
    select.addEventListener("pointerdown", refill);
    select.addEventListener("focus", refill);
  }
}

/** The preset a node renders with: its own, or the default for its mode; null for nodes
 * without a preset, and for a preset this server does not have (the server says why). */
export function nodePreset(node) {
  const spec = nodeSpec(node.type);
  if (!spec || !spec.inputs.some((input) => input.name === "preset")) return null;
  const chosen = String(node.values.preset || "").trim();
  return (chosen ? presetById(chosen) : defaultPresetFor(node.type)) || null;
}

/** Nodes that would fail for want of models: [{node, preset}]. */
export function missingModels() {
  const found = [];
  for (const node of workflow.nodes.values()) {
    const preset = nodePreset(node);
    if (preset && !isRunnable(preset)) found.push({ node, preset });
  }
  return found;
}

function listed(items) {
  return items.length < 2 ? items.join("") : `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}

/** The Run warning: "text_to_image_1 will fail: sd15-ip-adapter is not installed. …" */
export function missingModelsText(found) {
  const nodes = listed(found.map(({ node }) => node.id));
  const presets = [...new Map(found.map(({ preset }) => [preset.id, preset])).values()];
  const what = presets.map((p) => {
    if (!p.models.pullable) return `${p.id}'s local folder is missing on the server`;
    return `${p.id} is ${p.models.state === "partial" ? "only partly downloaded" : "not installed"}`;
  });
  const pullable = presets.filter((p) => p.models.pullable).length;
  const question = pullable
    ? `Download ${pullable === 1 ? "it" : "them"} first? ` +
      "(Use Download on the node; Run anyway sends the workflow as it is.)"
    : "Run anyway?";
  return `${nodes} will fail: ${listed(what)}. ${question}`;
}

// ---- the notice on a node ---------------------------------------------------------------------

function nodeElement(id) {
  return document.querySelector(`#canvas .node[data-node-id="${CSS.escape(id)}"]`);
}

/** The (empty) place on a node for its notice; renderModelNotice fills it. */
export function modelNoticeSlot() {
  const box = make("div", "node-models");
  box.hidden = true;
  box.setAttribute("role", "status");
  return box;
}

function pullButton(preset) {
  const size = downloadSize(preset.models);
  const button = make("button", "model-download", size ? `Download (${size})` : "Download");
  button.type = "button";
  button.title = `Download the models of ${preset.id} to this server`;
  button.addEventListener("click", () => startPull(preset.id));
  return button;
}

function progressView(presetId, pull) {
  const box = make("div", "model-pull");
  const bar = document.createElement("progress");
  bar.className = "model-pull-bar";
  const figures = make("span", "model-pull-figures");
  if (pull.total > 0) {
    const step = Math.min(pull.step, pull.total);
    bar.max = pull.total;
    bar.value = step;
    figures.textContent = `${step} of ${pull.total} MB · ${Math.floor((step / pull.total) * 100)} %`;
  } else {
    figures.textContent = "Starting…";
  }
  const cancel = make("button", "link model-pull-cancel", pull.cancelling ? "Cancelling…" : "Cancel");
  cancel.type = "button";
  cancel.disabled = Boolean(pull.cancelling || !pull.taskId);
  cancel.addEventListener("click", () => cancelPull(presetId));
  const line = make("div", "model-pull-line");
  line.append(figures, cancel);
  box.append(bar, line, make("p", "model-pull-message", pull.message || "asking the server"));
  return box;
}

/** Fill a node's notice: nothing when its preset can run; else what is missing, and the
 * Download button, its progress, or why it failed. */
export function renderModelNotice(node, element = nodeElement(node.id)) {
  const box = element && element.querySelector(".node-models");
  if (!box) return;
  const preset = nodePreset(node);
  const missing = Boolean(preset) && !isRunnable(preset);
  const select = element.querySelector('select[data-field="preset"]');
  if (select) {
    select.classList.toggle("preset-missing", missing);
    if (missing) select.title = presetExplanation(preset);
    else select.removeAttribute("title");
  }
  element.classList.toggle("model-missing", missing);
  if (!missing) {
    box.hidden = true;
    delete box.dataset.preset;
    box.replaceChildren();
    return;
  }
  const models = preset.models;
  box.hidden = false;
  box.dataset.preset = preset.id;
  const which = node.values.preset ? preset.id : `${preset.id} (the default)`;
  const detail = models.state === "partial" ? "is only partly downloaded" : "is not on this server";
  const parts = [
    make("p", "node-models-title", "Model not installed"),
    make("p", "node-models-detail", `${which} ${detail} (missing: ${missingParts(models)}).`),
  ];
  const pull = pulls.get(preset.id);
  if (pull && !pull.error) {
    parts.push(progressView(preset.id, pull));
  } else {
    const hint = "Its local folder is missing on the server: ask its admin.";
    parts.push(models.pullable ? pullButton(preset) : make("p", "node-models-hint", hint));
    if (pull && pull.error) parts.push(make("p", "node-models-error", pull.error));
  }
  box.replaceChildren(...parts);
}

/** Every node's notice (after the presets changed, or a download moved on). */
export function renderModelNotices(presetId = null) {
  for (const node of workflow.nodes.values()) {
    if (presetId === null) renderModelNotice(node);
    else {
      const preset = nodePreset(node);
      const element = nodeElement(node.id);
      const shown = element && element.querySelector(`.node-models[data-preset="${CSS.escape(presetId)}"]`);
      if ((preset && preset.id === presetId) || shown) renderModelNotice(node);
    }
  }
}

/** Read /v1/presets again: the marks, the defaults and the notices follow. */
export async function refreshPresets() {
  try {
    catalog.presets = await api("/v1/presets");
  } catch (exc) {
    hooks.onStatus(`Could not read the presets again: ${exc.message}`, "error");
    return;
  }
  for (const select of document.querySelectorAll('#canvas select[data-field="preset"]')) {
    const node = workflow.nodes.get(select.closest(".node").dataset.nodeId);
    if (node) fillPresetSelect(select, node.type, node.values.preset || "");
  }
  renderModelNotices();
}

// ---- downloads ----------------------------------------------------------------------------------

function stored() {
  try {
    const value = JSON.parse(localStorage.getItem(PULLS_STORAGE) || "{}");
    return value && typeof value === "object" ? value : {};
  } catch {
    return {};
  }
}

function remember(presetId, taskId) {
  const value = stored();
  if (taskId) value[presetId] = taskId;
  else delete value[presetId];
  try {
    if (Object.keys(value).length) localStorage.setItem(PULLS_STORAGE, JSON.stringify(value));
    else localStorage.removeItem(PULLS_STORAGE);
  } catch {
    // storage off: a reload just does not pick the download up again
  }
}

function pathOf(url) {
  const parsed = new URL(url, window.location.href);
  return parsed.pathname + parsed.search;
}

function newPull(taskId = null) {
  return { taskId, eventsPath: null, step: 0, total: 0, message: "", cancelling: false, error: "" };
}

function update(presetId, pull, progress) {
  pull.step = Number(progress.step) || 0;
  pull.total = Number(progress.total) || 0;
  if (progress.message) pull.message = progress.message;
  renderModelNotices(presetId);
}

async function startPull(presetId) {
  const current = pulls.get(presetId);
  if (current && !current.error) return;
  const pull = newPull();
  pull.message = "asking the server to download";
  pulls.set(presetId, pull);
  renderModelNotices(presetId);
  let task;
  try {
    task = await api(`/v1/models/${encodeURIComponent(presetId)}/pull`, { method: "POST" });
  } catch (exc) {
    pull.error =
      exc instanceof ApiError && exc.status === 403 ? ADMIN_ONLY : `Download not started: ${exc.message}`;
    renderModelNotices(presetId);
    return;
  }
  pull.taskId = task.id;
  pull.eventsPath = pathOf(task.events_url);
  remember(presetId, task.id);
  update(presetId, pull, task.progress || {});
  await follow(presetId, pull);
}

async function follow(presetId, pull) {
  let finished = null;
  const events = pull.eventsPath || `/v1/tasks/${encodeURIComponent(pull.taskId)}/events`;
  try {
    await readEvents(events, (name, data) => {
      if (name === "progress") update(presetId, pull, data);
      else if (name === "done") finished = data;
    });
  } catch {
    // the stream broke off: ask until the task has finished
  }
  while (!finished) {
    let task;
    try {
      task = await api(`/v1/tasks/${encodeURIComponent(pull.taskId)}`);
    } catch (exc) {
      remember(presetId, null);
      pull.error = `Lost track of the download: ${exc.message}`;
      renderModelNotices(presetId);
      return;
    }
    if (FINISHED.includes(task.status)) finished = task;
    else {
      update(presetId, pull, task.progress || {});
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }
  await finish(presetId, pull, finished);
}

async function finish(presetId, pull, task) {
  remember(presetId, null);
  if (task.status === "failed") {
    pull.error = `Download failed: ${task.error || "the download failed"}`;
  } else {
    pulls.delete(presetId);
  }
  await refreshPresets(); // a cancelled or failed download may have left part of the files
  if (task.status === "succeeded") hooks.onStatus(`Downloaded the models of ${presetId}.`, "ok");
  else if (task.status === "cancelled") hooks.onStatus(`Download of ${presetId} cancelled.`, "");
  else hooks.onStatus(`Download of ${presetId} failed: ${task.error || "unknown error"}`, "error");
}

async function cancelPull(presetId) {
  const pull = pulls.get(presetId);
  if (!pull || !pull.taskId || pull.cancelling) return;
  pull.cancelling = true;
  renderModelNotices(presetId);
  try {
    await api(`/v1/tasks/${encodeURIComponent(pull.taskId)}/cancel`, { method: "POST" });
  } catch (exc) {
    pull.cancelling = false;
    hooks.onStatus(`Could not cancel the download: ${exc.message}`, "error");
    renderModelNotices(presetId);
  }
}

/** Pick up downloads this browser started before a reload (their ids are in localStorage). */
export function resumePulls() {
  for (const [presetId, taskId] of Object.entries(stored())) {
    if (pulls.has(presetId) || typeof taskId !== "string") continue;
    const pull = newPull(taskId);
    pull.message = "picking the download up again";
    pulls.set(presetId, pull);
    renderModelNotices(presetId);
    api(`/v1/tasks/${encodeURIComponent(taskId)}`)
      .then((task) => {
        pull.eventsPath = pathOf(task.events_url);
        if (FINISHED.includes(task.status)) return finish(presetId, pull, task);
        update(presetId, pull, task.progress || {});
        return follow(presetId, pull);
      })
      .catch(() => {
        // gone, or another key's task: forget it
        remember(presetId, null);
        pulls.delete(presetId);
        renderModelNotices(presetId);
      });
  }
}
