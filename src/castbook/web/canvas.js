// The workflow canvas: nodes from the Nodes tab and character cards dropped where the mouse
// is, moved, selected and deleted; wires between typed ports; pan and zoom; the toolbar
// (run, save, load). The parts live in canvas-*.js; this module wires them together.
//
//   canvas-graph.js    the workflow as data, the catalogue's rules, graph JSON
//   canvas-nodes.js    a node's element: ports, fields, character picture, status, results
//   canvas-wires.js    the SVG wires and dragging new ones
//   canvas-view.js     pan and zoom
//   canvas-run.js      the toolbar: run with live progress, cancel, save, load, clear
//   canvas-results.js  the results panel
//   canvas-queue.js    the Queue tab: the owner's tasks, live; cancel, results, re-run
//   canvas-models.js   presets whose models are missing: marks, Download on the node
//   canvas-palette.js  the Nodes tab

import { $, ApiError, api } from "./api.js";
import { IMAGE_DRAG_TYPE, NODE_DRAG_TYPE, catalog, setCatalog, workflow } from "./canvas-graph.js";
import {
  buildNode,
  fillPresetSelect,
  libraryLoaded,
  nodeElement,
  renderCharacter,
  setNodeHooks,
} from "./canvas-nodes.js";
import { renderModelNotices, resumePulls, setModelHooks } from "./canvas-models.js";
import { canRedo, canUndo, recordChange, redo, resetHistory, undo } from "./canvas-history.js";
import { paletteError, paletteWaiting, renderPalette } from "./canvas-palette.js";
import { setUpQueue } from "./canvas-queue.js";
import { showResults } from "./canvas-results.js";
import { forgetCurrent, rerunTask, resumeRun, setStatus, setUpToolbar } from "./canvas-run.js";
import {
  fitView,
  onViewChange,
  resetView,
  setUpView,
  toWorld,
  view,
  visibleCentre,
  zoomAtCentre,
} from "./canvas-view.js";
import {
  drawWires,
  drawWiresSoon,
  onPortPointerDown,
  selectWire,
  selectedWire,
  setUpWires,
} from "./canvas-wires.js";
import { DRAG_TYPE, characters } from "./library.js";

const DRAFT_STORAGE = "castbook.canvas";
const NUDGE = 10;

const selection = new Set();
let canvas = null;
let world = null;
let resizeObserver = null;
let draftTimer = 0;

// ---- the draft: the canvas survives a reload ------------------------------------------------

function saveDraftSoon() {
  clearTimeout(draftTimer);
  draftTimer = setTimeout(saveDraft, 300);
}

// A reload or a closed tab within 300 ms of the last edit (say, Run clicked right after
// choosing a preset) would lose that edit: a pending save is made as the page goes.
window.addEventListener("pagehide", () => {
  if (draftTimer) saveDraft();
});

function saveDraft() {
  clearTimeout(draftTimer);
  draftTimer = 0;
  recordChange();
  updateHistoryButtons();
  {
    const names = {};
    for (const node of workflow.nodes.values()) if (node.name) names[node.id] = node.name;
    try {
      if (workflow.nodes.size) {
        localStorage.setItem(DRAFT_STORAGE, JSON.stringify({ graph: workflow.toGraph(), names }));
      } else {
        localStorage.removeItem(DRAFT_STORAGE);
      }
    } catch {
      // storage full or off: the canvas still works, it just is not kept
    }
  }
}

// ---- undo and redo --------------------------------------------------------------------------

function updateHistoryButtons() {
  $("#undo").disabled = !canUndo();
  $("#redo").disabled = !canRedo();
}

function stepHistory(step) {
  saveDraft(); // a change still settling is recorded first, so undo takes it back
  if (!step()) return;
  selectWire(null);
  renderAll();
  saveDraft();
}

function restoreDraft() {
  if (workflow.nodes.size) return;
  let draft = null;
  try {
    draft = JSON.parse(localStorage.getItem(DRAFT_STORAGE) || "null");
  } catch {
    draft = null;
  }
  if (!draft || !draft.graph) return;
  workflow.load(draft.graph);
  for (const [id, name] of Object.entries(draft.names || {})) {
    const node = workflow.nodes.get(id);
    if (node) node.name = name;
  }
  renderAll();
}

/** After a change of structure (a node, a wire, a move): one undo step each. Typing in a
 * field is recorded once it settles (saveDraftSoon), so a word is one step, not a letter. */
function changed() {
  updateEmpty();
  recordChange();
  updateHistoryButtons();
  saveDraftSoon();
}

// ---- nodes ----------------------------------------------------------------------------------

function updateEmpty() {
  $("#canvas-empty").hidden = workflow.nodes.size > 0;
}

function place(element, node) {
  element.style.left = `${Math.round(node.x)}px`;
  element.style.top = `${Math.round(node.y)}px`;
}

function mount(node) {
  const element = buildNode(node);
  place(element, node);
  element.addEventListener("pointerdown", (event) => onNodePointerDown(event, node));
  for (const row of element.querySelectorAll(".port-row")) {
    row.addEventListener("pointerdown", (event) => onPortPointerDown(event, row.querySelector(".port")));
  }
  world.append(element);
  resizeObserver.observe(element);
  return element;
}

function renderAll() {
  for (const element of world.querySelectorAll(".node")) {
    resizeObserver.unobserve(element);
    element.remove();
  }
  selection.clear();
  for (const node of workflow.nodes.values()) mount(node);
  drawWires();
  changed();
}

function addNode(type, x, y, values = {}, name = undefined, { avoid = false } = {}) {
  if (!catalog.types.has(type)) return null;
  const node = workflow.add(type, x, y, values);
  if (name) node.name = name;
  const element = mount(node);
  if (avoid) moveToFreeSpot(node, element);
  select([node.id]);
  element.focus({ preventScroll: true });
  changed();
  return node;
}

const FREE_STEP = 40; // world px between the places tried for a new node
const FREE_GAP = 16; // kept between a new node and the others

function covers(element, x, y, width, height) {
  return (
    x < element.offsetLeft + element.offsetWidth + FREE_GAP &&
    element.offsetLeft < x + width + FREE_GAP &&
    y < element.offsetTop + element.offsetHeight + FREE_GAP &&
    element.offsetTop < y + height + FREE_GAP
  );
}

/** Move a node just added (measured, not yet painted) to the nearest place where it covers
 * no other node, trying rings of places around where it was put; the first place if none. */
function moveToFreeSpot(node, element) {
  const others = [...world.querySelectorAll(".node")].filter((other) => other !== element);
  const width = element.offsetWidth;
  const height = element.offsetHeight;
  const free = (x, y) => !others.some((other) => covers(other, x, y, width, height));
  for (let ring = 0; ring <= 15; ring += 1) {
    for (let dy = -ring; dy <= ring; dy += 1) {
      for (let dx = -ring; dx <= ring; dx += 1) {
        if (Math.max(Math.abs(dx), Math.abs(dy)) !== ring) continue; // the ring's edge only
        const x = node.x + dx * FREE_STEP;
        const y = node.y + dy * FREE_STEP;
        if (free(x, y)) {
          node.x = x;
          node.y = y;
          place(element, node);
          return;
        }
      }
    }
  }
}

/** A node added without a drop point (Enter or a double-click in the Nodes tab, a result's
 * Use): in the middle of the visible canvas, or the nearest place that covers no node. */
function addAtCentre(type, values = {}) {
  const centre = visibleCentre();
  addNode(type, centre.x - 120, centre.y - 80, values, undefined, { avoid: true });
}

function removeNodes(ids) {
  for (const id of ids) {
    workflow.remove(id);
    const element = nodeElement(id);
    if (element) {
      resizeObserver.unobserve(element);
      element.remove();
    }
    selection.delete(id);
  }
  drawWires();
  changed();
}

// ---- copy and paste -------------------------------------------------------------------------

const PASTE_OFFSET = 40;
let clipboard = []; // copies of the copied nodes, with only the wires between them

function copySelection() {
  const ids = new Set(selection);
  clipboard = [...ids].map((id) => {
    const node = structuredClone(workflow.nodes.get(id));
    for (const port of Object.keys(node.links)) {
      node.links[port] = node.links[port].filter((link) => ids.has(link.node));
    }
    return node;
  });
  return clipboard.length > 0;
}

function paste() {
  if (!clipboard.length) return;
  const copies = new Map(); // copied id -> new node
  for (const source of clipboard) {
    source.x += PASTE_OFFSET; // each paste lands a step further on
    source.y += PASTE_OFFSET;
    const copy = workflow.add(source.type, source.x, source.y, source.values);
    if (source.name) copy.name = source.name;
    copies.set(source.id, copy);
  }
  for (const source of clipboard) {
    const copy = copies.get(source.id);
    for (const [port, links] of Object.entries(source.links)) {
      copy.links[port] = links.map((link) => ({ node: copies.get(link.node).id, output: link.output }));
    }
    mount(copy);
  }
  select([...copies.values()].map((node) => node.id));
  drawWires();
  changed();
}

// ---- selection, moving, keys ----------------------------------------------------------------

function select(ids) {
  selection.clear();
  for (const id of ids) selection.add(id);
  for (const element of world.querySelectorAll(".node")) {
    element.classList.toggle("selected", selection.has(element.dataset.nodeId));
  }
  if (ids.length) selectWire(null);
}

function toggle(id) {
  if (selection.has(id)) selection.delete(id);
  else selection.add(id);
  nodeElement(id).classList.toggle("selected", selection.has(id));
  selectWire(null);
}

const CONTROLS = "input, textarea, select, button, summary, a, video, .port-row, .reference-picker";

function onNodePointerDown(event, node) {
  if (event.button !== 0) return;
  const element = event.currentTarget;
  if (event.shiftKey) toggle(node.id);
  else if (!selection.has(node.id)) select([node.id]);
  selectWire(null);
  if (event.target.closest(CONTROLS)) return; // the control works as usual
  event.preventDefault();
  element.focus({ preventScroll: true });
  const startX = event.clientX;
  const startY = event.clientY;
  const moving = [...selection].map((id) => workflow.nodes.get(id)).filter(Boolean);
  const from = moving.map((n) => ({ x: n.x, y: n.y }));
  element.setPointerCapture(event.pointerId);
  element.classList.add("dragging");
  const move = (e) => {
    const dx = (e.clientX - startX) / view.zoom;
    const dy = (e.clientY - startY) / view.zoom;
    moving.forEach((n, i) => {
      n.x = from[i].x + dx;
      n.y = from[i].y + dy;
      place(nodeElement(n.id), n);
    });
    drawWiresSoon();
  };
  const stop = () => {
    element.removeEventListener("pointermove", move);
    element.removeEventListener("pointerup", stop);
    element.removeEventListener("pointercancel", stop);
    element.classList.remove("dragging");
    changed();
  };
  element.addEventListener("pointermove", move);
  element.addEventListener("pointerup", stop);
  element.addEventListener("pointercancel", stop);
}

function isEditing(target) {
  return (
    target instanceof HTMLElement &&
    Boolean(target.closest("input, textarea, select, [contenteditable], dialog"))
  );
}

/**
 * The canvas's keys. Undo, redo, select all, copy, paste and duplicate work wherever the
 * focus is — a toolbar button keeps it after a click (Clear, then Ctrl+Z) — except while
 * typing in a field or in a dialog. Delete, the arrows and Escape act only with the focus on the canvas
 * or its toolbar: elsewhere (a card, a node type) they are that element's keys.
 */
function onKeyDown(event) {
  if (isEditing(event.target) || document.querySelector("dialog[open]")) return;
  const key = event.key.toLowerCase();
  if ((event.ctrlKey || event.metaKey) && (key === "z" || key === "y")) {
    event.preventDefault();
    stepHistory(key === "y" || event.shiftKey ? redo : undo);
    return;
  }
  if ((event.ctrlKey || event.metaKey) && key === "a" && workflow.nodes.size) {
    event.preventDefault(); // every node, not the page's text
    select([...workflow.nodes.keys()]);
    return;
  }
  if ((event.ctrlKey || event.metaKey) && ["c", "v", "d"].includes(key)) {
    if (key === "c" && String(window.getSelection() || "")) return; // copying page text
    if (key === "v") paste();
    else if (copySelection() && key === "d") paste(); // d: duplicate in one go
    if (key !== "c" || selection.size) event.preventDefault();
    return;
  }
  const active = document.activeElement;
  const onCanvas =
    !active || active === document.body || canvas.contains(active) || $("#canvas-toolbar").contains(active);
  if (!onCanvas) return;
  if (event.key === "Delete" || event.key === "Backspace") {
    const wire = selectedWire();
    if (wire) {
      event.preventDefault();
      workflow.disconnect(wire);
      selectWire(null);
      drawWires();
      changed();
    } else if (selection.size) {
      event.preventDefault();
      removeNodes([...selection]);
    }
  } else if (event.key === "Escape") {
    select([]);
    selectWire(null);
  } else if (event.key.startsWith("Arrow") && selection.size) {
    event.preventDefault();
    const step = event.shiftKey ? NUDGE * 5 : NUDGE;
    const dx = { ArrowLeft: -step, ArrowRight: step }[event.key] || 0;
    const dy = { ArrowUp: -step, ArrowDown: step }[event.key] || 0;
    for (const id of selection) {
      const node = workflow.nodes.get(id);
      node.x += dx;
      node.y += dy;
      place(nodeElement(id), node);
    }
    drawWires();
    saveDraftSoon();
  }
}

// ---- drops ----------------------------------------------------------------------------------

function onDragOver(event) {
  const types = [...event.dataTransfer.types];
  const known = [NODE_DRAG_TYPE, IMAGE_DRAG_TYPE, DRAG_TYPE, "text/plain"];
  if (known.some((type) => types.includes(type))) {
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    canvas.classList.add("drop-target");
  }
}

function onDrop(event) {
  event.preventDefault();
  canvas.classList.remove("drop-target");
  if (!catalog.loaded) {
    setStatus("The node types are still loading; try again in a moment.", "error");
    return;
  }
  const point = toWorld(event.clientX, event.clientY);
  const type = event.dataTransfer.getData(NODE_DRAG_TYPE);
  if (type) {
    addNode(type, point.x, point.y);
    return;
  }
  const image = event.dataTransfer.getData(IMAGE_DRAG_TYPE);
  if (image) {
    addNode("image", point.x, point.y, { image });
    return;
  }
  const id = event.dataTransfer.getData(DRAG_TYPE) || event.dataTransfer.getData("text/plain");
  const character = characters().find((c) => c.id === id);
  if (character) addNode("character", point.x, point.y, { character: character.id }, character.name);
}

// ---- the catalogue --------------------------------------------------------------------------

async function loadCatalog() {
  try {
    const [types, presets] = await Promise.all([api("/v1/workflows/node-types"), api("/v1/presets")]);
    setCatalog(types, presets);
  } catch (exc) {
    if (exc instanceof ApiError && exc.status === 401) paletteWaiting();
    else paletteError(`Could not load the node types: ${exc.message}`);
    return;
  }
  renderPalette(addAtCentre);
  for (const select of world.querySelectorAll('select[data-field="preset"]')) {
    const node = workflow.nodes.get(select.closest(".node").dataset.nodeId);
    fillPresetSelect(select, node.type, node.values.preset || "");
  }
  renderModelNotices();
  restoreDraft();
  resumePulls(); // downloads this browser started before a reload
  clearTimeout(draftTimer);
  resetHistory(); // the restored canvas is where undo stops
  updateHistoryButtons();
  resumeRun(); // a run going on (or ended) while the page was reloaded
}

// ---- set up ---------------------------------------------------------------------------------

export function setUpCanvas() {
  canvas = $("#canvas");
  world = $("#canvas-world");
  resizeObserver = new ResizeObserver(drawWiresSoon);
  $("#undo").addEventListener("click", () => stepHistory(undo));
  $("#redo").addEventListener("click", () => stepHistory(redo));
  // A node's ✕ removes it (and its wires); an edit is kept in the draft, and a finished
  // edit (the field left, a choice made) is one undo step.
  setNodeHooks({
    onEdit: (_node, finished) => (finished ? changed() : saveDraftSoon()),
    onRemove: (id) => removeNodes([id]),
  });
  setUpView(canvas, world, {
    onEmptyClick: () => {
      select([]);
      selectWire(null);
      canvas.focus({ preventScroll: true });
    },
  });
  setModelHooks({ onStatus: setStatus });
  setUpWires(canvas, $("#wires"), {
    onChange: changed,
    onRefused: (problem) => setStatus(`Not connected: ${problem}.`, "error"),
    onSelect: (wire) => {
      select([]);
      selectWire(wire);
      canvas.focus({ preventScroll: true });
    },
  });
  setUpToolbar({
    loadGraph: (graph) => {
      const unknown = workflow.load(graph);
      renderAll();
      return unknown;
    },
    clearCanvas: () => {
      workflow.clear();
      renderAll();
    },
  });
  setUpQueue({ showResults, rerun: rerunTask });
  onViewChange(() => {
    $("#zoom-reset").textContent = `${Math.round(view.zoom * 100)}%`;
  });
  $("#zoom-in").addEventListener("click", () => zoomAtCentre(1.2));
  $("#zoom-out").addEventListener("click", () => zoomAtCentre(1 / 1.2));
  $("#zoom-reset").addEventListener("click", resetView);
  $("#zoom-fit").addEventListener("click", () => fitView([...world.querySelectorAll(".node")]));
  canvas.addEventListener("dragover", onDragOver);
  canvas.addEventListener("dragleave", (event) => {
    if (!canvas.contains(event.relatedTarget)) canvas.classList.remove("drop-target");
  });
  canvas.addEventListener("drop", onDrop);
  document.addEventListener("keydown", onKeyDown);
  document.addEventListener("castbook:key", loadCatalog);
  document.addEventListener("castbook:use-image", (event) => {
    addAtCentre("image", { image: event.detail });
  });
  document.addEventListener("castbook:characters", () => {
    libraryLoaded();
    for (const node of workflow.nodes.values()) if (node.type === "character") renderCharacter(node);
    drawWiresSoon();
  });
  forgetCurrent();
  updateEmpty();
}
