"""Story Mode: a story file of scenes, each rendered as a panel with its characters injected.

Story file (YAML or JSON)::

    title: Morning at the cafe
    characters: [Alice, Bob]          # library names; every scene's characters come from here
    preset: sd15-ip-adapter           # optional
    defaults: {steps: 25, seed: 100}  # optional request fields for every scene
    scenes:
      - prompt: Alice orders a coffee
        characters: [Alice]
        shot: close-up                # optional shot notes, put in front of the prompt
        seed: 7                       # optional; else defaults.seed + scene number - 1
      - prompt: Bob waves from the door
        characters: [Bob, Alice]

Rendering writes ``panels/scene-NN.png``, ``story.json`` (what each panel was made from and
its scores) and the storyboard files. Re-rendering some scenes (``scenes=[7]``) keeps the
other panels and rebuilds the storyboard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from castbook.errors import FieldError, ImportFormatError, InvalidInputError
from castbook.evaluation import Scorer
from castbook.generation import (
    Backend,
    Preset,
    parse_request,
    prepare_request,
    resolve_request,
    within,
)
from castbook.generation.outputs import encode_png
from castbook.library import CharacterLibrary
from castbook.render.batch import render_gated, score_characters
from castbook.render.references import character_reference_features
from castbook.render.storyboard import Panel, Storyboard, write_storyboard

__all__ = ["Scene", "Story", "StoryRender", "load_story", "render_story"]

STATE_FILE = "story.json"


class Scene(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=2000)
    characters: list[str] = Field(default_factory=list)
    shot: str = Field(default="", max_length=200)
    seed: int | None = Field(default=None, **within("seed"))
    negative_prompt: str = Field(default="", max_length=2000)


class Story(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=200)
    characters: list[str] = Field(min_length=1)
    preset: str | None = None
    defaults: dict[str, Any] = Field(default_factory=dict)
    scenes: list[Scene] = Field(min_length=1, max_length=200)

    @field_validator("defaults")
    @classmethod
    def _defaults_are_request_fields(cls, values: dict[str, Any]) -> dict[str, Any]:
        forbidden = {"prompt", "characters", "references", "init_image", "batch", "mode"}
        bad = sorted(set(values) & forbidden)
        if bad:
            raise ValueError(f"cannot set {', '.join(bad)} for every scene")
        parse_request(values)  # ranges and names, with the field named
        return values

    @model_validator(mode="after")
    def _scene_characters_are_in_the_story(self) -> Story:
        known = {name.casefold() for name in self.characters}
        for number, scene in enumerate(self.scenes, start=1):
            for name in scene.characters:
                if name.casefold() not in known:
                    raise ValueError(
                        f"scene {number} names {name!r}, which is not in the story's characters"
                    )
        return self


def load_story(path: str | os.PathLike[str]) -> Story:
    """Read and validate a story file; every problem names where it is."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInputError(f"story file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from None
    try:
        if path.suffix.lower() == ".json":
            document = json.loads(text)
        else:
            import yaml

            document = yaml.safe_load(text)
    except Exception as exc:  # yaml/json syntax errors carry line and column
        raise ImportFormatError(f"{path} is not valid {path.suffix[1:] or 'YAML'}: {exc}") from None
    if not isinstance(document, dict):
        raise ImportFormatError(f"{path}: a story is a mapping with title, characters and scenes")
    try:
        return Story.model_validate(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = _location(error["loc"])
        raise FieldError(f"{path.name}: {where}", error["msg"]) from None
    except FieldError as exc:
        raise FieldError(f"{path.name}: defaults.{exc.field}", str(exc)) from None


def _location(loc: Sequence[Any]) -> str:
    parts: list[str] = []
    for part in loc:
        if isinstance(part, int):
            parts[-1] = f"{parts[-1]}[{part}]" if parts else f"[{part}]"
        else:
            parts.append(str(part))
    return ".".join(parts) or "story"


@dataclass(frozen=True)
class StoryRender:
    folder: Path
    board: Storyboard
    files: dict[str, Path]
    rendered: tuple[int, ...]  # scene numbers rendered this time


def render_story(
    story: Story,
    folder: str | os.PathLike[str],
    *,
    library: CharacterLibrary,
    preset: Preset,
    backend: Backend,
    scorer: Scorer,
    scenes: Sequence[int] | None = None,
    continuity: bool = False,
    min_score: float | None = None,
    max_attempts: int = 1,
    progress: Callable[[int, int, str], None] | None = None,
) -> StoryRender:
    folder = Path(folder)
    (folder / "panels").mkdir(parents=True, exist_ok=True)
    state = _read_state(folder)
    wanted = _scene_numbers(story, scenes, state)
    characters = {c.name.casefold(): c for c in (library.get(n) for n in story.characters)}
    references = {
        c.name: character_reference_features(library, scorer, c) for c in characters.values()
    }
    report = progress or (lambda done, total, message: None)
    base_seed = story.defaults.get("seed")
    rendered: dict[int, Image.Image] = {}
    for done, number in enumerate(wanted):
        report(done, len(wanted), f"scene {number}")
        scene = story.scenes[number - 1]
        cast = [characters[n.casefold()] for n in scene.characters]
        values = {
            **story.defaults,
            "prompt": f"{scene.shot}, {scene.prompt}" if scene.shot else scene.prompt,
            "characters": [c.name for c in cast],
            "batch": 1,
        }
        if scene.negative_prompt:
            values["negative_prompt"] = scene.negative_prompt
        if scene.seed is not None:
            values["seed"] = scene.seed
        elif base_seed is not None:
            values["seed"] = base_seed + number - 1
        prepared = prepare_request(resolve_request(values, preset), preset, library=library)
        if continuity and number > 1:
            previous = rendered.get(number - 1) or _panel_image(folder, number - 1)
            if previous is not None and len(prepared.references) < backend.max_references:
                prepared = replace(prepared, references=(*prepared.references, previous))
        gated = render_gated(
            backend,
            prepared,
            lambda image, cast=cast: (
                score_characters(scorer, references, cast, image) if cast else {}
            ),
            min_score=min_score if cast else None,
            max_attempts=max_attempts,
        )
        parameters = {
            "prompt": prepared.prompt,
            "negative_prompt": prepared.negative_prompt,
            "scene": number,
            "characters": [c.name for c in cast],
            "seed": gated.seed,
            "scores": gated.scores,
            "attempts": gated.attempts,
            "steps": prepared.request.steps,
            "guidance": prepared.request.guidance,
            "width": gated.image.width,
            "height": gated.image.height,
        }
        (folder / "panels" / _panel_name(number)).write_bytes(encode_png(gated.image, parameters))
        state[str(number)] = {
            "caption": _caption(scene),
            "seed": gated.seed,
            "scores": {k: round(v, 2) for k, v in gated.scores.items()},
            "attempts": gated.attempts,
            "prompt": prepared.prompt,
            "negative_prompt": prepared.negative_prompt,
        }
        rendered[number] = gated.image
        _write_state(folder, story, state)
    report(len(wanted), len(wanted), "storyboard")
    board = _board(story, folder, state)
    files = write_storyboard(board, folder)
    return StoryRender(folder, board, files, tuple(wanted))


def _scene_numbers(story: Story, scenes: Sequence[int] | None, state: dict[str, Any]) -> list[int]:
    count = len(story.scenes)
    if scenes is None:
        return list(range(1, count + 1))
    for number in scenes:
        if not 1 <= number <= count:
            raise FieldError("scene", f"there is no scene {number}; the story has {count}")
    missing = [n for n in range(1, count + 1) if str(n) not in state and n not in scenes]
    if missing:
        raise FieldError(
            "scene",
            f"scenes {', '.join(map(str, missing))} have not been rendered yet; "
            "render the whole story first",
        )
    return sorted(set(scenes))


def _caption(scene: Scene) -> str:
    return f"[{scene.shot}] {scene.prompt}" if scene.shot else scene.prompt


def _panel_name(number: int) -> str:
    return f"scene-{number:02d}.png"


def _panel_image(folder: Path, number: int) -> Image.Image | None:
    path = folder / "panels" / _panel_name(number)
    if not path.is_file():
        return None
    with Image.open(path) as image:
        return image.convert("RGB")


def _board(story: Story, folder: Path, state: dict[str, Any]) -> Storyboard:
    panels = []
    for number in range(1, len(story.scenes) + 1):
        entry = state[str(number)]
        data = (folder / "panels" / _panel_name(number)).read_bytes()
        panels.append(
            Panel(
                number=number,
                caption=entry["caption"],
                image=data,
                scores=entry["scores"],
                seed=entry["seed"],
                attempts=entry["attempts"],
            )
        )
    return Storyboard(title=story.title, characters=tuple(story.characters), panels=tuple(panels))


def _read_state(folder: Path) -> dict[str, Any]:
    path = folder / STATE_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8")).get("panels", {})


def _write_state(folder: Path, story: Story, state: dict[str, Any]) -> None:
    document = {"title": story.title, "panels": state}
    tmp = folder / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    tmp.replace(folder / STATE_FILE)
