// The results panel (#results-panel): every image and video a run made, fetched with the key
// and shown from blob: URLs, each with its consistency score (the best one starred) and the
// prompt and negative prompt its model was given.

import { $, blobUrl } from "./api.js";
import { IMAGE_DRAG_TYPE } from "./canvas-graph.js";
import { make } from "./dom.js";

/** The API path of an output (its url may name another host, as the server saw itself). */
export function outputPath(output) {
  try {
    const url = new URL(output.url, window.location.href);
    return url.pathname + url.search;
  } catch {
    return `/v1/results/${output.id}`;
  }
}

/**
 * Scores by image: where several nodes score the same image (a batch render, then a
 * consistency eval of its images), the last in run order wins, and its best is the best.
 */
export function scoresOf(result) {
  const byImage = new Map();
  let best = null;
  let judge = null;
  const nodes = (result && result.nodes) || {};
  for (const id of (result && result.order) || Object.keys(nodes)) {
    const scores = nodes[id] && nodes[id].scores;
    if (!Array.isArray(scores) || !scores.length) continue;
    // Keep what an earlier node knew (a batch render's prompt) under the later score.
    for (const entry of scores) byImage.set(entry.image, { ...byImage.get(entry.image), ...entry, node: id });
    const top = scores.find((entry) => entry.best);
    if (top) {
      best = top.image;
      judge = id;
    }
  }
  return { byImage, best, judge };
}

/**
 * What each output's model was given, by image or video id: the final prompt (after the
 * characters' style prompts and traits) and the negative prompt its node reports — a
 * generating node's `prompt` and `negative_prompt`, a batch render's per variant in `scores`.
 * Tasks that are not workflows say it in their own result: a generation for all its outputs,
 * a batch render per variant, a story per panel.
 */
export function promptsOf(result, outputs = []) {
  const sent = new Map();
  if (result && typeof result.prompt === "string" && !result.nodes) {
    for (const output of outputs) {
      sent.set(output.id, { prompt: result.prompt, negative: result.negative_prompt || "" });
    }
  }
  for (const entry of [...((result && result.variants) || []), ...((result && result.panels) || [])]) {
    const prompt = entry && (entry.final_prompt || entry.prompt);
    if (typeof prompt === "string" && typeof entry.output === "string") {
      sent.set(entry.output, { prompt, negative: entry.negative_prompt || "" });
    }
  }
  for (const node of Object.values((result && result.nodes) || {})) {
    const outputs = node.outputs || {};
    if (typeof node.prompt === "string") {
      const made = Array.isArray(outputs.images) ? [...outputs.images] : [];
      if (typeof outputs.video === "string") made.push(outputs.video);
      for (const sha of made) sent.set(sha, { prompt: node.prompt, negative: node.negative_prompt || "" });
    }
    for (const entry of Array.isArray(node.scores) ? node.scores : []) {
      if (entry && typeof entry.final_prompt === "string") {
        sent.set(entry.image, { prompt: entry.final_prompt, negative: entry.negative_prompt || "" });
      }
    }
  }
  return sent;
}

function promptLine(className, label, text) {
  const line = make("p", className);
  line.append(make("span", "result-label", label), document.createTextNode(` ${text}`));
  line.title = `${label}: ${text} (click to show it all)`;
  line.addEventListener("click", () => line.classList.toggle("open"));
  return line;
}

function makers(result) {
  const made = new Map();
  for (const [id, node] of Object.entries((result && result.nodes) || {})) {
    const outputs = node.outputs || {};
    for (const sha of Array.isArray(outputs.images) ? outputs.images : []) made.set(sha, id);
    if (typeof outputs.video === "string") made.set(outputs.video, id);
  }
  return made;
}

function header(title, summary) {
  const top = make("div", "results-header");
  const close = make("button", "results-close secondary", "✕");
  close.type = "button";
  close.title = "Close the results";
  close.setAttribute("aria-label", "Close the results");
  close.addEventListener("click", hideResults);
  top.append(make("h2", "", title), close);
  return [top, make("p", "results-summary", summary)];
}

/**
 * What a screen reader says for a result (its alt text): who made it, the characters, the
 * prompt its model was given, the score — "Result of text_to_image_1, Ada and Bob, “ink and
 * watercolor, a lighthouse”, consistency 71.2 of 100". The results panel, the nodes'
 * thumbnails and the gallery say it alike; a part that is not known is left out.
 */
export function resultAlt({ madeBy = "", characters = [], prompt = "", score = null } = {}) {
  const parts = [madeBy ? `Result of ${madeBy}` : "Result"];
  if (characters.length) parts.push(characters.join(" and "));
  if (prompt) parts.push(`“${prompt}”`);
  if (score !== null && score !== undefined && Number.isFinite(Number(score))) {
    parts.push(`consistency ${Number(score).toFixed(1)} of 100`);
  }
  return parts.join(", ");
}

const names = (values) =>
  Array.isArray(values) ? [...new Set(values.filter((v) => typeof v === "string" && v))] : [];

/**
 * The characters of each output, by image or video id, as the gallery reads them
 * (castbook.tasks.gallery): a workflow's from the node that made it (else the character
 * that scored it), a generation's and a batch render's from their request, a story's per panel.
 */
export function charactersOf(result, outputs = [], input = {}) {
  const found = new Map();
  const given = input || {};
  if (result && !result.nodes) {
    const request = given.request || {};
    const all = names(result.variants ? result.characters || given.characters : request.characters);
    for (const output of outputs) found.set(output.id, all);
    for (const panel of Array.isArray(result.panels) ? result.panels : []) {
      if (panel && typeof panel.output === "string") found.set(panel.output, names(panel.characters));
    }
    return found;
  }
  for (const node of Object.values((result && result.nodes) || {})) {
    for (const entry of Array.isArray(node.scores) ? node.scores : []) {
      if (entry && typeof entry.character === "string" && !found.has(entry.image)) {
        found.set(entry.image, [entry.character]);
      }
    }
  }
  for (const [sha, id] of makers(result)) {
    const made = names(result.nodes[id].characters);
    if (made.length) found.set(sha, made);
  }
  return found;
}

function figureFor(output, score, isBest, madeBy, sent, cast) {
  const figure = make("figure", "result");
  figure.dataset.sha = output.id;
  figure.dataset.kind = output.kind;
  if (isBest) figure.classList.add("best");
  const path = outputPath(output);
  const alt = resultAlt({ madeBy, characters: cast, prompt: sent && sent.prompt, score: score && score.score });
  let media;
  if (output.kind === "video") {
    media = make("video");
    media.setAttribute("aria-label", alt);
    media.controls = true;
    media.preload = "metadata";
    media.playsInline = true;
    blobUrl(path).then((url) => (media.src = url)).catch(() => figure.classList.add("broken"));
    figure.append(media);
  } else {
    media = make("img");
    media.alt = alt;
    const link = make("a", "result-open");
    link.target = "_blank";
    link.rel = "noopener";
    link.title = "Open full size";
    link.append(media);
    blobUrl(path)
      .then((url) => {
        media.src = url;
        link.href = url;
      })
      .catch(() => figure.classList.add("broken"));
    figure.append(link);
    // A result feeds the next step: drag it onto the canvas (or press Use) for an Image node.
    figure.draggable = true;
    figure.title = "Drag onto the canvas to use this image in the workflow";
    figure.addEventListener("dragstart", (event) => {
      event.dataTransfer.setData(IMAGE_DRAG_TYPE, output.id);
      event.dataTransfer.effectAllowed = "copy";
    });
    const use = make("button", "result-use secondary", "Use");
    use.type = "button";
    use.title = "Add an Image node with this picture to the canvas";
    use.addEventListener("click", () =>
      document.dispatchEvent(new CustomEvent("castbook:use-image", { detail: output.id })),
    );
    figure.append(use);
  }
  const caption = make("figcaption");
  if (score) {
    const badge = make("span", "score", `${isBest ? "★ " : ""}${Number(score.score).toFixed(1)}`);
    badge.title = `Consistency score (0–100), by ${score.node}`;
    caption.append(badge);
  }
  const details = [];
  if (score && score.prompt) details.push(score.prompt);
  if (output.width && output.height) details.push(`${output.width}×${output.height}`);
  if (output.seed !== null && output.seed !== undefined) details.push(`seed ${output.seed}`);
  const text = make("span", "result-details", details.join(" · "));
  if (madeBy) text.title = `made by ${madeBy}`;
  caption.append(text);
  if (sent && sent.prompt) caption.append(promptLine("result-prompt", "Prompt", sent.prompt));
  if (sent && sent.negative) caption.append(promptLine("result-negative", "Negative", sent.negative));
  figure.append(caption);
  return figure;
}

/** Show a finished task's outputs (the panel opens). */
export function showResults(task) {
  const panel = $("#results-panel");
  const outputs = (task.outputs || []).filter((o) => o.kind === "image" || o.kind === "video");
  const { byImage, best, judge } = scoresOf(task.result);
  const made = makers(task.result);
  const sent = promptsOf(task.result, task.outputs || []);
  const cast = charactersOf(task.result, task.outputs || [], task.input);
  const images = outputs.filter((o) => o.kind === "image").length;
  const videos = outputs.length - images;
  const counts = [];
  if (images) counts.push(`${images} image${images === 1 ? "" : "s"}`);
  if (videos) counts.push(`${videos} video${videos === 1 ? "" : "s"}`);
  let summary = counts.join(", ") || "No images or videos.";
  if (best && byImage.has(best)) {
    summary += ` · best ${Number(byImage.get(best).score).toFixed(1)} (scored by ${judge})`;
  }
  const grid = make("div", "results-grid");
  for (const output of outputs) {
    const score = byImage.get(output.id);
    const madeBy = made.get(output.id);
    grid.append(figureFor(output, score, output.id === best, madeBy, sent.get(output.id), cast.get(output.id) || []));
  }
  panel.replaceChildren(...header("Results", summary), grid);
  panel.hidden = false;
}

export function hideResults() {
  $("#results-panel").hidden = true;
}
