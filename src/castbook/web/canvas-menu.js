// The canvas's context menu (a right-click, or the ContextMenu key / Shift+F10): a list of
// actions where the pointer is. ↑/↓ move between them, Enter runs one, Escape (or a press
// anywhere else) closes it. What it offers is the caller's: canvas.js builds the items for
// the empty canvas, a node or a wire.

import { make } from "./dom.js";

let menu = null;
let restoreFocus = null;

function buttons() {
  return [...menu.querySelectorAll(".context-item:not([disabled])")];
}

function onKey(event) {
  // A key reaching a closed menu (its button keeps the focus until the browser moves it
  // off the hidden element) is the page's: Ctrl+Z right after a menu action undoes it.
  if (menu.hidden) return;
  event.stopPropagation(); // the menu's keys, not the canvas's (arrows would nudge nodes)
  const items = buttons();
  const at = items.indexOf(document.activeElement);
  if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    if (!items.length) return;
    const step = event.key === "ArrowDown" ? 1 : -1;
    items[(at + step + items.length) % items.length].focus();
  } else if (event.key === "Home" || event.key === "End") {
    event.preventDefault();
    if (items.length) items[event.key === "Home" ? 0 : items.length - 1].focus();
  } else if (event.key === "Escape" || event.key === "Tab") {
    event.preventDefault();
    closeMenu();
  }
}

function onOutside(event) {
  if (menu && !menu.hidden && !menu.contains(event.target)) closeMenu(false);
}

function build(canvas) {
  menu = make("div", "context-menu");
  menu.setAttribute("role", "menu");
  menu.hidden = true;
  menu.addEventListener("keydown", onKey);
  menu.addEventListener("pointerdown", (event) => event.stopPropagation());
  menu.addEventListener("contextmenu", (event) => event.preventDefault());
  canvas.append(menu);
  document.addEventListener("pointerdown", onOutside, true);
  window.addEventListener("blur", () => closeMenu(false));
}

export function isMenuOpen() {
  return Boolean(menu && !menu.hidden);
}

/**
 * Open the menu at (clientX, clientY) inside `canvas`. `items`: {label, keys?, action,
 * disabled?} or "-" for a separator; `title` names what it is for (its aria-label).
 */
export function openMenu(canvas, clientX, clientY, title, items) {
  if (!menu) build(canvas);
  restoreFocus = document.activeElement;
  menu.setAttribute("aria-label", title);
  menu.replaceChildren(make("div", "context-title", title));
  for (const item of items) {
    if (item === "-") {
      menu.append(make("div", "context-separator"));
      continue;
    }
    const button = make("button", "context-item");
    button.type = "button";
    button.setAttribute("role", "menuitem");
    button.dataset.action = item.id;
    button.disabled = Boolean(item.disabled);
    button.append(make("span", "context-label", item.label));
    if (item.keys) button.append(make("kbd", "context-keys", item.keys));
    button.addEventListener("click", () => {
      closeMenu(false);
      item.action();
    });
    menu.append(button);
  }
  menu.hidden = false;
  const frame = canvas.getBoundingClientRect();
  const left = Math.min(Math.max(0, clientX - frame.left), Math.max(0, frame.width - menu.offsetWidth));
  const top = Math.min(Math.max(0, clientY - frame.top), Math.max(0, frame.height - menu.offsetHeight));
  menu.style.left = `${left}px`;
  menu.style.top = `${top}px`;
  const first = buttons()[0];
  if (first) first.focus({ preventScroll: true });
}

export function closeMenu(giveFocusBack = true) {
  if (!menu || menu.hidden) return;
  menu.hidden = true;
  if (giveFocusBack && restoreFocus && restoreFocus.isConnected) restoreFocus.focus({ preventScroll: true });
  else if (menu.contains(document.activeElement)) document.activeElement.blur();
  restoreFocus = null;
}
