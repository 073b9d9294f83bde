// Wires: an SVG layer in the canvas's world layer (so wires pan and zoom with the nodes),
// drawn from the workflow's links between port elements; dragging from a port draws a new
// wire, with the ports that cannot take it dimmed; a click selects one.

import { workflow, outputType } from "./canvas-graph.js";
import { toWorld } from "./canvas-view.js";

const SVG = "http://www.w3.org/2000/svg";
const DRAG_THRESHOLD = 4;

let canvas = null;
let layer = null;
let hooks = { onChange() {}, onRefused() {}, onSelect() {}, onDropOnEmpty() {} };
let selected = null;

export const sameWire = (a, b) =>
  Boolean(a && b) && a.from === b.from && a.output === b.output && a.to === b.to && a.port === b.port;

export function selectedWire() {
  return selected;
}

export function selectWire(wire) {
  selected = wire;
  for (const element of layer.querySelectorAll(".wire")) {
    element.classList.toggle("selected", sameWire(element.wire, wire));
  }
}

function portElement(nodeId, direction, name) {
  const node = canvas.querySelector(`.node[data-node-id="${CSS.escape(nodeId)}"]`);
  return node && node.querySelector(`.port[data-direction="${direction}"][data-port="${CSS.escape(name)}"]`);
}

function centre(element) {
  const box = element.getBoundingClientRect();
  return toWorld(box.left + box.width / 2, box.top + box.height / 2);
}

function curve(a, b) {
  const dx = Math.max(40, Math.abs(b.x - a.x) / 2);
  return `M ${a.x} ${a.y} C ${a.x + dx} ${a.y}, ${b.x - dx} ${b.y}, ${b.x} ${b.y}`;
}

function path(className, d) {
  const element = document.createElementNS(SVG, "path");
  element.setAttribute("class", className);
  element.setAttribute("d", d);
  return element;
}

/** Redraw every wire from the workflow's links (after nodes move, change size or rewire). */
export function drawWires() {
  if (!layer) return;
  const wires = [];
  for (const wire of workflow.wires()) {
    const from = portElement(wire.from, "out", wire.output);
    const to = portElement(wire.to, "in", wire.port);
    if (!from || !to) continue;
    const source = workflow.nodes.get(wire.from);
    const type = outputType(source.type, wire.output) || "any";
    const group = document.createElementNS(SVG, "g");
    group.setAttribute("class", `wire type-${type}`);
    group.wire = wire;
    group.dataset.from = wire.from;
    group.dataset.output = wire.output;
    group.dataset.to = wire.to;
    group.dataset.port = wire.port;
    if (sameWire(wire, selected)) group.classList.add("selected");
    const d = curve(centre(from), centre(to));
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${wire.from}.${wire.output} → ${wire.to}.${wire.port}`;
    group.append(title, path("wire-hit", d), path("wire-line", d));
    group.addEventListener("pointerdown", (event) => {
      if (event.button !== 0) return;
      event.preventDefault();
      event.stopPropagation();
      hooks.onSelect(wire);
    });
    wires.push(group);
  }
  layer.replaceChildren(...wires);
  if (selected && !wires.some((g) => sameWire(g.wire, selected))) selected = null;
}

let pendingFrame = 0;

/** drawWires on the next frame (many changes at once draw once). */
export function drawWiresSoon() {
  if (pendingFrame) return;
  pendingFrame = requestAnimationFrame(() => {
    pendingFrame = 0;
    drawWires();
  });
}

/** Why the port element `port` cannot take a wire from `anchor`; null when it can. */
function problemFor(anchor, port) {
  const nodeId = port.closest(".node").dataset.nodeId;
  return anchor.direction === "out"
    ? workflow.connectionProblem(anchor.node, anchor.name, nodeId, port.dataset.port)
    : workflow.connectionProblem(nodeId, port.dataset.port, anchor.node, anchor.name);
}

/**
 * Drag a wire from `anchor` ({direction, node, name}). From a wired input (`pickUp`), the
 * wire is taken off once the pointer moves and can be dropped on another input, or on
 * nothing to remove it. A new wire dropped on the empty canvas goes to `onDropOnEmpty`.
 */
function dragWire(event, anchor, pickUp = null) {
  event.preventDefault();
  event.stopPropagation();
  const startX = event.clientX;
  const startY = event.clientY;
  const other = anchor.direction === "out" ? "in" : "out";
  let started = false;
  let draft = null;
  let start = null;
  const marked = [];

  const begin = () => {
    started = true;
    if (pickUp) {
      workflow.disconnect(pickUp);
      hooks.onChange();
      drawWires();
    }
    start = centre(portElement(anchor.node, anchor.direction, anchor.name));
    const node = workflow.nodes.get(anchor.node);
    const type =
      anchor.direction === "out" ? outputType(node.type, anchor.name) : anchor.type || "any";
    draft = path(`wire-draft type-${type}`, "");
    layer.append(draft);
    canvas.classList.add("wiring");
    for (const port of canvas.querySelectorAll(`.port[data-direction="${other}"]`)) {
      const row = port.closest(".port-row");
      row.classList.add(problemFor(anchor, port) ? "port-refused" : "port-ok");
      marked.push(row);
    }
  };
  const move = (e) => {
    if (!started) {
      if (Math.hypot(e.clientX - startX, e.clientY - startY) < DRAG_THRESHOLD) return;
      begin();
    }
    const point = toWorld(e.clientX, e.clientY);
    draft.setAttribute("d", anchor.direction === "out" ? curve(start, point) : curve(point, start));
  };
  const stop = (e) => {
    window.removeEventListener("pointermove", move);
    window.removeEventListener("pointerup", stop);
    window.removeEventListener("pointercancel", stop);
    if (!started) return;
    draft.remove();
    canvas.classList.remove("wiring");
    for (const row of marked) row.classList.remove("port-ok", "port-refused");
    if (e.type === "pointercancel") return;
    const hit = document.elementFromPoint(e.clientX, e.clientY);
    const row = hit && hit.closest(`.port-row[data-direction="${other}"]`);
    const port = row && row.querySelector(".port");
    if (!port) {
      // A new wire let go on the empty canvas: the node search offers what can take it.
      const empty = hit === canvas || (hit && hit.id === "canvas-world");
      if (empty && !pickUp) hooks.onDropOnEmpty(anchor, e.clientX, e.clientY);
      return;
    }
    const problem = problemFor(anchor, port);
    if (problem) {
      hooks.onRefused(problem);
      return;
    }
    const nodeId = port.closest(".node").dataset.nodeId;
    if (anchor.direction === "out") workflow.connect(anchor.node, anchor.name, nodeId, port.dataset.port);
    else workflow.connect(nodeId, port.dataset.port, anchor.node, anchor.name);
    hooks.onChange();
    drawWires();
  };
  window.addEventListener("pointermove", move);
  window.addEventListener("pointerup", stop);
  window.addEventListener("pointercancel", stop);
}

/** pointerdown on a port element: start a wire (or pick up an input's last wire). */
export function onPortPointerDown(event, port) {
  if (event.button !== 0) return;
  const nodeId = port.closest(".node").dataset.nodeId;
  const name = port.dataset.port;
  if (port.dataset.direction === "out") {
    dragWire(event, { direction: "out", node: nodeId, name });
    return;
  }
  const links = workflow.nodes.get(nodeId).links[name] || [];
  if (links.length) {
    const last = links[links.length - 1];
    const wire = { from: last.node, output: last.output, to: nodeId, port: name };
    dragWire(event, { direction: "out", node: last.node, name: last.output }, wire);
  } else {
    dragWire(event, { direction: "in", node: nodeId, name, type: port.dataset.type });
  }
}

export function setUpWires(canvasElement, svgElement, wireHooks) {
  canvas = canvasElement;
  layer = svgElement;
  hooks = { ...hooks, ...wireHooks };
}
