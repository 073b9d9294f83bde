"""Faults castbook survives: real `castbook serve`, `castbook worker`, redis-server and
PostgreSQL processes, SIGKILLed at chosen moments (tests/support/chaos.py has the scenarios).

Each scenario runs once here; ``benchmarks/chaos.py`` runs them many times in a row. Every
run asserts that each accepted task ended ``succeeded`` (or ``failed`` with a reason)
exactly once, that nothing is lost or stuck, and that the blob store holds no file nothing
names.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chaos import SCENARIOS, Lab, run_scenario
from tests.support.postgres import PostgresServer
from tests.support.redis_server import find_redis_server, redis_required

# Scenarios whose faults lose Redis messages of queued tasks.
LOSES_MESSAGES = (
    "redis killed mid-job, restarted empty",
    "server killed between insert and publish",
)


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models: dict[str, Path],
    postgres: PostgresServer,
) -> Iterator[Lab]:
    pytest.importorskip("celery")
    if find_redis_server() is None:
        if redis_required():
            pytest.fail("CI needs redis-server for the fault suite")
        pytest.skip("redis-server is not installed")
    yield Lab(tmp_path_factory.mktemp("chaos"), tiny_models["sd15"], postgres)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_task_is_lost_or_run_twice(lab: Lab, scenario: str) -> None:
    outcome, logs = run_scenario(lab, scenario)
    summary = f"{outcome}\n{logs}"
    assert outcome.kills >= 1, summary
    assert outcome.accepted >= 1, summary
    assert outcome.lost == 0, summary
    assert outcome.duplicated == 0, summary
    assert outcome.endings_logged >= 1, f"the processes logged no ending to count\n{summary}"
    assert outcome.accepted == outcome.succeeded + outcome.failed, summary
    assert outcome.orphan_blobs == 0, summary
    if scenario in LOSES_MESSAGES:  # the outbox, not luck, brought those tasks home
        assert outcome.resent >= 1, summary
