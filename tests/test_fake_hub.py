"""The fake Hugging Face Hub (tests/support/fake_hub.py) against the real huggingface_hub client.

Every call goes through huggingface_hub's own code (``endpoint=`` the fake, ``cache_dir=`` a
tmp folder, ``token=False`` unless a token is the point), so these tests also pin what
huggingface_hub 2.4.0 does with the Hub's answers: cache layout, resume, error classes.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

pytest.importorskip("huggingface_hub")  # comes with the diffusers extra
import httpx2  # huggingface_hub's HTTP client
from huggingface_hub import (
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.support.fake_hub import FakeHub

REPO = "org/tiny"
CONFIG = b'{"_class_name": "UNet2DConditionModel", "sample_size": 8}'
WEIGHTS = random.Random(0).randbytes(3_000_000)
WEIGHTS_PATH = "unet/diffusion_pytorch_model.safetensors"
MiB = 1024 * 1024


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[FakeHub]:
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(WEIGHTS)  # served from disk, as the benchmark file is
    with FakeHub() as server:
        server.add_repo(
            REPO, {"model_index.json": b"{}", "unet/config.json": CONFIG, WEIGHTS_PATH: weights}
        )
        server.add_repo("org/gated", {"model.bin": WEIGHTS}, gated=True, token="hf_good")
        yield server


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "hf-cache"


def download(hub: FakeHub, cache: Path, filename: str, repo: str = REPO, **kw: Any) -> Path:
    kw.setdefault("token", False)  # never a token stored on this machine
    return Path(hf_hub_download(repo, filename, endpoint=hub.endpoint, cache_dir=cache, **kw))


def leftovers(cache: Path) -> list[Path]:
    return [p for p in cache.rglob("*") if p.name.endswith(".incomplete")]


def test_regular_file_lands_in_the_cache_named_by_its_git_blob_sha(
    hub: FakeHub, cache: Path
) -> None:
    path = download(hub, cache, "unet/config.json")

    commit = hub.repos[REPO].commit
    folder = cache / "models--org--tiny"
    blob_sha = hashlib.sha1(b"blob %d\0" % len(CONFIG) + CONFIG).hexdigest()
    assert path.read_bytes() == CONFIG
    assert len(commit) == 40
    assert (folder / "refs" / "main").read_text() == commit
    assert path == folder / "snapshots" / commit / "unet" / "config.json"
    assert path.is_symlink() and path.resolve() == folder / "blobs" / blob_sha
    calls = [(e.method, e.path, e.status) for e in hub.log]
    assert calls == [
        ("HEAD", "/org/tiny/resolve/main/unet/config.json", 200),
        ("GET", "/org/tiny/resolve/main/unet/config.json", 200),
    ]
    assert hub.log[1].body_bytes == len(CONFIG) and not leftovers(cache)


def test_lfs_file_lands_in_the_cache_named_by_its_sha256(hub: FakeHub, cache: Path) -> None:
    path = download(hub, cache, WEIGHTS_PATH)

    sha256 = hashlib.sha256(WEIGHTS).hexdigest()
    assert path.read_bytes() == WEIGHTS
    assert path.resolve() == cache / "models--org--tiny" / "blobs" / sha256
    assert hub.bytes_sent(REPO, WEIGHTS_PATH) == len(WEIGHTS)

    url = hf_hub_url(REPO, WEIGHTS_PATH, endpoint=hub.endpoint)
    meta = get_hf_file_metadata(url, token=False)
    assert (meta.etag, meta.size, meta.commit_hash) == (
        sha256,
        len(WEIGHTS),
        hub.repos[REPO].commit,
    )


def test_a_commit_sha_is_a_revision(hub: FakeHub, cache: Path) -> None:
    commit = hub.repos[REPO].commit
    path = download(hub, cache, "unet/config.json", revision=commit)

    assert path.read_bytes() == CONFIG
    assert hub.log[0].path == f"/org/tiny/resolve/{commit}/unet/config.json"
    # Asked by sha, the file is served from the snapshot without asking the server again.
    assert download(hub, cache, "unet/config.json", revision=commit) == path
    assert len(hub.log) == 2


def test_model_info_with_files_metadata(hub: FakeHub) -> None:
    api = HfApi(endpoint=hub.endpoint, token=False)
    info = api.model_info(REPO, files_metadata=True)

    assert hub.log[-1].path == "/api/models/org/tiny?blobs=true"
    assert info.id == REPO and info.sha == hub.repos[REPO].commit and info.gated is False
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert set(siblings) == {"model_index.json", "unet/config.json", WEIGHTS_PATH}
    config, weights = siblings["unet/config.json"], siblings[WEIGHTS_PATH]
    assert (config.size, config.lfs) == (len(CONFIG), None)
    assert config.blob_id == hub.file(REPO, "unet/config.json").blob_id
    assert weights.size == len(WEIGHTS) and weights.lfs is not None
    assert weights.lfs.sha256 == hashlib.sha256(WEIGHTS).hexdigest()
    assert weights.lfs.size == len(WEIGHTS) and weights.lfs.pointer_size > 100

    by_sha = api.repo_info(REPO, revision=info.sha, files_metadata=True)
    assert by_sha.sha == info.sha and hub.log[-1].path.startswith("/api/models/org/tiny/revision/")
    plain = api.model_info(REPO)
    assert all(s.size is None for s in plain.siblings or [])
    assert api.model_info("org/gated").gated == "auto"  # metadata of a gated repo is public


def test_snapshot_download_lists_the_tree_and_fetches_every_file(hub: FakeHub, cache: Path) -> None:
    folder = Path(snapshot_download(REPO, endpoint=hub.endpoint, cache_dir=cache, token=False))

    assert (folder / "unet" / "config.json").read_bytes() == CONFIG
    assert (folder / WEIGHTS_PATH).read_bytes() == WEIGHTS
    paths = [e.path for e in hub.log]
    assert "/api/models/org/tiny/revision/main" in paths
    assert any(p.startswith(f"/api/models/org/tiny/tree/{hub.repos[REPO].commit}?") for p in paths)


def test_a_dropped_connection_is_resumed_with_a_range_request(hub: FakeHub, cache: Path) -> None:
    data = random.Random(1).randbytes(24 * MiB)
    hub.add_repo("org/big", {"model.safetensors": data})
    hub.drop_after("org/big", "model.safetensors", 15 * MiB)

    path = download(hub, cache, "model.safetensors", repo="org/big")

    assert path.read_bytes() == data
    first, second = (e for e in hub.log if e.method == "GET")
    assert (first.range, first.status, first.body_bytes) == (None, 200, 15 * MiB)
    # huggingface_hub keeps only whole 10 MiB chunks (DOWNLOAD_CHUNK_SIZE) of a broken stream.
    kept = hf_constants.DOWNLOAD_CHUNK_SIZE
    assert (second.range, second.status) == (f"bytes={kept}-", 206)
    assert second.body_bytes == len(data) - kept
    assert hub.bytes_sent("org/big", "model.safetensors") == 15 * MiB + len(data) - kept
    assert not leftovers(cache)


def test_a_drop_inside_the_first_chunk_restarts_from_zero(hub: FakeHub, cache: Path) -> None:
    hub.drop_after(REPO, WEIGHTS_PATH, 1_000_000)

    assert download(hub, cache, WEIGHTS_PATH).read_bytes() == WEIGHTS
    assert [(e.range, e.status) for e in hub.log if e.method == "GET"] == [
        (None, 200),
        (None, 200),
    ]


def test_a_connection_reset_is_not_retried_by_huggingface_hub(hub: FakeHub, cache: Path) -> None:
    hub.drop_after(REPO, WEIGHTS_PATH, 1_000_000, reset=True)

    # http_get retries RemoteProtocolError and timeouts, but ECONNRESET is a ReadError.
    with pytest.raises(httpx2.ReadError):
        download(hub, cache, WEIGHTS_PATH)
    assert not leftovers(cache)  # the partial download is deleted, nothing to resume later
    assert not list((cache / "models--org--tiny" / "blobs").iterdir())


def test_gated_repo_needs_the_right_token(hub: FakeHub, cache: Path) -> None:
    with pytest.raises(GatedRepoError) as anonymous:
        download(hub, cache, "model.bin", repo="org/gated")
    assert anonymous.value.response.status_code == 401
    assert "restricted" in str(anonymous.value) and "Please log in" in str(anonymous.value)

    with pytest.raises(GatedRepoError) as wrong:
        download(hub, cache, "model.bin", repo="org/gated", token="hf_wrong")
    assert wrong.value.response.status_code == 403

    path = download(hub, cache, "model.bin", repo="org/gated", token="hf_good")
    assert path.read_bytes() == WEIGHTS
    assert hub.log[-1].authorization == "Bearer hf_good"


def test_unknown_repo_is_repository_not_found(hub: FakeHub, cache: Path) -> None:
    with pytest.raises(RepositoryNotFoundError) as raised:
        download(hub, cache, "config.json", repo="org/missing")
    assert not isinstance(raised.value, GatedRepoError)
    assert raised.value.response.headers["X-Error-Code"] == "RepoNotFound"
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint, token=False).model_info("org/missing")


def test_unknown_file_is_entry_not_found(hub: FakeHub, cache: Path) -> None:
    with pytest.raises(RemoteEntryNotFoundError) as raised:
        download(hub, cache, "unet/missing.json")
    assert isinstance(raised.value, EntryNotFoundError)
    commit = hub.repos[REPO].commit
    assert raised.value.response.headers["X-Repo-Commit"] == commit
    # huggingface_hub remembers the miss in the cache, keyed by the commit.
    assert (cache / "models--org--tiny" / ".no_exist" / commit / "unet" / "missing.json").exists()


def test_unknown_revision_is_revision_not_found(hub: FakeHub, cache: Path) -> None:
    with pytest.raises(RevisionNotFoundError):
        download(hub, cache, "unet/config.json", revision="v9")
    with pytest.raises(RevisionNotFoundError):
        HfApi(endpoint=hub.endpoint, token=False).model_info(REPO, revision="v9")
    assert hub.log[-1].path == "/api/models/org/tiny/revision/v9"


@pytest.mark.parametrize("mode", ["relative", "cdn"])
def test_lfs_redirect_to_a_cdn_path(
    hub: FakeHub, cache: Path, mode: Literal["relative", "cdn"]
) -> None:
    hub.lfs_redirect = mode

    path = download(hub, cache, "model.bin", repo="org/gated", token="hf_good")

    assert path.read_bytes() == WEIGHTS
    assert (hub.log[0].method, hub.log[0].status) == ("HEAD", 302)
    cdn = [e for e in hub.log if e.path.startswith("/cdn/")]
    if mode == "relative":  # same origin: followed, with the token
        assert [(e.method, e.authorization) for e in cdn] == [
            ("HEAD", "Bearer hf_good"),
            ("GET", "Bearer hf_good"),
        ]
    else:  # another origin: huggingface_hub stops at the 302 and drops the token
        assert [(e.method, e.authorization) for e in cdn] == [("GET", None)]
    assert hub.bytes_sent("org/gated", "model.bin") == len(WEIGHTS)


def test_headers_and_ranges_on_resolve(hub: FakeHub) -> None:
    url = f"{hub.endpoint}/org/tiny/resolve/main/{WEIGHTS_PATH}"
    sha256 = hashlib.sha256(WEIGHTS).hexdigest()
    with httpx.Client() as client:
        head = client.head(url)
        assert head.status_code == 200
        assert head.headers["ETag"] == head.headers["X-Linked-Etag"] == f'"{sha256}"'
        assert head.headers["X-Linked-Size"] == head.headers["Content-Length"] == str(len(WEIGHTS))
        assert head.headers["Accept-Ranges"] == "bytes"
        assert head.headers["X-Repo-Commit"] == hub.repos[REPO].commit

        part = client.get(url, headers={"Range": "bytes=5-9"})
        assert (part.status_code, part.content) == (206, WEIGHTS[5:10])
        assert part.headers["Content-Range"] == f"bytes 5-9/{len(WEIGHTS)}"
        tail = client.get(url, headers={"Range": "bytes=-4"})
        assert (tail.status_code, tail.content) == (206, WEIGHTS[-4:])
        assert client.get(url, headers={"Range": f"bytes={len(WEIGHTS)}-"}).status_code == 416

        config = client.head(f"{hub.endpoint}/org/tiny/resolve/main/unet/config.json")
        assert config.headers["ETag"] == f'"{hub.file(REPO, "unet/config.json").blob_id}"'
        assert "X-Linked-Etag" not in config.headers


def test_server_errors_are_retried_by_the_download(hub: FakeHub, cache: Path) -> None:
    hub.fail_next(503)
    assert download(hub, cache, "unet/config.json").read_bytes() == CONFIG
    assert [(e.method, e.status) for e in hub.log] == [("HEAD", 503), ("HEAD", 200), ("GET", 200)]

    hub.fail_next(500)
    with pytest.raises(HfHubHTTPError) as raised:
        HfApi(endpoint=hub.endpoint, token=False).model_info(REPO)
    assert raised.value.response.status_code == 500


def test_throttle_slows_bodies_and_a_client_may_hang_up(hub: FakeHub) -> None:
    url = f"{hub.endpoint}/org/tiny/resolve/main/{WEIGHTS_PATH}"
    hub.throttle(1_000_000)
    started = time.monotonic()
    with httpx.stream("GET", url) as response:
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received >= 300_000:
                break  # hang up mid-way, as a cancelled download does
    assert 0.2 < time.monotonic() - started < 2
    assert hub.bytes_sent(REPO, WEIGHTS_PATH) < len(WEIGHTS)

    hub.throttle(None)
    assert httpx.get(url).content == WEIGHTS
