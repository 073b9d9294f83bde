"""What is on this machine: parts in the standard Hugging Face cache, or local folders.

The cache is the one every Hugging Face tool shares (``HF_HUB_CACHE``, else
``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``; a preset's ``options.hf_cache`` beats
both), laid out as huggingface_hub lays it out::

    models--org--name/refs/main            the commit a branch points at
    models--org--name/snapshots/<commit>/  the files, links into blobs/
    models--org--name/blobs/<etag>         content; <etag>.*.incomplete while downloading

A file counts only once its link exists: huggingface_hub links a blob after the whole file
arrived, so a half-downloaded file never looks installed. Reading the cache never touches
the network and takes milliseconds.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from castbook.models.parts import ModelPart

__all__ = [
    "PartState",
    "PartStatus",
    "cached_files",
    "hub_cache_dir",
    "part_status",
    "remove_files",
    "repo_folder",
    "snapshot_folder",
    "summarise",
]


class PartState(StrEnum):
    INSTALLED = "installed"
    MISSING = "missing"
    PARTIAL = "partial"  # some files, or an interrupted download
    LOCAL_FOLDER = "local folder"


@dataclass(frozen=True)
class PartStatus:
    part: ModelPart
    state: PartState
    path: str | None  # the snapshot or folder it loads from
    size_on_disk: int  # bytes of the part's files that are here
    missing_files: tuple[str, ...] = ()
    downloading: bool = False  # .incomplete files are in the repo's blobs
    note: str = ""

    @property
    def ready(self) -> bool:
        return self.state in (PartState.INSTALLED, PartState.LOCAL_FOLDER)

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.part.role,
            "location": self.part.location,
            "revision": self.part.revision if self.part.is_hub else None,
            "setting": self.part.setting,
            "files": list(self.part.files) if self.part.is_hub else [],
            "state": self.state.value,
            "path": self.path,
            "size_on_disk": self.size_on_disk,
            "missing_files": list(self.missing_files),
            "note": self.note,
        }


def hub_cache_dir(options: Mapping[str, Any] | None = None) -> Path:
    """The Hugging Face cache, by huggingface_hub's own rules, read from the environment now
    (not when huggingface_hub was imported)."""
    if options and options.get("hf_cache"):
        return Path(str(options["hf_cache"])).expanduser()
    env = os.environ
    if env.get("HF_HUB_CACHE") or env.get("HUGGINGFACE_HUB_CACHE"):
        return Path(env.get("HF_HUB_CACHE") or env["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "huggingface",
    )
    return Path(os.path.expandvars(os.path.expanduser(home))) / "hub"


def repo_folder(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def _is_commit(revision: str) -> bool:
    return len(revision) == 40 and all(c in "0123456789abcdef" for c in revision)


def snapshot_folder(cache: Path, repo_id: str, revision: str) -> Path | None:
    """The snapshot ``revision`` resolves to in the cache, or None when it is unknown here."""
    folder = repo_folder(cache, repo_id)
    if _is_commit(revision):
        commit = revision
    else:
        try:
            commit = (folder / "refs" / revision).read_text().strip()
        except OSError:
            return None
    snapshot = folder / "snapshots" / commit
    return snapshot if snapshot.is_dir() else None


def _files_in(snapshot: Path, part: ModelPart) -> dict[str, Path]:
    # is_file follows the link: a dangling link is not a file
    return {
        name: path
        for path in snapshot.rglob("*")
        if part.matches(name := path.relative_to(snapshot).as_posix()) and path.is_file()
    }


def cached_files(cache: Path, part: ModelPart) -> dict[str, Path]:
    """The part's files (required and optional) that are complete in the cache → their
    content."""
    snapshot = snapshot_folder(cache, part.location, part.revision)
    return _files_in(snapshot, part) if snapshot is not None else {}


def _downloading(cache: Path, repo_id: str) -> bool:
    blobs = repo_folder(cache, repo_id) / "blobs"
    return blobs.is_dir() and any(p.name.endswith(".incomplete") for p in blobs.iterdir())


def part_status(part: ModelPart, options: Mapping[str, Any] | None = None) -> PartStatus:
    if not part.is_hub:
        folder = Path(part.location).expanduser()
        if folder.is_dir():
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            return PartStatus(part, PartState.LOCAL_FOLDER, str(folder), size)
        why = "is a file, not a folder" if folder.exists() else "is not a folder on this machine"
        return PartStatus(
            part,
            PartState.MISSING,
            str(folder),
            0,
            note=f"{part.location!r} {why}; set {part.setting} to a folder or a hub id",
        )
    cache = hub_cache_dir(options)
    snapshot = snapshot_folder(cache, part.location, part.revision)
    if snapshot is not None:
        found = _files_in(snapshot, part)
        missing = part.unmatched(found)
    else:
        # A pull writes the branch's ref last: files it got before it was stopped sit in
        # a snapshot no ref names yet. They make the part partial, never installed.
        snapshots = repo_folder(cache, part.location) / "snapshots"
        found = {}
        for folder in snapshots.iterdir() if snapshots.is_dir() else ():
            found.update(_files_in(folder, part))
        missing = part.unmatched(found) or ("(the download did not finish)",)
    downloading = _downloading(cache, part.location)
    size = sum(path.stat().st_size for path in found.values())
    if not missing:
        state = PartState.INSTALLED
    elif found or downloading:
        state = PartState.PARTIAL
    else:
        state = PartState.MISSING
    return PartStatus(
        part,
        state,
        str(snapshot) if snapshot is not None else None,
        size,
        missing_files=missing,
        downloading=downloading and bool(missing),
    )


def summarise(statuses: Iterable[PartStatus]) -> str:
    """One state for a whole preset: installed, local folder, partial or missing."""
    states = [status.state for status in statuses]
    if not states:
        return "remote"
    if all(s in (PartState.INSTALLED, PartState.LOCAL_FOLDER) for s in states):
        if all(s is PartState.LOCAL_FOLDER for s in states):
            return PartState.LOCAL_FOLDER.value
        return PartState.INSTALLED.value
    if all(s is PartState.MISSING for s in states):
        return PartState.MISSING.value
    return PartState.PARTIAL.value


@dataclass
class Removal:
    files: list[str] = field(default_factory=list)
    freed: int = 0


def remove_files(cache: Path, repo_id: str, revision: str, names: Iterable[str]) -> Removal:
    """Delete ``names`` from a repo's snapshot, and their blobs once no snapshot links to
    them; a repo left with no files is removed whole (refs and locks included)."""
    removal = Removal()
    folder = repo_folder(cache, repo_id)
    snapshot = snapshot_folder(cache, repo_id, revision)
    if snapshot is None:
        return removal
    blobs: set[Path] = set()
    for name in names:
        link = snapshot / name
        if not link.exists() and not link.is_symlink():
            continue
        target = link.resolve()
        if link.is_symlink():
            blobs.add(target)
        else:
            removal.freed += link.stat().st_size
        link.unlink()
        removal.files.append(name)
    still_linked = {
        path.resolve() for path in (folder / "snapshots").rglob("*") if path.is_symlink()
    }
    for blob in blobs - still_linked:
        if blob.is_file():
            removal.freed += blob.stat().st_size
            blob.unlink()
    snapshots = folder / "snapshots"
    _prune_empty_dirs(snapshots)
    if not snapshots.is_dir() or not any(snapshots.iterdir()):
        shutil.rmtree(folder, ignore_errors=True)
    return removal


def _prune_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            path.rmdir()
