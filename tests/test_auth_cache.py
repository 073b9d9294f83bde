"""Cheap authentication: verified keys are remembered briefly, revocation still bites within a
second (from this process at once, from another process or server within the cache's life),
and the hot paths' queries use indexes (their query plans, SQLite's and PostgreSQL's, scan no
table)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from castbook.api import ApiKeys
from castbook.api.auth import KEY_CACHE_SECONDS
from castbook.db import Database
from castbook.jobs import JobOutput
from tests.support.api import Api, ApiFactory

REVOCATION_PROMISE = 1.0  # seconds: docs/deployment.md promises it


def bearer(plain: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plain}"}


@pytest.fixture
def statements() -> Iterator[Callable[[Database], list[tuple[str, Any]]]]:
    """Records the SQL (and its parameters) a database's engine runs from now on."""
    watched: list[tuple[Any, Any]] = []

    def watch(database: Database) -> list[tuple[str, Any]]:
        seen: list[tuple[str, Any]] = []

        def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            seen.append((statement, params))

        event.listen(database.engine, "before_cursor_execute", record)
        watched.append((database.engine, record))
        return seen

    yield watch
    for engine, record in watched:
        event.remove(engine, "before_cursor_execute", record)


def key_queries(seen: list[tuple[str, Any]]) -> int:
    return sum(1 for statement, _ in seen if "FROM api_keys" in statement)


def test_a_busy_key_costs_a_query_per_cache_life_not_per_request(
    make_api: ApiFactory, statements: Callable[[Database], list[tuple[str, Any]]]
) -> None:
    api = make_api()
    _, plain = api.services.keys.create("busy", "ann")
    seen = statements(api.services.database)
    started = time.monotonic()
    for _ in range(40):
        assert api.client.get("/v1/tasks", headers=bearer(plain)).status_code == 200
    elapsed = time.monotonic() - started
    # One query per cache life at most (and one more for the first request).
    assert key_queries(seen) <= elapsed / KEY_CACHE_SECONDS + 2, (key_queries(seen), elapsed)
    assert key_queries(seen) < 40


def test_revoking_in_this_process_takes_effect_at_once(make_api: ApiFactory) -> None:
    api = make_api()
    key, plain = api.services.keys.create("laptop", "ann")
    assert api.client.get("/v1/tasks", headers=bearer(plain)).status_code == 200
    api.services.keys.revoke(key.id)
    refused = api.client.get("/v1/tasks", headers=bearer(plain))
    assert refused.status_code == 401 and "revoked" in refused.json()["error"]


def refused_within_a_second(api: Api, plain: str, revoke: Callable[[], None]) -> None:
    """Revoke, then ask until 401: every request that started more than a second after the
    revocation returned must have been refused, so an accepted one that started later fails.

    When the refusal came is not asserted: on busy cores the last accepted request (started
    in time) can take seconds to answer, and the next one then starts late (a loaded run
    saw 2.8 s on PostgreSQL, though no request after the first second was accepted)."""
    assert api.client.get("/v1/tasks", headers=bearer(plain)).status_code == 200  # cached now
    revoke()
    revoked = time.monotonic()
    while True:
        asked = time.monotonic()
        answer = api.client.get("/v1/tasks", headers=bearer(plain))
        if answer.status_code == 401:
            assert "revoked" in answer.json()["error"]
            return
        assert answer.status_code == 200
        assert asked - revoked <= REVOCATION_PROMISE, "still accepted a second after revoking"
        time.sleep(0.01)


def test_a_key_revoked_through_another_keys_instance_is_refused_within_a_second(
    make_api: ApiFactory, database_url: str
) -> None:
    api = make_api(database_url)
    key, plain = api.services.keys.create("laptop", "ann")
    other = ApiKeys(Database(database_url))  # another server on the same database
    try:
        refused_within_a_second(api, plain, lambda: other.revoke(key.id))
    finally:
        other.database.dispose()


def test_a_key_revoked_by_the_cli_in_another_process_is_refused_within_a_second(
    make_api: ApiFactory, home: Path
) -> None:
    api = make_api()
    key, plain = api.services.keys.create("laptop", "ann")
    src = Path(__file__).resolve().parents[1] / "src"
    environment = {**os.environ, "CASTBOOK_HOME": str(home), "PYTHONPATH": str(src)}

    def revoke() -> None:
        done = subprocess.run(
            [sys.executable, "-m", "castbook", "keys", "revoke", key.id],
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr

    refused_within_a_second(api, plain, revoke)


# ---- the hot paths use indexes ---------------------------------------------------------------


def plans(database: Database, seen: list[tuple[str, Any]]) -> dict[str, list[str]]:
    """The query plan of each statement run, keyed by the statement. PostgreSQL is told to
    avoid sequential scans, so a table with few rows still shows whether an index serves."""
    found: dict[str, list[str]] = {}
    postgres = database.dialect == "postgresql"
    with database.engine.connect() as connection:
        if postgres:
            connection.exec_driver_sql("SET enable_seqscan = off")
        for statement, params in seen:
            if not statement.lstrip().upper().startswith(("SELECT", "UPDATE")):
                continue
            explain = "EXPLAIN" if postgres else "EXPLAIN QUERY PLAN"
            rows = connection.exec_driver_sql(f"{explain} {statement}", params)
            found[" ".join(statement.split())] = [str(row[-1]).strip() for row in rows]
    return found


def scans(plan: list[str]) -> bool:
    """A full table scan: SQLite's ``SCAN t`` (not of an index), PostgreSQL's ``Seq Scan``."""
    return any(line.startswith("SCAN ") or "Seq Scan" in line for line in plan)


def test_the_hot_paths_scan_no_table(
    make_api: ApiFactory,
    database_url: str,
    statements: Callable[[Database], list[tuple[str, Any]]],
) -> None:
    api = make_api(database_url)
    services = api.services
    _, plain = services.keys.create("poller", "ann", max_queued=100)
    for n in range(30):  # some rows, so a missing index would have something to scan
        job = services.jobs.create(kind="generation", input={}, owner=f"owner{n % 3}")
        blob, _ = services.blobs.put(f"result {n}".encode())
        services.jobs.start(job.id, "w")
        output = JobOutput(sha256=blob, kind="image", media_type="image/png", width=1, height=1)
        services.jobs.succeed(job.id, [output], {})
    mine = services.jobs.create(kind="generation", input={}, owner="ann")
    services.jobs.start(mine.id, "w")
    blob, _ = services.blobs.put(b"my result")
    output = JobOutput(sha256=blob, kind="image", media_type="image/png", width=1, height=1)
    services.jobs.succeed(mine.id, [output], {})

    seen = statements(services.database)
    headers = bearer(plain)
    assert api.client.get(f"/v1/tasks/{mine.id}", headers=headers).status_code == 200
    assert api.client.get("/v1/tasks", headers=headers).status_code == 200
    assert api.client.get("/v1/tasks?status=queued", headers=headers).status_code == 200
    events = api.client.get(f"/v1/tasks/{mine.id}/events", headers=headers)
    assert "event: done" in events.text
    assert api.client.get(f"/v1/results/{blob}", headers=headers).status_code == 200
    # The queued-task count (the route answers 422: the body is empty).
    assert api.client.post("/v1/generations", json={}, headers=headers).status_code == 422
    found = plans(services.database, seen)
    assert any("FROM api_keys" in s for s in found), "authentication was not seen"
    assert any("count(*)" in s.lower() for s in found), "the queued-task count was not seen"
    assert any("FROM job_outputs" in s for s in found), "loading outputs was not seen"
    scanned = {statement: plan for statement, plan in found.items() if scans(plan)}
    assert not scanned, scanned
