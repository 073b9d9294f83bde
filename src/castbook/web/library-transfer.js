// Export (a downloaded JSON file, castbook or nbp format, or one character as a character card:
// PNG or JSON) and import (a JSON file or a character card the user picks, answered with a report
// of what was imported, skipped and why, and what failed).

import { $, api } from "./api.js";

const hooks = {
  all: () => [], // every character in the library
  shown: () => [], // the characters the search shows
  searching: () => false,
  onImported: async () => {},
};

// ---- export ----------------------------------------------------------------------------------

function plural(count, word) {
  return `${count} ${word}${count === 1 ? "" : "s"}`;
}

function openExport() {
  const form = $("#export-form");
  const all = hooks.all().length;
  const shown = hooks.shown().length;
  const filtered = hooks.searching() && shown > 0 && shown < all;
  $("#export-all-label").textContent = `All characters (${all})`;
  $("#export-shown-label").textContent = filtered
    ? `Only the ${plural(shown, "character")} the search shows`
    : "Only those the search shows (search first)";
  const onlyShown = $("#export-scope-shown");
  onlyShown.disabled = !filtered;
  form.elements.scope.value = filtered ? "shown" : "all";
  $("#export-error").hidden = true;
  $("#export-download").disabled = all === 0;
  if (all === 0) showExportError("Nothing to export yet: the library is empty.");
  $("#export-dialog").showModal();
}

function showExportError(message) {
  $("#export-error").textContent = message;
  $("#export-error").hidden = false;
}

function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

const CARD_FORMATS = new Set(["card", "card-json"]);

function exportFilename(format, characters) {
  const date = new Date().toISOString().slice(0, 10);
  if (characters.length === 1) {
    const name = characters[0].name.replace(/[^\p{L}\p{N}._-]+/gu, "-").replace(/^-+|-+$/g, "");
    if (format === "card") return `${name || "character"}.png`;
    if (format === "card-json") return `${name || "character"}.card.json`;
    return `${name || "character"}.${format}.json`;
  }
  return `${format}-characters-${date}.json`;
}

async function download(event) {
  event.preventDefault();
  const form = $("#export-form");
  const format = form.elements.format.value;
  const chosen = form.elements.scope.value === "shown" ? hooks.shown() : hooks.all();
  if (CARD_FORMATS.has(format) && chosen.length !== 1) {
    showExportError(
      `A character card holds one character, not ${chosen.length}: ` +
        "search until only that character shows, then choose “Only those the search shows”.",
    );
    return;
  }
  const params = new URLSearchParams({ format });
  if (form.elements.scope.value === "shown" || CARD_FORMATS.has(format)) {
    for (const character of chosen) params.append("id", character.id);
  }
  const button = $("#export-download");
  button.disabled = true;
  button.textContent = "Preparing…";
  $("#export-error").hidden = true;
  try {
    const response = await api(`/v1/characters/export?${params}`, { raw: true });
    saveBlob(await response.blob(), exportFilename(format, chosen));
    // nbp cannot show a character without an image: the server leaves it out and says so.
    const warnings = JSON.parse(response.headers.get("X-Castbook-Warnings") || "[]");
    if (warnings.length) {
      showExportError(`Downloaded, with warnings: ${warnings.join(" ")}`);
    } else {
      $("#export-dialog").close();
    }
  } catch (exc) {
    showExportError(`Export failed: ${exc.message}`);
  } finally {
    button.disabled = false;
    button.textContent = "Download";
  }
}

// ---- import ----------------------------------------------------------------------------------

function item(strong, detail) {
  const entry = document.createElement("li");
  const name = document.createElement("strong");
  name.textContent = strong;
  entry.append(name);
  if (detail) entry.append(` — ${detail}`);
  return entry;
}

function section(title, className, entries) {
  const block = document.createElement("section");
  block.className = className;
  const heading = document.createElement("h3");
  heading.textContent = title;
  const list = document.createElement("ul");
  list.append(...entries);
  block.append(heading, list);
  return block;
}

function renderReport(report) {
  const box = $("#import-report");
  box.replaceChildren();
  const summary = document.createElement("p");
  summary.className = "import-summary";
  for (const [count, label, kind] of [
    [report.imported, "imported", "ok"],
    [report.skipped, "skipped", "skip"],
    [report.failed, "failed", "fail"],
  ]) {
    const chip = document.createElement("span");
    chip.className = `count ${kind}${count ? "" : " zero"}`;
    chip.dataset.kind = label;
    chip.textContent = `${count} ${label}`;
    summary.append(chip);
  }
  box.append(summary);
  if (report.imported) {
    const names = (report.imported_names || []).map((name) => item(name));
    box.append(section("Imported", "imported", names));
  }
  if (report.skipped) {
    const entries = (report.skipped_details || []).map((s) => item(s.name, s.reason));
    box.append(section("Skipped (existing characters are never overwritten)", "skipped", entries));
  }
  if (report.failed) {
    const entries = (report.failed_details || []).map((f) => item(f.entry, f.reason));
    box.append(section("Failed", "failed", entries));
  }
  if (report.warnings && report.warnings.length) {
    const entries = report.warnings.map((w) => item(w.name, w.warning));
    box.append(section("Imported with changes", "warnings", entries));
  }
  if (!report.imported && !report.skipped && !report.failed) {
    const empty = document.createElement("p");
    empty.textContent = "The file holds no characters.";
    box.append(empty);
  }
  box.hidden = false;
}

function showImportError(message) {
  $("#import-error").textContent = message;
  $("#import-error").hidden = false;
}

async function isBinaryCard(file) {
  const head = new Uint8Array(await file.slice(0, 4).arrayBuffer());
  const png = head[0] === 0x89 && head[1] === 0x50 && head[2] === 0x4e && head[3] === 0x47;
  const zip = head[0] === 0x50 && head[1] === 0x4b && head[2] === 0x03 && head[3] === 0x04;
  return png || zip;
}

async function importFile(file) {
  const dialog = $("#import-dialog");
  $("#import-title").textContent = `Import ${file.name}`;
  $("#import-busy").hidden = false;
  $("#import-report").hidden = true;
  $("#import-error").hidden = true;
  $("#import-close").disabled = true;
  if (!dialog.open) dialog.showModal();
  try {
    let request;
    if (await isBinaryCard(file)) {
      // A PNG card or a .charx: the server reads it.
      const form = new FormData();
      form.append("file", file, file.name);
      request = ["/v1/characters/import/card", { method: "POST", form }];
    } else {
      let exported;
      try {
        exported = JSON.parse(await file.text());
      } catch (exc) {
        showImportError(`${file.name} is not a JSON file (${exc.message}); nothing was imported.`);
        return;
      }
      request = ["/v1/characters/import", { method: "POST", json: exported }];
    }
    let report;
    try {
      report = await api(...request);
    } catch (exc) {
      showImportError(`Nothing was imported: ${exc.message}`);
      return;
    }
    renderReport(report);
    if (report.imported) await hooks.onImported();
  } finally {
    $("#import-busy").hidden = true;
    $("#import-close").disabled = false;
  }
}

export function setUpTransfer({ all, shown, searching, onImported }) {
  Object.assign(hooks, { all, shown, searching, onImported });
  $("#export-characters").addEventListener("click", openExport);
  $("#export-form").addEventListener("submit", download);
  $("#export-cancel").addEventListener("click", () => $("#export-dialog").close());
  $("#import-characters").addEventListener("click", () => $("#import-file").click());
  $("#import-file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    event.target.value = "";
    if (file) importFile(file);
  });
}
