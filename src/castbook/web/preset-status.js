// Whether a preset can run on this server, as GET /v1/presets says (`models`: state,
// runnable, sizes, pullable), in the words every preset picker uses: the canvas's node selects
// (canvas-models.js) and the Train dialog's base model (library-train.js).

/** Whether a preset's models are all here (remote presets, and servers that do not say, are). */
export function isRunnable(preset) {
  return !preset || !preset.models || preset.models.runnable !== false;
}

/** The same figures as the server's format_bytes: 3.4 GB, 812.0 MB, 120 B. */
export function formatBytes(size) {
  let value = Number(size);
  if (value < 1000) return `${Math.round(value)} B`;
  for (const unit of ["kB", "MB"]) {
    value /= 1000;
    if (value < 1000) return `${value.toFixed(1)} ${unit}`;
  }
  return `${(value / 1000).toFixed(1)} GB`;
}

/** "3.4 GB", or "≈3.4 GB" while the size is computed from the architecture (the hub has
 * not been asked yet); null when castbook has no figure. */
export function downloadSize(models) {
  const size = models.missing_size || models.download_size || null;
  return size && models.size_estimated ? `≈${formatBytes(size)}` : size && formatBytes(size);
}

function markOf(preset) {
  if (isRunnable(preset)) return "";
  return preset.models.state === "partial" ? "partial" : "not installed";
}

/** "sd15-ip-adapter — not installed" for a preset that cannot run; the id otherwise. */
export function presetLabel(preset) {
  const mark = markOf(preset);
  return mark ? `${preset.id} — ${mark}` : preset.id;
}

/** What a preset that cannot run lacks: "model, ip_adapter" (or "its models"). */
export function missingParts(models) {
  return (models.missing || []).join(", ") || "its models";
}

/**
 * Why a preset is marked, for titles: what is missing, what fails (`fails`: "A run", "Training"),
 * and how to get it (`pullHint`, for a preset whose models can be downloaded). "" when it can run.
 */
export function presetExplanation(preset, { fails = "A run", pullHint = "" } = {}) {
  if (isRunnable(preset)) return "";
  const models = preset.models;
  const state = models.state === "partial" ? "Only partly downloaded" : "Not installed on this server";
  const how = models.pullable
    ? pullHint
    : "It loads a local folder that is missing on the server: ask its admin.";
  return [`${state}: missing ${missingParts(models)}. ${fails} with it fails.`, how].filter(Boolean).join(" ");
}
