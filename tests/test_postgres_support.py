"""Tests of tests/support/postgres.py: a real, throwaway PostgreSQL server (no mocks)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import (
    PostgresServer,
    PostgresUnavailable,
    find_postgres_bin,
    postgres_required,
    start_postgres,
)

pytestmark = pytest.mark.postgres

if postgres_required():
    import psycopg  # CI must have it: an ImportError here is a failure, not a skip
else:
    psycopg = pytest.importorskip("psycopg")


def _start_or_skip(base_dir: Path) -> PostgresServer:
    try:
        return start_postgres(base_dir)
    except PostgresUnavailable as exc:
        if postgres_required():
            pytest.fail(f"PostgreSQL is required when CI=true but could not start: {exc}")
        pytest.skip(f"PostgreSQL unavailable: {exc}")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    srv = _start_or_skip(tmp_path_factory.mktemp("pg"))
    try:
        yield srv
    finally:
        srv.stop()


def test_find_postgres_bin_points_at_server_binaries() -> None:
    bin_dir = find_postgres_bin()
    if bin_dir is None:
        if postgres_required():
            pytest.fail("CI=true but no PostgreSQL server binaries were found")
        pytest.skip("PostgreSQL server binaries not installed")
    for name in ("initdb", "pg_ctl", "postgres"):
        assert os.access(bin_dir / name, os.X_OK), name


def test_url_is_a_local_sqlalchemy_psycopg_url(server: PostgresServer) -> None:
    assert server.url == f"postgresql+psycopg://castbook@127.0.0.1:{server.port}/castbook_test"
    sqlalchemy = pytest.importorskip("sqlalchemy")
    engine = sqlalchemy.create_engine(server.url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("SELECT current_database()")).scalar() == (
                "castbook_test"
            )
    finally:
        engine.dispose()


def test_connect_and_create_table(server: PostgresServer) -> None:
    with psycopg.connect(_libpq(server.url)) as conn:
        conn.execute("CREATE TABLE characters (id serial PRIMARY KEY, name text NOT NULL)")
        conn.execute("INSERT INTO characters (name) VALUES (%s), (%s)", ("Ada", "Brom"))
        conn.commit()
    with psycopg.connect(_libpq(server.url)) as conn:
        rows = conn.execute("SELECT name FROM characters ORDER BY id").fetchall()
        version = conn.execute("SHOW server_version_num").fetchone()[0]
        fsync = conn.execute("SHOW fsync").fetchone()[0]
    assert rows == [("Ada",), ("Brom",)]
    assert int(version) >= 130000
    assert fsync == "off"


def test_create_database_is_isolated_and_fresh(server: PostgresServer) -> None:
    url = server.create_database("isolated_one")
    assert url == f"postgresql+psycopg://castbook@127.0.0.1:{server.port}/isolated_one"
    with psycopg.connect(_libpq(url)) as conn:
        conn.execute("CREATE TABLE only_here (x int)")
        conn.execute("INSERT INTO only_here VALUES (1)")
        conn.commit()
    with psycopg.connect(_libpq(server.url)) as conn:
        assert conn.execute("SELECT to_regclass('only_here')").fetchone()[0] is None

    # Asking again gives a fresh, empty database of the same name.
    assert server.create_database("isolated_one") == url
    with psycopg.connect(_libpq(url)) as conn:
        assert conn.execute("SELECT to_regclass('only_here')").fetchone()[0] is None


@pytest.mark.parametrize("name", ["", "1abc", "a-b", 'x"; DROP DATABASE postgres; --', "a" * 64])
def test_create_database_rejects_bad_names(server: PostgresServer, name: str) -> None:
    with pytest.raises(ValueError):
        server.create_database(name)


def test_stop_really_stops_and_cleans_up(tmp_path: Path) -> None:
    srv = _start_or_skip(tmp_path)
    assert srv.is_running()
    assert _accepts_connections(srv.port)
    data_dir = srv.data_dir
    assert (data_dir / "PG_VERSION").exists()

    srv.stop()

    assert not _accepts_connections(srv.port)
    assert not srv.is_running()
    assert not data_dir.exists()
    srv.stop()  # idempotent
    with pytest.raises(RuntimeError):
        srv.create_database("after_stop")
