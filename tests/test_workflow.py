"""Workflow graphs: parsing, validation (every problem names its node) and order."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from pydantic import Field

from castbook.workflow import (
    CheckContext,
    GraphError,
    check_graph,
    node_catalog,
    parse_graph,
    register,
    topological_order,
)
from castbook.workflow.nodes import NODE_TYPES, Node, Port, PortType, accepts

ROOT = Path(__file__).resolve().parents[1]


def graph(**nodes: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": nodes}


VALID = graph(
    out={"type": "output", "inputs": {"value": ["eval", "scores"]}},
    eval={"type": "consistency_eval", "inputs": {"images": ["gen", "images"],
                                                 "character": ["alice", "character"]}},
    gen={"type": "text_to_image", "inputs": {"prompt": "at a cafe", "preset": "tiny",
                                             "characters": [["alice", "character"]], "batch": 2}},
    alice={"type": "character", "inputs": {"character": "Alice"}},
)  # fmt: skip


def problems(data: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(GraphError) as caught:
        parse_graph(data)
    return [p.to_json() for p in caught.value.problems]


def test_a_valid_graph_parses_in_dependency_order() -> None:
    parsed = parse_graph(VALID)
    assert parsed.order == ["alice", "gen", "eval", "out"]
    assert parsed.nodes["gen"].node.batch == 2  # type: ignore[attr-defined]
    assert parsed.source == VALID


def test_every_node_type_has_a_type_id_version_and_typed_outputs() -> None:
    for kind, node_class in NODE_TYPES.items():
        assert node_class.model_fields["type"].annotation.__args__ == (kind,)  # type: ignore[union-attr]
        assert node_class.version
    assert accepts(PortType.IMAGE, PortType.CHARACTER)  # a character's reference image
    assert accepts(PortType.IMAGES, PortType.IMAGE)
    assert not accepts(PortType.CHARACTER, PortType.IMAGE)
    assert not accepts(PortType.IMAGE, PortType.VIDEO)


@pytest.mark.parametrize(
    ("change", "node", "field", "message"),
    [
        ({"gen": {"type": "text_to_imagez", "inputs": {}}}, "gen", "type", "unknown node type"),
        ({"alice": {"type": "character", "inputs": {"character": "A", "colour": 1}}},
         "alice", "colour", "unknown input"),
        ({"alice": {"type": "character", "inputs": {}}}, "alice", "character", "is required"),
        ({"eval": {"type": "consistency_eval", "inputs": {"images": ["gen", "images"]}}},
         "eval", "character", "is required"),
        ({"gen": {"type": "text_to_image", "inputs": {"prompt": "x", "steps": 99}}},
         "gen", "steps", "between 1 and 50"),
        ({"gen": {"type": "text_to_image", "inputs": {"prompt": "x", "batch": 9}}},
         "gen", "batch", "between 1 and 8"),
        ({"out": {"type": "output", "inputs": {"value": ["nobody", "images"]}}},
         "out", "value", "no such node"),
        ({"out": {"type": "output", "inputs": {"value": ["gen", "video"]}}},
         "out", "value", "has no output 'video'"),
        ({"eval": {"type": "consistency_eval", "inputs": {"images": ["gen", "images"],
                                                          "character": ["gen", "images"]}}},
         "eval", "character", "takes character or image, but gen.images is images"),
        ({"gen": {"type": "text_to_image", "inputs": {"prompt": "x", "seed": ["alice", "image"]}}},
         "gen", "seed", "not a link"),
    ],
)  # fmt: skip
def test_each_problem_names_its_node(
    change: dict[str, Any], node: str, field: str, message: str
) -> None:
    found = problems({"nodes": {**VALID["nodes"], **change}})
    assert any(
        p["node"] == node and p["field"] == field and message in p["message"] for p in found
    ), found


def test_an_image_port_takes_a_character_but_not_a_video() -> None:
    ok = graph(
        alice={"type": "character", "inputs": {"character": "Alice"}},
        i2i={"type": "image_to_image", "inputs": {"image": ["alice", "character"]}},
        i2v={"type": "image_to_video", "inputs": {"image": ["i2i", "images"]}},
    )
    found = problems(ok)
    assert found == [
        {"node": "i2v", "field": "image", "message": "takes character or image, but "
         "i2i.images is images"}
    ]  # fmt: skip


def test_an_eval_takes_an_image_as_reference_and_image_to_video_takes_characters() -> None:
    data = graph(
        photo={"type": "image", "inputs": {"image": "a" * 64}},
        alice={"type": "character", "inputs": {"character": "Alice"}},
        batch={"type": "batch_render", "inputs": {"characters": [["alice", "character"]],
                                                  "prompts": ["waving"]}},
        eval={"type": "consistency_eval", "inputs": {"images": ["batch", "images"],
                                                     "character": ["photo", "image"]}},
        clip={"type": "image_to_video", "inputs": {"image": ["eval", "best"],
                                                   "characters": [["alice", "character"], "Bob"]}},
    )  # fmt: skip
    parsed = parse_graph(data)
    assert parsed.order == ["photo", "alice", "batch", "eval", "clip"]
    assert NODE_TYPES["consistency_eval"].version == NODE_TYPES["image_to_video"].version == "1.1"
    # A video's characters send their words only, not reference images to find room for.
    assert NODE_TYPES["image_to_video"].character_images is False
    assert NODE_TYPES["text_to_image"].character_images is True
    ports = {p["name"]: p for p in _catalog_inputs("image_to_video") if p["kind"] == "port"}
    assert ports["characters"]["type"] == "character" and ports["characters"]["names"]
    reference = {p["name"]: p for p in _catalog_inputs("consistency_eval")}["character"]
    assert reference["type"] == "image"  # which takes an image or a character


def _catalog_inputs(kind: str) -> list[dict[str, Any]]:
    return next(n for n in node_catalog()["nodes"] if n["type"] == kind)["inputs"]


def test_all_problems_are_reported_at_once() -> None:
    found = problems(
        graph(
            a={"type": "nope"},
            b={"type": "text_to_image", "inputs": {"width": 10, "steps": 0}},
            c={"type": "output", "inputs": {}},
        )
    )
    assert {(p["node"], p["field"]) for p in found} == {
        ("a", "type"),
        ("b", "width"),
        ("b", "steps"),
        ("c", "value"),
    }


def test_a_cycle_is_named() -> None:
    found = problems(
        graph(
            a={"type": "image_to_image", "inputs": {"image": ["b", "images"]}},
            b={"type": "image_to_image", "inputs": {"image": ["a", "images"]}},
        )
    )
    # images into an image port is also a mismatch; the cycle is reported besides.
    cycle = [p for p in found if "cycle" in p["message"]]
    assert len(cycle) == 1 and cycle[0]["node"] in ("a", "b")
    assert "a" in cycle[0]["message"] and "b" in cycle[0]["message"]


def test_a_cycle_through_well_typed_ports() -> None:
    found = problems(
        graph(
            e1={"type": "consistency_eval", "inputs": {"images": ["e2", "best"],
                                                       "character": ["c", "character"]}},
            e2={"type": "consistency_eval", "inputs": {"images": ["e1", "best"],
                                                       "character": ["c", "character"]}},
            c={"type": "character", "inputs": {"character": "Alice"}},
        )
    )  # fmt: skip
    assert len(found) == 1 and "is in a cycle" in found[0]["message"]


def test_malformed_graphs() -> None:
    for data in (None, [], {}, {"nodes": {}}, {"nodes": []}):
        assert problems(data)[0]["field"] == "nodes"  # type: ignore[arg-type]


def test_topological_order() -> None:
    assert topological_order({"c": ["b"], "b": ["a"], "a": []}) == ["a", "b", "c"]
    assert topological_order({"x": [], "y": []}) == ["x", "y"]
    assert topological_order({"a": ["b"], "b": ["a"]}) is None


def test_two_prompts_are_a_value_not_a_link() -> None:
    # ["waving", "reading"] has the shape of a link [node, output]; for a list field it is
    # the list itself, also when a node happens to be called "waving".
    data = graph(
        waving={"type": "character", "inputs": {"character": "Alice"}},
        batch={"type": "batch_render", "inputs": {"characters": [["waving", "character"]],
                                                  "prompts": ["waving", "reading"]}},
    )  # fmt: skip
    parsed = parse_graph(data)
    assert parsed.nodes["batch"].node.prompts == ["waving", "reading"]  # type: ignore[attr-defined]
    # A plain value given a link is still refused, naming the input.
    data["nodes"]["batch"]["inputs"]["preset"] = ["waving", "character"]
    assert problems(data) == [
        {"node": "batch", "field": "preset", "message": "takes a value, not a link: it has no port"}
    ]


@pytest.fixture
def registry() -> Iterator[dict[str, type[Node]]]:
    """NODE_TYPES as it was, again after the test."""
    before = dict(NODE_TYPES)
    yield NODE_TYPES
    NODE_TYPES.clear()
    NODE_TYPES.update(before)


class _NoData:
    """A GraphChecker for graphs whose nodes ask about images only."""

    library: Any = None
    presets: Any = None

    def owns_image(self, sha256: str) -> bool:
        return sha256.startswith("a")


def test_a_node_type_is_one_registered_class(registry: dict[str, type[Node]]) -> None:
    @register
    class Stamp(Node):
        """Repeats an image."""

        type: Literal["stamp"]
        times: int = Field(default=2, ge=1, le=4)
        ports: ClassVar[dict[str, Port]] = {"image": Port(PortType.IMAGE)}
        outputs: ClassVar[dict[str, PortType]] = {"images": PortType.IMAGES}

        def check(self, context: CheckContext) -> None:
            if self.times == 3:
                context.problem("times", "three is unlucky")
            super().check(context)

    assert registry["stamp"] is Stamp and list(registry)[-1] == "stamp"
    with pytest.raises(ValueError, match="registered already"):
        register(Stamp)
    data = graph(
        img={"type": "image", "inputs": {"image": "b" * 64}},
        stamp={"type": "stamp", "inputs": {"image": ["img", "image"], "times": 3}},
        out={"type": "output", "inputs": {"value": ["stamp", "images"]}},
    )
    assert parse_graph(data).order == ["img", "stamp", "out"]
    # Its own check runs beside the other nodes' (the image node's is the owner's images).
    with pytest.raises(GraphError) as caught:
        check_graph(data, _NoData())
    assert [p.to_json() for p in caught.value.problems] == [
        {"node": "img", "field": "image", "message": "no stored image bbbbbbbbbbbb"},
        {"node": "stamp", "field": "times", "message": "three is unlucky"},
    ]
    data["nodes"]["img"]["inputs"]["image"] = "a" * 64
    data["nodes"]["stamp"]["inputs"]["times"] = 4
    assert check_graph(data, _NoData()).order == ["img", "stamp", "out"]
    # Its fields and ports are the wiring rules and the catalogue's form.
    data["nodes"]["stamp"]["inputs"]["times"] = 5
    assert {(p["node"], p["field"]) for p in problems(data)} == {("stamp", "times")}
    (described,) = [n for n in node_catalog()["nodes"] if n["type"] == "stamp"]
    assert described == {
        "type": "stamp", "version": "1.0", "title": "Stamp", "description": "Repeats an image.",
        "mode": None,
        "inputs": [
            {"name": "times", "kind": "value", "type": "integer", "required": False,
             "nullable": False, "default": 2, "minimum": 1, "maximum": 4},
            {"name": "image", "kind": "port", "type": "image", "required": True, "many": False,
             "names": False},
        ],
        "outputs": [{"name": "images", "type": "images"}],
    }  # fmt: skip


def _docs_example() -> str:
    """The node type docs/workflows.md shows under "Adding a node type"."""
    text = (ROOT / "docs" / "workflows.md").read_text("utf-8")
    section = text.split("## Adding a node type", 1)[1].split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


_PROBE = """
import json, sys, types
import castbook
from castbook.workflow import GraphError, NodeContext, check_graph, node_catalog, parse_graph

assert castbook.__file__.startswith(sys.argv[1]), castbook.__file__


class Checker:
    library = presets = None

    def owns_image(self, sha256):
        return True


data = {"nodes": {
    "img": {"type": "image", "inputs": {"image": "a" * 64}},
    "stamp": {"type": "stamp", "inputs": {"image": ["img", "image"], "times": 3}},
    "out": {"type": "output", "inputs": {"value": ["stamp", "images"]}}}}
try:
    check_graph(data, Checker())
except GraphError as exc:
    problems = [p.to_json() for p in exc.problems]
data["nodes"]["stamp"]["inputs"]["times"] = 2
parsed = check_graph(data, Checker()).nodes["stamp"]
run = types.SimpleNamespace(value=lambda link: "a" * 64)  # what the image node gave
outputs = parsed.node.invoke(NodeContext(run, parsed))
print(json.dumps({"catalog": node_catalog()["nodes"], "problems": problems, "outputs": outputs}))
"""


def test_the_documented_node_type_is_one_new_file(tmp_path: Path) -> None:
    """docs/workflows.md's example, saved as a new module of the nodes package of a copy of
    castbook, is described, checked and invoked with no other file changed."""
    copy = tmp_path / "castbook"
    shutil.copytree(ROOT / "src" / "castbook", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "workflow" / "nodes" / "stamp.py").write_text(_docs_example(), "utf-8")
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    # The built-in types keep their order (the web palette's); the new one comes last.
    assert [n["type"] for n in seen["catalog"]] == [*NODE_TYPES, "stamp"]
    assert seen["catalog"][:-1] == node_catalog()["nodes"]
    stamp = seen["catalog"][-1]
    assert (stamp["title"], stamp["description"]) == ("Stamp", "Repeats an image.")
    assert [(i["name"], i["kind"]) for i in stamp["inputs"]] == [
        ("times", "value"),
        ("image", "port"),
    ]
    assert seen["problems"] == [{"node": "stamp", "field": "times", "message": "three is unlucky"}]
    assert seen["outputs"] == {"images": ["a" * 64, "a" * 64]}
