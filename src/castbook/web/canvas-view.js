// Pan and zoom: the canvas shows a "world" layer (nodes and wires, in world coordinates)
// moved by a translate and scaled around the top-left corner. Screen points map to world
// points with toWorld(), so drops and wires land under the mouse at any zoom.

export const MIN_ZOOM = 0.25;
export const MAX_ZOOM = 2.5;
const GRID = 20; // the dotted background's spacing at 100%

export const view = { x: 0, y: 0, zoom: 1 };

let canvas = null;
let world = null;
const listeners = [];

/** Called after every change of the view (for the zoom label). */
export function onViewChange(listener) {
  listeners.push(listener);
}

function apply() {
  world.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.zoom})`;
  canvas.style.backgroundSize = `${GRID * view.zoom}px ${GRID * view.zoom}px`;
  canvas.style.backgroundPosition = `${view.x}px ${view.y}px`;
  canvas.dataset.zoom = view.zoom.toFixed(3);
  for (const listener of listeners) listener(view);
}

/** The world point under a screen (client) point. Measured from where the world layer
 * really is on screen (its origin), so a point is right even mid-way through a change. */
export function toWorld(clientX, clientY) {
  const origin = world.getBoundingClientRect();
  return { x: (clientX - origin.left) / view.zoom, y: (clientY - origin.top) / view.zoom };
}

/** The world point at the middle of the visible canvas. */
export function visibleCentre() {
  const box = canvas.getBoundingClientRect();
  return toWorld(box.left + box.width / 2, box.top + box.height / 2);
}

/** Zoom by `factor`, keeping the world point under (clientX, clientY) where it is. */
export function zoomAt(clientX, clientY, factor) {
  const zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, view.zoom * factor));
  const box = canvas.getBoundingClientRect();
  const sx = clientX - box.left;
  const sy = clientY - box.top;
  view.x = sx - ((sx - view.x) * zoom) / view.zoom;
  view.y = sy - ((sy - view.y) * zoom) / view.zoom;
  view.zoom = zoom;
  apply();
}

export function zoomAtCentre(factor) {
  const box = canvas.getBoundingClientRect();
  zoomAt(box.left + box.width / 2, box.top + box.height / 2, factor);
}

export function resetView() {
  view.x = 0;
  view.y = 0;
  view.zoom = 1;
  apply();
}

/** Show every node (their elements' world boxes), at 100% at most. */
export function fitView(elements) {
  if (!elements.length) {
    resetView();
    return;
  }
  let left = Infinity;
  let top = Infinity;
  let right = -Infinity;
  let bottom = -Infinity;
  for (const element of elements) {
    left = Math.min(left, element.offsetLeft);
    top = Math.min(top, element.offsetTop);
    right = Math.max(right, element.offsetLeft + element.offsetWidth);
    bottom = Math.max(bottom, element.offsetTop + element.offsetHeight);
  }
  const margin = 40;
  const box = canvas.getBoundingClientRect();
  const zoom = Math.min(
    1,
    (box.width - 2 * margin) / Math.max(1, right - left),
    (box.height - 2 * margin) / Math.max(1, bottom - top),
  );
  view.zoom = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, zoom));
  view.x = (box.width - (right - left) * view.zoom) / 2 - left * view.zoom;
  view.y = (box.height - (bottom - top) * view.zoom) / 2 - top * view.zoom;
  apply();
}

function onWheel(event) {
  // A textarea that can scroll keeps the wheel; everywhere else it zooms.
  const area = event.target instanceof Element && event.target.closest("textarea, select");
  if (area && area.scrollHeight > area.clientHeight) return;
  event.preventDefault();
  const delta = event.deltaMode === 1 ? event.deltaY * 16 : event.deltaY;
  zoomAt(event.clientX, event.clientY, Math.exp(-delta * 0.0015));
}

/** The visible part of the world: {left, top, right, bottom} in world coordinates. */
export function visibleWorld() {
  const box = canvas.getBoundingClientRect();
  const a = toWorld(box.left, box.top);
  const b = toWorld(box.right, box.bottom);
  return { left: a.x, top: a.y, right: b.x, bottom: b.y };
}

/** Pan (at the same zoom) so the world point (x, y) is at the middle of the canvas. */
export function centreOn(x, y) {
  const box = canvas.getBoundingClientRect();
  view.x = box.width / 2 - x * view.zoom;
  view.y = box.height / 2 - y * view.zoom;
  apply();
}

// Space held (with the focus on the canvas, not in a field or on a button that Space would
// press) turns a left drag anywhere on the canvas into a pan, as in ComfyUI.
let spaceHeld = false;

function spaceCanPan(event) {
  const active = document.activeElement;
  const onCanvas = !active || active === document.body || canvas === active || active.classList.contains("node");
  return event.key === " " && onCanvas && !document.querySelector("dialog[open]");
}

function onSpace(event) {
  if (event.type === "keydown" && spaceCanPan(event)) {
    event.preventDefault(); // not a page scroll
    spaceHeld = true;
  } else if (event.type === "keyup" && event.key === " ") {
    spaceHeld = false;
  } else if (event.type === "blur") {
    spaceHeld = false;
  }
  canvas.classList.toggle("space-pan", spaceHeld);
}

/**
 * Dragging with the middle button anywhere, or with Space held, pans. A left press on the
 * empty canvas is `onEmptyPress(event)`'s (box selection, canvas-select.js).
 */
function onPointerDown(event, onEmptyPress) {
  const empty = event.target === canvas || event.target === world;
  const pan = event.button === 1 || (event.button === 0 && spaceHeld);
  if (!pan) {
    if (event.button === 0 && empty) onEmptyPress(event);
    return;
  }
  event.preventDefault();
  event.stopPropagation(); // not a node's drag
  const startX = event.clientX;
  const startY = event.clientY;
  const fromX = view.x;
  const fromY = view.y;
  canvas.setPointerCapture(event.pointerId);
  canvas.classList.add("panning");
  const move = (e) => {
    view.x = fromX + e.clientX - startX;
    view.y = fromY + e.clientY - startY;
    apply();
  };
  const stop = () => {
    canvas.removeEventListener("pointermove", move);
    canvas.removeEventListener("pointerup", stop);
    canvas.removeEventListener("pointercancel", stop);
    canvas.classList.remove("panning");
  };
  canvas.addEventListener("pointermove", move);
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
}

/**
 * The browser scrolls the canvas (overflow: hidden, but still a scroll box) to show a field
 * that gets the focus below or beside its edge (a click, Tab into *More settings*). A scroll
 * the view does not know about moved everything but the pan: turn it into a pan at once,
 * so the field stays in sight and the view is again the one transform of the world layer.
 */
function onScroll() {
  if (!canvas.scrollLeft && !canvas.scrollTop) return;
  view.x -= canvas.scrollLeft;
  view.y -= canvas.scrollTop;
  canvas.scrollLeft = 0;
  canvas.scrollTop = 0;
  apply();
}

export function setUpView(canvasElement, worldElement, { onEmptyPress }) {
  canvas = canvasElement;
  world = worldElement;
  canvas.addEventListener("scroll", onScroll);
  canvas.addEventListener("wheel", onWheel, { passive: false });
  // Capture: a pan with Space or the middle button starts before a node takes the press.
  canvas.addEventListener("pointerdown", (event) => onPointerDown(event, onEmptyPress), { capture: true });
  document.addEventListener("keydown", onSpace);
  document.addEventListener("keyup", onSpace);
  window.addEventListener("blur", onSpace);
  apply();
}
