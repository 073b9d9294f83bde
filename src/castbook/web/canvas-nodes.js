// A node on the canvas: title bar, input ports (left) and outputs (right) coloured by type,
// value inputs as form fields built from the node catalogue (its ranges, its defaults), a
// character node's picture and reference choice, and after a run its status, results and
// errors, each next to what it names.

import { blobUrl } from "./api.js";
import { acceptedTypes, nodeSpec, range, valueProblem, workflow } from "./canvas-graph.js";
import { fillPresetSelect, modelNoticeSlot, renderModelNotice } from "./canvas-models.js";
import { promptPreview } from "./canvas-prompt.js";
import { resultAlt } from "./canvas-results.js";
import { characters, thumbnailUrl } from "./library.js";
import { make } from "./dom.js";

export { fillPresetSelect }; // canvas.js fills the selects again once the presets are read

// Shown on the node; the rest sit under "More settings".
const MAIN_FIELDS = new Set(["prompt", "prompts", "preset", "batch", "denoise", "label", "image"]);
// A character node shows these as its picture and reference choice, not as fields.
const CHARACTER_FIELDS = new Set(["character", "reference"]);

let hooks = { onEdit() {}, onRemove() {}, onCollapse() {}, onPortKey() {} };
let libraryKnown = false; // no "missing" marks before the library has been read once

export function setNodeHooks(nodeHooks) {
  hooks = { ...hooks, ...nodeHooks };
}

export function libraryLoaded() {
  libraryKnown = true;
}

export function labelFor(name) {
  const words = name.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function nodeElement(id) {
  return document.querySelector(`#canvas .node[data-node-id="${CSS.escape(id)}"]`);
}

export function findCharacter(ref) {
  if (!ref) return undefined;
  const list = characters();
  const folded = ref.toLowerCase();
  return list.find((c) => c.id === ref) || list.find((c) => c.name.toLowerCase() === folded);
}

// ---- building a node ------------------------------------------------------------------------

/** The element for a workflow node (positioned by the caller). */
export function buildNode(node) {
  const spec = nodeSpec(node.type);
  const element = make("div", `node node-${node.type}`);
  element.classList.toggle("collapsed", Boolean(node.collapsed));
  element.tabIndex = 0;
  element.dataset.nodeId = node.id;
  element.dataset.type = node.type;
  element.setAttribute("role", "group");
  element.setAttribute("aria-label", `${spec.title} ${node.id}`);

  const header = make("header", "node-header");
  const title = make("span", "node-title", spec.title);
  title.title = spec.description;
  const status = make("span", "node-status");
  status.hidden = true;
  const remove = make("button", "node-remove", "✕");
  remove.type = "button";
  remove.title = "Remove node (Delete)";
  remove.setAttribute("aria-label", `Remove ${node.id}`);
  remove.addEventListener("click", () => hooks.onRemove(node.id));
  // ▾ sits by ✕, not before the title: the title bar's left end is where a node is grabbed.
  header.append(title, make("span", "node-id", node.id), status, collapseButton(node), remove);
  element.append(header);

  if (node.type === "character") {
    const body = make("div", "character-body");
    element.append(body);
    renderCharacter(node, element);
  }
  element.append(...buildPorts(node, spec));
  const fields = buildFields(node, spec);
  if (fields) element.append(fields);
  if (node.type === "image") {
    element.append(make("img", "node-thumb image-preview"));
    renderImagePreview(node, element);
  }
  element.append(make("div", "node-results"));
  const error = make("p", "node-error");
  error.hidden = true;
  element.append(error);
  renderModelNotice(node, element);
  return element;
}

/** The title bar's ▾/▸: fold the node to its title bar and ports (wires stay on them). */
function collapseButton(node) {
  const button = make("button", "node-collapse");
  button.type = "button";
  const update = () => {
    const folded = Boolean(node.collapsed);
    button.textContent = folded ? "▸" : "▾";
    button.title = folded ? "Expand" : "Collapse";
    button.setAttribute("aria-expanded", String(!folded));
    button.setAttribute("aria-label", `${folded ? "Expand" : "Collapse"} ${node.id}`);
  };
  update();
  button.update = update;
  button.addEventListener("click", () => hooks.onCollapse(node.id));
  return button;
}

/** Show a node folded (title bar and ports) or whole, as `node.collapsed` says. */
export function renderCollapsed(node, element = nodeElement(node.id)) {
  if (!element) return;
  element.classList.toggle("collapsed", Boolean(node.collapsed));
  element.querySelector(".node-collapse").update();
}

/**
 * One port: its row (what pointer events land on, and the keyboard's stop: Enter starts or
 * ends a wire there, Delete takes its wires off), its coloured dot and its label.
 */
function portRow(node, direction, name, type, title, spoken) {
  const row = make("div", "port-row");
  const dot = make("span", `port type-${type}`);
  for (const element of [row, dot]) {
    element.dataset.direction = direction;
    element.dataset.port = name;
  }
  dot.dataset.type = type;
  dot.title = title;
  row.tabIndex = 0;
  row.setAttribute("role", "button");
  const which = direction === "in" ? "input" : "output";
  row.setAttribute("aria-label", `${node.id} ${which} ${name}: ${spoken}`);
  row.addEventListener("keydown", (event) => {
    const wiring = event.key === "Enter" || event.key === " ";
    if (!wiring && event.key !== "Delete" && event.key !== "Backspace") return;
    event.preventDefault();
    event.stopPropagation(); // the port's key, not the selection's Delete
    hooks.onPortKey(node.id, direction, name, wiring ? "wire" : "disconnect");
  });
  const label = make("span", "port-label", name);
  if (direction === "in") row.append(dot, label);
  else row.append(label, dot);
  return { row, label };
}

/** The ports, and under them (full width) the slots for their errors. */
function buildPorts(node, spec) {
  const ports = make("div", "node-ports");
  const errors = make("div", "port-errors");
  const inputs = make("div", "node-port-column inputs");
  for (const input of spec.inputs.filter((i) => i.kind === "port")) {
    const takes = input.type === "any" ? "anything" : input.type;
    const title = `${input.name}: takes ${takes}${input.many ? " (several)" : ""}`;
    const spoken = `takes ${acceptedTypes(input.type)}${input.many ? " (several)" : ""}`;
    const { row, label } = portRow(node, "in", input.name, input.type, title, spoken);
    if (input.required) label.classList.add("required");
    if (input.many) label.append(make("small", "port-many", " ⋯"));
    inputs.append(row);
    errors.append(errorSlot(input.name));
  }
  const outputs = make("div", "node-port-column outputs");
  for (const output of spec.outputs) {
    const title = `${output.name}: ${output.type}`;
    const { row, label } = portRow(node, "out", output.name, output.type, title, output.type);
    if (output.name !== output.type) label.append(make("small", "port-type", ` ${output.type}`));
    outputs.append(row);
  }
  ports.append(inputs, outputs);
  return [ports, errors];
}

function errorSlot(name) {
  const slot = make("p", "field-error");
  slot.dataset.errorFor = name;
  slot.hidden = true;
  return slot;
}

function placeholderFor(spec, input) {
  if (input.name === "seed") return "random";
  if (input.name === "prompts") return "one variant per line";
  if (input.name === "prompt") return "describe the picture";
  if (input.pattern && input.pattern.includes("{64}")) return "image id (sha256)";
  if (input.default !== undefined && input.default !== null && input.default !== "") {
    return String(input.default);
  }
  if (input.name === "min_score") return "off";
  return spec.inputs.some((i) => i.name === "preset") ? "preset default" : "optional";
}

function rangeText(input) {
  const [low, high] = range(input);
  if (low === undefined && high === undefined) return "";
  if (low !== undefined && high !== undefined) return `${low}–${high}`;
  return low !== undefined ? `≥ ${low}` : `≤ ${high}`;
}

function control(node, spec, input) {
  const value = node.values[input.name] ?? "";
  let element;
  if (input.name === "preset") {
    element = document.createElement("select");
    fillPresetSelect(element, node.type, value);
  } else if (input.type === "array" || input.name.includes("prompt")) {
    element = document.createElement("textarea");
    element.rows = input.type === "array" ? 3 : 2;
    element.value = value;
  } else {
    element = document.createElement("input");
    if (input.type === "integer" || input.type === "number") {
      element.type = "number";
      const [low, high] = range(input);
      if (low !== undefined) element.min = String(low);
      if (high !== undefined) element.max = String(high);
      element.step = input.type === "integer" ? "1" : "any";
      element.inputMode = input.type === "integer" ? "numeric" : "decimal";
    } else {
      element.type = "text";
      element.autocomplete = "off";
      element.spellcheck = false;
    }
    element.value = value;
  }
  element.name = input.name;
  element.dataset.field = input.name;
  if (element.tagName !== "SELECT") element.placeholder = placeholderFor(spec, input);
  const hint = rangeText(input);
  if (hint) element.title = `${labelFor(input.name)}: ${hint}; empty = ${placeholderFor(spec, input)}`;
  const edited = (event) => {
    node.values[input.name] = element.value;
    checkField(node, input.name);
    if (node.type === "image") renderImagePreview(node);
    if (input.name === "preset") renderModelNotice(node);
    hooks.onEdit(node, event.type === "change"); // change: the edit is finished (blur, select)
  };
  element.addEventListener("input", edited);
  element.addEventListener("change", edited);
  return element;
}

function buildFields(node, spec) {
  const inputs = spec.inputs.filter(
    (i) => i.kind === "value" && !(node.type === "character" && CHARACTER_FIELDS.has(i.name)),
  );
  if (!inputs.length) return null;
  const fields = make("div", "node-fields");
  const more = make("details", "node-more");
  more.append(make("summary", "", "More settings"));
  for (const input of inputs) {
    const label = make("label", "field");
    label.dataset.field = input.name;
    const name = make("span", "field-label", labelFor(input.name));
    if (input.required) name.classList.add("required");
    if (input.type === "array") name.append(make("small", "", ` (1–${input.max_items ?? "…"})`));
    label.append(name, control(node, spec, input));
    const target = MAIN_FIELDS.has(input.name) || input.required ? fields : more;
    target.append(label, errorSlot(input.name));
    if (input.name === "preset") target.append(modelNoticeSlot()); // "Model not installed"
  }
  const preview = promptPreview(node); // "Final prompt": what the model will be given
  if (preview) fields.append(preview);
  if (more.children.length > 1) fields.append(more);
  return fields;
}

// ---- the image node -------------------------------------------------------------------------

/** An image node shows its picture when the id is one of your results. */
function renderImagePreview(node, element = nodeElement(node.id)) {
  const preview = element && element.querySelector(".image-preview");
  if (!preview) return;
  const sha = String(node.values.image || "").trim().toLowerCase();
  preview.hidden = true;
  preview.removeAttribute("src");
  if (!/^[0-9a-f]{64}$/.test(sha)) return;
  preview.alt = `image ${sha.slice(0, 12)}`;
  blobUrl(`/v1/results/${sha}`)
    .then((url) => {
      if (String(node.values.image || "").trim().toLowerCase() !== sha) return; // changed since
      preview.src = url;
      preview.hidden = false;
    })
    .catch(() => {}); // a reference image, not a result: the id alone is shown
}

// ---- the character node ---------------------------------------------------------------------

/** Fill a character node's body from the library: picture, name, style, reference choice. */
export function renderCharacter(node, element = nodeElement(node.id)) {
  if (!element) return;
  const body = element.querySelector(".character-body");
  const ref = node.values.character || "";
  const character = findCharacter(ref);
  if (character) node.name = character.name;
  const missing = Boolean(ref) && !character && libraryKnown;
  element.classList.toggle("missing", missing);
  element.dataset.characterId = character ? character.id : ref;

  const picture = make("img", "node-thumb");
  picture.alt = "";
  picture.draggable = false;
  const text = make("div", "node-character-text");
  const name = make("div", "node-name", character ? character.name : node.name || ref || "No character");
  text.append(name);
  if (character && character.style_prompt) {
    const style = make("div", "node-style", character.style_prompt);
    style.title = character.style_prompt;
    text.append(style);
  }
  const summary = make("div", "node-character-summary");
  summary.append(picture, text);
  const parts = [summary];

  if (missing) {
    parts.push(
      make("p", "node-missing", "Deleted from the library. Pick another character or remove this node."),
    );
  }
  if (!character) {
    const select = document.createElement("select");
    select.className = "node-character-select";
    select.setAttribute("aria-label", "Character");
    select.append(new Option(characters().length ? "Choose a character…" : "No characters yet", ""));
    for (const c of characters()) select.append(new Option(c.name, c.id));
    select.addEventListener("change", () => {
      if (!select.value) return;
      node.values.character = select.value;
      delete node.values.reference;
      renderCharacter(node);
      hooks.onEdit(node, true);
    });
    parts.push(select);
  }
  const chosen = character && (node.values.reference || character.primary_image);
  if (character && character.images.length > 1) {
    const picker = make("div", "reference-picker");
    picker.setAttribute("role", "group");
    picker.setAttribute("aria-label", "Reference image");
    for (const image of character.images) {
      const button = make("button", "reference-choice");
      button.type = "button";
      button.dataset.sha = image.sha256;
      const isChosen = image.sha256 === chosen;
      button.setAttribute("aria-pressed", String(isChosen));
      button.title = image.sha256 === character.primary_image ? "Primary reference" : "Use this reference";
      const thumb = make("img");
      thumb.alt = "";
      thumb.draggable = false;
      thumbnailUrl(character, image.sha256).then((url) => url && (thumb.src = url)).catch(() => {});
      button.append(thumb);
      button.addEventListener("click", () => {
        // Absent means the primary image: keep it absent so a new primary is followed.
        if (image.sha256 === character.primary_image) delete node.values.reference;
        else node.values.reference = image.sha256;
        renderCharacter(node);
        hooks.onEdit(node, true);
      });
      picker.append(button);
    }
    parts.push(picker);
  }
  parts.push(errorSlot("character"), errorSlot("reference"));
  body.replaceChildren(...parts);
  if (character && chosen) {
    thumbnailUrl(character, chosen)
      .then((url) => {
        if (url) picture.src = url;
      })
      .catch(() => picture.classList.add("empty"));
  } else {
    picture.classList.add("empty");
  }
}

// ---- checks and errors ----------------------------------------------------------------------

function slotFor(element, field) {
  const root = String(field || "").split(".")[0];
  const slot = root && element.querySelector(`.field-error[data-error-for="${CSS.escape(root)}"]`);
  return slot || element.querySelector(".node-error");
}

/**
 * The server names a character by the id the graph holds ("no character 'c1f…'"); a
 * character node knows its name (kept in the draft, even once the character is deleted),
 * so the message says “Ada” instead.
 */
function withCharacterName(node, message) {
  const ref = node && node.type === "character" ? node.values.character : "";
  if (!ref || !node.name || node.name === ref || !message.includes(ref)) return message;
  const named = message.split(`'${ref}'`).join(`“${node.name}”`).split(ref).join(`“${node.name}”`);
  const deleted = libraryKnown && !findCharacter(ref);
  return deleted ? `${named} (deleted from the library)` : named;
}

/** Show a message on a node, under the field (or port) it names, else under the node. */
export function showNodeError(id, field, rawMessage) {
  const element = nodeElement(id);
  if (!element) return false;
  const message = withCharacterName(workflow.nodes.get(id), String(rawMessage));
  const slot = slotFor(element, field);
  const root = String(field || "").split(".")[0];
  // "is required", "must be between…": say what is, as the client's own checks do.
  const text = slot.dataset.errorFor && /^(is|must|takes|give) /.test(message)
    ? `${labelFor(root)} ${message}`
    : message;
  slot.textContent = slot.textContent ? `${slot.textContent} ${text}` : text;
  slot.hidden = false;
  slot.dataset.source = "server";
  const details = slot.closest("details");
  if (details) details.open = true;
  const input = root && element.querySelector(`[data-field="${CSS.escape(root)}"]:is(input, textarea, select)`);
  if (input) input.classList.add("field-invalid");
  const row = root && element.querySelector(`.port-row[data-port="${CSS.escape(root)}"]`);
  if (row) row.classList.add("port-invalid");
  element.classList.add("has-error");
  return true;
}

function clearSlot(element, slot) {
  slot.textContent = "";
  slot.hidden = true;
  delete slot.dataset.source;
  const name = slot.dataset.errorFor;
  if (name) {
    const input = element.querySelector(`[data-field="${CSS.escape(name)}"]:is(input, textarea, select)`);
    if (input) input.classList.remove("field-invalid");
    const row = element.querySelector(`.port-row[data-port="${CSS.escape(name)}"]`);
    if (row) row.classList.remove("port-invalid");
  }
  if (!element.querySelector(".field-error:not([hidden]), .node-error:not([hidden])")) {
    element.classList.remove("has-error");
  }
}

/** The client's check of one field (the catalogue's ranges); true when it is fine. */
export function checkField(node, name) {
  const element = nodeElement(node.id);
  if (!element) return true;
  const input = nodeSpec(node.type).inputs.find((i) => i.name === name);
  const control = element.querySelector(`[data-field="${CSS.escape(name)}"]:is(input, textarea, select)`);
  const slot = slotFor(element, name);
  const problem =
    control && control.validity && control.validity.badInput
      ? "must be a number"
      : valueProblem(input, node.values[name]);
  clearSlot(element, slot);
  if (problem) {
    slot.textContent = `${labelFor(name)} ${problem}`;
    slot.hidden = false;
    const details = slot.closest("details");
    if (details) details.open = true;
    if (control) control.classList.add("field-invalid");
    element.classList.add("has-error");
    return false;
  }
  return true;
}

/** Check every value field of every node; what is wrong, named ("batch_render_1 Steps"). */
export function checkAllFields() {
  const problems = [];
  for (const node of workflow.nodes.values()) {
    for (const input of nodeSpec(node.type).inputs) {
      if (input.kind !== "value") continue;
      if (node.type === "character" && CHARACTER_FIELDS.has(input.name)) continue;
      if (!checkField(node, input.name)) problems.push(`${node.id} ${labelFor(input.name)}`);
    }
    if (node.type === "character" && !node.values.character) {
      showNodeError(node.id, "character", "Choose a character.");
      problems.push(`${node.id} Character`);
    }
  }
  return problems;
}

/** Clear every message, status and result on the nodes (before a run). */
export function clearNodeMessages() {
  for (const element of document.querySelectorAll("#canvas .node")) {
    for (const slot of element.querySelectorAll(".field-error, .node-error")) clearSlot(element, slot);
    element.classList.remove("has-error");
    setNodeStatus(element.dataset.nodeId, "");
    element.querySelector(".node-results").replaceChildren();
  }
}

// ---- run state and results ------------------------------------------------------------------

const STATUS_TEXT = {
  queued: "queued",
  running: "running",
  done: "done",
  failed: "failed",
  cancelled: "cancelled",
};

/** A node's run status badge: "", queued, running (text: "running 2/4"), done, failed… */
export function setNodeStatus(id, status, text = undefined) {
  const element = nodeElement(id);
  if (!element) return;
  const badge = element.querySelector(".node-status");
  if (!status) {
    delete element.dataset.status;
    badge.hidden = true;
    badge.textContent = "";
    return;
  }
  element.dataset.status = status;
  badge.hidden = false;
  badge.textContent = text || STATUS_TEXT[status] || status;
}

function scoreBadge(score, best) {
  const badge = make("span", "score", `${best ? "★ " : ""}${Number(score).toFixed(1)}`);
  badge.title = best ? "Best consistency score (0–100)" : "Consistency score (0–100)";
  return badge;
}

/**
 * A node's results after a run: its images (scored ones with their score, the best
 * starred) or its video. `pathOf(sha)` is the API path of a result, or null.
 */
export function showNodeResults(id, result, pathOf) {
  const element = nodeElement(id);
  if (!element || !result) return;
  const box = element.querySelector(".node-results");
  const items = [];
  const outputs = result.outputs || {};
  // What its alt text names: the node's characters (a consistency eval: the one it scored
  // against) and the prompt its model was given (a batch render: each variant's).
  const cast = Array.isArray(result.characters) ? result.characters : [];
  const prompt = typeof result.prompt === "string" ? result.prompt : "";
  if (Array.isArray(result.scores) && result.scores.length) {
    for (const entry of result.scores) {
      items.push({
        sha: entry.image,
        score: entry.score,
        best: entry.best,
        characters: cast.length ? cast : typeof entry.character === "string" ? [entry.character] : [],
        prompt: entry.final_prompt || prompt,
      });
    }
  } else if (Array.isArray(outputs.images)) {
    for (const sha of outputs.images) items.push({ sha, characters: cast, prompt });
  }
  const figures = [];
  for (const item of items) {
    const figure = make("figure", "node-result");
    figure.dataset.sha = item.sha;
    if (item.best) figure.classList.add("best");
    const img = make("img");
    img.alt = resultAlt({
      madeBy: id,
      characters: item.characters,
      prompt: item.prompt,
      score: item.score,
    });
    img.draggable = false;
    figure.append(img);
    const path = pathOf(item.sha);
    if (path) blobUrl(path).then((url) => (img.src = url)).catch(() => figure.classList.add("broken"));
    if (item.score !== undefined) figure.append(scoreBadge(item.score, item.best));
    figures.push(figure);
  }
  if (typeof outputs.video === "string" && pathOf(outputs.video)) {
    const video = make("video", "node-video");
    video.controls = true;
    video.muted = true;
    blobUrl(pathOf(outputs.video)).then((url) => (video.src = url)).catch(() => {});
    figures.push(video);
  }
  box.replaceChildren(...figures);
}
