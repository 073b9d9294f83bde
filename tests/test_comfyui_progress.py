"""ComfyUI progress over its websocket, against the fake server speaking the real protocol."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from castbook.errors import BackendError, GenerationCancelled
from castbook.generation import comfyui_backend
from castbook.generation.base import PreparedRequest, Progress
from castbook.generation.comfyui_backend import ComfyUIBackend
from castbook.generation.comfyui_progress import parse, websocket_url
from castbook.generation.presets import BUILTIN_PRESETS
from castbook.generation.request import GenerationRequest
from tests.support.backend_contract import BackendContract
from tests.support.fake_comfyui_server import FakeComfyUI

POLLING = "polling /history for completion instead"
COMFYUI_PRESET = next(p for p in BUILTIN_PRESETS if p.id == "comfyui")


def make_prepared(
    *, prompt: str = "a red-haired knight", seed: int = 7, **fields: Any
) -> PreparedRequest:
    request = GenerationRequest(prompt=prompt, negative_prompt="blurry", seed=seed, **fields)
    return PreparedRequest(request=request, prompt=prompt, negative_prompt="blurry", seed=seed)


@pytest.fixture
def comfy() -> Iterator[FakeComfyUI]:
    with FakeComfyUI() as server:
        yield server


@pytest.fixture
def make_backend(comfy: FakeComfyUI) -> Callable[..., ComfyUIBackend]:
    def make(**kwargs: Any) -> ComfyUIBackend:
        kwargs = {"server": comfy.url, "poll_interval": 0.02, "timeout": 60.0, **kwargs}
        return ComfyUIBackend(COMFYUI_PRESET, **kwargs)

    return make


@pytest.fixture
def backend(make_backend: Callable[..., ComfyUIBackend]) -> ComfyUIBackend:
    return make_backend()


def sent(comfy: FakeComfyUI, kind: str) -> list[dict[str, Any]]:
    return [m["data"] for m in comfy.ws_sent if m["type"] == kind]


def polled_history(comfy: FakeComfyUI) -> bool:
    return any(path.startswith("/history/") for path in comfy.paths("GET"))


def test_every_sampler_step_reaches_the_callback_in_order_with_its_node(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    events: list[Progress] = []
    result = backend.generate(make_prepared(steps=6), events.append)
    assert len(result.images) == 1

    steps = [e for e in events if ": step " in e.message]
    assert [(e.step, e.total) for e in steps] == [(i, 6) for i in range(1, 7)]
    assert {e.message.split(":")[0] for e in steps} == {"KSampler (node 9)"}
    # What the fake sent is what arrived, and progress comes before the download.
    assert len(sent(comfy, "progress")) == 6
    messages = [e.message for e in events]
    assert messages.index("running KSampler (node 9)") < messages.index(steps[0].message)
    assert messages[-1].startswith("downloading")
    assert [e.step for e in events] == sorted(e.step for e in events)


def test_paced_steps_come_one_at_a_time_and_history_waits_for_the_last() -> None:
    """The fault lab's server (``step_seconds``): a prompt runs for its steps' time, so a
    worker can be caught mid-job; ``/history`` has nothing until the last step is done."""
    with FakeComfyUI(pending_polls=0, step_seconds=0.2) as comfy:
        backend = ComfyUIBackend(COMFYUI_PRESET, server=comfy.url, poll_interval=0.02)
        steps: list[int] = []
        history_at_step_1: list[dict[str, Any]] = []

        def progress(event: Progress) -> None:
            if ": step " not in event.message:
                return
            steps.append(event.step)
            if event.step == 1:  # 0.2 s into a 1.2 s run: the server still has nothing
                prompt_id = comfy.prompt_ids[-1]
                history_at_step_1.append(httpx.get(f"{comfy.url}/history/{prompt_id}").json())

        began = time.monotonic()
        result = backend.generate(make_prepared(steps=6), progress)
        took = time.monotonic() - began
    assert len(result.images) == 1
    assert steps == [1, 2, 3, 4, 5, 6]
    assert history_at_step_1 == [{}]
    assert took >= 6 * 0.2  # each step's pace is a floor: sleeps never end early


def test_the_websocket_and_the_prompt_share_one_client_id_per_call(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    backend.generate(make_prepared(steps=2), lambda _: None)
    backend.generate(make_prepared(steps=2), lambda _: None)
    sockets = [r.query["clientId"] for r in comfy.requests if r.path == "/ws"]
    prompts = [r.json["client_id"] for r in comfy.requests if r.path == "/prompt"]
    assert sockets == prompts
    assert len(set(sockets)) == 2  # concurrent calls must not steal each other's socket


def test_an_execution_error_on_the_websocket_names_the_node_and_the_message(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    comfy.execution_error = "Allocation on device 0 would exceed allowed memory."
    with pytest.raises(BackendError) as caught:
        backend.generate(make_prepared(), lambda _: None)
    assert str(caught.value) == (
        "comfyui: the workflow failed in node 9 (KSampler): torch.OutOfMemoryError: "
        "Allocation on device 0 would exceed allowed memory."
    )
    assert sent(comfy, "execution_error")
    assert not polled_history(comfy)  # the websocket told it; no /history read was needed


def test_a_refused_websocket_falls_back_to_polling_and_says_so_once(
    backend: ComfyUIBackend, comfy: FakeComfyUI, caplog: pytest.LogCaptureFixture
) -> None:
    comfy.websocket_refused = True
    events: list[Progress] = []
    with caplog.at_level(logging.DEBUG, logger="castbook.generation"):
        first = backend.generate(make_prepared(seed=3), events.append)
        again = backend.generate(make_prepared(seed=3), lambda _: None)
    assert len(first.images) == len(again.images) == 1
    assert polled_history(comfy)
    assert not comfy.ws_sent
    assert not [e for e in events if ": step " in e.message]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "refused the websocket" in warnings[0].getMessage()
    assert POLLING in warnings[0].getMessage()


def test_a_websocket_that_closes_early_falls_back_to_polling(
    backend: ComfyUIBackend, comfy: FakeComfyUI, caplog: pytest.LogCaptureFixture
) -> None:
    comfy.websocket_closes_after = 5  # status, start, cached, two nodes: then gone
    events: list[Progress] = []
    with caplog.at_level(logging.WARNING, logger="castbook.generation"):
        result = backend.generate(make_prepared(steps=4), events.append)
    assert len(result.images) == 1
    assert polled_history(comfy)
    assert not [e for e in events if ": step " in e.message]
    (warning,) = caplog.records
    assert "closed before the prompt finished" in warning.getMessage()


def test_a_websocket_that_never_says_status_is_not_trusted_with_the_prompt(
    make_backend: Callable[..., ComfyUIBackend],
    comfy: FakeComfyUI,
    caplog: pytest.LogCaptureFixture,
) -> None:
    comfy.websocket_greets = False  # not filed under our id yet: queueing now could lose it
    with caplog.at_level(logging.WARNING, logger="castbook.generation"):
        result = make_backend(timeout=1.0).generate(make_prepared(), lambda _: None)
    assert len(result.images) == 1
    assert polled_history(comfy)
    (warning,) = caplog.records
    assert "sent no status within 1 s" in warning.getMessage()


def test_without_the_websockets_package_it_polls_and_names_the_extra(
    backend: ComfyUIBackend,
    comfy: FakeComfyUI,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "websockets.sync.client", None)  # import fails
    with caplog.at_level(logging.WARNING, logger="castbook.generation"):
        result = backend.generate(make_prepared(), lambda _: None)
    assert len(result.images) == 1
    assert "/ws" not in comfy.paths()
    (warning,) = caplog.records
    assert "pip install 'castbook[comfyui]'" in warning.getMessage()


def test_a_silent_websocket_still_finds_the_finished_prompt_in_history(
    make_backend: Callable[..., ComfyUIBackend],
    comfy: FakeComfyUI,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(comfyui_backend, "QUIET_CHECK_S", 0.2)
    comfy.websocket_mute = True  # connected, greeted, then never a word about the prompt
    result = make_backend(timeout=120.0).generate(make_prepared(), lambda _: None)
    assert len(result.images) == 1
    assert polled_history(comfy)


def test_cancelling_at_a_step_interrupts_the_running_prompt(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    comfy.never_finish = True
    seen: list[Progress] = []

    def cancel_at_the_first_step(event: Progress) -> None:
        seen.append(event)
        if ": step 1/" in event.message:
            raise GenerationCancelled("cancelled by the user")

    with pytest.raises(GenerationCancelled, match="cancelled by the user"):
        backend.generate(make_prepared(steps=5), cancel_at_the_first_step)
    (prompt_id,) = comfy.prompt_ids
    assert seen[-1].message == "KSampler (node 9): step 1/5"
    assert {"prompt_id": prompt_id} in [r.json for r in comfy.requests if r.path == "/interrupt"]
    assert {"delete": [prompt_id]} in [r.json for r in comfy.requests if r.path == "/queue"]


def test_an_interrupt_pressed_in_comfyui_ends_the_wait_as_a_cancellation(
    backend: ComfyUIBackend, comfy: FakeComfyUI
) -> None:
    comfy.never_finish = True

    def press_interrupt_at_the_first_step(event: Progress) -> None:
        if ": step 1/" in event.message:
            import httpx

            httpx.post(f"{comfy.url}/interrupt")

    with pytest.raises(GenerationCancelled, match=r"interrupted on the ComfyUI server \(node 9\)"):
        backend.generate(make_prepared(steps=5), press_interrupt_at_the_first_step)
    assert sent(comfy, "execution_interrupted")
    # Only the user's own interrupt: the prompt had ended, castbook sends none of its own.
    assert [r.json for r in comfy.requests if r.path == "/interrupt"] == [None]


def test_messages_about_another_prompt_are_not_ours() -> None:
    message = parse('{"type": "executing", "data": {"node": null, "prompt_id": "other"}}')
    assert message is not None and not message.about("mine")
    old_progress = parse('{"type": "progress", "data": {"value": 1, "max": 4}}')
    assert old_progress is not None and old_progress.about("mine")
    assert parse("not json") is None
    assert parse('["status"]') is None


def test_the_websocket_url_follows_the_server_url() -> None:
    assert websocket_url("http://127.0.0.1:8188", "ab") == "ws://127.0.0.1:8188/ws?clientId=ab"
    assert websocket_url("https://gpu.example/comfy/", "ab") == (
        "wss://gpu.example/comfy/ws?clientId=ab"
    )


class TestPollingContract(BackendContract):
    """The contract still holds where the websocket is refused (polling /history)."""

    reports_steps = False

    @pytest.fixture
    def backend(self, comfy: FakeComfyUI) -> ComfyUIBackend:
        comfy.websocket_refused = True
        return ComfyUIBackend(COMFYUI_PRESET, server=comfy.url, poll_interval=0.01, timeout=60)

    @pytest.fixture
    def prepare(self) -> Callable[..., Any]:
        return make_prepared
