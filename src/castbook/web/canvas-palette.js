// The Nodes tab: every node type of the catalogue (title, description, what it gives), to
// drag onto the canvas, or to add at the canvas's centre with Enter or a double-click.

import { $ } from "./api.js";
import { NODE_DRAG_TYPE, catalog } from "./canvas-graph.js";
import { make } from "./dom.js";

function item(spec, add) {
  const entry = make("li", "node-type");
  entry.draggable = true;
  entry.tabIndex = 0;
  entry.dataset.type = spec.type;
  entry.setAttribute("role", "button");
  entry.setAttribute("aria-label", `Add a ${spec.title} node`);
  entry.title = "Drag onto the canvas, or press Enter to add it";
  const title = make("div", "node-type-title", spec.title);
  const description = make("div", "node-type-description", spec.description);
  const ports = make("div", "node-type-ports");
  for (const input of spec.inputs.filter((i) => i.kind === "port")) {
    const chip = make("span", `port-chip in type-${input.type}`, input.name);
    chip.title = `input: ${input.type}`;
    ports.append(chip);
  }
  if (spec.outputs.length) ports.append(make("span", "port-arrow", "→"));
  for (const output of spec.outputs) {
    const chip = make("span", `port-chip out type-${output.type}`, output.name);
    chip.title = `output: ${output.type}`;
    ports.append(chip);
  }
  entry.append(title, description, ports);
  entry.addEventListener("dragstart", (event) => {
    event.dataTransfer.setData(NODE_DRAG_TYPE, spec.type);
    event.dataTransfer.effectAllowed = "copy";
  });
  entry.addEventListener("dblclick", () => add(spec.type));
  entry.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      add(spec.type);
    }
  });
  return entry;
}

/** Fill the Nodes tab from the catalogue; `add(type)` puts a node at the canvas's centre. */
export function renderPalette(add) {
  const panel = $("#nodes-panel");
  const hint = make(
    "p",
    "panel-hint",
    "Drag a node onto the canvas (or select it and press Enter), then wire outputs (right) to inputs (left). Characters come from the Characters tab.",
  );
  const list = make("ul", "node-types");
  for (const spec of catalog.types.values()) list.append(item(spec, add));
  panel.replaceChildren(hint, list);
}

export function paletteError(message) {
  const panel = $("#nodes-panel");
  const error = make("p", "form-error", message);
  panel.replaceChildren(error);
}

/** What the Nodes tab says while there is no key the server accepts (nothing can load). */
export function paletteWaiting() {
  $("#nodes-panel").replaceChildren(
    make("p", "empty", "The node types load once the server accepts your API key (API key, top right)."),
  );
}
