// The API client every part of the page shares: the bearer key, JSON and multipart calls,
// errors as ApiError, images fetched with the key and shown from blob: URLs, and server-sent
// events read through fetch (EventSource cannot send an Authorization header).

export const KEY_STORAGE = "castbook.apiKey";

export const $ = (selector, root = document) => root.querySelector(selector);

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

const unauthorizedListeners = [];

/** Called with the server's message whenever a call answers 401 (the key prompt listens). */
export function onUnauthorized(listener) {
  unauthorizedListeners.push(listener);
}

export function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  localStorage.setItem(KEY_STORAGE, key);
}

async function failure(response) {
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = { error: `${response.status} ${response.statusText}` };
  }
  if (response.status === 401) for (const listener of unauthorizedListeners) listener(payload.error);
  return new ApiError(response.status, payload);
}

/**
 * Call the API. `json` sends a JSON body, `form` a FormData (multipart); `raw` returns the
 * Response itself (for files); `signal` aborts.
 */
export async function api(path, { method = "GET", json, form, raw = false, signal } = {}) {
  const headers = { Authorization: `Bearer ${apiKey()}` };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser sets the multipart boundary
  }
  const response = await fetch(path, { method, headers, body, signal });
  if (!response.ok) throw await failure(response);
  if (raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

const blobUrls = new Map(); // API path -> blob: URL

/** A blob: URL for an image or video the API serves (fetched once, with the key). */
export async function blobUrl(path) {
  if (!blobUrls.has(path)) {
    const pending = api(path, { raw: true })
      .then((response) => response.blob())
      .then((blob) => URL.createObjectURL(blob));
    blobUrls.set(path, pending);
    pending.catch(() => blobUrls.delete(path));
  }
  return blobUrls.get(path);
}

/** Forget (and revoke) the blob URLs of API paths that start with `prefix`. */
export function forgetBlobUrls(prefix) {
  for (const [path, pending] of blobUrls) {
    if (path.startsWith(prefix)) {
      blobUrls.delete(path);
      pending.then((url) => URL.revokeObjectURL(url)).catch(() => {});
    }
  }
}

export function characterImagePath(characterId, sha, thumbnail = true) {
  const path = `/v1/characters/${encodeURIComponent(characterId)}/images/${sha}`;
  return thumbnail ? `${path}?thumbnail=true` : path;
}

/**
 * Read a server-sent-events stream (GET `path`) with the key; `onEvent(name, data)` is
 * called for each event with its JSON data. Resolves when the stream ends.
 */
export async function readEvents(path, onEvent, { signal } = {}) {
  const response = await fetch(path, {
    headers: { Authorization: `Bearer ${apiKey()}`, Accept: "text/event-stream" },
    signal,
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}
