// Box selection: a left drag on the empty canvas draws a rectangle and selects every node it
// touches, live as it grows; with Shift, Ctrl or ⌘ held the nodes it touches are added to
// the selection there was. A press that does not move is a click on the empty canvas.

import { make } from "./dom.js";

const THRESHOLD = 3; // px the pointer moves before a press becomes a box

/** Whether two screen rectangles overlap. */
function overlaps(a, b) {
  return a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
}

/**
 * Start a box selection from a pointerdown on the empty canvas. `selected()` gives the ids
 * selected now, `select(ids)` selects exactly these, `onClick(event)` is called for a press
 * that did not move.
 */
export function startBoxSelect(event, canvas, { selected, select, onClick }) {
  event.preventDefault();
  const additive = event.shiftKey || event.ctrlKey || event.metaKey;
  const base = additive ? new Set(selected()) : new Set();
  const startX = event.clientX;
  const startY = event.clientY;
  let box = null;
  canvas.setPointerCapture(event.pointerId);

  const move = (e) => {
    if (!box) {
      if (Math.hypot(e.clientX - startX, e.clientY - startY) < THRESHOLD) return;
      box = make("div", "select-box");
      box.setAttribute("aria-hidden", "true");
      canvas.append(box);
    }
    const frame = canvas.getBoundingClientRect();
    const rect = {
      left: Math.min(startX, e.clientX),
      top: Math.min(startY, e.clientY),
      right: Math.max(startX, e.clientX),
      bottom: Math.max(startY, e.clientY),
    };
    box.style.left = `${rect.left - frame.left}px`;
    box.style.top = `${rect.top - frame.top}px`;
    box.style.width = `${rect.right - rect.left}px`;
    box.style.height = `${rect.bottom - rect.top}px`;
    const ids = new Set(base);
    for (const node of canvas.querySelectorAll(".node")) {
      if (overlaps(rect, node.getBoundingClientRect())) ids.add(node.dataset.nodeId);
    }
    select([...ids]);
  };
  const stop = (e) => {
    canvas.removeEventListener("pointermove", move);
    canvas.removeEventListener("pointerup", stop);
    canvas.removeEventListener("pointercancel", stop);
    if (box) box.remove();
    else if (e.type === "pointerup") onClick(e, additive);
  };
  canvas.addEventListener("pointermove", move);
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
}
