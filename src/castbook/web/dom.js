// Small DOM helpers the page's modules share.

/** A new `tag` element with an optional class name and text. */
export function make(tag, className, text) {
  const element = document.createElement(tag);
  if (className) element.className = className;
  if (text !== undefined) element.textContent = text;
  return element;
}
