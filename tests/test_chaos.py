"""Faults castbook survives: real `castbook serve`, `castbook worker`, redis-server and
PostgreSQL processes, SIGKILLed at chosen moments (tests/support/chaos.py has the scenarios).

Each scenario runs once here; ``benchmarks/chaos.py`` runs them many times in a row. Every
run asserts that each accepted task ended ``succeeded`` (or ``failed`` with a reason)
exactly once, that nothing is lost or stuck, and that the blob store holds no file nothing
names.

The workers generate on a ComfyUI server outside the runs (the fake one, with paced steps):
no process of a run imports torch, which the scenarios would otherwise pay ~8 s of CPU for
in every worker and server they start. One scenario also runs on the tiny random-weight
SD 1.5 through diffusers, so a worker killed while it denoises stays covered.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.chaos import SCENARIOS, Generator, Lab, run_scenario
from tests.support.fake_comfyui_server import FakeComfyUI
from tests.support.postgres import PostgresServer
from tests.support.redis_server import find_redis_server, redis_required

# Scenarios whose faults lose Redis messages of queued tasks.
LOSES_MESSAGES = (
    "redis killed mid-job, restarted empty",
    "server killed between insert and publish",
)
# What the real model still runs: a Celery worker SIGKILLed in the middle of denoising.
ON_TINY_SD15 = "worker killed mid-job"


@pytest.fixture(scope="module")
def needs_redis() -> None:
    pytest.importorskip("celery")
    if find_redis_server() is None:
        if redis_required():
            pytest.fail("CI needs redis-server for the fault suite")
        pytest.skip("redis-server is not installed")


@pytest.fixture(scope="module")
def comfyui_lab(
    needs_redis: None, tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer
) -> Iterator[Lab]:
    # 0.2 s a step: the 30-step task runs for 6 s, long enough to be caught mid-job and on
    # its last step on a loaded machine.
    with FakeComfyUI(step_seconds=0.2) as comfy:
        generator = Generator.comfyui(comfy.url)
        yield Lab(tmp_path_factory.mktemp("chaos-comfyui"), generator, postgres)


@pytest.fixture(scope="module")
def sd15_lab(
    needs_redis: None,
    tmp_path_factory: pytest.TempPathFactory,
    tiny_models: dict[str, Path],
    postgres: PostgresServer,
) -> Lab:
    generator = Generator.tiny_sd15(tiny_models["sd15"])
    return Lab(tmp_path_factory.mktemp("chaos-sd15"), generator, postgres)


def check(lab: Lab, scenario: str) -> None:
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
    if lab.generator.name == "comfyui":  # serve and worker import torch only to run it
        assert outcome.torch_processes == 0, summary
    else:  # the check sees torch where it is loaded
        assert outcome.torch_processes >= 1, summary


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_no_task_is_lost_or_run_twice(comfyui_lab: Lab, scenario: str) -> None:
    check(comfyui_lab, scenario)


def test_no_task_is_lost_when_a_worker_dies_denoising(sd15_lab: Lab) -> None:
    check(sd15_lab, ON_TINY_SD15)
