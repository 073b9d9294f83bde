// The Gallery tab: every image and video of the owner's finished tasks, newest first
// (GET /v1/results), filtered by character, saved workflow and score. The server pages it
// (60 a page, by cursor) and the page fetches a small copy of a picture only when it scrolls
// into view, so 5 000 results cost what 60 do. A picture opens full size with what it was made with (the
// prompt and negative prompt sent, seed, preset, characters, score); Download saves it,
// Download all saves a zip of every result the filters pick with a JSON of parameters each
// (GET /v1/results.zip), and Re-run runs it again with the same settings.

import { $, ApiError, api } from "./api.js";
import { refreshSoon, rerunOnServer } from "./canvas-queue.js";
import { resultAlt } from "./canvas-results.js";
import { rerunTask, setStatus } from "./canvas-run.js";
import { make } from "./dom.js";
import { characters } from "./library.js";

const PAGE = 60;
const WATCH_MS = 5000; // the first page, while shown, is read again: new results show up
const EXTENSIONS = { "image/png": "png", "video/mp4": "mp4", "image/jpeg": "jpg", "image/webp": "webp" };

const state = {
  cursors: [null], // the cursor of each page shown so far; the last is the current page's
  items: [], // the current page's items
  total: 0,
  next: null, // the next page's cursor
  open: -1, // the index of the item in the viewer
  reading: 0, // a counter: an answer to an older read is dropped
  query: "", // what the page shown was read with (filters, cursor)
};
// API path -> blob: URL of the current page's pictures (revoked on leaving it): the grid shows
// the small copies (/thumbnail), the viewer and Download the results themselves.
const urls = new Map();
let observer = null;
let watch = 0;

const plural = (count, word) => `${count.toLocaleString("en")} ${word}${count === 1 ? "" : "s"}`;

// ---- filters --------------------------------------------------------------------------------

function filters() {
  const params = new URLSearchParams();
  const character = $("#gallery-character").value;
  const workflow = $("#gallery-workflow").value;
  const score = $("#gallery-min-score").value.trim();
  if (character) params.set("character", character);
  if (workflow) params.set("workflow", workflow);
  if (score !== "") params.set("min_score", score);
  return params;
}

function scoreProblem() {
  const raw = $("#gallery-min-score").value.trim();
  if (raw === "") return null;
  const value = Number(raw);
  return Number.isFinite(value) && value >= 0 && value <= 100 ? null : "The score is 0–100.";
}

function fillCharacters() {
  const select = $("#gallery-character");
  const chosen = select.value;
  const names = characters().map((c) => c.name).sort((a, b) => a.localeCompare(b));
  if (chosen && !names.includes(chosen)) names.push(chosen); // kept while it is the filter
  select.replaceChildren(new Option("any character", ""), ...names.map((n) => new Option(n, n)));
  select.value = chosen;
}

async function fillWorkflows() {
  const select = $("#gallery-workflow");
  const chosen = select.value;
  let saved = [];
  try {
    saved = await api("/v1/workflows");
  } catch {
    return; // the list keeps what it had; the gallery itself says what failed
  }
  const options = saved.map((w) => new Option(w.name, w.id));
  select.replaceChildren(new Option("any workflow", ""), ...options);
  select.value = saved.some((w) => w.id === chosen) ? chosen : "";
}

// ---- reading a page ---------------------------------------------------------------------------

function forgetPictures() {
  if (observer) observer.disconnect();
  for (const url of urls.values()) URL.revokeObjectURL(url);
  urls.clear();
}

async function fetchedUrl(path) {
  if (!urls.has(path)) {
    const response = await api(path, { raw: true });
    const url = URL.createObjectURL(await response.blob());
    if (urls.has(path)) URL.revokeObjectURL(url);
    else urls.set(path, url);
  }
  return urls.get(path);
}

const pictureUrl = (item) => fetchedUrl(`/v1/results/${item.id}`);
// Videos have no small copy: the grid loads the video's metadata (its first frame).
const tileUrl = (item) => fetchedUrl(item.kind === "image" ? `/v1/results/${item.id}/thumbnail` : `/v1/results/${item.id}`);

/** Read the page at state.cursors' last cursor with the filters. */
export async function readGallery() {
  const error = $("#gallery-error");
  const problem = scoreProblem();
  if (problem) {
    error.textContent = problem;
    error.hidden = false;
    return;
  }
  const params = filters();
  params.set("limit", String(PAGE));
  const cursor = state.cursors.at(-1);
  if (cursor) params.set("cursor", cursor);
  const reading = ++state.reading;
  $("#gallery-panel").setAttribute("aria-busy", "true");
  let page;
  try {
    page = await api(`/v1/results?${params}`);
  } catch (exc) {
    if (reading !== state.reading) return;
    $("#gallery-panel").removeAttribute("aria-busy");
    if (!(exc instanceof ApiError && exc.status === 401)) {
      error.textContent = `Could not read the gallery: ${exc.message}`;
      error.hidden = false;
    }
    return;
  }
  if (reading !== state.reading) return;
  $("#gallery-panel").removeAttribute("aria-busy");
  error.hidden = true;
  const same =
    String(params) === state.query &&
    page.total === state.total &&
    page.items.length === state.items.length &&
    page.items.every((item, index) => item.id === state.items[index].id);
  state.query = String(params);
  state.items = page.items;
  state.total = page.total;
  state.next = page.next_cursor;
  if (!same || !$("#gallery-grid").childElementCount) render(); // unchanged: nothing reloads
  watchFirstPage();
}

/** On the first page, with the tab shown and no picture open: read it again in a while, so
 * the results of runs ending meanwhile (here or elsewhere) appear. */
function watchFirstPage() {
  clearTimeout(watch);
  watch = setTimeout(() => {
    const shown = !$("#gallery-panel").hidden && !$("#gallery-viewer").open;
    if (shown && state.cursors.length === 1 && !document.hidden) readGallery();
    else if (!$("#gallery-panel").hidden) watchFirstPage();
  }, WATCH_MS);
}

function render() {
  forgetPictures();
  const grid = $("#gallery-grid");
  observer = new IntersectionObserver(onVisible, { root: $("#gallery-panel"), rootMargin: "200px" });
  grid.replaceChildren(...state.items.map((item, index) => tile(item, index)));
  $("#gallery-panel").scrollTop = 0;
  const first = (state.cursors.length - 1) * PAGE + 1;
  const last = first + state.items.length - 1;
  const filtered = filters().toString() !== "";
  $("#gallery-count").textContent = state.total
    ? `${first.toLocaleString("en")}–${last.toLocaleString("en")} of ${plural(state.total, "result")}`
    : "";
  $("#gallery-empty").hidden = state.total > 0;
  $("#gallery-empty").textContent = filtered
    ? "No result matches these filters."
    : "No results yet: run a workflow, and its pictures gather here.";
  $("#gallery-newer").disabled = state.cursors.length < 2;
  $("#gallery-older").disabled = !state.next;
  $("#gallery-pager").hidden = !state.total || (state.cursors.length < 2 && !state.next);
  $("#gallery-download-all").disabled = !state.total;
}

// ---- a tile ---------------------------------------------------------------------------------

/** What a screen reader says for a result (canvas-results.js's resultAlt, as everywhere). */
function altText(item) {
  return resultAlt({
    madeBy: item.node || item.task_kind,
    characters: item.characters,
    prompt: item.prompt,
    score: item.score,
  });
}

function tile(item, index) {
  const entry = make("li", "gallery-item");
  entry.dataset.id = item.id;
  entry.dataset.task = item.task;
  const open = make("button", "gallery-open");
  open.type = "button";
  open.title = `${altText(item)} — open full size`;
  open.setAttribute("aria-label", `Open: ${altText(item)}`);
  const media = item.kind === "video" ? make("video") : make("img");
  if (item.kind === "video") {
    media.muted = true;
    media.preload = "metadata";
  } else {
    media.alt = altText(item);
  }
  media.dataset.id = item.id;
  open.append(media);
  open.addEventListener("click", () => openViewer(index));
  const caption = make("div", "gallery-caption");
  if (item.score !== null) caption.append(make("span", "score", Number(item.score).toFixed(1)));
  caption.append(make("span", "gallery-who", item.characters.join(", ") || item.task_kind));
  entry.append(open, caption);
  observer.observe(media);
  return entry;
}

function onVisible(entries) {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    const media = entry.target;
    observer.unobserve(media);
    const item = state.items.find((i) => i.id === media.dataset.id);
    if (!item) continue;
    tileUrl(item)
      .then((url) => (media.src = url))
      .catch(() => media.closest(".gallery-item")?.classList.add("broken"));
  }
}

// ---- the viewer -------------------------------------------------------------------------------

function detail(label, text, className = "") {
  const row = make("div", `gallery-detail ${className}`.trim());
  row.append(make("dt", "", label), make("dd", "", text));
  return row;
}

async function openViewer(index) {
  const item = state.items[index];
  if (!item) return;
  state.open = index;
  const dialog = $("#gallery-viewer");
  const frame = $("#gallery-full");
  const media = item.kind === "video" ? make("video") : make("img");
  if (item.kind === "video") {
    media.controls = true;
    media.playsInline = true;
  } else {
    media.alt = altText(item);
  }
  frame.replaceChildren(media);
  const when = new Date(item.finished_at).toLocaleString();
  const rows = [
    detail("Prompt sent", item.prompt || "—", "gallery-prompt"),
    detail("Negative prompt", item.negative_prompt || "—", "gallery-negative"),
    detail("Characters", item.characters.join(", ") || "—"),
    detail("Score", item.score !== null ? `${Number(item.score).toFixed(1)} of 100` : "not scored"),
    detail("Seed", item.seed !== null ? String(item.seed) : "—", "gallery-seed"),
    detail("Preset", item.preset || "—"),
    detail("Size", `${item.width}×${item.height}`),
    detail("Made by", [item.workflow && (item.workflow.name || item.workflow.id), item.node, item.task_kind]
      .filter(Boolean).join(" · ")),
    detail("Task", `${item.task.slice(0, 8)} · ${when}`),
  ];
  $("#gallery-details").replaceChildren(...rows);
  $("#gallery-viewer-title").textContent = `Result ${(state.cursors.length - 1) * PAGE + index + 1} of ${state.total.toLocaleString("en")}`;
  $("#gallery-prev").disabled = index === 0;
  $("#gallery-next").disabled = index === state.items.length - 1;
  const rerun = $("#gallery-rerun");
  rerun.hidden = !["workflow", "generation", "batch_render", "story"].includes(item.task_kind);
  rerun.title =
    item.task_kind === "workflow"
      ? "Put this workflow on the canvas and run it again with the same settings"
      : item.task_kind === "generation"
        ? "Generate again with the same settings and this picture's seed"
        : "Queue its task again with the same settings (the same seeds)";
  $("#gallery-viewer-error").hidden = true;
  if (!dialog.open) dialog.showModal();
  try {
    media.src = await pictureUrl(item);
  } catch (exc) {
    viewerError(`Could not load it: ${exc.message}`);
  }
}

function viewerError(text) {
  const error = $("#gallery-viewer-error");
  error.textContent = text;
  error.hidden = false;
}

function step(delta) {
  const index = state.open + delta;
  if (index >= 0 && index < state.items.length) openViewer(index);
}

function save(url, filename) {
  const link = make("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
}

async function downloadOne() {
  const item = state.items[state.open];
  if (!item) return;
  try {
    save(await pictureUrl(item), `${item.id.slice(0, 16)}.${EXTENSIONS[item.media_type] || "bin"}`);
  } catch (exc) {
    viewerError(`Could not download it: ${exc.message}`);
  }
}

async function downloadAll() {
  const button = $("#gallery-download-all");
  const error = $("#gallery-error");
  button.disabled = true;
  button.textContent = "Preparing the zip…";
  try {
    const response = await api(`/v1/results.zip?${filters()}`, { raw: true });
    const url = URL.createObjectURL(await response.blob());
    save(url, "castbook-results.zip");
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    error.hidden = true;
  } catch (exc) {
    error.textContent = `Could not download the zip: ${exc.message}`;
    error.hidden = false;
  } finally {
    button.textContent = "Download all (zip)";
    button.disabled = !state.total;
  }
}

/** Run it again with the same settings: a workflow's graph on the canvas, run (as the
 * Queue's Re-run); a generation's request again with this picture's seed, one picture. */
async function rerun() {
  const item = state.items[state.open];
  if (!item) return;
  let task;
  try {
    task = await api(`/v1/tasks/${encodeURIComponent(item.task)}`);
  } catch (exc) {
    viewerError(`Could not read its task: ${exc.message}`);
    return;
  }
  if (item.task_kind === "workflow") {
    $("#gallery-viewer").close();
    await rerunTask(task);
    return;
  }
  if (item.task_kind !== "generation") {
    const error = $("#gallery-viewer-error");
    const again = await rerunOnServer(task, error);
    if (!again) return;
    $("#gallery-viewer").close();
    setStatus(`Queued again as task ${again.id.slice(0, 8)}: follow it in the Queue tab.`, "ok");
    return;
  }
  const request = { ...task.input.request, preset: task.input.preset, batch: 1 };
  if (item.seed !== null) request.seed = item.seed;
  try {
    const queued = await api("/v1/generations", { method: "POST", json: request });
    $("#gallery-viewer").close();
    setStatus(`Generating again as task ${queued.id.slice(0, 8)}: follow it in the Queue tab.`, "ok");
    refreshSoon(0);
  } catch (exc) {
    viewerError(`Could not run it again: ${exc.message}`);
  }
}

// ---- set-up ---------------------------------------------------------------------------------

function fromFirstPage() {
  state.cursors = [null];
  readGallery();
}

export function setUpGallery() {
  $("#tab-gallery").addEventListener("click", () => {
    fillCharacters();
    fillWorkflows();
    fromFirstPage();
  });
  $("#gallery-refresh").addEventListener("click", fromFirstPage);
  for (const id of ["#gallery-character", "#gallery-workflow"]) {
    $(id).addEventListener("change", fromFirstPage);
  }
  $("#gallery-min-score").addEventListener("change", fromFirstPage);
  $("#gallery-filters").addEventListener("submit", (event) => {
    event.preventDefault();
    fromFirstPage();
  });
  $("#gallery-older").addEventListener("click", () => {
    if (!state.next) return;
    state.cursors.push(state.next);
    readGallery();
  });
  $("#gallery-newer").addEventListener("click", () => {
    if (state.cursors.length < 2) return;
    state.cursors.pop();
    readGallery();
  });
  $("#gallery-download-all").addEventListener("click", downloadAll);
  $("#gallery-prev").addEventListener("click", () => step(-1));
  $("#gallery-next").addEventListener("click", () => step(1));
  $("#gallery-download").addEventListener("click", downloadOne);
  $("#gallery-rerun").addEventListener("click", rerun);
  $("#gallery-close").addEventListener("click", () => $("#gallery-viewer").close());
  $("#gallery-viewer").addEventListener("keydown", (event) => {
    if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
    else return;
    event.preventDefault();
  });
  document.addEventListener("castbook:characters", fillCharacters);
}
