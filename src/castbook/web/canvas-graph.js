// The workflow being edited, as data: nodes with their positions, values (as typed in the
// form) and links; what the node catalogue allows; the graph JSON the API takes and gives
// back. No DOM here.

/** The drag type of a node type dragged from the Nodes tab. */
export const NODE_DRAG_TYPE = "application/x-castbook-node";
/** The drag type of a result image dragged from the results panel (its sha256). */
export const IMAGE_DRAG_TYPE = "application/x-castbook-image";

/** GET /v1/workflows/node-types and GET /v1/presets, loaded once a key is known. */
export const catalog = { accepts: {}, types: new Map(), presets: [], loaded: false };

export function setCatalog(nodeTypes, presets) {
  catalog.accepts = nodeTypes.accepts || {};
  catalog.types = new Map(nodeTypes.nodes.map((spec) => [spec.type, spec]));
  catalog.presets = presets;
  catalog.loaded = true;
}

export function nodeSpec(type) {
  return catalog.types.get(type);
}

export function inputSpec(type, name) {
  const spec = nodeSpec(type);
  return spec ? spec.inputs.find((input) => input.name === name) : undefined;
}

export function outputType(type, name) {
  const spec = nodeSpec(type);
  const output = spec && spec.outputs.find((o) => o.name === name);
  return output ? output.type : undefined;
}

/** Whether an input port of `portType` takes an output of `given` (the catalogue's rule). */
export function accepts(portType, given) {
  const taken = catalog.accepts[portType] || [portType];
  return taken.includes("*") || taken.includes(given);
}

export function acceptedTypes(portType) {
  const taken = catalog.accepts[portType] || [portType];
  return taken.includes("*") ? "anything" : taken.join(", ");
}

// A node's `preset` must do the node's `mode` (from the catalogue), so its select offers
// only presets that do it (the server checks the same: "preset 'x' does not do i2v").
function modeOf(type) {
  const spec = nodeSpec(type);
  return spec ? spec.mode : undefined;
}

export function presetsFor(type) {
  const mode = modeOf(type);
  return mode ? catalog.presets.filter((p) => p.modes.includes(mode)) : catalog.presets;
}

export function defaultPresetFor(type) {
  const mode = modeOf(type);
  return mode ? catalog.presets.find((p) => (p.default_for || []).includes(mode)) : undefined;
}

// ---- values: what was typed -> the literal the API takes, and the catalogue's checks --------

function integerMaximum(input) {
  if (input.maximum !== undefined) return input.maximum;
  if (input.exclusive_maximum !== undefined) {
    return input.type === "integer" ? input.exclusive_maximum - 1 : input.exclusive_maximum;
  }
  return undefined;
}

/** The [minimum, maximum] an input allows (undefined ends are open). */
export function range(input) {
  return [input.minimum, integerMaximum(input)];
}

export function lines(text) {
  return String(text ?? "")
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
}

/** The literal for the graph JSON, or undefined to leave the input out (its default). */
export function literal(input, raw) {
  const text = String(raw ?? "");
  if (input.type === "array") {
    const items = lines(text);
    return items.length ? items : undefined;
  }
  if (!text.trim()) return undefined;
  if (input.type === "integer" || input.type === "number") return Number(text);
  return text.trim();
}

/** What a value field shows for a literal from a graph (the reverse of `literal`). */
export function rawValue(input, value) {
  if (value === undefined || value === null) return "";
  if (input.type === "array") return Array.isArray(value) ? value.join("\n") : String(value);
  return String(value);
}

function between(input) {
  const [low, high] = range(input);
  if (low !== undefined && high !== undefined) return `between ${low} and ${high}`;
  if (low !== undefined) return `at least ${low}`;
  return `at most ${high}`;
}

/** The catalogue's checks on one value, as the server words them; null when it is fine. */
export function valueProblem(input, raw) {
  const text = String(raw ?? "");
  if (input.type === "array") {
    const items = lines(text);
    if (!items.length) return input.required ? "is required: one per line" : null;
    if (input.min_items !== undefined && items.length < input.min_items) {
      return `give at least ${input.min_items}, got ${items.length}`;
    }
    if (input.max_items !== undefined && items.length > input.max_items) {
      return `give at most ${input.max_items} (one per line), got ${items.length}`;
    }
    const limit = input.items && input.items.max_length;
    const long = limit ? items.findIndex((item) => item.length > limit) : -1;
    if (long >= 0) return `line ${long + 1} is longer than ${limit} characters`;
    return null;
  }
  if (!text.trim()) return input.required ? "is required" : null;
  if (input.type === "integer" || input.type === "number") {
    const number = Number(text);
    if (!Number.isFinite(number)) return "must be a number";
    if (input.type === "integer" && !Number.isInteger(number)) return "must be a whole number";
    const [low, high] = range(input);
    if ((low !== undefined && number < low) || (high !== undefined && number > high)) {
      return `must be ${between(input)}, got ${text.trim()}`;
    }
    return null;
  }
  const value = text.trim();
  if (input.min_length !== undefined && value.length < input.min_length) return "is too short";
  if (input.max_length !== undefined && value.length > input.max_length) {
    return `must be at most ${input.max_length} characters, got ${value.length}`;
  }
  if (input.pattern && !new RegExp(input.pattern).test(value)) return "is not in the right form";
  return null;
}

// ---- the workflow --------------------------------------------------------------------------

/**
 * Nodes by id: {id, type, x, y, values: {name: text}, links: {port: [{node, output}]},
 * name?, collapsed?} (name: a character node's last known character name, for when it is
 * deleted; collapsed: shown folded to its title bar and ports, kept in the layout).
 */
export class Workflow {
  constructor() {
    this.nodes = new Map();
  }

  newId(type) {
    let n = 1;
    while (this.nodes.has(`${type}_${n}`)) n += 1;
    return `${type}_${n}`;
  }

  add(type, x, y, values = {}, id = undefined) {
    const node = { id: id || this.newId(type), type, x, y, values: { ...values }, links: {} };
    this.nodes.set(node.id, node);
    return node;
  }

  /** Remove a node and every wire to or from it. */
  remove(id) {
    this.nodes.delete(id);
    for (const node of this.nodes.values()) {
      for (const port of Object.keys(node.links)) {
        node.links[port] = node.links[port].filter((link) => link.node !== id);
      }
    }
  }

  clear() {
    this.nodes.clear();
  }

  /** Every wire: {from, output, to, port}. */
  wires() {
    const found = [];
    for (const node of this.nodes.values()) {
      for (const [port, links] of Object.entries(node.links)) {
        for (const link of links) found.push({ from: link.node, output: link.output, to: node.id, port });
      }
    }
    return found;
  }

  /** Whether node `a` takes input, directly or not, from node `b`. */
  dependsOn(a, b) {
    const seen = new Set();
    const stack = [a];
    while (stack.length) {
      const id = stack.pop();
      if (id === b) return true;
      if (seen.has(id)) continue;
      seen.add(id);
      const node = this.nodes.get(id);
      if (!node) continue;
      for (const links of Object.values(node.links)) for (const link of links) stack.push(link.node);
    }
    return false;
  }

  /** Why output `from.output` cannot be wired to input `to.port`; null when it can. */
  connectionProblem(from, output, to, port) {
    const source = this.nodes.get(from);
    const target = this.nodes.get(to);
    if (!source || !target) return "no such node";
    const given = outputType(source.type, output);
    const input = inputSpec(target.type, port);
    if (!given || !input || input.kind !== "port") return "no such port";
    if (from === to) return "a node cannot take its own output";
    if (!accepts(input.type, given)) {
      return `${port} takes ${acceptedTypes(input.type)}, not ${given}`;
    }
    if (this.dependsOn(from, to)) return "that wire would make a cycle";
    const links = target.links[port] || [];
    if (input.many && links.some((l) => l.node === from && l.output === output)) {
      return "already wired";
    }
    return null;
  }

  /** Wire an output to an input: a single input's new wire replaces its old one. */
  connect(from, output, to, port) {
    const problem = this.connectionProblem(from, output, to, port);
    if (problem) return problem;
    const target = this.nodes.get(to);
    const link = { node: from, output };
    if (inputSpec(target.type, port).many) target.links[port] = [...(target.links[port] || []), link];
    else target.links[port] = [link];
    return null;
  }

  disconnect(wire) {
    const target = this.nodes.get(wire.to);
    if (!target || !target.links[wire.port]) return;
    target.links[wire.port] = target.links[wire.port].filter(
      (link) => !(link.node === wire.from && link.output === wire.output),
    );
  }

  /** The graph JSON for the API: {nodes: {id: {type, inputs}}, layout: {id: {x, y,
   * collapsed?}}}. */
  toGraph() {
    const nodes = {};
    const layout = {};
    for (const node of this.nodes.values()) {
      const spec = nodeSpec(node.type);
      const inputs = {};
      for (const input of spec ? spec.inputs : []) {
        if (input.kind === "value") {
          const value = literal(input, node.values[input.name]);
          if (value !== undefined) inputs[input.name] = value;
          continue;
        }
        const links = node.links[input.name] || [];
        if (!links.length) continue;
        inputs[input.name] = input.many
          ? links.map((link) => [link.node, link.output])
          : [links[0].node, links[0].output];
      }
      nodes[node.id] = { type: node.type, inputs };
      layout[node.id] = { x: Math.round(node.x), y: Math.round(node.y) };
      if (node.collapsed) layout[node.id].collapsed = true;
    }
    return { nodes, layout };
  }

  /**
   * Replace the workflow with a graph from the API. Character names given in a `many` port
   * (the API allows ["Alice"] besides links) become character nodes wired to it. Nodes
   * without a place in `layout` are laid out in columns by their depth. Returns the node
   * types the catalogue does not know (those nodes are left out).
   */
  load(graph) {
    this.clear();
    const given = (graph && graph.nodes) || {};
    const layout = (graph && graph.layout) || {};
    const unknown = [];
    const names = []; // [node id, port, character name]
    for (const [id, raw] of Object.entries(given)) {
      const spec = nodeSpec(raw.type);
      if (!spec) {
        unknown.push(raw.type);
        continue;
      }
      const place = layout[id] || {};
      const node = this.add(raw.type, Number(place.x) || 0, Number(place.y) || 0, {}, id);
      node.placed = id in layout;
      if (place.collapsed === true) node.collapsed = true;
      const inputs = raw.inputs || {};
      for (const input of spec.inputs) {
        if (!(input.name in inputs)) continue;
        const value = inputs[input.name];
        if (input.kind === "value") {
          node.values[input.name] = rawValue(input, value);
          continue;
        }
        // As the server reads it: a many port's ["a", "b"] is one link only if "a" is a node.
        const single = isLink(value) && (!input.many || value[0] in given);
        const items = !single && input.many && Array.isArray(value) ? value : [value];
        node.links[input.name] = [];
        for (const item of items) {
          if (isLink(item)) node.links[input.name].push({ node: item[0], output: item[1] });
          else if (typeof item === "string") names.push([id, input.name, item]);
        }
      }
    }
    for (const node of this.nodes.values()) {
      for (const port of Object.keys(node.links)) {
        node.links[port] = node.links[port].filter((link) => this.nodes.has(link.node));
      }
    }
    for (const [id, port, name] of names) {
      const character = this.add("character", 0, 0, { character: name });
      character.placed = false;
      this.nodes.get(id).links[port].push({ node: character.id, output: "character" });
    }
    this.layOutUnplaced();
    for (const node of this.nodes.values()) delete node.placed;
    return unknown;
  }

  /** Columns by depth (sources left) for nodes the graph gave no place. */
  layOutUnplaced() {
    const depth = new Map();
    const depthOf = (id, seen = new Set()) => {
      if (depth.has(id)) return depth.get(id);
      if (seen.has(id)) return 0;
      seen.add(id);
      const node = this.nodes.get(id);
      let d = 0;
      for (const links of Object.values(node.links)) {
        for (const link of links) if (this.nodes.has(link.node)) d = Math.max(d, depthOf(link.node, seen) + 1);
      }
      depth.set(id, d);
      return d;
    };
    const rows = new Map();
    for (const node of this.nodes.values()) {
      if (node.placed) continue;
      const d = depthOf(node.id);
      const row = rows.get(d) || 0;
      rows.set(d, row + 1);
      node.x = 40 + d * 320;
      node.y = 40 + row * 260;
    }
  }
}

function isLink(value) {
  return (
    Array.isArray(value) &&
    value.length === 2 &&
    typeof value[0] === "string" &&
    typeof value[1] === "string"
  );
}

/** The workflow on the canvas. */
export const workflow = new Workflow();
