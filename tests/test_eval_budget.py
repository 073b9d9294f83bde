"""Evaluations under load: the frame × pixel budget, and owners sharing the evaluation workers.

The budget is checked from headers before anything is decoded (a GIF of many 4000² frames is
tiny in bytes and refused at once), and again while frames are decoded. Evaluations run in
worker processes behind a per-owner fair queue; the fairness tests hold one owner's request
in its worker with a gate file (tests/support/eval_jobs.py) and assert the order of the
pool's events, never durations.
"""

from __future__ import annotations

import dataclasses
import io
import struct
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from castbook.errors import InvalidInputError
from castbook.evaluation import Scorer
from castbook.evaluation.budget import BudgetExceededError, PixelBudget, check_budget, measure
from castbook.evaluation.pool import EvaluationPool, EvaluationWorkerLost, PoolClosedError
from castbook.evaluation.video import sample_frames
from tests.support import eval_jobs
from tests.support.api import ApiFactory, add_character
from tests.support.drawings import ALICE, BOB, character, png_bytes

DEADLINE_S = 180.0  # generous: spawning workers and loading the face model on a busy machine
MP = 1_000_000


# ---- test images --------------------------------------------------------------------------


def sparse_gif(frames: int, side: int) -> bytes:
    """A GIF whose canvas is ``side``² with ``frames`` one-pixel frames: a few bytes each, yet
    every frame is composed onto the whole canvas when decoded. The bytes are written by hand
    (Pillow would merge identical frames)."""
    out = bytearray(b"GIF89a")
    out += struct.pack("<HHBBB", side, side, 0x80, 0, 0)  # global table of 2 colours
    out += bytes((0, 0, 0, 255, 255, 255))
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for index in range(frames):
        out += b"\x21\xf9\x04\x00\x05\x00\x00\x00"  # 50 ms, no transparency
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        # LZW, minimum code size 2: clear, colour 0 or 1, end of information.
        out += b"\x02\x02" + (b"\x4c\x01" if index % 2 else b"\x44\x01") + b"\x00"
    return bytes(out + b"\x3b")


def flat_animation(fmt: str, frames: int, size: tuple[int, int]) -> bytes:
    pictures = [Image.new("RGB", size, (10 * i % 256, 100, 50)) for i in range(frames)]
    buffer = io.BytesIO()
    pictures[0].save(buffer, fmt, save_all=True, append_images=pictures[1:], duration=40)
    return buffer.getvalue()


def write_mp4(path: Path, frames: int, size: tuple[int, int]) -> Path:
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    writer = imageio_ffmpeg.write_frames(
        str(path), size, fps=10, macro_block_size=16, ffmpeg_log_level="error"
    )
    writer.send(None)
    for index in range(frames):
        writer.send(bytes([index * 8 % 256]) * (size[0] * size[1] * 3))
    writer.close()
    return path


# ---- the budget ---------------------------------------------------------------------------


def test_the_sparse_gif_is_what_it_claims() -> None:
    data = sparse_gif(40, 4000)
    assert len(data) < 1000
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (4000, 4000) and image.n_frames == 40


def test_costs_are_frames_times_pixels_read_from_headers(tmp_path: Path) -> None:
    still = png_bytes(Image.new("RGB", (1024, 768)))
    gif = flat_animation("GIF", 5, (64, 48))
    apng = flat_animation("PNG", 7, (50, 40))
    webp = flat_animation("WEBP", 3, (30, 20))
    mp4 = write_mp4(tmp_path / "clip.mp4", 12, (64, 48)).read_bytes()
    assert measure(still, "a") == measure(still, "a", probe_clips=False)
    assert [measure(d, "x").pixels for d in (still, gif, apng, webp, mp4)] == [
        1024 * 768, 5 * 64 * 48, 7 * 50 * 40, 3 * 30 * 20, 12 * 64 * 48
    ]  # fmt: skip
    assert measure(mp4, "x", probe_clips=False) is None  # counting it runs ffmpeg
    assert measure(b"not an image", "x") is None  # scoring reports it as that one's error


def test_a_normal_request_is_far_inside_the_default_budget() -> None:
    from castbook.settings import Settings

    default = Settings.for_home("/nowhere").eval_pixel_budget * MP
    stills = [png_bytes(Image.new("RGB", (1024, 1024), (i, 0, 0))) for i in range(4)]
    clip = flat_animation("GIF", 48, (512, 512))  # a short 512² clip
    costs = check_budget([*stills, clip], ["a", "b", "c", "d", "clip"], default)
    assert sum(cost.pixels for cost in costs if cost) < default / 10


def test_over_the_budget_the_message_names_limit_figure_and_remedy() -> None:
    gif = sparse_gif(40, 4000)
    with pytest.raises(BudgetExceededError) as raised:
        check_budget([png_bytes(Image.new("RGB", (10, 10))), gif], ["a.png", "b.gif"], 320 * MP)
    message = str(raised.value)
    assert raised.value.field == "image"
    assert "would decode 640.1 MP" in message  # 640 MP of frames and the 100-pixel still
    assert "b.gif has 40 frames of 4000×4000 (640 MP)" in message
    assert "the limit is 320 MP per evaluation request (CASTBOOK_EVAL_PIXEL_BUDGET)" in message
    assert "split the candidates over several requests" in message


def test_decoding_stops_when_the_budget_runs_out() -> None:
    clip = flat_animation("GIF", 20, (100, 100))
    budget = PixelBudget(10 * 100 * 100)
    with pytest.raises(BudgetExceededError, match=r"clip\.gif decodes more frames"):
        sample_frames(clip, label="clip.gif", budget=budget)
    assert budget.spent == 10 * 100 * 100  # the eleventh frame was never decoded
    assert len(sample_frames(clip, budget=PixelBudget(20 * 100 * 100))) == 16


def test_the_scorer_refuses_the_request_rather_than_one_candidate() -> None:
    scorer = Scorer(faces=False)
    references = [scorer.features(png_bytes(character(**ALICE)))]
    clip = flat_animation("GIF", 20, (100, 100))
    with pytest.raises(BudgetExceededError):
        scorer.score_one(references, clip, "clip.gif", budget=PixelBudget(5 * 100 * 100))
    unbounded = scorer.score_one(references, clip, "clip.gif")
    assert unbounded.ok and len(unbounded.frames) == 16


def test_the_budget_error_survives_the_trip_from_a_worker() -> None:
    import pickle

    error = BudgetExceededError("image", "too much")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is BudgetExceededError and copy.field == "image" and str(copy) == str(error)


# ---- over HTTP ----------------------------------------------------------------------------


def test_an_animation_huge_in_frames_is_refused_with_422_before_it_queues(
    make_api: ApiFactory,
) -> None:
    api = make_api()
    headers = api.key("alice")
    add_character(api, headers)
    response = api.client.post(
        "/v1/evaluations",
        data={"character": "Alice"},
        files=[("image", ("bomb.gif", sparse_gif(40, 4000), "image/gif"))],
        headers=headers,
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["type"] == "BudgetExceededError" and body["field"] == "image"
    assert "bomb.gif has 40 frames of 4000×4000 (640 MP)" in body["error"]
    assert "CASTBOOK_EVAL_PIXEL_BUDGET" in body["error"]
    assert api.services._evaluations is None  # refused from the header: no worker started


def test_an_mp4_over_the_budget_is_refused_by_the_worker(
    make_api: ApiFactory, tmp_path: Path
) -> None:
    api = make_api()
    api.services.settings = dataclasses.replace(api.services.settings, eval_pixel_budget=1)
    headers = api.key("alice")
    add_character(api, headers)
    clip = write_mp4(tmp_path / "long.mp4", 80, (128, 128)).read_bytes()  # 1.3 MP
    response = api.client.post(
        "/v1/evaluations",
        data={"character": "Alice"},
        files=[("image", ("long.mp4", clip, "video/mp4"))],
        headers=headers,
    )
    assert response.status_code == 422, response.text
    assert "long.mp4 has 80 frames of 128×128 (1.4 MP)" in response.json()["error"]
    assert "the limit is 1 MP" in response.json()["error"]


def test_scores_are_those_of_the_in_process_scorer(make_api: ApiFactory) -> None:
    from castbook.evaluation.faces import faces_available

    api = make_api()
    headers = api.key("alice")
    add_character(api, headers)
    candidates = [
        ("same.png", png_bytes(character(**ALICE, seed=4))),
        ("other.png", png_bytes(character(**BOB, seed=1))),
        ("clip.gif", flat_animation("GIF", 6, (96, 96))),
        ("broken.png", b"nope"),
    ]
    library = api.services.library("alice")
    alice = library.find("Alice")
    with Scorer(faces=faces_available()) as scorer:
        references = [scorer.features(library.image_bytes(image)) for image in alice.images]
        expected = scorer.score(
            references, [data for _, data in candidates], names=[n for n, _ in candidates],
            workers=1,
        )  # fmt: skip
    for attempt in ("references computed by a worker", "references stored by the first"):
        response = api.client.post(
            "/v1/evaluations",
            data={"character": "Alice"},
            files=[("image", (name, data, "image/png")) for name, data in candidates],
            headers=headers,
        )
        assert response.status_code == 200, (attempt, response.text)
        assert response.json()["scores"] == [score.to_json() for score in expected], attempt
        assert response.json()["most_consistent"] == "same.png"
    assert library.stored_features(alice.images[0], scorer.key) is not None


def test_one_owners_slow_evaluation_does_not_hold_anothers(
    make_api: ApiFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = tmp_path / "gate"
    monkeypatch.setenv("EVAL_TEST_GATE", str(gate))  # read by the spawned workers
    events = Events()
    api = make_api()
    api.services._evaluations = EvaluationPool(
        2, job=eval_jobs.held_evaluate, on_event=events.record
    )
    slow_owner, quick_owner = api.key("ann"), api.key("bob")
    add_character(api, slow_owner)
    add_character(api, quick_owner)
    answers: dict[str, Any] = {}

    def post(who: str, headers: dict[str, str], name: str) -> None:
        answers[who] = api.client.post(
            "/v1/evaluations",
            data={"character": "Alice"},
            files=[("image", (name, png_bytes(character(**ALICE, seed=2)), "image/png"))],
            headers=headers,
        )

    slow = threading.Thread(target=post, args=("ann", slow_owner, "hold-me.png"))
    slow.start()
    try:
        events.wait_for(("started", "ann"))
        post("bob", quick_owner, "quick.png")  # answered while ann's is still held
        assert answers["bob"].status_code == 200, answers["bob"].text
        assert answers["bob"].json()["scores"][0]["score"] is not None
        assert ("finished", "ann") not in events.seen()
    finally:
        gate.touch()
        slow.join(DEADLINE_S)
    assert answers["ann"].status_code == 200, answers["ann"].text
    # The pool reports a finish after handing the answer back: the report may come a moment
    # after the response.
    events.wait_for(("finished", "ann"))
    assert events.seen().index(("finished", "bob")) < events.seen().index(("finished", "ann"))


def test_models_that_cannot_load_are_named_in_every_answer(
    make_api: ApiFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CASTBOOK_EVAL_EMBEDDING_MODEL", str(tmp_path / "no-model"))
    api = make_api()
    headers = api.key("alice")
    add_character(api, headers)
    for _ in range(2):  # the workers are still there for the next request
        response = api.client.post(
            "/v1/evaluations",
            data={"character": "Alice"},
            files=[("image", ("a.png", png_bytes(character(**ALICE)), "image/png"))],
            headers=headers,
        )
        assert response.status_code == 422, response.text
        assert "CASTBOOK_EVAL_EMBEDDING_MODEL" in response.json()["error"]


# ---- the fair queue -----------------------------------------------------------------------


class Events:
    """What a pool reports, in order, and a way to wait for one of them."""

    def __init__(self) -> None:
        self._seen: list[tuple[str, str, int]] = []
        self._changed = threading.Condition()

    def record(self, kind: str, owner: str, ticket: int) -> None:
        with self._changed:
            self._seen.append((kind, owner, ticket))
            self._changed.notify_all()

    def seen(self) -> list[tuple[str, str]]:
        with self._changed:
            return [(kind, owner) for kind, owner, _ in self._seen]

    def tickets(self, kind: str) -> list[int]:
        with self._changed:
            return [ticket for seen, _, ticket in self._seen if seen == kind]

    def wait_for(self, event: tuple[str, str]) -> None:
        with self._changed:
            found = self._changed.wait_for(
                lambda: event in [(k, o) for k, o, _ in self._seen], DEADLINE_S
            )
        assert found, f"no {event} within {DEADLINE_S} s; saw {self.seen()}"


@pytest.fixture
def make_pool() -> Iterator[Callable[..., tuple[EvaluationPool, Events]]]:
    made: list[EvaluationPool] = []

    def make(workers: int, job: Callable[[Any], Any]) -> tuple[EvaluationPool, Events]:
        events = Events()
        pool = EvaluationPool(workers, job=job, initializer=None, on_event=events.record)
        made.append(pool)
        return pool, events

    yield make
    for pool in made:
        pool.close()


def result(future: Future[Any]) -> Any:
    return future.result(timeout=DEADLINE_S)


def test_one_worker_serves_waiting_owners_in_turn(make_pool: Any, tmp_path: Path) -> None:
    pool, events = make_pool(1, eval_jobs.gated)
    gate = str(tmp_path / "gate")
    first = pool.submit("ann", (gate, "a1"))
    events.wait_for(("started", "ann"))
    later = [
        pool.submit(owner, (gate, value))
        for owner, value in (("ann", "a2"), ("ann", "a3"), ("bob", "b1"), ("cat", "c1"))
    ]
    assert pool.waiting() == 4
    Path(gate).touch()
    assert [result(f) for f in (first, *later)] == ["a1", "a2", "a3", "b1", "c1"]
    # ann had her turn, so bob and cat go before her second and third.
    started = [owner for kind, owner in events.seen() if kind == "started"]
    assert started == ["ann", "bob", "cat", "ann", "ann"]


def test_a_held_request_takes_one_worker_and_only_its_owners_turn(
    make_pool: Any, tmp_path: Path
) -> None:
    pool, events = make_pool(2, eval_jobs.gated)
    gate = str(tmp_path / "gate")
    held = pool.submit("ann", (gate, "slow"))
    events.wait_for(("started", "ann"))
    anns_next = pool.submit("ann", (str(tmp_path / "open"), "a2"))
    (tmp_path / "open").touch()
    assert result(pool.submit("bob", (str(tmp_path / "open"), "b1"))) == "b1"
    # bob was answered while ann's first is still held, and ann's second waits for it.
    assert not held.done() and not anns_next.running() and not anns_next.done()
    assert events.seen().count(("started", "ann")) == 1
    Path(gate).touch()
    assert (result(held), result(anns_next)) == ("slow", "a2")


def test_a_dead_worker_fails_its_request_and_the_pool_goes_on(make_pool: Any) -> None:
    pool, _ = make_pool(1, eval_jobs.die)
    with pytest.raises(EvaluationWorkerLost, match="stopped unexpectedly"):
        result(pool.submit("ann", None))
    pool._job = eval_jobs.echo  # the next request gets a fresh worker
    assert result(pool.submit("bob", "fine")) == "fine"


def test_a_request_given_up_before_it_starts_is_dropped(make_pool: Any, tmp_path: Path) -> None:
    pool, events = make_pool(1, eval_jobs.gated)
    gate = str(tmp_path / "gate")
    first = pool.submit("ann", (gate, "a1"))
    events.wait_for(("started", "ann"))
    abandoned = pool.submit("bob", (gate, "b1"))
    assert abandoned.cancel()
    kept = pool.submit("cat", (gate, "c1"))
    Path(gate).touch()
    assert (result(first), result(kept)) == ("a1", "c1")
    assert [owner for kind, owner in events.seen() if kind == "started"] == ["ann", "cat"]


def test_closing_refuses_what_still_waits(make_pool: Any, tmp_path: Path) -> None:
    pool, events = make_pool(1, eval_jobs.gated)
    gate = tmp_path / "gate"
    running = pool.submit("ann", (str(gate), "a1"))
    events.wait_for(("started", "ann"))
    waiting = pool.submit("bob", (str(gate), "b1"))
    closer = threading.Thread(target=pool.close)
    closer.start()
    with pytest.raises(PoolClosedError):
        result(waiting)
    gate.touch()  # the running one finishes; close waits for it
    closer.join(DEADLINE_S)
    assert result(running) == "a1"
    with pytest.raises(PoolClosedError):
        pool.submit("cat", None)


def test_a_field_error_in_a_worker_reaches_the_caller_readably() -> None:
    from castbook.evaluation.pool import EvaluationRequest, ReferenceInput, evaluate

    request = EvaluationRequest(
        candidates=(png_bytes(character(**ALICE)),),
        names=("a.png",),
        references=(ReferenceInput("ref", data=b"not an image"),),
        pixel_budget=320 * MP,
    )
    with pytest.raises(InvalidInputError, match="ref"):
        evaluate(request)  # in this process: the code a worker runs


# ---- a real server ------------------------------------------------------------------------


def test_a_real_server_scores_in_its_worker_processes_and_stops_them(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import httpx
    import psutil

    from tests.support.server import start_server, stop

    env = {**os.environ, "CASTBOOK_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    for name in ("CASTBOOK_DATABASE_URL", "CASTBOOK_BLOB_DIR", "CASTBOOK_EXECUTOR"):
        env.pop(name, None)
    created = subprocess.run(
        [sys.executable, "-m", "castbook", "keys", "create", "--name", "t", "--plain"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    server = start_server(env, tmp_path / "server.log")
    try:
        headers = {"Authorization": f"Bearer {created.stdout.strip()}"}
        with httpx.Client(base_url=server.base, headers=headers, timeout=DEADLINE_S) as http:
            made = http.post("/v1/characters", json={"name": "Alice"})
            http.post(
                f"/v1/characters/{made.json()['id']}/images",
                files=[("image", ("a.png", png_bytes(character(**ALICE)), "image/png"))],
            ).raise_for_status()
            scored = http.post(
                "/v1/evaluations",
                data={"character": "Alice"},
                files=[("image", ("b.png", png_bytes(character(**ALICE, seed=1)), "image/png"))],
            )
            assert scored.status_code == 200, scored.text
            assert scored.json()["scores"][0]["score"] is not None
        workers = [
            child
            for child in psutil.Process(server.process.pid).children(recursive=True)
            if "spawn_main" in " ".join(child.cmdline())
        ]
        # CASTBOOK_EVAL_WORKERS (default 2) evaluation workers, and the server's job worker.
        assert len(workers) == 3, workers
    finally:
        stop(server)
    assert "Application shutdown complete" in server.output(), server.output()
    assert "Traceback" not in server.output(), server.output()
    _, alive = psutil.wait_procs(workers, timeout=DEADLINE_S)
    assert not alive, f"evaluation workers left running: {alive}"
