// The Queue tab: the owner's tasks (GET /v1/tasks, newest first) from any page load — queued,
// running with live progress, done, failed, cancelled — whoever started them (this page,
// another browser, the CLI). Cancel stops a waiting or running one; Results shows a finished
// one's pictures in the results panel; Re-run puts a workflow's graph back on the canvas and
// runs it with the same settings. The newest LIMIT are read again while the tab is shown;
// "Show older" follows the list's Link: rel=next a page at a time (those rows stay as read).

import { $, ApiError, api } from "./api.js";
import { make } from "./dom.js";

const LIMIT = 50;
const ACTIVE_MS = 1000; // while something is queued or running: progress moves
const IDLE_MS = 5000; // otherwise: new tasks from elsewhere still show up
const ACTIVE = new Set(["queued", "running"]);
const KINDS = {
  workflow: "Workflow",
  generation: "Generation",
  batch_render: "Batch render",
  story: "Story",
  model_pull: "Model download",
};
const STATUS_TEXT = { succeeded: "done" };
// A workflow's progress counts nodes; its message has the running node's steps.
const STEPS = /running (\d+)\/(\d+)$/;

let hooks = { showResults() {}, rerun() {} };
let timer = 0;
let reading = false;
let latest = []; // the newest page, read again and again
let older = []; // pages after it, read with "Show older"
let readOlder = false; // whether "Show older" read a page (then olderNext is where to go on)
let newestNext = null; // the page after the newest one (its Link: rel=next)
let olderNext = null; // the page after the last older one

const shown = () => !$("#queue-panel").hidden;
const plural = (count, word) => `${count} ${word}${count === 1 ? "" : "s"}`;

function when(iso) {
  const date = new Date(iso);
  const today = date.toDateString() === new Date().toDateString();
  return today ? date.toLocaleTimeString() : date.toLocaleString();
}

/** What a task is doing or did, in a line. */
function summary(task) {
  const progress = task.progress || {};
  if (task.status === "queued") return "waiting for its turn";
  if (task.status === "running") {
    if (progress.message) return progress.message;
    return progress.total ? `step ${progress.step} of ${progress.total}` : "starting";
  }
  if (task.status === "failed") return task.error || "failed";
  const parts = [];
  const outputs = (task.outputs || []).length;
  if (task.status === "succeeded") parts.push(plural(outputs, "result"));
  if (task.seconds !== null && task.seconds !== undefined) parts.push(`${Number(task.seconds).toFixed(1)} s`);
  return parts.join(" · ");
}

/** [done, of] for the progress bar: the running node's steps, else the task's own. */
function fraction(task) {
  const progress = task.progress || {};
  const steps = STEPS.exec(progress.message || "");
  if (steps) return [Number(steps[1]), Number(steps[2])];
  return progress.total ? [progress.step, progress.total] : null;
}

function button(label, className, onClick) {
  const element = make("button", `secondary compact ${className}`, label);
  element.type = "button";
  element.addEventListener("click", onClick);
  return element;
}

async function cancel(task, row) {
  const error = row.querySelector(".task-error");
  try {
    await api(`/v1/tasks/${encodeURIComponent(task.id)}/cancel`, { method: "POST" });
  } catch (exc) {
    error.textContent = `Could not cancel: ${exc.message}`;
    error.hidden = false;
    return;
  }
  refreshSoon(0);
}

// Kinds the server queues again from their stored request (POST /v1/tasks/{id}/rerun).
const RERUN_ON_SERVER = new Set(["generation", "batch_render", "story"]);

/** Queue a generation, batch render or story again with the same settings (same seed). */
export async function rerunOnServer(task, error) {
  try {
    const again = await api(`/v1/tasks/${encodeURIComponent(task.id)}/rerun`, { method: "POST" });
    refreshSoon(0);
    return again;
  } catch (exc) {
    error.textContent = `Could not run it again: ${exc.message}`;
    error.hidden = false;
    return null;
  }
}

function taskRow(task) {
  const row = make("li", "task-row");
  row.dataset.id = task.id;
  row.dataset.status = task.status;
  row.dataset.kind = task.kind;
  const head = make("div", "task-head");
  const title = make("span", "task-kind", KINDS[task.kind] || task.kind);
  const id = make("code", "task-id", task.id.slice(0, 8));
  id.title = task.id;
  const badge = make("span", "task-status", STATUS_TEXT[task.status] || task.status);
  head.append(title, id, badge);
  const time = make("time", "task-time", when(task.created_at));
  time.dateTime = task.created_at;
  const line = make("p", "task-summary", summary(task));
  line.title = line.textContent;
  row.append(head, time);
  const progress = task.progress || {};
  const done = task.status === "running" && fraction(task);
  if (done) {
    const bar = make("progress", "task-progress");
    bar.max = done[1]; // before the value, which a smaller max would cut down
    bar.value = done[0];
    row.append(bar);
  }
  row.append(line);
  const actions = make("div", "task-actions");
  if (ACTIVE.has(task.status)) actions.append(button("Cancel", "task-cancel", () => cancel(task, row)));
  const pictures = (task.outputs || []).some((o) => o.kind === "image" || o.kind === "video");
  if (pictures) actions.append(button("Results", "task-results", () => hooks.showResults(task)));
  if (task.kind === "workflow" && task.input && task.input.graph) {
    const rerun = button("Re-run", "task-rerun", () => hooks.rerun(task));
    rerun.title = "Put this workflow on the canvas and run it again with the same settings";
    actions.append(rerun);
  }
  const error = make("p", "form-error task-error");
  error.hidden = true;
  if (RERUN_ON_SERVER.has(task.kind)) {
    const rerun = button("Re-run", "task-rerun", () => rerunOnServer(task, error));
    rerun.title = "Queue it again with the same settings (the same seed)";
    actions.append(rerun);
  }
  if (actions.childElementCount) row.append(actions);
  row.append(error);
  row.signature = JSON.stringify([task.status, progress, task.error, (task.outputs || []).length]);
  return row;
}

/** The next page's path from a list response's `Link: <…>; rel="next"`, or null. */
function nextPage(response) {
  const match = /<([^>]+)>;\s*rel="next"/.exec(response.headers.get("Link") || "");
  if (!match) return null;
  const url = new URL(match[1], window.location.href);
  return url.pathname + url.search;
}

function render(tasks) {
  const list = $("#queue-list");
  const old = new Map([...list.children].map((row) => [row.dataset.id, row]));
  // A row that did not change is kept as it is (a button keeps its focus, an error its text).
  const rows = tasks.map((task) => {
    const row = taskRow(task);
    const kept = old.get(task.id);
    return kept && kept.signature === row.signature ? kept : row;
  });
  list.replaceChildren(...rows);
  $("#queue-empty").hidden = tasks.length > 0;
  const active = tasks.filter((task) => ACTIVE.has(task.status)).length;
  const count = $("#queue-count");
  count.textContent = String(active);
  count.hidden = active === 0;
  count.title = `${plural(active, "task")} queued or running`;
  return active;
}

/** Read the tasks again; while the tab is shown, again after ACTIVE_MS or IDLE_MS. */
export async function refreshQueue() {
  if (reading) return;
  reading = true;
  clearTimeout(timer);
  let active = 0;
  const error = $("#queue-error");
  try {
    const response = await api(`/v1/tasks?limit=${LIMIT}`, { raw: true });
    const fresh = await response.json();
    if (readOlder) {
      // New tasks push the newest page's last ones out: they stay, above the older pages.
      const still = new Set(fresh.map((task) => task.id));
      older = [...latest.filter((task) => !still.has(task.id)), ...older];
    }
    latest = fresh;
    newestNext = nextPage(response);
    active = renderAll();
    error.hidden = true;
  } catch (exc) {
    if (!(exc instanceof ApiError && exc.status === 401)) {
      error.textContent = `Could not read the tasks: ${exc.message}`;
      error.hidden = false;
    }
  } finally {
    reading = false;
  }
  if (shown()) timer = setTimeout(refreshQueue, active ? ACTIVE_MS : IDLE_MS);
}

/** The newest page and the older pages read so far, each task once. */
function renderAll() {
  const seen = new Set(latest.map((task) => task.id));
  const active = render([...latest, ...older.filter((task) => !seen.has(task.id))]);
  const more = readOlder ? olderNext : newestNext;
  $("#queue-more").hidden = !more;
  return active;
}

/** Read the page after the last one shown and add it below. */
async function showOlder() {
  const path = readOlder ? olderNext : newestNext;
  if (!path) return;
  const error = $("#queue-error");
  const above = readOlder ? [] : latest; // the page this one follows, as it was read
  try {
    const response = await api(path, { raw: true });
    const page = await response.json();
    // A refresh meanwhile may have pushed some of `above` out of the newest page: keep them.
    const still = new Set(latest.map((task) => task.id));
    older = [...above.filter((task) => !still.has(task.id)), ...older, ...page];
    olderNext = nextPage(response);
    readOlder = true;
    renderAll();
    error.hidden = true;
  } catch (exc) {
    error.textContent = `Could not read the older tasks: ${exc.message}`;
    error.hidden = false;
  }
}

/** Read the tasks again shortly (after a run starts or ends, a cancel). */
export function refreshSoon(delay = 200) {
  clearTimeout(timer);
  timer = setTimeout(refreshQueue, delay);
}

export function setUpQueue(queueHooks) {
  hooks = { ...hooks, ...queueHooks };
  $("#tab-queue").addEventListener("click", () => refreshQueue());
  $("#queue-refresh").addEventListener("click", () => refreshQueue());
  $("#queue-more").addEventListener("click", () => showOlder());
  document.addEventListener("castbook:key", () => {
    older = []; // another key: another owner's tasks
    readOlder = false;
    refreshQueue();
  });
}
