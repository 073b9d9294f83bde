// The node search: a double-click on the empty canvas, `/`, or "Add node…" in the context
// menu opens a search box where the pointer is; typing filters the catalogue's node types
// (by title, type and description: every word must match), ↑/↓ choose, Enter (or a click)
// adds the chosen type at that spot, Escape closes. A wire let go on the empty canvas opens
// it too, offering only the types that can take that wire.

import { catalog } from "./canvas-graph.js";
import { make } from "./dom.js";

let box = null;
let input = null;
let list = null;
let active = 0;
let shown = [];
let onPick = null;
let offered = () => true; // which node types this opening offers
let restoreFocus = null;

/** The node types matching `query`, titles that start with it first. */
export function matchTypes(query) {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  const specs = [...catalog.types.values()].filter(offered).filter((spec) => {
    const text = `${spec.title} ${spec.type} ${spec.description || ""}`.toLowerCase();
    return words.every((word) => text.includes(word));
  });
  const first = words[0] || "";
  const rank = (spec) => (spec.title.toLowerCase().startsWith(first) ? 0 : 1);
  return specs.sort((a, b) => rank(a) - rank(b));
}

function render() {
  shown = matchTypes(input.value);
  active = Math.min(active, Math.max(0, shown.length - 1));
  list.replaceChildren(
    ...shown.map((spec, index) => {
      const item = make("li", "node-search-item");
      item.id = `node-search-${spec.type}`;
      item.dataset.type = spec.type;
      item.setAttribute("role", "option");
      item.setAttribute("aria-selected", String(index === active));
      item.append(make("span", "node-search-title", spec.title), make("span", "node-search-type", spec.type));
      item.title = spec.description || "";
      item.addEventListener("pointerdown", (event) => event.preventDefault()); // keep the focus
      item.addEventListener("click", () => pick(spec.type));
      return item;
    }),
  );
  if (!shown.length) list.append(make("li", "node-search-none", "No node type matches."));
  const current = shown[active];
  if (current) {
    input.setAttribute("aria-activedescendant", `node-search-${current.type}`);
    list.children[active].scrollIntoView({ block: "nearest" });
  } else {
    input.removeAttribute("aria-activedescendant");
  }
}

function pick(type) {
  const chosen = onPick;
  closeNodeSearch(false);
  if (chosen) chosen(type);
}

function onKey(event) {
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    if (!shown.length) return;
    active = (active + (event.key === "ArrowDown" ? 1 : -1) + shown.length) % shown.length;
    render();
  } else if (event.key === "Enter") {
    event.preventDefault();
    if (shown[active]) pick(shown[active].type);
  } else if (event.key === "Escape") {
    event.preventDefault();
    event.stopPropagation();
    closeNodeSearch();
  }
}

function build(canvas) {
  box = make("div", "node-search");
  box.setAttribute("role", "dialog");
  box.setAttribute("aria-label", "Add a node");
  box.hidden = true;
  input = make("input", "node-search-input");
  input.type = "search";
  input.placeholder = "Search node types…";
  input.autocomplete = "off";
  input.setAttribute("aria-label", "Search node types");
  input.setAttribute("role", "combobox");
  input.setAttribute("aria-controls", "node-search-list");
  input.setAttribute("aria-expanded", "true");
  list = make("ul", "node-search-list");
  list.id = "node-search-list";
  list.setAttribute("role", "listbox");
  box.append(input, list);
  // Presses inside the box are not the canvas's (no box selection, no pan).
  box.addEventListener("pointerdown", (event) => event.stopPropagation());
  box.addEventListener("dblclick", (event) => event.stopPropagation());
  input.addEventListener("input", () => {
    active = 0;
    render();
  });
  input.addEventListener("keydown", onKey);
  input.addEventListener("blur", () => closeNodeSearch(false));
  canvas.append(box);
}

export function isNodeSearchOpen() {
  return Boolean(box && !box.hidden);
}

/** Open the search at the screen point (clientX, clientY) of `canvas`; `pick(type)` adds;
 * `only(spec)`, when given, says which node types to offer. */
export function openNodeSearch(canvas, clientX, clientY, pickType, only = () => true) {
  if (!catalog.loaded) return false;
  if (!box) build(canvas);
  restoreFocus = document.activeElement;
  onPick = pickType;
  offered = only;
  const frame = canvas.getBoundingClientRect();
  box.hidden = false;
  input.value = "";
  active = 0;
  render();
  // Where the pointer is, kept inside the canvas.
  const left = Math.min(Math.max(0, clientX - frame.left), Math.max(0, frame.width - box.offsetWidth));
  const top = Math.min(Math.max(0, clientY - frame.top), Math.max(0, frame.height - box.offsetHeight));
  box.style.left = `${left}px`;
  box.style.top = `${top}px`;
  input.focus({ preventScroll: true });
  return true;
}

export function closeNodeSearch(giveFocusBack = true) {
  if (!box || box.hidden) return;
  box.hidden = true;
  onPick = null;
  if (giveFocusBack && restoreFocus && restoreFocus.isConnected) restoreFocus.focus({ preventScroll: true });
  restoreFocus = null;
}
