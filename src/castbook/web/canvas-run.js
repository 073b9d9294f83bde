// The canvas toolbar: Run (live per-node progress from the task's event stream, then
// statuses, results and errors on the nodes), Cancel, Save, Load, Delete a saved workflow,
// Clear, and the status line.

import { $, ApiError, api, readEvents } from "./api.js";
import { workflow } from "./canvas-graph.js";
import {
  checkAllFields,
  clearNodeMessages,
  setNodeStatus,
  showNodeError,
  showNodeResults,
} from "./canvas-nodes.js";
import { missingModels, missingModelsText } from "./canvas-models.js";
import { refreshSoon } from "./canvas-queue.js";
import { hideResults, outputPath, showResults } from "./canvas-results.js";

const PROGRESS = /^node (.+): running (\d+)\/(\d+)$/;
const POLL_MS = 1000;
// How long a run is asked for while the server does not answer (a restart: a stopping
// server ends its event streams and hands running tasks back to the queue) before the page
// gives it up.
const UNREACHABLE_MS = 5 * 60 * 1000;
const QUEUE_MS = 2000; // how often a queued run says again what it waits for
// The run this browser follows, kept until it ends, so a reload picks it up again.
const RUN_STORAGE = "castbook.run";
// Runs Clear or Load stopped following (newest first): a reload does not pick them up again
// onto whatever the canvas shows now.
const LEFT_STORAGE = "castbook.runs-left";
const LEFT_KEPT = 20;
const ACTIVE = ["running", "queued"];

let hooks = { loadGraph() {}, clearCanvas() {} };
const run = { task: null, abort: null, running: null, queueTimer: 0 };
let current = null; // the saved workflow on the canvas: {id, name}

// ---- status line ----------------------------------------------------------------------------

/** The toolbar's status text; tone: "", "busy", "ok" or "error". */
export function setStatus(text, tone = "") {
  const status = $("#canvas-status");
  status.textContent = text;
  status.dataset.tone = tone;
  status.title = text;
}

function setCurrent(saved) {
  current = saved;
  $("#workflow-title").textContent = saved ? saved.name : "";
  $("#workflow-title").hidden = !saved;
}

/** Forget which saved workflow the canvas shows (after Clear). */
export function forgetCurrent() {
  setCurrent(null);
}

export function isRunning() {
  return run.task !== null;
}

function remember(task) {
  try {
    if (task) localStorage.setItem(RUN_STORAGE, task.id);
    else localStorage.removeItem(RUN_STORAGE);
  } catch {
    // storage off: a reload finds the run through the tasks list instead
  }
}

function setRunning(task) {
  run.task = task;
  if (!task || !task.id) stopExplainingQueue();
  if (task === null || task.id) refreshSoon(); // the Queue tab's count and rows
  $("#run-workflow").disabled = Boolean(task);
  $("#cancel-run").hidden = !(task && task.id);
  $("#cancel-run").disabled = false;
  $("#canvas").classList.toggle("running", Boolean(task));
}

// ---- problems from the API ------------------------------------------------------------------

/**
 * Put a 422's problems on the nodes (and fields) they name; the rest, and any other error,
 * go to the status line after `prefix`.
 */
function showProblems(exc, prefix) {
  const problems = exc instanceof ApiError && Array.isArray(exc.body.errors) ? exc.body.errors : [];
  const unplaced = [];
  const named = []; // "text_to_image_1.prompt": what is missing, said in the status line too
  let placed = 0;
  for (const problem of problems) {
    if (problem.node && workflow.nodes.has(problem.node)) {
      showNodeError(problem.node, problem.field, problem.message);
      placed += 1;
      named.push([problem.node, problem.field].filter(Boolean).join("."));
    } else {
      const where = [problem.node, problem.field].filter(Boolean).join(".");
      unplaced.push(where ? `${where}: ${problem.message}` : problem.message);
    }
  }
  if (!problems.length) {
    setStatus(`${prefix}: ${exc.message}`, "error");
    return;
  }
  const parts = [];
  if (placed) parts.push(`${placed} problem${placed === 1 ? "" : "s"} marked on the nodes (${named.join(", ")})`);
  parts.push(...unplaced);
  setStatus(`${prefix}: ${parts.join("; ")}`, "error");
}

// ---- running --------------------------------------------------------------------------------

function pathOf(url) {
  const parsed = new URL(url, window.location.href);
  return parsed.pathname + parsed.search;
}

async function runWorkflow() {
  if (run.task) return;
  if (!workflow.nodes.size) {
    setStatus("Nothing to run: add nodes first.", "error");
    return;
  }
  clearNodeMessages();
  hideResults();
  const problems = checkAllFields();
  if (problems.length) {
    const count = `${problems.length} field${problems.length === 1 ? "" : "s"}`;
    setStatus(`Fix ${count} marked in red first: ${problems.join(", ")}.`, "error");
    return;
  }
  // A run would fail at the first node whose models are missing: ask first (the dialog is
  // modal, so Run cannot be pressed again meanwhile).
  const missing = missingModels();
  if (missing.length && !(await confirmAction(missingModelsText(missing), "Run anyway"))) {
    setStatus("Not run: download the missing models first (Download on the node).", "");
    return;
  }
  setRunning({ id: null });
  setStatus("Checking the workflow…", "busy");
  let task;
  try {
    const cache = $("#reuse-results").checked;
    task = await api("/v1/workflows/run", {
      method: "POST",
      // The saved workflow on the canvas, if any: the gallery lists its results under it.
      json: { graph: workflow.toGraph(), cache, workflow: current ? current.id : undefined },
    });
  } catch (exc) {
    setRunning(null);
    showProblems(exc, "Not run");
    return;
  }
  run.running = null;
  remember(task);
  await attach(task);
}

/** Follow `task` (just made, or found again after a reload) until it ends. */
async function attach(task) {
  run.started = false;
  setRunning(task);
  for (const id of workflow.nodes.keys()) setNodeStatus(id, "queued");
  if (task.status === "queued") explainQueue();
  else onProgress({ status: task.status, message: task.progress.message, text: "Running…" });
  await follow(task);
}

/**
 * Re-run a workflow task from the Queue tab: its graph (nodes where they were) goes on the
 * canvas — one undo step, like Load — and runs with the same settings (Reuse results as it
 * was sent).
 */
export async function rerunTask(task) {
  if (run.task) {
    setStatus("A run is going: wait for it to end, or cancel it, before re-running another.", "error");
    return;
  }
  hideResults();
  const unknown = hooks.loadGraph(task.input.graph);
  setCurrent(null);
  if (unknown.length) {
    setStatus(`Not run: this page does not know the node types ${unknown.join(", ")}.`, "error");
    return;
  }
  $("#reuse-results").checked = task.input.cache !== false;
  await runWorkflow();
}

// ---- what a queued run waits for ------------------------------------------------------------

const shortId = (task) => String(task.id).slice(0, 8);

function describe(task) {
  const progress = task.progress || {};
  const step = progress.total ? ` ${progress.step}/${progress.total}` : "";
  const what = progress.message ? ` (${progress.message})` : step ? ` (step${step})` : "";
  return `${task.kind} ${shortId(task)} ${task.status}${what}`;
}

/**
 * A run that stays queued waits for the server's other work: say which of the owner's
 * tasks are ahead of it (the executor runs them first; a run left behind by a reload is
 * one), or that the work ahead is not the owner's. Said again every QUEUE_MS until it runs.
 */
async function explainQueue() {
  const task = run.task;
  if (!task || !task.id) return;
  stopExplainingQueue();
  let ahead = [];
  try {
    const lists = await Promise.all(ACTIVE.map((status) => api(`/v1/tasks?status=${status}&limit=20`)));
    ahead = lists
      .flat()
      .filter((other) => other.id !== task.id && (other.status === "running" || other.created_at < task.created_at))
      .sort((a, b) => a.created_at.localeCompare(b.created_at));
  } catch {
    ahead = null; // the explanation is a courtesy: a failed look keeps the plain "Queued…"
  }
  if (run.task !== task || run.running || run.started) return; // it moved on meanwhile
  if (ahead === null) setStatus("Queued…", "busy");
  else if (!ahead.length) setStatus("Queued: waiting for a worker (none of your tasks is ahead of it)…", "busy");
  else {
    const count = `${ahead.length} task${ahead.length === 1 ? "" : "s"}`;
    setStatus(`Queued behind ${count} of yours: ${ahead.map(describe).join("; ")}.`, "busy");
  }
  stopExplainingQueue(); // one timer, even when two looks overlapped
  run.queueTimer = setTimeout(explainQueue, QUEUE_MS);
}

function stopExplainingQueue() {
  clearTimeout(run.queueTimer);
  run.queueTimer = 0;
}

function leftRuns() {
  try {
    const ids = JSON.parse(localStorage.getItem(LEFT_STORAGE) || "[]");
    return Array.isArray(ids) ? ids : [];
  } catch {
    return [];
  }
}

function leave(task) {
  try {
    const ids = [task.id, ...leftRuns().filter((id) => id !== task.id)].slice(0, LEFT_KEPT);
    localStorage.setItem(LEFT_STORAGE, JSON.stringify(ids));
  } catch {
    // storage off: a reload may pick the run up again
  }
}

// ---- after a reload -------------------------------------------------------------------------

/** The workflow task to pick up after a reload: the one this browser started (kept in
 * localStorage), else the owner's newest queued or running workflow task that this browser
 * did not stop following (Clear, Load). */
async function runToResume() {
  let stored = null;
  try {
    stored = localStorage.getItem(RUN_STORAGE);
  } catch {
    stored = null;
  }
  if (stored) {
    try {
      return await api(`/v1/tasks/${encodeURIComponent(stored)}`);
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 401) return null;
      remember(null); // gone (pruned, another owner's): look for others
    }
  }
  const lists = await Promise.all(ACTIVE.map((status) => api(`/v1/tasks?status=${status}&limit=50`)));
  const left = new Set(leftRuns());
  const workflows = lists.flat().filter((task) => task.kind === "workflow" && !left.has(task.id));
  workflows.sort((a, b) => b.created_at.localeCompare(a.created_at));
  return workflows[0] || null;
}

/**
 * Re-attach to a run a reload left behind: its progress, Cancel, and its results when it
 * ends (or at once, when it ended while the page was away). The canvas's data-resume says
 * what was found once the tasks were read: "picked" (a run) or "none".
 */
export async function resumeRun() {
  if (run.task) return;
  let task = null;
  try {
    task = await runToResume();
  } catch {
    return; // the tasks cannot be read now: the canvas works as before
  }
  $("#canvas").dataset.resume = task && !run.task ? "picked" : "none";
  if (!task || run.task) return;
  run.running = null;
  if (ACTIVE.includes(task.status)) {
    remember(task);
    setStatus(`Picked up the run started at ${new Date(task.created_at).toLocaleTimeString()}…`, "busy");
    await attach(task);
  } else {
    finish(task);
  }
}

function onProgress(data) {
  const match = PROGRESS.exec(data.message || "");
  if (data.status === "running" && !run.started) {
    run.started = true; // it left the queue
    stopExplainingQueue();
  }
  if (match) {
    const [, id, step, total] = match;
    if (run.running && run.running !== id) setNodeStatus(run.running, "done");
    run.running = id;
    setNodeStatus(id, "running", `running ${step}/${total}`);
    const nodes = data.total ? ` · ${data.step}/${data.total} nodes done` : "";
    setStatus(`Running ${id}: ${step}/${total}${nodes}`, "busy");
  } else if (data.status === "queued") {
    if (!run.queueTimer) explainQueue();
  } else if (data.text) {
    setStatus(data.text, "busy");
  }
}

async function follow(task) {
  const controller = new AbortController();
  run.abort = controller;
  let finished = null;
  try {
    await readEvents(
      pathOf(task.events_url),
      (name, data) => {
        if (name === "progress") onProgress(data);
        else if (name === "done") finished = data;
      },
      { signal: controller.signal },
    );
  } catch (exc) {
    if (controller.signal.aborted) return;
    setStatus(`Progress stream lost (${exc.message}); waiting for the result…`, "busy");
  }
  // The stream ends with "done"; if it broke off, ask until the task has finished. A server
  // that does not answer (or answers 5xx) may be restarting: it is asked again for a while.
  // Clear or Load stop following the run (stopFollowing aborts the controller): from then on
  // this loop neither writes the status line nor shows the run's results on the new canvas.
  let awaySince = null;
  while (!finished) {
    if (controller.signal.aborted) return;
    try {
      const polled = await api(`/v1/tasks/${encodeURIComponent(task.id)}`);
      if (controller.signal.aborted) return;
      if (["succeeded", "failed", "cancelled"].includes(polled.status)) finished = polled;
      else if (awaySince !== null) {
        setStatus(`The server is back; the run is ${polled.status}…`, "busy");
      }
      awaySince = null;
    } catch (exc) {
      if (controller.signal.aborted) return;
      const away = !(exc instanceof ApiError) || exc.status >= 500;
      if (awaySince === null) awaySince = Date.now();
      if (!away || Date.now() - awaySince > UNREACHABLE_MS) {
        setStatus(`Lost track of the run: ${exc.message}`, "error");
        setRunning(null);
        return;
      }
      setStatus(`The server is not answering (${exc.message}); asking again…`, "busy");
    }
    if (!finished) await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  finish(finished);
}

/** The node a failed task names: error_data.node, or the node id its field starts with. */
function failedNode(task) {
  const data = task.error_data || {};
  if (data.node && workflow.nodes.has(data.node)) return { id: data.node, field: data.field };
  const field = String(data.field || "");
  const dot = field.indexOf(".");
  if (dot > 0 && workflow.nodes.has(field.slice(0, dot))) {
    return { id: field.slice(0, dot), field: field.slice(dot + 1) };
  }
  return null;
}

/** How long the run took on the server, and how long it waited for its turn before. */
function duration(task) {
  const started = Date.parse(task.started_at || "");
  const waited = started ? (started - Date.parse(task.created_at)) / 1000 : 0;
  const took = task.seconds === null || task.seconds === undefined ? null : Number(task.seconds);
  const text = took === null ? "" : ` in ${took.toFixed(1)} s`;
  return waited >= 1 ? `${text} (after ${waited.toFixed(0)} s in the queue)` : text;
}

function finish(task) {
  setRunning(null);
  remember(null);
  run.started = false;
  const result = task.result || {};
  const paths = new Map((task.outputs || []).map((output) => [output.id, outputPath(output)]));
  for (const [id, node] of Object.entries(result.nodes || {})) {
    const done = node.cached_from ? "cached" : "done"; // cached: taken from an earlier run
    setNodeStatus(id, node.status === "succeeded" ? done : node.status);
    showNodeResults(id, node, (sha) => paths.get(sha) || null);
  }
  for (const [id] of workflow.nodes) {
    const element = document.querySelector(`#canvas .node[data-node-id="${CSS.escape(id)}"]`);
    if (element && element.dataset.status === "queued") setNodeStatus(id, "");
  }
  if (task.status === "succeeded") {
    if (run.running && !(result.nodes || {})[run.running]) setNodeStatus(run.running, "done");
    const count = (task.outputs || []).length;
    setStatus(`Done${duration(task)}: ${count} result${count === 1 ? "" : "s"}.`, "ok");
  } else if (task.status === "cancelled") {
    if (run.running) setNodeStatus(run.running, "cancelled");
    setStatus("Cancelled.", "");
  } else {
    const node = failedNode(task);
    const message = task.error || "the run failed";
    if (node) {
      if (run.running && run.running !== node.id) setNodeStatus(run.running, "done");
      setNodeStatus(node.id, "failed");
      showNodeError(node.id, node.field, message);
      setStatus(`Failed at ${node.id}: ${message}`, "error");
    } else {
      if (run.running) setNodeStatus(run.running, "failed");
      setStatus(`Failed: ${message}`, "error");
    }
  }
  run.running = null;
  if ((task.outputs || []).length) showResults(task);
}

async function cancelRun() {
  const task = run.task;
  if (!task || !task.id) return;
  $("#cancel-run").disabled = true;
  setStatus("Cancelling…", "busy");
  try {
    await api(`/v1/tasks/${encodeURIComponent(task.id)}/cancel`, { method: "POST" });
  } catch (exc) {
    $("#cancel-run").disabled = false;
    setStatus(`Could not cancel: ${exc.message}`, "error");
  }
}

/**
 * Stop following a run the canvas is leaving (cleared, or another workflow loaded). The run
 * goes on: it may be another tab's or browser's (a reload picks up the owner's running
 * workflow), and no run is lost to a click on Clear or Load, as in ComfyUI; the Queue tab
 * follows it and cancels it, the gallery gets its results. A reload of this browser does not
 * pick it up again (onto a canvas that now shows something else). Returns what the status
 * line says about it ("" when nothing was running).
 */
export function stopFollowing() {
  const task = run.task;
  if (run.abort) run.abort.abort();
  run.abort = null;
  if (task) setRunning(null);
  remember(null);
  run.running = null;
  run.started = false;
  if (!task || !task.id) return "";
  leave(task);
  return ` The run ${shortId(task)} goes on: the Queue tab follows it (Cancel there stops it).`;
}

// ---- confirm --------------------------------------------------------------------------------

/** A yes/no question in the canvas's confirm dialog. */
export function confirmAction(text, action) {
  const dialog = $("#canvas-confirm");
  $("#canvas-confirm-text").textContent = text;
  $("#canvas-confirm-ok").textContent = action;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
  });
}

// ---- save, load, delete ---------------------------------------------------------------------

function saveError(message) {
  $("#save-error").textContent = message;
  $("#save-error").hidden = !message;
}

function openSave() {
  if (!workflow.nodes.size) {
    setStatus("Nothing to save: add nodes first.", "error");
    return;
  }
  saveError("");
  $("#save-replace").hidden = true;
  $("#workflow-name").value = current ? current.name : "";
  $("#workflow-name").classList.remove("field-invalid");
  $("#save-dialog").showModal();
  $("#workflow-name").select();
}

/** Saved: a workflow a run would refuse now is a draft, and the status says what to finish. */
function saved(workflowJson) {
  $("#save-dialog").close();
  setCurrent({ id: workflowJson.id, name: workflowJson.name });
  const problems = workflowJson.problems || [];
  if (!problems.length) {
    setStatus(`Saved as “${workflowJson.name}”.`, "ok");
    return;
  }
  const where = problems.map((p) => [p.node, p.field].filter(Boolean).join(".") || p.message);
  const count = `${problems.length} thing${problems.length === 1 ? "" : "s"}`;
  setStatus(`Saved as “${workflowJson.name}”, a draft: ${count} to finish before Run (${where.join(", ")}).`, "ok");
}

function refused(exc) {
  $("#save-dialog").close();
  showProblems(exc, "Not saved");
}

async function save(event) {
  event.preventDefault();
  const name = $("#workflow-name").value.trim();
  $("#save-replace").hidden = true;
  if (!name) {
    saveError("Give the workflow a name.");
    $("#workflow-name").classList.add("field-invalid");
    return;
  }
  clearNodeMessages();
  try {
    saved(await api("/v1/workflows", { method: "POST", json: { name, graph: workflow.toGraph() } }));
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 409) {
      saveError(`A workflow named “${name}” already exists. Replace it, or choose another name.`);
      $("#save-replace").hidden = false;
    } else if (exc instanceof ApiError && exc.status === 422 && exc.body.errors) {
      refused(exc);
    } else {
      saveError(exc.message);
    }
  }
}

/** Overwrite. A draft need not be valid; the 409 that offered Replace came after the server
 * had checked this graph's shape (the dialog is modal: the canvas cannot have changed), so
 * the old one is deleted only for a graph that will be stored. */
async function replace() {
  const name = $("#workflow-name").value.trim();
  const graph = workflow.toGraph();
  try {
    const list = await api("/v1/workflows");
    const old =
      list.find((w) => w.name === name) || list.find((w) => w.name.toLowerCase() === name.toLowerCase());
    if (old) await api(`/v1/workflows/${encodeURIComponent(old.id)}`, { method: "DELETE" });
    saved(await api("/v1/workflows", { method: "POST", json: { name, graph } }));
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 422 && exc.body.errors) refused(exc);
    else saveError(exc.message);
  }
}

function workflowRow(item) {
  const row = document.createElement("li");
  row.className = "workflow-row";
  row.dataset.id = item.id;
  const name = document.createElement("span");
  name.className = "workflow-row-name";
  name.textContent = item.name;
  const when = document.createElement("time");
  when.dateTime = item.updated_at;
  when.textContent = new Date(item.updated_at).toLocaleString();
  const load = document.createElement("button");
  load.type = "button";
  load.className = "workflow-load";
  load.textContent = "Load";
  load.addEventListener("click", () => loadWorkflow(item));
  const remove = document.createElement("button");
  remove.type = "button";
  remove.className = "workflow-delete secondary";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete ${item.name}`);
  remove.addEventListener("click", () => deleteWorkflow(item));
  const text = document.createElement("div");
  text.append(name, when);
  row.append(text, load, remove);
  return row;
}

async function refreshList() {
  const error = $("#load-error");
  error.hidden = true;
  let list = [];
  try {
    list = await api("/v1/workflows");
  } catch (exc) {
    error.textContent = exc.message;
    error.hidden = false;
  }
  $("#workflow-list").replaceChildren(...list.map(workflowRow));
  $("#load-empty").hidden = list.length > 0 || !error.hidden;
}

async function openLoad() {
  $("#workflow-list").replaceChildren();
  $("#load-empty").hidden = true;
  $("#load-dialog").showModal();
  await refreshList();
}

async function loadWorkflow(item) {
  let full;
  try {
    full = await api(`/v1/workflows/${encodeURIComponent(item.id)}`);
  } catch (exc) {
    $("#load-error").textContent = exc.message;
    $("#load-error").hidden = false;
    return;
  }
  $("#load-dialog").close();
  const left = stopFollowing();
  hideResults();
  const unknown = hooks.loadGraph(full.graph);
  setCurrent({ id: full.id, name: full.name });
  if (unknown.length) {
    setStatus(`Loaded “${full.name}”, without node types this page does not know: ${unknown.join(", ")}.${left}`, "error");
  } else {
    setStatus(`Loaded “${full.name}”.${left}`, "ok");
  }
}

async function deleteWorkflow(item) {
  const sure = await confirmAction(`Delete the saved workflow “${item.name}”? This cannot be undone.`, "Delete");
  if (!sure) return;
  try {
    await api(`/v1/workflows/${encodeURIComponent(item.id)}`, { method: "DELETE" });
  } catch (exc) {
    $("#load-error").textContent = exc.message;
    $("#load-error").hidden = false;
    return;
  }
  if (current && current.id === item.id) setCurrent(null);
  setStatus(`Deleted “${item.name}”.`, "ok");
  await refreshList();
}

async function clearCanvas() {
  if (!workflow.nodes.size) return;
  if (!(await confirmAction("Remove every node from the canvas? Saved workflows stay saved.", "Clear"))) return;
  const left = stopFollowing();
  hooks.clearCanvas();
  setCurrent(null);
  hideResults();
  setStatus(left.trim());
}

export function setUpToolbar(toolbarHooks) {
  hooks = { ...hooks, ...toolbarHooks };
  $("#run-workflow").addEventListener("click", runWorkflow);
  $("#cancel-run").addEventListener("click", cancelRun);
  $("#save-workflow").addEventListener("click", openSave);
  $("#save-form").addEventListener("submit", save);
  $("#save-replace").addEventListener("click", replace);
  $("#save-cancel").addEventListener("click", () => $("#save-dialog").close());
  $("#workflow-name").addEventListener("input", () => {
    saveError("");
    $("#save-replace").hidden = true;
    $("#workflow-name").classList.remove("field-invalid");
  });
  $("#load-workflow").addEventListener("click", openLoad);
  $("#load-close").addEventListener("click", () => $("#load-dialog").close());
  $("#clear-canvas").addEventListener("click", clearCanvas);
  document.addEventListener("keydown", (event) => {
    if (!(event.ctrlKey || event.metaKey) || document.querySelector("dialog[open]")) return;
    if (event.key === "Enter") {
      event.preventDefault();
      runWorkflow();
    } else if (event.key.toLowerCase() === "s" && !event.shiftKey && !event.altKey) {
      event.preventDefault(); // the canvas's Save, not the browser's "save page"
      openSave();
    }
  });
  setCurrent(null);
}
