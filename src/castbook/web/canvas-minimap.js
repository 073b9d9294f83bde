// The minimap: the whole graph small, in the canvas's bottom-right corner, with the visible
// part outlined. A click or a drag on it pans there. *Map* in the toolbar (or M) shows or
// hides it; the choice is kept in the browser (localStorage, castbook.minimap).

import { $ } from "./api.js";
import { centreOn, onViewChange, visibleWorld } from "./canvas-view.js";

const STORAGE = "castbook.minimap";
const WIDTH = 200;
const HEIGHT = 140;
const PAD = 40; // world px around the graph

let canvas = null;
let map = null;
let pending = 0;
let mapping = null; // {left, top, scale}: world -> minimap pixels

function shown() {
  return Boolean(map && !map.hidden);
}

function nodeBoxes() {
  return [...canvas.querySelectorAll(".node")].map((element) => ({
    left: element.offsetLeft,
    top: element.offsetTop,
    right: element.offsetLeft + element.offsetWidth,
    bottom: element.offsetTop + element.offsetHeight,
    selected: element.classList.contains("selected"),
    status: element.dataset.status || "",
  }));
}

/** Draw the graph and the visible part: both fit, whatever is panned away. */
function draw() {
  pending = 0;
  if (!shown()) return;
  const boxes = nodeBoxes();
  const seen = visibleWorld();
  let left = seen.left;
  let top = seen.top;
  let right = seen.right;
  let bottom = seen.bottom;
  for (const box of boxes) {
    left = Math.min(left, box.left - PAD);
    top = Math.min(top, box.top - PAD);
    right = Math.max(right, box.right + PAD);
    bottom = Math.max(bottom, box.bottom + PAD);
  }
  const scale = Math.min(WIDTH / (right - left), HEIGHT / (bottom - top));
  // Centre the drawing in the map.
  const offsetX = (WIDTH - (right - left) * scale) / 2;
  const offsetY = (HEIGHT - (bottom - top) * scale) / 2;
  mapping = { left: left - offsetX / scale, top: top - offsetY / scale, scale };
  map.dataset.mapping = `${mapping.left.toFixed(2)},${mapping.top.toFixed(2)},${scale.toFixed(5)}`;
  const ratio = window.devicePixelRatio || 1;
  if (map.width !== WIDTH * ratio) {
    map.width = WIDTH * ratio;
    map.height = HEIGHT * ratio;
  }
  const ctx = map.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, WIDTH, HEIGHT);
  const at = (x, y) => [(x - mapping.left) * scale, (y - mapping.top) * scale];
  for (const box of boxes) {
    const [x, y] = at(box.left, box.top);
    ctx.fillStyle = box.selected ? "#3b5bdb" : box.status === "failed" ? "#e03131" : "#adb5bd";
    ctx.fillRect(x, y, Math.max(2, (box.right - box.left) * scale), Math.max(2, (box.bottom - box.top) * scale));
  }
  const [x, y] = at(seen.left, seen.top);
  ctx.strokeStyle = "#3b5bdb";
  ctx.lineWidth = 1.5;
  ctx.strokeRect(x, y, (seen.right - seen.left) * scale, (seen.bottom - seen.top) * scale);
}

/** Redraw on the next frame (after a move, an added node, a pan). */
export function drawMinimapSoon() {
  if (pending || !shown()) return;
  pending = requestAnimationFrame(draw);
}

/** Pan so the world point under the minimap point of `event` is in the middle. */
function panTo(event) {
  if (!mapping) return;
  const box = map.getBoundingClientRect();
  const x = mapping.left + (event.clientX - box.left) / mapping.scale;
  const y = mapping.top + (event.clientY - box.top) / mapping.scale;
  centreOn(x, y);
}

function onPointerDown(event) {
  if (event.button !== 0) return;
  event.preventDefault();
  event.stopPropagation(); // not a box selection on the canvas under it
  map.setPointerCapture(event.pointerId);
  // The mapping is kept while dragging, so the map does not slide under the pointer.
  const frozen = mapping;
  panTo(event);
  const move = (e) => {
    mapping = frozen;
    panTo(e);
  };
  const stop = () => {
    map.removeEventListener("pointermove", move);
    map.removeEventListener("pointerup", stop);
    map.removeEventListener("pointercancel", stop);
    drawMinimapSoon();
  };
  map.addEventListener("pointermove", move);
  map.addEventListener("pointerup", stop);
  map.addEventListener("pointercancel", stop);
}

export function toggleMinimap(show = !shown()) {
  map.hidden = !show;
  const button = $("#minimap-toggle");
  button.setAttribute("aria-pressed", String(show));
  try {
    localStorage.setItem(STORAGE, show ? "1" : "0");
  } catch {
    // storage off: the choice lasts until the page is reloaded
  }
  if (show) draw();
}

export function setUpMinimap(canvasElement) {
  canvas = canvasElement;
  map = document.createElement("canvas");
  map.className = "minimap";
  map.style.width = `${WIDTH}px`;
  map.style.height = `${HEIGHT}px`;
  map.setAttribute("role", "img");
  map.setAttribute("aria-label", "Minimap of the workflow: click or drag to pan there");
  map.title = "Click or drag to pan there";
  map.hidden = true;
  map.addEventListener("pointerdown", onPointerDown);
  map.addEventListener("dblclick", (event) => event.stopPropagation());
  map.addEventListener("contextmenu", (event) => event.stopPropagation());
  canvas.append(map);
  $("#minimap-toggle").addEventListener("click", () => toggleMinimap());
  onViewChange(drawMinimapSoon);
  let stored = null;
  try {
    stored = localStorage.getItem(STORAGE);
  } catch {
    stored = null;
  }
  toggleMinimap(stored === "1");
}
