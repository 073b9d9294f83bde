"""Fixtures shared by the suite: image makers, a library per test on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import itertools
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw

from castbook.blobs import BlobStore
from castbook.db import Database
from castbook.library import CharacterLibrary
from tests.support.postgres import (
    PostgresServer,
    PostgresUnavailable,
    postgres_required,
    start_postgres,
)

_database_counter = itertools.count()


def make_image_bytes(
    color: tuple[int, int, int] = (200, 120, 80),
    size: tuple[int, int] = (64, 80),
    fmt: str = "PNG",
    mark: int = 0,
) -> bytes:
    """A small, distinct picture: a coloured canvas with a face-like oval and a mark."""
    image = Image.new("RGB", size, color)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.ellipse((w // 4, h // 5, 3 * w // 4, 4 * h // 5), fill=(240, 210, 180))
    draw.rectangle((mark % w, 0, mark % w + 2, 3), fill=(mark * 37 % 256, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture
def image_bytes() -> Callable[..., bytes]:
    return make_image_bytes


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    # Outside pytest's own temp tree: pytest resets that tree's permissions to 0700 when
    # another session starts, which would lock the server's unprivileged user out.
    base = Path(tempfile.mkdtemp(prefix="castbook-pg-"))
    try:
        server = start_postgres(base)
    except PostgresUnavailable as exc:
        if postgres_required():
            pytest.fail(f"CI needs PostgreSQL but it could not be started: {exc}")
        pytest.skip(f"no PostgreSQL server could be started here: {exc}")
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'castbook.db'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.create_database(f"castbook_t{next(_database_counter)}")


@pytest.fixture
def library(database_url: str, tmp_path: Path) -> Iterator[CharacterLibrary]:
    database = Database(database_url)
    yield CharacterLibrary(database, BlobStore(tmp_path / "blobs"))
    database.dispose()


@pytest.fixture
def castbook_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CASTBOOK_HOME", str(home))
    monkeypatch.delenv("CASTBOOK_DATABASE_URL", raising=False)
    monkeypatch.delenv("CASTBOOK_BLOB_DIR", raising=False)
    return home


@pytest.fixture(scope="session")
def tiny_svd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight Stable Video Diffusion model, saved like a user's local folder."""
    from tests.support.tiny_diffusers import make_tiny_svd

    return make_tiny_svd(tmp_path_factory.mktemp("tiny-svd") / "svd")


@pytest.fixture(scope="session")
def hub_repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """Tiny model repositories laid out like ``sd15-ip-adapter``'s on the hub (built once)."""
    pytest.importorskip("diffusers")
    from tests.support.hub_models import build_hub_repos

    return build_hub_repos(tmp_path_factory.mktemp("hub-repos"))


@pytest.fixture
def model_hub(hub_repos: dict[str, dict[str, Path]]) -> Iterator[Any]:
    """A fake Hugging Face hub on 127.0.0.1 serving :func:`hub_repos` (a fresh log each test)."""
    pytest.importorskip("huggingface_hub")
    from tests.support.fake_hub import FakeHub

    with FakeHub() as hub:
        for repo_id, files in hub_repos.items():
            hub.add_repo(repo_id, files)
        yield hub
