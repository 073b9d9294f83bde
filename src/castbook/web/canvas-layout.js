// Auto-arrange: a layered left-to-right layout of the graph by its wires. Each node goes in
// the column of its longest chain of inputs (characters and images first, the output last);
// within a column, nodes are ordered by where their inputs sit (a few barycentre sweeps), so
// wires cross less. No DOM here: sizes come in, positions go out.

const GAP_X = 80; // between columns
const GAP_Y = 40; // between nodes of a column
const SWEEPS = 4;

/**
 * Positions for `nodes` ([{id, x, y, width, height, inputs: [ids it takes wires from]}]),
 * starting at the top-left corner the nodes had: {id: {x, y}}.
 */
export function layered(nodes) {
  if (!nodes.length) return {};
  const byId = new Map(nodes.map((node) => [node.id, node]));
  const column = new Map();
  const columnOf = (id, seen = new Set()) => {
    if (column.has(id)) return column.get(id);
    if (seen.has(id)) return 0; // a cycle (the editor refuses them): cut it
    seen.add(id);
    let at = 0;
    for (const source of byId.get(id).inputs) {
      if (byId.has(source)) at = Math.max(at, columnOf(source, seen) + 1);
    }
    column.set(id, at);
    return at;
  };
  const columns = [];
  for (const node of nodes) {
    const at = columnOf(node.id);
    (columns[at] ||= []).push(node);
  }
  const filled = columns.filter(Boolean);
  // Start from the order the nodes had on screen (top to bottom), then sweep.
  for (const list of filled) list.sort((a, b) => a.y - b.y || a.x - b.x);
  const rank = new Map();
  const rerank = () => filled.forEach((list) => list.forEach((node, index) => rank.set(node.id, index)));
  rerank();
  const outputs = new Map(nodes.map((node) => [node.id, []]));
  for (const node of nodes) {
    for (const source of node.inputs) if (outputs.has(source)) outputs.get(source).push(node.id);
  }
  const centre = (ids, own) => (ids.length ? ids.reduce((sum, id) => sum + rank.get(id), 0) / ids.length : own);
  for (let sweep = 0; sweep < SWEEPS; sweep += 1) {
    const forward = sweep % 2 === 0;
    const order = forward ? filled : [...filled].reverse();
    for (const list of order) {
      const key = new Map(
        list.map((node) => {
          const near = forward ? node.inputs.filter((id) => byId.has(id)) : outputs.get(node.id);
          return [node.id, centre(near, rank.get(node.id))];
        }),
      );
      list.sort((a, b) => key.get(a.id) - key.get(b.id));
      list.forEach((node, index) => rank.set(node.id, index));
    }
  }
  const left = Math.min(...nodes.map((node) => node.x));
  const top = Math.min(...nodes.map((node) => node.y));
  const heights = filled.map((list) => list.reduce((sum, node) => sum + node.height, 0) + GAP_Y * (list.length - 1));
  const tallest = Math.max(...heights);
  const placed = {};
  let x = left;
  filled.forEach((list, index) => {
    let y = top + (tallest - heights[index]) / 2; // columns centred on each other
    for (const node of list) {
      placed[node.id] = { x: Math.round(x), y: Math.round(y) };
      y += node.height + GAP_Y;
    }
    x += Math.max(...list.map((node) => node.width)) + GAP_X;
  });
  return placed;
}
