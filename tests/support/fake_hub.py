"""A real HTTP server on 127.0.0.1 that speaks enough of the Hugging Face Hub for downloads.

The installed ``huggingface_hub`` works against it unchanged: pass ``endpoint=hub.endpoint``
to ``hf_hub_download``/``snapshot_download``/``HfApi``. ``HF_ENDPOINT`` is read once, when
``huggingface_hub.constants`` is imported (also ``_HUB_ORIGINS`` in ``utils._http``), so
setting it later in a test has no effect; pass ``endpoint=`` (and ``token=False`` for
"no token", else a token stored on the machine may be sent).

It answers ``GET /api/models/{repo}[/revision/{rev}]`` (model_info; ``?blobs=true`` adds
sizes, blob ids and LFS sha256), ``GET /api/models/{repo}/tree/{rev}`` (list_repo_tree, for
snapshot_download), ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with the Hub's headers
(``X-Repo-Commit``, quoted ``ETag``, ``X-Linked-Etag``/``X-Linked-Size`` for LFS files,
``Accept-Ranges``, ``Range`` → 206) and the Hub's error headers (``X-Error-Code``
``RepoNotFound``/``GatedRepo``/``RevisionNotFound``/``EntryNotFound``). ``rev`` is ``main`` or
the repo's commit sha. As on the Hub, a gated repo's metadata is public, its files are not.
With ``lfs_redirect`` set, LFS files answer 302 to ``/cdn/...``: ``"relative"`` on the same
origin (followed by the library, like the Hub's resolve-cache), ``"cdn"`` to
``http://localhost:PORT`` (another origin: the library stops at the 302, reads the metadata
from it and downloads without the Authorization header, like a signed CDN URL).

Faults: :meth:`FakeHub.drop_after`, :meth:`FakeHub.throttle`, :meth:`FakeHub.fail_next`.
Every request is logged (:class:`HubRequest`); :meth:`FakeHub.bytes_sent` counts body bytes
per file. huggingface_hub 2.4.0 resumes a short body (not a reset) with ``Range``, from the
last whole 10 MiB chunk it kept, so drop after more than 10 MiB to see a ``Range``::

    with FakeHub() as hub:
        hub.add_repo("org/model", {"config.json": b"{}", "unet/w.safetensors": big_path})
        hub.drop_after("org/model", "unet/w.safetensors", 15 << 20)
        hf_hub_download("org/model", "unet/w.safetensors", endpoint=hub.endpoint, ...)
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import struct
import threading
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, unquote

from tests.support.loopback import LoopbackServer

__all__ = ["FakeHub", "HubFile", "HubRepo", "HubRequest"]

LFS_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt")
LFS_THRESHOLD = 10 * 1024 * 1024
SEND_CHUNK = 8 * 1024 * 1024  # per sendfile()/write() call when unthrottled
LAST_MODIFIED = "2024-05-01T12:00:00.000Z"
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass(frozen=True)
class HubFile:
    """One file of a repo. ``etag`` is what the cache names the blob by."""

    path: str
    source: bytes | Path
    size: int
    blob_id: str  # git oid: of the content, or for LFS files of the pointer file
    sha256: str | None  # LFS files only
    pointer_size: int | None = None

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id

    @classmethod
    def make(cls, path: str, source: bytes | Path) -> HubFile:
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        if not path.endswith(LFS_SUFFIXES) and size < LFS_THRESHOLD:
            data = source.read_bytes() if isinstance(source, Path) else source
            return cls(path, source, size, git_blob_sha1(data), None)
        digest = hashlib.sha256()
        if isinstance(source, Path):
            with source.open("rb") as fh:
                while block := fh.read(SEND_CHUNK):
                    digest.update(block)
        else:
            digest.update(source)
        sha = digest.hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {size}\n"
        return cls(path, source, size, git_blob_sha1(pointer.encode()), sha, len(pointer))


@dataclass(frozen=True)
class HubRepo:
    repo_id: str
    files: dict[str, HubFile]
    commit: str
    gated: bool
    token: str | None


@dataclass
class HubRequest:
    """One request as the server saw it; ``body_bytes`` grows while the body is being sent."""

    method: str
    path: str  # with the query string, as sent
    range: str | None
    authorization: str | None
    status: int = 0
    body_bytes: int = 0


@dataclass
class _Drop:
    nbytes: int
    times: int
    reset: bool


class FakeHub(LoopbackServer):
    """A threaded stdlib HTTP server bound to 127.0.0.1 on a free port."""

    def __init__(self, lfs_redirect: Literal["relative", "cdn"] | None = None) -> None:
        self.lfs_redirect = lfs_redirect
        self.repos: dict[str, HubRepo] = {}
        self._log: list[HubRequest] = []
        self._sent: dict[tuple[str, str], int] = {}
        self._drops: dict[tuple[str, str], _Drop] = {}
        self._failures: list[int] = []
        self._rate: int | None = None
        self._lock = threading.Lock()
        self._listen(_Server, _Handler)

    # --- lifecycle
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- content
    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes | Path],
        *,
        gated: bool = False,
        token: str | None = None,
    ) -> HubRepo:
        """Publish a model repo; a gated one opens only to ``Authorization: Bearer <token>``."""
        if gated and not token:
            raise ValueError("a gated repo needs the token that opens it")
        entries = {path: HubFile.make(path, source) for path, source in sorted(files.items())}
        tree = "".join(f"{p}\0{f.blob_id}\n" for p, f in entries.items())
        commit = hashlib.sha1(f"{repo_id}\n{tree}".encode()).hexdigest()
        repo = HubRepo(repo_id, entries, commit, gated, token)
        with self._lock:
            self.repos[repo_id] = repo
        return repo

    def file(self, repo_id: str, path: str) -> HubFile:
        return self.repos[repo_id].files[path]

    # --- faults
    def drop_after(
        self, repo_id: str, path: str, nbytes: int, times: int = 1, *, reset: bool = False
    ) -> None:
        """The next ``times`` GETs of the file send headers and ``nbytes`` of body, then hang up.

        The hang-up is a clean close (FIN: the client sees a short body) or, with ``reset``,
        a TCP reset (the client sees ECONNRESET).
        """
        with self._lock:
            self._drops[(repo_id, path)] = _Drop(nbytes, times, reset)

    def throttle(self, bytes_per_second: int | None) -> None:
        """Cap the send rate of file bodies (``None``: full speed); read once per chunk."""
        self._rate = bytes_per_second

    def fail_next(self, status: int = 503, times: int = 1) -> None:
        """The next ``times`` requests, whatever they ask, answer ``status``."""
        with self._lock:
            self._failures.extend([status] * times)

    # --- inspection
    @property
    def log(self) -> list[HubRequest]:
        """A snapshot of the requests so far (the entries themselves are live)."""
        with self._lock:
            return list(self._log)

    def bytes_sent(self, repo_id: str, path: str) -> int:
        """File body bytes handed to sockets so far, over all routes and requests."""
        with self._lock:
            return self._sent.get((repo_id, path), 0)

    # --- used by the handler
    def _record(self, entry: HubRequest) -> None:
        with self._lock:
            self._log.append(entry)

    def _take_failure(self) -> int | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else None

    def _take_drop(self, repo_id: str, path: str) -> _Drop | None:
        with self._lock:
            drop = self._drops.get((repo_id, path))
            if drop is None:
                return None
            drop.times -= 1
            if drop.times <= 0:
                del self._drops[(repo_id, path)]
            return drop

    def _count(self, entry: HubRequest, key: tuple[str, str], n: int) -> None:
        # Counted before the bytes go out, so a client that has them sees the count.
        with self._lock:
            entry.body_bytes += n
            self._sent[key] = self._sent.get(key, 0) + n

    def _info(self, repo: HubRepo, blobs: bool) -> dict[str, Any]:
        siblings: list[dict[str, Any]] = []
        for f in repo.files.values():
            sibling: dict[str, Any] = {"rfilename": f.path}
            if blobs:
                sibling.update(blobId=f.blob_id, size=f.size)
            if blobs and f.sha256:
                sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            siblings.append(sibling)
        return {
            "_id": repo.commit[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": repo.repo_id.rpartition("/")[0] or None,
            "sha": repo.commit,
            "lastModified": LAST_MODIFIED,
            "createdAt": LAST_MODIFIED,
            "private": False,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "spaces": [],
            "usedStorage": sum(f.size for f in repo.files.values()),
        }

    def _tree(self, repo: HubRepo, sub: str, recursive: bool) -> list[dict[str, Any]]:
        prefix = f"{sub.strip('/')}/" if sub.strip("/") else ""

        def listed(path: str) -> bool:
            return path.startswith(prefix) and (recursive or "/" not in path[len(prefix) :])

        dirs = {p.rsplit("/", n)[0] for p in repo.files for n in range(1, p.count("/") + 1)}
        entries: list[dict[str, Any]] = [
            {"type": "directory", "oid": hashlib.sha1(f"{repo.commit}{d}".encode()).hexdigest()}
            | {"size": 0, "path": d}
            for d in sorted(dirs)
            if listed(d)
        ]
        for f in repo.files.values():
            if listed(f.path):
                entry = {"type": "file", "oid": f.blob_id, "size": f.size, "path": f.path}
                if f.sha256:
                    entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
                entries.append(entry)
        return entries


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: FakeHub

    def handle_error(self, request: Any, client_address: Any) -> None:
        return None  # clients hanging up mid-body are expected


class _HubError(Exception):
    def __init__(self, status: int, code: str | None, message: str, **headers: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle on, every small reply (a
    # model_info, a config.json) would wait ~40 ms for a delayed ACK no real hub charges.
    disable_nagle_algorithm = True
    entry: HubRequest

    def log_message(self, format: str, *args: Any) -> None:
        return None

    # --- routing
    def do_GET(self) -> None:  # and HEAD: the same answer without the body
        owner = self.server.owner
        range_, auth = self.headers.get("Range"), self.headers.get("Authorization")
        self.entry = HubRequest(self.command, self.path, range_, auth)
        owner._record(self.entry)
        route, _, query = self.path.partition("?")
        try:
            if (status := owner._take_failure()) is not None:
                raise _HubError(status, None, "Internal Error - We're working hard to fix this.")
            if route.startswith("/api/models/"):
                self._api(route.removeprefix("/api/models/"), query)
            elif route.startswith("/cdn/"):
                commit, _, path = route.removeprefix("/cdn/").partition("/")
                repo = next((r for r in list(owner.repos.values()) if r.commit == commit), None)
                if repo is None or unquote(path) not in repo.files:
                    raise _HubError(404, None, "Not found")
                self._send_file(repo, repo.files[unquote(path)])
            elif "/resolve/" in route:
                repo_id, _, rest = route[1:].partition("/resolve/")
                revision, _, path = rest.partition("/")
                self._resolve(repo_id, unquote(revision), unquote(path))
            else:
                raise _HubError(404, None, "Sorry, we can't find the page you are looking for.")
        except _HubError as err:
            headers = dict(err.headers, **{"X-Error-Message": err.message})
            if err.code:
                headers["X-Error-Code"] = err.code
            self._reply(err.status, json.dumps({"error": err.message}).encode(), headers)

    do_HEAD = do_GET

    def _repo(self, repo_id: str, revision: str | None, *, gate: bool) -> HubRepo:
        repo = self.server.owner.repos.get(repo_id)
        if repo is None:
            raise _HubError(404, "RepoNotFound", "Repository not found")
        if gate and repo.gated:
            auth = self.headers.get("Authorization")
            if auth is None:
                message = (
                    f"Access to model {repo_id} is restricted. You must have access to it and be"
                    " authenticated to access it. Please log in."
                )
                raise _HubError(401, "GatedRepo", message)
            if auth != f"Bearer {repo.token}":
                message = (
                    f"Access to model {repo_id} is restricted and you are not in the authorized"
                    f" list. Visit https://huggingface.co/{repo_id} to ask for access."
                )
                raise _HubError(403, "GatedRepo", message)
        if revision is not None and revision not in ("main", repo.commit):
            raise _HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return repo

    def _api(self, rest: str, query: str) -> None:
        owner = self.server.owner
        # Like the Hub, a gated repo's metadata and file list are public; only its files are gated.
        if "/tree/" in rest:  # list_repo_tree (snapshot_download): one page, no Link header
            repo_id, _, tail = rest.partition("/tree/")
            revision, _, sub = tail.partition("/")
            repo = self._repo(repo_id, unquote(revision), gate=False)
            data: Any = owner._tree(repo, unquote(sub), "recursive=true" in query)
        else:  # model_info / repo_info
            repo_id, _, revision = rest.partition("/revision/")
            repo = self._repo(repo_id, unquote(revision) if revision else None, gate=False)
            data = owner._info(repo, "blobs=true" in query)
        self._reply(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _resolve(self, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(repo_id, revision, gate=True)
        f = repo.files.get(path)
        if f is None:
            commit = {"X-Repo-Commit": repo.commit}
            raise _HubError(404, "EntryNotFound", "Entry not found", **commit)
        mode = self.server.owner.lfs_redirect
        if f.sha256 and mode is not None:
            origin = "" if mode == "relative" else f"http://localhost:{self.server.owner.port}"
            headers = self._file_headers(repo, f)
            headers["Location"] = f"{origin}/cdn/{repo.commit}/{quote(path)}"
            self._reply(302, b"", headers)
            return
        self._send_file(repo, f)

    # --- answers
    def _file_headers(self, repo: HubRepo, f: HubFile) -> dict[str, str]:
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{f.etag}"',
            "X-Repo-Commit": repo.commit,
        }
        if f.sha256:
            headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size)})
        return headers

    def _send_file(self, repo: HubRepo, f: HubFile) -> None:
        headers = self._file_headers(repo, f)
        start, end, status = 0, f.size, 200
        wanted = self.headers.get("Range")
        match = _RANGE.fullmatch(wanted.strip()) if wanted else None
        if match and (match[1] or match[2]):
            if match[1]:
                start = int(match[1])
                end = min(int(match[2]) + 1, f.size) if match[2] else f.size
            else:
                start = max(f.size - int(match[2]), 0)
            if start >= end:
                unsatisfiable = {"Content-Range": f"bytes */{f.size}"}
                raise _HubError(416, None, "Range Not Satisfiable", **unsatisfiable)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        drop = self.server.owner._take_drop(repo.repo_id, f.path) if self.command == "GET" else None
        self._reply(status, None, headers, length=end - start)
        if self.command == "GET":
            self._stream(repo, f, start, end, drop)

    def _stream(self, repo: HubRepo, f: HubFile, start: int, end: int, drop: _Drop | None) -> None:
        owner = self.server.owner
        key = (repo.repo_id, f.path)
        stop = end if drop is None else min(end, start + drop.nbytes)
        view = memoryview(f.source) if isinstance(f.source, bytes) else None
        pos = start
        try:
            with open(f.source, "rb") if isinstance(f.source, Path) else nullcontext() as fh:
                while pos < stop and not owner._stopping.is_set():
                    rate = owner._rate
                    n = min(stop - pos, SEND_CHUNK if rate is None else max(1, rate // 20))
                    owner._count(self.entry, key, n)
                    if fh is not None:
                        self.connection.sendfile(fh, pos, n)
                    else:
                        assert view is not None
                        self.wfile.write(view[pos : pos + n])
                    pos += n
                    if rate is not None:
                        owner._stopping.wait(n / rate)
        except OSError:  # the client hung up
            self.close_connection = True
            return
        if pos < end:
            self.close_connection = True
            if drop is not None and drop.reset:
                linger = struct.pack("ii", 1, 0)  # close() now sends RST, not FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.connection.close()

    def _reply(
        self, status: int, body: bytes | None, headers: dict[str, str], *, length: int = 0
    ) -> None:
        """Send status and headers; ``body`` too unless it is None (streamed) or HEAD."""
        self.entry.status = status
        if body is not None:
            length = len(body)
            headers.setdefault("Content-Type", "application/json")
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if body and self.command != "HEAD":
                self.entry.body_bytes = len(body)
                self.wfile.write(body)
        except OSError:
            self.close_connection = True
