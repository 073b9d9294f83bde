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
//   canvas-select.js   box selection
//   canvas-search.js   the node search (double-click the empty canvas, or /)
//   canvas-menu.js     the context menu (right-click)
//   canvas-minimap.js  the minimap
//   canvas-layout.js   auto-arrange

import { $, ApiError, api } from "./api.js";
import {
  IMAGE_DRAG_TYPE,
  NODE_DRAG_TYPE,
  accepts,
  catalog,
  outputType,
  setCatalog,
  workflow,
} from "./canvas-graph.js";
import {
  buildNode,
  fillPresetSelect,
  libraryLoaded,
  nodeElement,
  renderCharacter,
  renderCollapsed,
  setNodeHooks,
} from "./canvas-nodes.js";
import { layered } from "./canvas-layout.js";
import { isMenuOpen, openMenu } from "./canvas-menu.js";
import { drawMinimapSoon, setUpMinimap, toggleMinimap } from "./canvas-minimap.js";
import { closeNodeSearch, openNodeSearch } from "./canvas-search.js";
import { startBoxSelect } from "./canvas-select.js";
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
  drawMinimapSoon();
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

/** Paste the copied nodes a step further on than the last paste, or with their top-left
 * corner at the world point `at` (the context menu's Paste, where it was opened). */
function paste(at = null) {
  if (!clipboard.length) return;
  const dx = at ? at.x - Math.min(...clipboard.map((n) => n.x)) : PASTE_OFFSET;
  const dy = at ? at.y - Math.min(...clipboard.map((n) => n.y)) : PASTE_OFFSET;
  const copies = new Map(); // copied id -> new node
  for (const source of clipboard) {
    source.x += dx; // each paste lands a step further on
    source.y += dy;
    const copy = workflow.add(source.type, source.x, source.y, source.values);
    if (source.name) copy.name = source.name;
    if (source.collapsed) copy.collapsed = true;
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

// ---- the editing tools: node search, context menu, arrange, collapse, wiring by keys --------

let pointer = null; // the last pointer position over the canvas: where `/` opens the search

/** The node search at a screen point; the chosen type is added with its corner there. */
function searchAt(clientX, clientY, { avoid = false } = {}) {
  const at = toWorld(clientX, clientY);
  openNodeSearch(canvas, clientX, clientY, (type) => addNode(type, at.x, at.y, {}, undefined, { avoid }));
}

/** `/`: the search where the pointer is over the canvas, else mid-canvas (no node covered). */
function searchHere() {
  const box = canvas.getBoundingClientRect();
  const inside =
    pointer && pointer.x > box.left && pointer.x < box.right && pointer.y > box.top && pointer.y < box.bottom;
  if (inside) searchAt(pointer.x, pointer.y);
  else searchAt(box.left + box.width / 2 - 120, box.top + box.height / 2 - 80, { avoid: true });
}

/**
 * A wire from `anchor` let go on the empty canvas: the node search there, offering the node
 * types with a port that takes it (an input for a wire from an output, and the other way);
 * the chosen node is added there and wired by its first such port, as in ComfyUI.
 */
function searchForWire(anchor, clientX, clientY) {
  const from = workflow.nodes.get(anchor.node);
  if (!from) return;
  const given = anchor.direction === "out" ? outputType(from.type, anchor.name) : null;
  const wanted = anchor.direction === "in" ? anchor.type : null;
  const portFor = (spec) =>
    given
      ? spec.inputs.find((input) => input.kind === "port" && accepts(input.type, given))
      : spec.outputs.find((output) => accepts(wanted, output.type));
  const at = toWorld(clientX, clientY);
  const pick = (type) => {
    const node = addNode(type, at.x, at.y);
    const port = node && portFor(catalog.types.get(type));
    if (!port) return;
    const problem =
      anchor.direction === "out"
        ? workflow.connect(anchor.node, anchor.name, node.id, port.name)
        : workflow.connect(node.id, port.name, anchor.node, anchor.name);
    if (problem) {
      setStatus(`Not connected: ${problem}.`, "error");
      return;
    }
    drawWires();
    changed();
  };
  openNodeSearch(canvas, clientX, clientY, pick, (spec) => Boolean(portFor(spec)));
}

/** The nodes an action on node `id` applies to: the selection when it holds `id`. */
function targetsOf(id) {
  return selection.has(id) ? [...selection] : [id];
}

function setCollapsed(ids, collapsed) {
  for (const id of ids) {
    const node = workflow.nodes.get(id);
    if (!node) continue;
    node.collapsed = collapsed || undefined;
    renderCollapsed(node);
  }
  drawWires(); // the ports moved with the folded body: wires follow at once
  changed();
}

function disconnectNodes(ids) {
  const chosen = new Set(ids);
  for (const wire of workflow.wires()) {
    if (chosen.has(wire.from) || chosen.has(wire.to)) workflow.disconnect(wire);
  }
  selectWire(null);
  drawWires();
  changed();
}

/** Auto-arrange: a layered left-to-right layout by the wires; one undo step; then Fit. */
function arrange() {
  if (!workflow.nodes.size) return;
  const nodes = [...workflow.nodes.values()].map((node) => {
    const element = nodeElement(node.id);
    return {
      id: node.id,
      x: node.x,
      y: node.y,
      width: element.offsetWidth,
      height: element.offsetHeight,
      inputs: Object.values(node.links).flatMap((links) => links.map((link) => link.node)),
    };
  });
  for (const [id, at] of Object.entries(layered(nodes))) {
    const node = workflow.nodes.get(id);
    node.x = at.x;
    node.y = at.y;
    place(nodeElement(id), node);
  }
  drawWires();
  changed();
  fitView([...world.querySelectorAll(".node")]);
  setStatus("Arranged left to right by the wires (Ctrl+Z undoes it).", "ok");
}

// A wire made from the keyboard: Enter on a port starts it, Enter on a port of the other
// direction ends it (refused with the reason, as a drop is); Escape forgets it.
let pendingPort = null; // {node, direction, name}

function markPending(port) {
  for (const row of world.querySelectorAll(".port-row.port-pending")) row.classList.remove("port-pending");
  pendingPort = port;
  if (!port) return;
  const element = nodeElement(port.node);
  const selector = `.port-row[data-direction="${port.direction}"][data-port="${CSS.escape(port.name)}"]`;
  const row = element && element.querySelector(selector);
  if (row) row.classList.add("port-pending");
}

/** Delete on a focused port: every wire on it comes off (one undo step). */
function disconnectPort(nodeId, direction, name) {
  const on = (wire) =>
    direction === "in" ? wire.to === nodeId && wire.port === name : wire.from === nodeId && wire.output === name;
  const found = workflow.wires().filter(on);
  for (const wire of found) workflow.disconnect(wire);
  if (!found.length) return;
  drawWires();
  changed();
  setStatus(`Removed ${found.length} wire${found.length === 1 ? "" : "s"} from ${nodeId}.${name}.`, "ok");
}

function onPortKey(nodeId, direction, name, action = "wire") {
  if (action === "disconnect") {
    disconnectPort(nodeId, direction, name);
    return;
  }
  const here = { node: nodeId, direction, name };
  if (!pendingPort || pendingPort.direction === direction) {
    const same = pendingPort && pendingPort.node === nodeId && pendingPort.name === name;
    markPending(same ? null : here);
    if (same) setStatus("");
    else {
      const other = direction === "out" ? "an input" : "an output";
      setStatus(`Wiring from ${nodeId}.${name}: go to ${other} port (Tab) and press Enter; Escape cancels.`, "busy");
    }
    return;
  }
  const [from, to] = direction === "in" ? [pendingPort, here] : [here, pendingPort];
  markPending(null);
  const problem = workflow.connect(from.node, from.name, to.node, to.name);
  if (problem) {
    setStatus(`Not connected: ${problem}.`, "error");
    return;
  }
  drawWires();
  changed();
  setStatus(`Wired ${from.node}.${from.name} → ${to.node}.${to.name}.`, "ok");
}

// ---- the context menu -----------------------------------------------------------------------

function wireMenu(event, wire) {
  select([]);
  selectWire(wire);
  openMenu(canvas, event.clientX, event.clientY, `Wire ${wire.from}.${wire.output} → ${wire.to}.${wire.port}`, [
    {
      id: "delete-wire",
      label: "Delete wire",
      keys: "Delete",
      action: () => {
        workflow.disconnect(wire);
        selectWire(null);
        drawWires();
        changed();
      },
    },
  ]);
}

function nodeMenu(event, id) {
  if (!selection.has(id)) select([id]);
  const ids = targetsOf(id);
  const folded = ids.every((nodeId) => workflow.nodes.get(nodeId).collapsed);
  const wired = workflow.wires().some((wire) => ids.includes(wire.from) || ids.includes(wire.to));
  const title = ids.length > 1 ? `${ids.length} nodes` : id;
  openMenu(canvas, event.clientX, event.clientY, title, [
    { id: "duplicate", label: "Duplicate", keys: "Ctrl+D", action: () => copySelection() && paste() },
    { id: "collapse", label: folded ? "Expand" : "Collapse", action: () => setCollapsed(ids, !folded) },
    { id: "disconnect", label: "Disconnect", disabled: !wired, action: () => disconnectNodes(ids) },
    "-",
    { id: "delete", label: "Delete", keys: "Delete", action: () => removeNodes(ids) },
  ]);
}

function canvasMenu(event) {
  const at = toWorld(event.clientX, event.clientY);
  const mapShown = !canvas.querySelector(".minimap").hidden;
  openMenu(canvas, event.clientX, event.clientY, "Canvas", [
    { id: "add-node", label: "Add node…", keys: "/", action: () => searchAt(event.clientX, event.clientY) },
    { id: "paste", label: "Paste", keys: "Ctrl+V", disabled: !clipboard.length, action: () => paste(at) },
    {
      id: "select-all",
      label: "Select all",
      keys: "Ctrl+A",
      disabled: !workflow.nodes.size,
      action: () => select([...workflow.nodes.keys()]),
    },
    "-",
    { id: "arrange", label: "Arrange", disabled: !workflow.nodes.size, action: arrange },
    { id: "fit", label: "Fit", action: () => fitView([...world.querySelectorAll(".node")]) },
    { id: "minimap", label: mapShown ? "Hide minimap" : "Show minimap", action: () => toggleMinimap() },
  ]);
}

/** A right-click: the menu of the wire, node or empty canvas under the pointer. Fields keep
 * the browser's own menu (to paste text). */
function onContextMenu(event) {
  const target = event.target instanceof Element ? event.target : null;
  if (!target || target.closest("input, textarea, select, .context-menu, .node-search")) return;
  event.preventDefault();
  if (isMenuOpen() && event.button !== 2) return; // the keyboard's menu is open already
  closeNodeSearch(false);
  const wire = target.closest(".wire");
  const element = target.closest(".node");
  if (wire && wire.wire) wireMenu(event, wire.wire);
  else if (element) nodeMenu(event, element.dataset.nodeId);
  else canvasMenu(event);
}

/** Shift+F10 or the menu key: the focused node's menu at its title bar, else the canvas's. */
function menuFromKeyboard() {
  const element = document.activeElement && document.activeElement.closest && document.activeElement.closest(".node");
  if (element && canvas.contains(element)) {
    const box = element.querySelector(".node-header").getBoundingClientRect();
    nodeMenu({ clientX: box.left + 12, clientY: box.bottom }, element.dataset.nodeId);
  } else {
    const box = canvas.getBoundingClientRect();
    canvasMenu({ clientX: box.left + box.width / 2, clientY: box.top + box.height / 2 });
  }
}

// ---- selection, moving, keys ----------------------------------------------------------------

function select(ids) {
  selection.clear();
  for (const id of ids) selection.add(id);
  for (const element of world.querySelectorAll(".node")) {
    element.classList.toggle("selected", selection.has(element.dataset.nodeId));
  }
  if (ids.length) selectWire(null);
  drawMinimapSoon();
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
  if (event.shiftKey || event.ctrlKey || event.metaKey) toggle(node.id);
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
    drawMinimapSoon();
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
    if (pendingPort) {
      markPending(null);
      setStatus("");
      return;
    }
    select([]);
    selectWire(null);
  } else if (event.key === "/" && !event.ctrlKey && !event.metaKey && !event.altKey) {
    event.preventDefault(); // not the browser's quick find
    searchHere();
  } else if (event.key === "ContextMenu" || (event.key === "F10" && event.shiftKey)) {
    event.preventDefault();
    menuFromKeyboard();
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
    drawMinimapSoon();
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
  if (pendingPlacement !== null) {
    const id = pendingPlacement;
    pendingPlacement = null;
    placeCharacter(id);
  }
}

// A character card's Enter that came before the node types had loaded (its character's id).
let pendingPlacement = null;

function placeCharacter(id) {
  const character = characters().find((c) => c.id === id);
  if (!character) return;
  const centre = visibleCentre();
  addNode("character", centre.x - 115, centre.y - 80, { character: character.id }, character.name, {
    avoid: true,
  });
  setStatus(`Placed ${character.name} on the canvas: Tab to its output port and press Enter to wire it.`, "ok");
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
    onCollapse: (id) => setCollapsed([id], !workflow.nodes.get(id).collapsed),
    onPortKey,
  });
  setUpView(canvas, world, {
    onEmptyPress: (event) => {
      canvas.focus({ preventScroll: true });
      startBoxSelect(event, canvas, {
        selected: () => [...selection],
        select,
        onClick: (_event, additive) => {
          if (additive) return;
          select([]);
          selectWire(null);
        },
      });
    },
  });
  setUpMinimap(canvas);
  canvas.addEventListener("dblclick", (event) => {
    if (event.target === canvas || event.target === world) searchAt(event.clientX, event.clientY);
  });
  canvas.addEventListener("contextmenu", onContextMenu);
  canvas.addEventListener("pointermove", (event) => {
    pointer = { x: event.clientX, y: event.clientY };
  });
  $("#arrange").addEventListener("click", arrange);
  setModelHooks({ onStatus: setStatus });
  setUpWires(canvas, $("#wires"), {
    onChange: changed,
    onRefused: (problem) => setStatus(`Not connected: ${problem}.`, "error"),
    onDropOnEmpty: searchForWire,
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
  // A character card's Enter (library.js): the keyboard's way to drop it on the canvas. Before
  // the node types are in (just after a page load) it waits for them instead of being lost.
  document.addEventListener("castbook:place-character", (event) => {
    if (catalog.loaded) {
      placeCharacter(event.detail);
      return;
    }
    pendingPlacement = event.detail;
    setStatus("The node types are still loading; the character goes on the canvas when they are in.");
  });
  document.addEventListener("castbook:characters", () => {
    libraryLoaded();
    for (const node of workflow.nodes.values()) if (node.type === "character") renderCharacter(node);
    drawWiresSoon();
  });
  forgetCurrent();
  updateEmpty();
}
