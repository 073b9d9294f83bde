// A generating node's "Final prompt": what its model will be given once the wired
// characters' style prompts, traits, negative prompts and LoRA triggers are injected, before
// anything runs. The server works it out (POST /v1/prompt/preview) with the same function
// every generation calls, so the page never has a copy of the injection rules that could
// drift. Read when the section is opened, and again while it is open as the node's fields
// or wires change.

import { api } from "./api.js";
import { nodeSpec, workflow } from "./canvas-graph.js";
import { make } from "./dom.js";

const DEBOUNCE_MS = 400;
const pending = new Map(); // node id -> timer of a refresh asked for
const asked = new Map(); // node id -> a counter: an answer to an older request is dropped

/** Whether a node type writes a prompt a preview can show (the generating nodes). */
function previews(spec) {
  return Boolean(spec && spec.mode && spec.inputs.some((i) => i.name === "prompt" || i.name === "prompts"));
}

/** The characters wired into the node's `characters` port, by id. */
function wiredCharacters(node) {
  const ids = [];
  for (const link of node.links.characters || []) {
    const source = workflow.nodes.get(link.node);
    const id = source && source.type === "character" && String(source.values.character || "").trim();
    if (id) ids.push(id);
  }
  return ids;
}

/** The preview request for a node: its fields as the API would get them, its characters. */
function previewBody(node) {
  const spec = nodeSpec(node.type);
  const inputs = (workflow.toGraph().nodes[node.id] || {}).inputs || {};
  const body = { mode: spec.mode, characters: wiredCharacters(node) };
  if (Array.isArray(inputs.prompts)) body.prompts = inputs.prompts.filter((p) => typeof p === "string");
  else body.prompt = typeof inputs.prompt === "string" ? inputs.prompt : "";
  if (typeof inputs.negative_prompt === "string") body.negative_prompt = inputs.negative_prompt;
  if (typeof inputs.preset === "string" && inputs.preset) body.preset = inputs.preset;
  return body;
}

function line(label, text, className) {
  const row = make("p", `prompt-preview-text ${className}`);
  row.append(make("span", "result-label", `${label}:`), document.createTextNode(` ${text || "—"}`));
  return row;
}

function show(box, answer) {
  const parts = [];
  const variants = answer.variants || [answer];
  variants.forEach((variant, index) => {
    const label = variants.length > 1 ? `Variant ${index + 1}` : "Prompt";
    const prompt = variant.prompt || "(empty: type a prompt or wire a character)";
    parts.push(line(label, prompt, "prompt-preview-prompt"));
  });
  parts.push(line("Negative", variants[0].negative_prompt, "prompt-preview-negative"));
  for (const note of answer.lora_notes || []) parts.push(make("p", "hint", note));
  box.replaceChildren(...parts);
}

async function refresh(node, details) {
  const box = details.querySelector(".prompt-preview-body");
  const body = previewBody(node);
  if (body.prompts && !body.prompts.length) {
    box.replaceChildren(make("p", "prompt-preview-text", "Type a prompt variant first."));
    return;
  }
  const mine = (asked.get(node.id) || 0) + 1;
  asked.set(node.id, mine);
  details.setAttribute("aria-busy", "true");
  try {
    const answer = await api("/v1/prompt/preview", { method: "POST", json: body });
    if (asked.get(node.id) === mine) show(box, answer);
  } catch (exc) {
    if (asked.get(node.id) === mine) box.replaceChildren(make("p", "prompt-preview-error", exc.message));
  } finally {
    if (asked.get(node.id) === mine) details.removeAttribute("aria-busy");
  }
}

function refreshSoon(node, details) {
  clearTimeout(pending.get(node.id));
  pending.set(
    node.id,
    setTimeout(() => {
      pending.delete(node.id);
      if (details.open && details.isConnected && workflow.nodes.get(node.id) === node) refresh(node, details);
    }, DEBOUNCE_MS),
  );
}

/** The node's "Final prompt" section (closed), or null for nodes that write no prompt. */
export function promptPreview(node) {
  const spec = nodeSpec(node.type);
  if (!previews(spec)) return null;
  const details = make("details", "prompt-preview");
  const summary = make("summary", "", "Final prompt");
  summary.title = "What the model will be given, with the wired characters injected";
  details.append(summary, make("div", "prompt-preview-body"));
  details.addEventListener("toggle", () => {
    if (details.open) refresh(node, details);
  });
  // Typing in the node's fields (they are siblings of the section) changes what is sent.
  queueMicrotask(() => {
    const element = details.closest(".node");
    if (!element) return;
    for (const name of ["input", "change"]) {
      element.addEventListener(name, (event) => {
        if (details.open && !details.contains(event.target)) refreshSoon(node, details);
      });
    }
  });
  return details;
}

/** After a wire was made or removed somewhere: the open previews read again. */
export function refreshOpenPreviews() {
  for (const details of document.querySelectorAll("#canvas .prompt-preview[open]")) {
    const node = workflow.nodes.get(details.closest(".node").dataset.nodeId);
    if (node) refreshSoon(node, details);
  }
}

export function setUpPromptPreviews() {
  // Wires are made and removed with the pointer (a drag ends with pointerup) and with keys
  // (Delete): both may change which characters a node has.
  const canvas = document.querySelector("#canvas");
  canvas.addEventListener("pointerup", refreshOpenPreviews);
  canvas.addEventListener("keyup", refreshOpenPreviews);
}
