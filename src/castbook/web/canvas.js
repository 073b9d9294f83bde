// The workflow canvas: nodes dropped from the sidebar, moved, selected and deleted.

import { $ } from "./api.js";
import { DRAG_TYPE, characters, thumbnailUrl } from "./library.js";

let nextNodeId = 1;

function canvasNodes() {
  return [...$("#canvas").querySelectorAll(".node")];
}

function select(node) {
  for (const other of canvasNodes()) other.classList.toggle("selected", other === node);
  if (node) node.focus({ preventScroll: true });
}

function addCharacterNode(character, x, y) {
  const node = document.createElement("div");
  node.className = "node";
  node.tabIndex = 0;
  node.dataset.nodeId = `n${nextNodeId++}`;
  node.dataset.type = "character";
  node.dataset.characterId = character.id;
  node.style.left = `${Math.max(0, Math.round(x))}px`;
  node.style.top = `${Math.max(0, Math.round(y))}px`;

  const type = document.createElement("div");
  type.className = "node-type";
  type.textContent = "character";
  const body = document.createElement("div");
  body.className = "node-body";
  const img = document.createElement("img");
  img.alt = "";
  img.draggable = false;
  thumbnailUrl(character)
    .then((url) => {
      if (url) img.src = url;
      else img.remove();
    })
    .catch(() => img.remove());
  body.append(img);
  const name = document.createElement("span");
  name.className = "node-name";
  name.textContent = character.name;
  body.append(name);
  node.append(type, body);

  node.addEventListener("pointerdown", (event) => startMove(event, node));
  $("#canvas").append(node);
  select(node);
  return node;
}

function startMove(event, node) {
  if (event.button !== 0) return;
  event.preventDefault();
  event.stopPropagation();
  select(node);
  const startX = event.clientX;
  const startY = event.clientY;
  const left = node.offsetLeft;
  const top = node.offsetTop;
  node.setPointerCapture(event.pointerId);
  const move = (e) => {
    node.style.left = `${Math.max(0, left + e.clientX - startX)}px`;
    node.style.top = `${Math.max(0, top + e.clientY - startY)}px`;
  };
  const stop = () => {
    node.removeEventListener("pointermove", move);
    node.removeEventListener("pointerup", stop);
    node.removeEventListener("pointercancel", stop);
  };
  node.addEventListener("pointermove", move);
  node.addEventListener("pointerup", stop);
  node.addEventListener("pointercancel", stop);
}

export function setUpCanvas() {
  const canvas = $("#canvas");
  canvas.addEventListener("dragover", (event) => {
    const types = [...event.dataTransfer.types];
    if (types.includes(DRAG_TYPE) || types.includes("text/plain")) {
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      canvas.classList.add("drop-target");
    }
  });
  canvas.addEventListener("dragleave", () => canvas.classList.remove("drop-target"));
  canvas.addEventListener("drop", (event) => {
    event.preventDefault();
    canvas.classList.remove("drop-target");
    const id = event.dataTransfer.getData(DRAG_TYPE) || event.dataTransfer.getData("text/plain");
    const character = characters().find((c) => c.id === id);
    if (!character) return;
    const box = canvas.getBoundingClientRect();
    addCharacterNode(character, event.clientX - box.left, event.clientY - box.top);
  });
  canvas.addEventListener("pointerdown", (event) => {
    if (event.target === canvas) select(null);
  });
  document.addEventListener("castbook:characters", (event) => {
    const known = new Set(event.detail.map((c) => c.id));
    for (const node of canvasNodes()) {
      if (node.dataset.characterId) {
        node.classList.toggle("missing", !known.has(node.dataset.characterId));
      }
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Delete" && event.key !== "Backspace") return;
    const target = event.target;
    if (target instanceof HTMLElement && target.closest("input, textarea, select, dialog")) return;
    const selected = canvasNodes().filter((n) => n.classList.contains("selected"));
    if (!selected.length) return;
    event.preventDefault();
    for (const node of selected) node.remove();
  });
}
