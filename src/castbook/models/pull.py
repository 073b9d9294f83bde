"""Pulling a preset's parts from the Hugging Face hub into the standard cache.

:func:`plan_pull` asks the hub (``model_info`` with file metadata) which files the parts
name, how big they are and what their hashes are; :func:`pull` downloads what is not here
yet with huggingface_hub's own ``hf_hub_download`` — so ``HF_ENDPOINT``, ``HF_TOKEN``,
``HF_HOME``/``HF_HUB_CACHE``, its retries and its resume of a dropped connection
(``Range``) all work as in every other Hugging Face tool — and checks every file it got
against the size and hash the hub reported (sha256 for LFS files, the git blob id for
small ones). Big files are hashed while they download, on another thread, so checking costs
no extra pass over the data.

A branch's ref (``refs/main``) is written only when every file of that repository arrived,
so an interrupted pull never makes a part look installed; the next pull downloads only what
is missing (a file is kept once complete; huggingface_hub restarts a file that was cut off
by a killed process, and resumes one cut off by a dropped connection).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from castbook.errors import (
    CastbookError,
    HubUnreachableError,
    MissingDependencyError,
    ModelDownloadError,
)
from castbook.models.cache import hub_cache_dir, repo_folder
from castbook.models.parts import ModelPart

__all__ = [
    "PlannedFile",
    "PullPlan",
    "PullProgress",
    "hub_endpoint",
    "plan_pull",
    "pull",
]

_TAIL_HASH_FROM = 16 * 2**20  # smaller files are hashed after they arrive
_READ = 4 * 2**20


@dataclass(frozen=True)
class PlannedFile:
    repo_id: str
    revision: str
    commit: str
    filename: str
    size: int
    sha256: str | None  # LFS files
    blob_id: str | None  # the git blob id (sha1) of small files
    roles: tuple[str, ...]
    present: bool  # already in the commit's snapshot: nothing to do
    cached: bool  # its content is in the cache (maybe under another commit): no download

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id or ""


@dataclass
class PullPlan:
    """What a pull downloads: the files of every part, and which are already here."""

    name: str  # the preset (or repository) pulled
    cache: Path
    endpoint: str
    files: list[PlannedFile] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def download_bytes(self) -> int:
        return sum(f.size for f in self.files if not f.cached)

    @property
    def to_download(self) -> list[PlannedFile]:
        return [f for f in self.files if not f.present]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cache": str(self.cache),
            "total_bytes": self.total_bytes,
            "download_bytes": self.download_bytes,
            "files": [
                {
                    "repo": f.repo_id,
                    "revision": f.revision,
                    "commit": f.commit,
                    "file": f.filename,
                    "size": f.size,
                    "roles": list(f.roles),
                    "present": f.present,
                    "cached": f.cached,
                }
                for f in self.files
            ],
        }


@dataclass(frozen=True)
class PullProgress:
    done_bytes: int
    total_bytes: int
    filename: str
    files_done: int
    files_total: int


ProgressFn = Callable[[PullProgress], None]


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` as it is now (huggingface_hub reads it once, at import)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise MissingDependencyError("downloading models", "diffusers", "huggingface_hub") from None
    return huggingface_hub


def _is_transport_error(exc: BaseException) -> bool:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return any(c.__name__ in ("TransportError", "TimeoutException") for c in type(exc).__mro__)


def hub_error(exc: BaseException, repo_id: str, endpoint: str) -> CastbookError:
    """A one-line castbook error for what huggingface_hub raised about ``repo_id``."""
    from huggingface_hub import errors

    page = f"{endpoint}/{repo_id}"
    if isinstance(exc, errors.GatedRepoError):
        return ModelDownloadError(
            f"{repo_id} is gated: accept its licence at {page} while logged in, then set "
            "HF_TOKEN to a token of that account (or run `hf auth login`) and pull again"
        )
    if isinstance(exc, errors.RepositoryNotFoundError):
        return ModelDownloadError(
            f"{repo_id} was not found on {endpoint} (if it is private, set HF_TOKEN to a token "
            "that can read it); check the preset's model id"
        )
    if isinstance(exc, errors.RevisionNotFoundError):
        return ModelDownloadError(f"{repo_id}: {_first_line(exc)}")
    if isinstance(exc, errors.OfflineModeIsEnabled):
        return ModelDownloadError(
            f"cannot download {repo_id}: HF_HUB_OFFLINE is set; unset it to reach {endpoint}"
        )
    if isinstance(exc, errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return ModelDownloadError(f"{endpoint} answered HTTP {status} for {repo_id}")
    if _is_transport_error(exc):
        return HubUnreachableError(
            f"cannot reach the Hugging Face hub at {endpoint} ({type(exc).__name__}: "
            f"{_first_line(exc)}); check the network, or HF_ENDPOINT for a mirror"
        )
    if isinstance(exc, OSError):
        return ModelDownloadError(f"downloading {repo_id} failed: {_first_line(exc)}")
    raise exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def plan_pull(
    name: str,
    parts: Sequence[ModelPart],
    options: dict[str, Any],
    *,
    timeout: float | None = None,
) -> PullPlan:
    """Ask the hub which files ``parts`` need (one ``model_info`` call per repository)."""
    hub = _hub()
    endpoint = hub_endpoint()
    cache = hub_cache_dir(options)
    plan = PullPlan(name=name, cache=cache, endpoint=endpoint)
    wanted: dict[tuple[str, str], dict[str, list[str]]] = {}
    required: dict[tuple[str, str], list[str]] = {}
    for part in parts:
        if not part.is_hub:
            continue
        files = wanted.setdefault((part.location, part.revision), {})
        for pattern in part.files + part.optional:
            files.setdefault(pattern, []).append(part.role)
        required.setdefault((part.location, part.revision), []).extend(part.files)
    api = hub.HfApi(endpoint=endpoint)
    for (repo_id, revision), patterns in wanted.items():
        try:
            info = api.model_info(repo_id, revision=revision, files_metadata=True, timeout=timeout)
        except Exception as exc:
            raise hub_error(exc, repo_id, endpoint) from None
        siblings = {s.rfilename: s for s in info.siblings or ()}
        absent = [
            p for p in required[repo_id, revision] if not any(fnmatch(n, p) for n in siblings)
        ]
        if absent:
            raise ModelDownloadError(
                f"{repo_id}@{revision} has no {', '.join(absent)}; if the repository has no "
                'fp16 files, set variant = "" in the preset\'s options'
            )
        blobs = repo_folder(cache, repo_id) / "blobs"
        snapshot = repo_folder(cache, repo_id) / "snapshots" / str(info.sha)
        for filename, sibling in sorted(siblings.items()):
            roles = tuple(r for p, rs in patterns.items() if fnmatch(filename, p) for r in rs)
            if not roles:
                continue
            sha256 = sibling.lfs.sha256 if sibling.lfs is not None else None
            size = sibling.lfs.size if sibling.lfs is not None else sibling.size
            etag = sha256 or sibling.blob_id or ""
            plan.files.append(
                PlannedFile(
                    repo_id=repo_id,
                    revision=revision,
                    commit=str(info.sha),
                    filename=filename,
                    size=int(size or 0),
                    sha256=sha256,
                    blob_id=sibling.blob_id,
                    roles=tuple(dict.fromkeys(roles)),
                    present=(snapshot / filename).is_file(),
                    cached=bool(etag) and (blobs / etag).is_file(),
                )
            )
    return plan


# ---------------------------------------------------------------------------- downloading


class _Reporter:
    """huggingface_hub's ``tqdm_class``: it only needs ``update`` and a context manager."""

    def __init__(self, on_bytes: Callable[[int], None]) -> None:
        self._on_bytes = on_bytes

    def __call__(self, *args: Any, **kwargs: Any) -> _Reporter:
        return self

    def update(self, n: float | None = 1) -> None:
        self._on_bytes(int(n or 0))

    def close(self) -> None:
        pass

    def __enter__(self) -> _Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _TailHasher(threading.Thread):
    """Hashes a big file while huggingface_hub writes it (``<etag>.*.incomplete``), so
    checking it needs no second pass once it is complete."""

    def __init__(self, blobs: Path, etag: str) -> None:
        super().__init__(name="castbook-verify", daemon=True)
        self.blobs = blobs
        self.etag = etag
        self.finished = threading.Event()
        self.digest: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.digest = self._hash()
        except BaseException as exc:  # reported by verify(), which falls back to a full hash
            self.error = exc

    def _hash(self) -> str | None:
        handle = None
        while handle is None:
            partial = sorted(self.blobs.glob(f"{self.etag}*.incomplete"))
            if partial:
                try:
                    handle = partial[0].open("rb")
                except FileNotFoundError:
                    continue
            elif self.finished.wait(0.02):
                return None  # never saw it being written: hash the finished file instead
        with handle:
            digest = hashlib.sha256()
            offset = 0
            while True:
                done = self.finished.is_set()
                chunk = handle.read(_READ)
                if chunk:
                    digest.update(chunk)
                    offset += len(chunk)
                    continue
                if os.fstat(handle.fileno()).st_size < offset:  # rewritten from the start
                    handle.seek(0)
                    digest, offset = hashlib.sha256(), 0
                    continue
                if done:
                    return digest.hexdigest()
                self.finished.wait(0.01)


def _file_digest(path: Path, algorithm: str, size: int) -> str:
    if algorithm == "sha256":
        digest = hashlib.sha256()
    else:  # git's blob id
        digest = hashlib.sha1(f"blob {size}\0".encode())
    with path.open("rb") as handle:
        while chunk := handle.read(_READ):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(path: Path, planned: PlannedFile, tail: _TailHasher | None, *, hashes: bool) -> None:
    actual_size = path.stat().st_size
    if actual_size != planned.size:
        raise ModelDownloadError(
            f"{planned.repo_id}/{planned.filename}: got {actual_size} bytes, the hub says "
            f"{planned.size}; it was removed, pull again"
        )
    if not hashes:
        return
    if planned.sha256:
        expected, algorithm = planned.sha256, "sha256"
    elif planned.blob_id:
        expected, algorithm = planned.blob_id, "git"
    else:
        return
    digest = tail.digest if tail is not None and tail.error is None else None
    if digest != expected:  # not hashed on the way, or something changed: hash it whole
        digest = _file_digest(path, algorithm, actual_size)
    if digest != expected:
        raise ModelDownloadError(
            f"{planned.repo_id}/{planned.filename}: its content does not match the hash the hub "
            "reported; it was removed, pull again"
        )


def _write_ref(cache: Path, repo_id: str, revision: str, commit: str) -> None:
    if revision == commit:
        return
    ref = repo_folder(cache, repo_id) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    temporary = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
    temporary.write_text(commit)
    temporary.replace(ref)


def _remove_stale_partials(cache: Path, repo_id: str) -> None:
    """Drop ``.incomplete`` files a killed download left (its lock is free); a download that
    is still running elsewhere holds the lock and keeps its file."""
    from filelock import FileLock, Timeout

    blobs = repo_folder(cache, repo_id) / "blobs"
    if not blobs.is_dir():
        return
    locks = cache / ".locks" / repo_folder(cache, repo_id).name
    for partial in blobs.glob("*.incomplete"):
        etag = partial.name.split(".", 1)[0]
        locks.mkdir(parents=True, exist_ok=True)
        try:
            with FileLock(str(locks / f"{etag}.lock"), timeout=0):
                partial.unlink(missing_ok=True)
        except Timeout:
            continue


def pull(
    plan: PullPlan, progress: ProgressFn | None = None, *, verify_hashes: bool = True
) -> PullPlan:
    """Download every file of ``plan`` that is not here, verify it, then point each
    repository's branch at the commit planned. ``progress`` may raise (a cancel): the file
    being downloaded is dropped and the cache is left as huggingface_hub leaves it.

    Sizes are always checked; ``verify_hashes=False`` skips the sha256 / git-sha1 check (a
    trusted mirror on a fast local network, where hashing is the only CPU castbook adds)."""
    hub = _hub()
    todo = plan.to_download
    total = sum(f.size for f in todo if not f.cached)
    done = 0
    files_done = 0
    current = {"name": ""}
    last_report = [0.0]

    def report(force: bool = False) -> None:
        now = time.monotonic()
        if progress is not None and (force or now - last_report[0] >= 0.2):
            last_report[0] = now
            progress(PullProgress(done, total, current["name"], files_done, len(todo)))

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        report()

    for repo_id in dict.fromkeys(f.repo_id for f in todo):
        _remove_stale_partials(plan.cache, repo_id)
    report(force=True)
    for planned in todo:
        current["name"] = f"{planned.repo_id}/{planned.filename}"
        started_at = done
        blobs = repo_folder(plan.cache, planned.repo_id) / "blobs"
        tail = None
        if verify_hashes and planned.sha256 and planned.size >= _TAIL_HASH_FROM:
            tail = _TailHasher(blobs, planned.sha256)
            tail.start()
        try:
            path = Path(
                hub.hf_hub_download(
                    planned.repo_id,
                    planned.filename,
                    revision=planned.commit,
                    cache_dir=plan.cache,
                    endpoint=plan.endpoint,
                    tqdm_class=_Reporter(on_bytes),
                )
            )
        except CastbookError:
            raise
        except Exception as exc:
            raise hub_error(exc, planned.repo_id, plan.endpoint) from None
        finally:
            if tail is not None:
                tail.finished.set()
                tail.join()
        try:
            _verify(path, planned, tail, hashes=verify_hashes)
        except ModelDownloadError:
            blob = path.resolve()
            path.unlink(missing_ok=True)
            blob.unlink(missing_ok=True)
            raise
        if not planned.cached:  # a file resumed after a dropped connection reports twice
            done = started_at + planned.size
        files_done += 1
        report(force=True)
    for (repo_id, revision), commit in {
        (f.repo_id, f.revision): f.commit for f in plan.files
    }.items():
        _write_ref(plan.cache, repo_id, revision, commit)
    return plan
