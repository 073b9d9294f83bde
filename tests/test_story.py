"""Story Mode: story files, panels with characters injected, storyboards, re-rendering."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from castbook.errors import FieldError, ImportFormatError, InvalidInputError
from castbook.render.story import load_story

STORY = """
title: Morning at the cafe
characters: [Alice, Bob]
defaults: {seed: 100}
scenes:
  - prompt: Alice orders a coffee
    characters: [Alice]
    shot: close-up
  - prompt: Bob waves from the door
    characters: [Bob]
  - prompt: they share a table
    characters: [Alice, Bob]
    shot: wide
    seed: 7
  - prompt: the empty cafe at dusk
"""


def write(tmp_path: Path, text: str, name: str = "story.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_story_file_is_read_and_validated(tmp_path: Path) -> None:
    story = load_story(write(tmp_path, STORY))
    assert story.title == "Morning at the cafe" and len(story.scenes) == 4
    assert story.scenes[2].seed == 7 and story.scenes[0].shot == "close-up"
    as_json = write(tmp_path, json.dumps(story.model_dump()), "story.json")
    assert load_story(as_json) == story


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (STORY.replace("characters: [Bob]", "characters: [Carol]"), FieldError, "'Carol'"),
        (STORY.replace("defaults: {seed: 100}", "defaults: {steps: 99}"), FieldError, "steps"),
        (STORY.replace("defaults: {seed: 100}", "defaults: {prompt: x}"), FieldError, "prompt"),
        ("title: x\ncharacters: [A]\nscenes: []\n", FieldError, "scenes"),
        ("title: x\ncharacters: [A]\nscenes:\n  - {prompt: ''}\n", FieldError, r"scenes\[0\]"),
        (
            "title: x\ncharacters: [A]\nscenes:\n  - {prompt: a, colour: red}\n",
            FieldError,
            "colour",
        ),
        ("title: [unclosed\n", ImportFormatError, "not valid"),
        ("- just\n- a list\n", ImportFormatError, "mapping"),
    ],
)
def test_bad_story_files_name_the_problem(
    tmp_path: Path, text: str, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        load_story(write(tmp_path, text))


def test_a_missing_story_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not found"):
        load_story(tmp_path / "nope.yaml")


def test_rendering_a_two_character_story(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from castbook.evaluation import Scorer
    from castbook.render.story import render_story
    from tests.support.story_setup import tiny_setup

    library, preset, backend = tiny_setup(tmp_path)
    story = load_story(write(tmp_path, STORY))
    out = tmp_path / "board"
    events = []
    result = render_story(
        story, out, library=library, preset=preset, backend=backend,
        scorer=Scorer(faces=False), continuity=True,
        progress=lambda done, total, message: events.append(message),
    )  # fmt: skip
    assert result.rendered == (1, 2, 3, 4)
    assert sorted(p.name for p in (out / "panels").iterdir()) == [
        f"scene-0{i}.png" for i in range(1, 5)
    ]
    panels = result.board.panels
    assert set(panels[0].scores) == {"Alice"} and set(panels[1].scores) == {"Bob"}
    assert set(panels[2].scores) == {"Alice", "Bob"} and panels[3].scores == {}
    assert panels[2].seed == 7 and panels[1].seed == 101
    html = result.files["html"].read_text()
    for caption in ("[close-up] Alice orders a coffee", "Bob waves from the door", "[wide]"):
        assert caption in html
    assert html.count("data:image/") >= 4
    assert f"{panels[0].scores['Alice']:.0f}" in html
    assert result.files["pdf"].read_bytes().startswith(b"%PDF")
    assert result.files["png"].stat().st_size > 0 and result.files["drift"].stat().st_size > 0
    assert events[-1] == "storyboard"

    # Re-rendering one scene leaves the others untouched and rebuilds the storyboard.
    before = {p.name: p.read_bytes() for p in (out / "panels").iterdir()}
    again = render_story(
        story, out, library=library, preset=preset, backend=backend,
        scorer=Scorer(faces=False), scenes=[2],
    )  # fmt: skip
    assert again.rendered == (2,)
    after = {p.name: p.read_bytes() for p in (out / "panels").iterdir()}
    assert {n for n in before if before[n] == after[n]} >= {"scene-01.png", "scene-03.png",
                                                             "scene-04.png"}  # fmt: skip
    with pytest.raises(FieldError, match="no scene 9"):
        render_story(story, out, library=library, preset=preset, backend=backend,
                     scorer=Scorer(faces=False), scenes=[9])  # fmt: skip
