// Undo and redo for the canvas: snapshots of the editor's own state (nodes with their
// positions, values as typed, and wires), recorded once each change has settled. Loading a
// workflow and Clear are changes like any other, so they can be undone too.

import { workflow } from "./canvas-graph.js";

const LIMIT = 100;
const past = []; // snapshots, oldest first; the last one is the canvas as it is
const future = []; // undone snapshots, the next redo last

function state() {
  const nodes = [...workflow.nodes.values()].map(({ id, type, x, y, values, links, name, collapsed }) => ({
    id,
    type,
    x: Math.round(x),
    y: Math.round(y),
    values,
    links,
    name,
    collapsed: collapsed || undefined,
  }));
  return JSON.stringify(nodes);
}

function apply(snapshot) {
  workflow.clear();
  for (const node of JSON.parse(snapshot)) workflow.nodes.set(node.id, node);
}

/** Start the history over from the canvas as it is (after the page restored its draft). */
export function resetHistory() {
  past.length = 0;
  future.length = 0;
  past.push(state());
}

/** Record the canvas after a change; a new change drops what was undone. */
export function recordChange() {
  const now = state();
  if (past.length && past[past.length - 1] === now) return;
  past.push(now);
  if (past.length > LIMIT) past.shift();
  future.length = 0;
}

/** Step back; false when there is nothing to undo. */
export function undo() {
  recordChange();
  if (past.length < 2) return false;
  future.push(past.pop());
  apply(past[past.length - 1]);
  return true;
}

/** Step forward again; false when there is nothing to redo. */
export function redo() {
  if (!future.length) return false;
  const next = future.pop();
  past.push(next);
  apply(next);
  return true;
}

export function canUndo() {
  return past.length > 1 || (past.length === 1 && past[0] !== state());
}

export function canRedo() {
  return future.length > 0;
}
