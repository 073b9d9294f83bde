"""Fixtures shared by the suite: image makers, a library per test on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import io
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from castbook.api import ApiConfig, create_app
from castbook.blobs import Blobs, BlobStore
from castbook.db import Database
from castbook.jobs import JobStore, LocalExecutor
from castbook.library import CharacterLibrary
from castbook.settings import Settings
from tests.support.api import Api, ApiFactory, write_presets
from tests.support.postgres import (
    PostgresServer,
    PostgresUnavailable,
    postgres_required,
    start_postgres,
)
from tests.support.redis_server import RedisServer, RedisUnavailable, redis_required, start_redis
from tests.support.s3_server import S3Server, S3Unavailable, start_s3

if TYPE_CHECKING:
    from playwright.sync_api import Browser

_database_counter = itertools.count()

# The slowest test files, slowest first: each file's seconds in one process (sum of its tests'
# set-up, call and teardown) in a loaded run (`pytest -n 2 --dist loadfile`, load 5-7, the
# 2026-12-07 afternoon measurement in docs/architecture.md). `scripts/test.sh` runs the suite
# in several processes, one file per process at a time; a process that starts the slowest
# file last makes everybody wait for it, so they go first. A stale list costs only time.
# test_diffusers_backend, third before, now takes ~15-50 s (18 s of CPU): torch's one thread
# in tests (`pytest_configure`) cut it most.
SLOWEST_FIRST = (
    "test_chaos.py",  # 205 s
    "test_models_cli_api.py",  # 200 s
    "test_celery_executor.py",  # 160 s
    "test_process_executor.py",  # 154 s
    "test_api_server.py",  # 152 s
    "test_eval_budget.py",  # 152 s
    "test_web_canvas.py",  # 135 s
    "test_web_library.py",  # 76 s
    "test_api.py",  # 75 s
    "test_web_canvas_fixes.py",  # 71 s
    "test_readme_quickstart.py",  # 69 s
    "test_web_models.py",  # 61 s
    "test_lora_server.py",  # 59 s (issue 19: ~250 s in a heavier loaded run)
    "test_web_train.py",  # 52 s
    "test_api_compat.py",  # 51 s
    "test_diffusers_backend.py",  # 15-49 s
    "test_web_canvas_editing.py",  # 49 s
    "test_api_render.py",  # 48 s
    "test_identify.py",  # 47 s
    "test_web_gallery.py",  # 44 s
    "test_api_workflows.py",  # 39 s
    "test_lora.py",  # 38 s (alone, load 5)
    "test_exchange.py",  # 33 s
    "test_blobs_s3_celery.py",  # 26 s
    "test_web_settings.py",  # 25 s
    "test_images.py",  # 24 s
    "test_batch_render.py",  # 21 s
)


def pytest_configure(config: pytest.Config) -> None:
    """One thread per numeric library (torch, BLAS) in the test processes and in every
    process a test starts (they inherit the environment), unless the caller chose otherwise.

    Set here, before any test imports torch, rather than in a module that benchmarks import
    too: their timings stay those of a user's default. `scripts/test.sh` runs three test
    processes on two cores, and torch's default of a thread per core then has its threads
    spin-waiting for a core: test_batch_render took 67.6 s of CPU with two threads and 22.6 s
    with one on the loaded machine. No test compares results across processes with different
    thread counts.
    """
    del config
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(variable, "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The library's S3 runs use SQLite only (see the `library` fixture), and skip modules
    # whose LIBRARY_STORES leaves S3 out; so do the runs of `blob_stores` tests on a bucket.
    pairs = [getattr(item, "callspec", None) for item in items]
    dropped = [
        item
        for item, spec in zip(items, pairs, strict=True)
        if spec is not None
        and (
            (
                spec.params.get("library") == "s3"
                and (
                    spec.params.get("database_url") == "postgresql"
                    or "s3" not in getattr(item.module, "LIBRARY_STORES", ("s3",))
                )
            )
            or (
                spec.params.get("blob_store_kind") == "s3"
                and spec.params.get("database_url") == "postgresql"
            )
        )
    ]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        gone = set(map(id, dropped))
        items[:] = [item for item in items if id(item) not in gone]
    rank = {name: position for position, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order kept


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    try:
        server = start_redis(tmp_path_factory.mktemp("redis"))
    except RedisUnavailable as exc:
        if redis_required():
            pytest.fail(f"CI needs redis-server but it could not be started: {exc}")
        pytest.skip(f"no Redis server could be started here: {exc}")
    yield server
    server.stop()


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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3-protocol server (moto) on 127.0.0.1 for the object-store tests."""
    try:
        server = start_s3(tmp_path_factory.mktemp("s3"))
    except S3Unavailable as exc:
        if postgres_required():  # CI: every service must run
            pytest.fail(f"CI needs the S3 test server but it could not be started: {exc}")
        pytest.skip(f"no S3 test server could be started here: {exc}")
    yield server
    server.stop()


# A test's database starts as a copy of one migrated once per session (test process): Alembic's
# upgrade on open then finds it at the newest revision. Migrating each test's database cost
# ~40 ms of CPU and ~130 ms of wall (SQLite's syncs) per database, hundreds of times a run;
# the migrations themselves still run, on every template and on every database a test opens
# by its own path.
@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty castbook SQLite database at the newest revision (copy it, never open it)."""
    path = tmp_path_factory.mktemp("migrated-db") / "castbook.db"
    Database(f"sqlite:///{path}").dispose()
    leftovers = [p.name for p in path.parent.iterdir() if p != path]
    assert not leftovers, f"the template database left {leftovers} open"  # WAL checkpointed
    return path


@pytest.fixture(scope="session")
def migrated_postgres(postgres: PostgresServer) -> str:
    """The name of an empty castbook database at the newest revision on the session's server
    (a template: databases are created from it, nobody connects to it)."""
    name = "castbook_migrated"
    Database(postgres.create_database(name)).dispose()
    return name


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        path = tmp_path / "castbook.db"
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), path)
        return f"sqlite:///{path}"
    server: PostgresServer = request.getfixturevalue("postgres")
    template: str = request.getfixturevalue("migrated_postgres")
    return server.create_database(f"castbook_t{next(_database_counter)}", template)


@pytest.fixture(params=["folder", "s3"])
def library(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[CharacterLibrary]:
    """A library on each database with the blob folder, and on SQLite with an S3 bucket
    (PostgreSQL with S3 adds nothing the two do not cover; it is deselected)."""
    database = Database(database_url)
    if request.param == "s3":
        blobs = s3_blob_store(request.getfixturevalue("s3_server"), tmp_path)
    else:
        blobs = BlobStore(tmp_path / "blobs")
    yield CharacterLibrary(database, blobs)
    database.dispose()


def s3_blob_store(server: S3Server, tmp_path: Path, cache_mb: float = 64) -> Blobs:
    from castbook.blobs.cache import BlobCache
    from castbook.blobs.s3 import S3BlobStore

    cache = BlobCache(tmp_path / "blob-cache", int(cache_mb * 1024 * 1024))
    return S3BlobStore(server.new_bucket(), endpoint=server.endpoint, cache=cache)


@pytest.fixture
def castbook_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("CASTBOOK_HOME", str(home))
    monkeypatch.delenv("CASTBOOK_DATABASE_URL", raising=False)
    monkeypatch.delenv("CASTBOOK_BLOB_DIR", raising=False)
    # Indexing each added reference loads the face model: only tests about it turn it on.
    monkeypatch.setenv("CASTBOOK_IDENTIFY_ON_ADD", "0")
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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium for a browser-test module (tests/support/web.py), skipped without
    one (failed under CI=true); one per module, never per session: Playwright's sync API
    keeps an asyncio loop on the main thread."""
    from tests.support.web import chromium, require_browser

    require_browser()
    with chromium() as browser:
        yield browser


# ---- the API: tiny models, a home with presets, in-process apps (tests/support/api.py) --------


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("diffusers")
    from tests.support.tiny_diffusers import make_tiny_ip_adapter, make_tiny_sd15

    root = tmp_path_factory.mktemp("api-models")
    return {"sd15": make_tiny_sd15(root / "sd15"), "ip": make_tiny_ip_adapter(root / "ip")}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_sqlite: Path) -> Path:
    """An API test's CASTBOOK_HOME, its SQLite database already migrated."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copyfile(migrated_sqlite, home / "castbook.db")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-empty"))
    return home


# Which blob store a test's images live in (issue 20: the library/jobs/API suite on the object
# store as a parametrised backend). Every test that stores images through `make_api`,
# `api_settings` or `blob_bucket` (they take `blob_store_kind`) runs twice in every run: on the
# folder and on an empty bucket of the session's S3 server (docs/deployment.md lists what that
# covers). One session, so the tiny models, moto and PostgreSQL are built once for both, and
# xdist balances both halves together; a second pytest pass would pay its collection and
# session set-up again. `@pytest.mark.blob_stores("folder")` keeps a test about the folder
# itself on the folder. `CASTBOOK_TEST_BLOBS=folder` (or `s3`) runs every such test on that one
# store only: a quicker loop by hand, never what CI runs.
BOTH_STORES = ("folder", "s3")
BLOBS_UNDER_TEST = os.environ.get("CASTBOOK_TEST_BLOBS", "")
if BLOBS_UNDER_TEST not in ("", *BOTH_STORES):
    raise pytest.UsageError(f"CASTBOOK_TEST_BLOBS must be folder or s3, not {BLOBS_UNDER_TEST!r}")


def _blob_stores_of(definition: Any) -> tuple[str, ...]:
    marker = definition.get_closest_marker("blob_stores")
    stores = tuple(marker.args) if marker is not None else BOTH_STORES
    if BLOBS_UNDER_TEST:
        return tuple(store for store in stores if store == BLOBS_UNDER_TEST) or stores[:1]
    return stores


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "blob_store_kind" not in metafunc.fixturenames:
        return
    stores = _blob_stores_of(metafunc.definition)
    if len(stores) > 1:  # one store: the test keeps its id
        metafunc.parametrize("blob_store_kind", stores, indirect=True)


@pytest.fixture
def blob_store_kind(request: pytest.FixtureRequest) -> str:
    """``folder`` or ``s3``: where this test's images live (see BLOBS_UNDER_TEST)."""
    kind = getattr(request, "param", None) or _blob_stores_of(request.node)[0]
    if kind not in ("folder", "s3"):
        raise pytest.UsageError(f"blob_stores takes folder and s3, not {kind!r}")
    return kind


@pytest.fixture
def blob_bucket(blob_store_kind: str, request: pytest.FixtureRequest) -> tuple[str, str] | None:
    """On ``s3``: an empty bucket of the session's S3 server (its URL and endpoint) for this
    test; on the folder, None."""
    if blob_store_kind != "s3":
        return None
    server: S3Server = request.getfixturevalue("s3_server")
    return server.new_bucket(), server.endpoint


def on_blob_store(settings: Settings, bucket: tuple[str, str] | None) -> Settings:
    """``settings`` with the test's store: unchanged on the folder, else the bucket (and this
    home's own cache folder, as on a machine of its own)."""
    if bucket is None:
        return settings
    url, endpoint = bucket
    return dataclasses.replace(settings, blob_url=url, blob_endpoint=endpoint)


@pytest.fixture
def api_settings(home: Path, blob_bucket: tuple[str, str] | None) -> Callable[..., Settings]:
    """The settings :func:`make_api` gives its apps (a test that builds handlers for them
    opens their store with ``open_blob_store(api_settings())``): one blob store per test."""

    def settings_for(database_url: str | None = None) -> Settings:
        return on_blob_store(Settings.for_home(home, database_url), blob_bucket)

    return settings_for


@pytest.fixture
def make_api(api_settings: Callable[..., Settings]) -> Iterator[ApiFactory]:
    opened: list[TestClient] = []

    def make(
        database_url: str | None = None,
        *,
        handlers: dict[str, Any] | None = None,
        workers: int = 1,
        identify_on_add: bool = False,
        eval_workers: int = 1,
        **config: Any,
    ) -> Api:
        # The lookalike check on upload starts the evaluation workers (a face model each):
        # off unless a test is about it. One evaluation worker, not the server's two: each is
        # a process that imports the scorer and loads its models (~2.4 s of CPU) before the
        # first evaluation; the pool's fairness with several workers is tested on pools of
        # their own (tests/test_eval_budget.py) and on a real server.
        settings = dataclasses.replace(
            api_settings(database_url), identify_on_add=identify_on_add, eval_workers=eval_workers
        )
        executor = None
        if handlers is not None:
            executor = LocalExecutor(
                JobStore(Database(settings.database_url)), handlers, workers=workers
            )
        # Jobs in this test process (handlers and models the test made, warm between tests);
        # the worker process `castbook serve` starts by default is tested on real servers.
        config.setdefault("local_jobs", "thread")
        api_config = ApiConfig(events_poll_seconds=0.02, job_workers=workers, **config)
        app = create_app(settings, executor=executor, config=api_config)
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        return Api(client, app.state.services)

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def generating(home: Path, tiny_models: dict[str, Path]) -> Path:
    """The test's CASTBOOK_HOME with the tiny presets."""
    write_presets(home, tiny_models)
    return home


# ---- the CLI's generation tests (tests/test_cli_generate.py, test_cli_render_story.py) ----


@pytest.fixture(scope="session")
def cli_models(
    tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The tiny SD 1.5 and IP-Adapter of the API tests, and a tiny AnimateDiff set."""
    from tests.support.tiny_diffusers import make_tiny_animatediff

    root = tmp_path_factory.mktemp("cli-models")
    return {**tiny_models, "animatediff": make_tiny_animatediff(root / "animatediff")}


@pytest.fixture
def cli_home(
    castbook_home: Path, cli_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> Path:
    """CASTBOOK_HOME for the CLI's generate/render/story tests: presets ``tiny`` (with an
    IP-Adapter), ``tiny-plain`` and ``tiny-video`` (AnimateDiff), and Alice in the library."""
    from tests.support.cli import castbook
    from tests.support.drawings import ALICE, character, png_bytes
    from tests.support.tiny_diffusers import IP_ADAPTER_WEIGHT

    models = cli_models
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(castbook_home / "hf-empty"))
    castbook_home.mkdir(parents=True, exist_ok=True)
    ad = models["animatediff"]
    adapter = (
        'ip_adapter_subfolder = ""\n'
        f'ip_adapter_weight = "{IP_ADAPTER_WEIGHT}"\n'
        'image_encoder_folder = "image_encoder"\n'
    )
    (castbook_home / "presets.toml").write_text(
        f"""
[presets.tiny]
backend = "diffusers"
model = "{models["sd15"]}"
modes = ["t2i", "i2i"]
defaults = {{ width = 256, height = 256, steps = 2 }}
[presets.tiny.options]
family = "sd15"
ip_adapter = "{models["ip"]}"
{adapter}
[presets.tiny-plain]
backend = "diffusers"
model = "{models["sd15"]}"
defaults = {{ width = 256, height = 256, steps = 2 }}
options = {{ family = "sd15" }}

[presets.tiny-video]
backend = "diffusers"
model = "{ad / "model"}"
modes = ["i2v"]
defaults = {{ width = 256, height = 256, steps = 2, num_frames = 4 }}
[presets.tiny-video.options]
family = "animatediff"
motion_adapter = "{ad / "motion_adapter"}"
ip_adapter = "{ad / "ip_adapter"}"
{adapter}"""
    )
    alice = castbook_home.parent / "alice.png"
    alice.write_bytes(png_bytes(character(**ALICE)))
    code, _, err = castbook(
        "character", "add", "--name", "Alice", "--image", str(alice), "--style", "long black hair"
    )
    assert code == 0, err
    return castbook_home
