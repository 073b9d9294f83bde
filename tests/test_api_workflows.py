"""``/v1/workflows``: saved per owner, validated before anything is written, and run for
real on the tiny SD 1.5 model through the app's own ``workflow`` job handler."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from PIL import Image
from pydantic import Field

from castbook.workflow import (
    NODE_TYPES,
    CheckContext,
    Node,
    NodeContext,
    Port,
    PortType,
    register,
)
from tests.support.api import ApiFactory, add_character

# The API fixtures of test_api, shared by name.

GRAPH: dict[str, Any] = {
    "nodes": {
        "alice": {"type": "character", "inputs": {"character": "Alice"}},
        "gen": {
            "type": "text_to_image",
            "inputs": {"prompt": "at a cafe", "preset": "tiny", "batch": 2, "seed": 5,
                       "characters": [["alice", "character"]]},
        },
        "eval": {"type": "consistency_eval",
                 "inputs": {"images": ["gen", "images"], "character": ["alice", "character"]}},
        "out": {"type": "output", "inputs": {"value": ["eval", "best"]}},
    }
}  # fmt: skip


def test_save_list_get_delete_per_owner(make_api: ApiFactory, generating: Path) -> None:
    api = make_api()
    alice, bob = api.key("alice"), api.key("bob")
    add_character(api, alice)
    saved = api.client.post("/v1/workflows", json={"name": "cafe", "graph": GRAPH}, headers=alice)
    assert saved.status_code == 201, saved.text
    workflow = saved.json()
    assert workflow["name"] == "cafe" and workflow["graph"] == GRAPH
    assert workflow["valid"] is True and workflow["problems"] == []
    again = api.client.post("/v1/workflows", json={"name": "cafe", "graph": GRAPH}, headers=alice)
    assert again.status_code == 409, again.text

    listed = api.client.get("/v1/workflows", headers=alice).json()
    assert [(w["id"], w["name"]) for w in listed] == [(workflow["id"], "cafe")]
    got = api.client.get(f"/v1/workflows/{workflow['id']}", headers=alice)
    assert got.status_code == 200 and got.json()["graph"] == GRAPH

    # Bob sees none of it, and cannot delete or run it.
    assert api.client.get("/v1/workflows", headers=bob).json() == []
    for method, path in (
        ("GET", f"/v1/workflows/{workflow['id']}"),
        ("DELETE", f"/v1/workflows/{workflow['id']}"),
        ("POST", f"/v1/workflows/{workflow['id']}/run"),
    ):
        assert api.client.request(method, path, headers=bob).status_code == 404, path
    # Bob has no character "Alice": the same graph saves as his draft, says it would not
    # run, and running it is refused naming the node.
    draft = api.client.post("/v1/workflows", json={"name": "cafe", "graph": GRAPH}, headers=bob)
    assert draft.status_code == 201, draft.text
    assert draft.json()["valid"] is False
    assert draft.json()["problems"][0]["node"] == "alice"
    refused = api.client.post(f"/v1/workflows/{draft.json()['id']}/run", headers=bob)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["node"] == "alice"
    api.client.delete(f"/v1/workflows/{draft.json()['id']}", headers=bob)

    deleted = api.client.delete(f"/v1/workflows/{workflow['id']}", headers=alice)
    assert deleted.status_code == 204
    assert api.client.get(f"/v1/workflows/{workflow['id']}", headers=alice).status_code == 404
    assert api.client.get("/v1/workflows", headers=alice).json() == []
    assert api.job_count() == 0


def test_validate_reports_every_problem_naming_the_node(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    alice = api.key("alice")
    add_character(api, alice)
    ok = api.client.post("/v1/workflows/validate", json={"graph": GRAPH}, headers=alice)
    assert ok.status_code == 200, ok.text
    assert ok.json() == {"valid": True, "order": ["alice", "gen", "eval", "out"]}

    broken = {"nodes": {**GRAPH["nodes"],
                        "gen": {"type": "text_to_image",
                                "inputs": {"prompt": "x", "steps": 99, "preset": "nope"}},
                        "eval": {"type": "consistency_eval",
                                 "inputs": {"images": ["gen", "images"],
                                            "character": ["gen", "images"]}},
                        "ghost": {"type": "teleport"}}}  # fmt: skip
    blobs = api.blobs()
    for path in ("/v1/workflows/validate", "/v1/workflows/run"):
        response = api.client.post(path, json={"graph": broken}, headers=alice)
        assert response.status_code == 422, response.text
        body = response.json()
        assert body["type"] == "WorkflowError"
        found = {(e["node"], e["field"]) for e in body["errors"]}
        assert found == {("gen", "steps"), ("eval", "character"), ("ghost", "type")}, body
        assert "between 1 and 50" in body["error"] or len(body["errors"]) == 3
    # A well-formed graph naming an unknown preset or character is refused too.
    unknown = {"nodes": {**GRAPH["nodes"], "gen": {"type": "text_to_image",
               "inputs": {"prompt": "x", "preset": "nope", "characters": ["Zed"]}}}}  # fmt: skip
    response = api.client.post("/v1/workflows/run", json={"graph": unknown}, headers=alice)
    assert response.status_code == 422
    assert {(e["node"], e["field"]) for e in response.json()["errors"]} == {
        ("gen", "preset"),
        ("gen", "characters.0"),
    }
    # Characters go to the model as reference images: a preset without room for them is
    # refused before anything runs.
    plain = {"nodes": {**GRAPH["nodes"], "gen": {"type": "text_to_image",
             "inputs": {"prompt": "x", "preset": "tiny-plain",
                        "characters": [["alice", "character"]]}}}}  # fmt: skip
    response = api.client.post("/v1/workflows/validate", json={"graph": plain}, headers=alice)
    assert response.status_code == 422
    (problem,) = response.json()["errors"]
    assert (problem["node"], problem["field"]) == ("gen", "characters")
    assert "takes at most 0 reference image(s)" in problem["message"]
    assert api.job_count() == 0 and api.blobs() == blobs
    assert api.client.get("/v1/workflows", headers=alice).json() == []


def test_a_draft_saves_unfinished_and_is_checked_on_run(
    make_api: ApiFactory, generating: Path
) -> None:
    """Save checks only the JSON shape: a workflow with unknown types, values out of range
    and missing wires is kept as it is (layout, collapsed nodes) and names what a run would
    refuse; running it is refused with the same problems; a wrong shape is never stored."""
    api = make_api()
    alice = api.key("alice")
    add_character(api, alice)
    draft = {
        "nodes": {
            "gen": {"type": "text_to_image", "inputs": {"steps": 99}},
            "eval": {"type": "consistency_eval", "inputs": {}},
            "ghost": {"type": "teleport"},
        },
        "layout": {"gen": {"x": 10, "y": 20, "collapsed": True}, "eval": {"x": 300, "y": 20}},
    }
    saved = api.client.post("/v1/workflows", json={"name": "wip", "graph": draft}, headers=alice)
    assert saved.status_code == 201, saved.text
    body = saved.json()
    assert body["graph"] == draft and body["valid"] is False
    named = {(p["node"], p["field"]) for p in body["problems"]}
    assert {("gen", "steps"), ("eval", "images"), ("ghost", "type")} <= named, named
    stored = api.client.get(f"/v1/workflows/{body['id']}", headers=alice).json()
    assert stored["graph"] == draft
    run = api.client.post(f"/v1/workflows/{body['id']}/run", headers=alice)
    assert run.status_code == 422
    assert {(e["node"], e["field"]) for e in run.json()["errors"]} == named
    assert api.job_count() == 0

    for bad, where in (
        ({"nodes": {}}, (None, "nodes")),
        ({"nodes": {"a": {"inputs": {}}}}, ("a", "type")),
        ({"nodes": {"a": {"type": "output", "inputs": []}}}, ("a", "inputs")),
        ({"nodes": {"a": {"type": "output", "colour": 1}}}, ("a", "colour")),
        ({"nodes": {"a": {"type": "output"}}, "layout": {"a": {"x": 1}}}, ("a", "layout")),
        ({"nodes": {"a": {"type": "output"}}, "layout": {"a": {"x": 1, "y": 2, "collapsed": "y"}}},
         ("a", "layout")),
        ({"nodes": {"a": {"type": "output"}}, "extra": 1}, (None, "extra")),
    ):  # fmt: skip
        refused = api.client.post(
            "/v1/workflows", json={"name": "bad", "graph": bad}, headers=alice
        )
        assert refused.status_code == 422, (bad, refused.text)
        assert (refused.json()["errors"][0]["node"], refused.json()["errors"][0]["field"]) == where
    assert [w["name"] for w in api.client.get("/v1/workflows", headers=alice).json()] == ["wip"]


def test_a_saved_workflow_runs_with_per_node_results_and_scores(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    alice = api.key("alice")
    add_character(api, alice)
    workflow = api.client.post(
        "/v1/workflows", json={"name": "cafe", "graph": GRAPH}, headers=alice
    ).json()
    submitted = api.client.post(f"/v1/workflows/{workflow['id']}/run", headers=alice)
    assert submitted.status_code == 202, submitted.text
    task = submitted.json()
    assert task["kind"] == "workflow"
    assert submitted.headers["location"].endswith(f"/v1/tasks/{task['id']}")

    done = api.wait(task["id"], alice)
    assert done["status"] == "succeeded", done["error"]
    assert done["progress"] == {"step": 4, "total": 4, "message": "done"}
    result = done["result"]
    assert result["order"] == ["alice", "gen", "eval", "out"]
    assert result["workflow"] == workflow["id"]
    nodes = result["nodes"]
    assert all(n["status"] == "succeeded" for n in nodes.values())
    assert nodes["alice"]["outputs"]["character"]["name"] == "Alice"
    images = nodes["gen"]["outputs"]["images"]
    assert len(images) == 2 and len(set(images)) == 2
    assert [o["id"] for o in done["outputs"]] == images
    assert [o["seed"] for o in done["outputs"]] == [5, 6]
    scores = nodes["eval"]["scores"]
    assert [s["image"] for s in scores] == images
    for s in scores:
        assert 0 <= s["score"] <= 100 and s["character"] == "Alice"
    best = max(scores, key=lambda s: s["score"])
    assert sum(s["best"] for s in scores) == 1 and best["best"]
    assert nodes["eval"]["outputs"]["best"] == best["image"]
    assert result["outputs"] == {"out": best["image"]}
    for sha in images:
        url = next(o["url"] for o in done["outputs"] if o["id"] == sha)
        picture = api.client.get(url, headers=alice)
        assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    # Another owner cannot see the task.
    assert api.client.get(f"/v1/tasks/{task['id']}", headers=api.key("bob")).status_code == 404


def test_node_types_describe_every_node_with_the_api_ranges(make_api: ApiFactory) -> None:
    api = make_api()
    alice = api.key("alice")
    response = api.client.get("/v1/workflows/node-types", headers=alice)
    assert response.status_code == 200, response.text
    catalog = response.json()
    from castbook.workflow import NODE_TYPES

    nodes = {n["type"]: n for n in catalog["nodes"]}
    assert list(nodes) == list(NODE_TYPES)
    t2i = nodes["text_to_image"]
    assert t2i["title"] == "Text to image" and t2i["description"]
    inputs = {i["name"]: i for i in t2i["inputs"]}
    assert inputs["width"] | {} == {
        "name": "width", "kind": "value", "type": "integer", "required": False,
        "nullable": True, "default": None, "minimum": 256, "maximum": 1536,
    }  # fmt: skip
    assert (inputs["steps"]["minimum"], inputs["steps"]["maximum"]) == (1, 50)
    assert (inputs["guidance"]["minimum"], inputs["guidance"]["maximum"]) == (1, 30)
    assert (inputs["batch"]["default"], inputs["batch"]["maximum"]) == (1, 8)
    assert inputs["characters"] == {
        "name": "characters", "kind": "port", "type": "character", "required": False,
        "many": True, "names": True,
    }  # fmt: skip
    assert t2i["outputs"] == [{"name": "images", "type": "images"}]
    batch = {i["name"]: i for i in nodes["batch_render"]["inputs"]}
    assert batch["prompts"]["type"] == "array" and batch["prompts"]["max_items"] == 8
    assert batch["characters"]["required"] is True
    denoise = {i["name"]: i for i in nodes["image_to_image"]["inputs"]}["denoise"]
    assert (denoise["minimum"], denoise["maximum"], denoise["default"]) == (0, 1, 0.75)
    assert nodes["character"]["version"] == "1.1"
    assert [nodes[t]["mode"] for t in ("text_to_image", "image_to_video", "consistency_eval")] == [
        "t2i",
        "i2v",
        None,
    ]
    assert "``" not in nodes["character"]["description"]
    assert catalog["accepts"]["image"] == ["image", "character"]
    assert catalog["accepts"]["scores"] == ["scores"]
    assert api.client.get("/v1/workflows/node-types").status_code == 401


@pytest.fixture
def registry() -> Iterator[None]:
    """Node types a test registers are gone after it."""
    before = dict(NODE_TYPES)
    yield
    NODE_TYPES.clear()
    NODE_TYPES.update(before)


def test_a_node_type_is_one_class_the_api_describes_checks_and_runs(
    make_api: ApiFactory, registry: None
) -> None:
    @register
    class Stamp(Node):
        """Repeats a character's reference image."""

        type: Literal["stamp"]
        times: int = Field(default=2, ge=1, le=4)
        ports: ClassVar[dict[str, Port]] = {"image": Port(PortType.IMAGE)}
        outputs: ClassVar[dict[str, PortType]] = {"images": PortType.IMAGES}

        def check(self, context: CheckContext) -> None:
            if self.times == 3:
                context.problem("times", "three is unlucky")

        def invoke(self, context: NodeContext) -> dict[str, Any]:
            context.progress(1, 1)
            return {"images": [context.image("image")] * self.times}

    api = make_api()
    alice = api.key("alice")
    character = add_character(api, alice)
    catalog = api.client.get("/v1/workflows/node-types", headers=alice).json()
    (described,) = [n for n in catalog["nodes"] if n["type"] == "stamp"]
    assert described["description"] == "Repeats a character's reference image."
    assert [i["name"] for i in described["inputs"]] == ["times", "image"]
    assert described["outputs"] == [{"name": "images", "type": "images"}]

    graph = {"nodes": {
        "alice": {"type": "character", "inputs": {"character": "Alice"}},
        "stamp": {"type": "stamp", "inputs": {"image": ["alice", "character"], "times": 3}},
        "out": {"type": "output", "inputs": {"value": ["stamp", "images"]}}}}  # fmt: skip
    refused = api.client.post("/v1/workflows/run", json={"graph": graph}, headers=alice)
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {"node": "stamp", "field": "times", "message": "three is unlucky"}
    ]
    graph["nodes"]["stamp"]["inputs"]["times"] = 2
    task = api.client.post("/v1/workflows/run", json={"graph": graph}, headers=alice)
    assert task.status_code == 202, task.text
    done = api.wait(task.json()["id"], alice)
    assert done["status"] == "succeeded", done["error"]
    primary = character["images"][0]["sha256"]
    assert done["result"]["nodes"]["stamp"]["outputs"] == {"images": [primary, primary]}
    assert done["result"]["outputs"] == {"out": [primary, primary]}


def test_presets_are_listed_without_model_paths_or_options(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    presets = api.client.get("/v1/presets", headers=api.key("alice")).json()
    by_id = {p["id"]: p for p in presets}
    assert [p["id"] for p in presets] == sorted(by_id)
    assert {"tiny", "tiny-t2i", "sd15-ip-adapter", "openai-images"} <= set(by_id)
    assert by_id["tiny-t2i"]["modes"] == ["t2i"]
    assert by_id["tiny"]["defaults"] == {"width": 256, "height": 256, "steps": 2}
    assert by_id["tiny"]["source"].endswith("presets.toml")
    for preset in presets:
        assert "model" not in preset and "options" not in preset
    defaults = [p["id"] for p in presets if "t2i" in p["default_for"]]
    assert len(defaults) == 1


def test_a_character_node_can_choose_which_reference_image_it_gives(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    alice = api.key("alice")
    character = add_character(api, alice)
    from tests.support.api import alice_png

    second = Image.open(io.BytesIO(alice_png())).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    second.save(buffer, format="PNG")
    uploaded = api.client.post(
        f"/v1/characters/{character['id']}/images",
        files={"image": ("side.png", buffer.getvalue(), "image/png")},
        headers=alice,
    )
    assert uploaded.status_code == 201, uploaded.text
    shas = [i["sha256"] for i in uploaded.json()["images"]]
    assert len(shas) == 2 and uploaded.json()["primary_image"] == shas[0]

    def graph(reference: str) -> dict[str, Any]:
        return {"nodes": {
            "alice": {"type": "character", "inputs": {"character": "Alice",
                                                      "reference": reference}},
            "out": {"type": "output", "inputs": {"value": ["alice", "image"]}},
            "out2": {"type": "output", "inputs": {"value": ["alice", "character"]}}}}  # fmt: skip

    task = api.client.post("/v1/workflows/run", json={"graph": graph(shas[1])}, headers=alice)
    assert task.status_code == 202, task.text
    done = api.wait(task.json()["id"], alice)
    assert done["status"] == "succeeded", done["error"]
    assert done["result"]["outputs"]["out"] == shas[1]

    refused = api.client.post(
        "/v1/workflows/validate", json={"graph": graph("0" * 64)}, headers=alice
    )
    assert refused.status_code == 422
    assert [(e["node"], e["field"]) for e in refused.json()["errors"]] == [("alice", "reference")]


def test_image_to_image_video_and_batch_render_nodes_run(
    make_api: ApiFactory, generating: Path, tiny_svd: Path
) -> None:
    with (generating / "presets.toml").open("a") as presets:
        presets.write(
            f'\n[presets.tiny-svd]\nbackend = "diffusers"\nmodel = "{tiny_svd}"\n'
            'modes = ["i2v"]\ndefaults = { width = 256, height = 256, steps = 2 }\n'
            'options = { family = "svd" }\n'
        )
    api = make_api()
    alice = api.key("alice")
    character = add_character(api, alice)
    graph = {
        "nodes": {
            "alice": {"type": "character", "inputs": {"character": "Alice"}},
            "redraw": {"type": "image_to_image",
                       "inputs": {"image": ["alice", "character"], "prompt": "in the rain",
                                  # "strength": denoise's old name, still accepted
                                  "strength": 0.5, "preset": "tiny", "seed": 9,
                                  "characters": [["alice", "character"]]}},
            "clip": {"type": "image_to_video",
                     "inputs": {"image": ["redraw", "images"], "preset": "tiny-svd",
                                "num_frames": 3, "fps": 4}},
            "variants": {"type": "batch_render",
                         "inputs": {"characters": [["alice", "character"]], "preset": "tiny",
                                    "prompts": ["waving", "reading a book"], "seed": 4}},
            "best": {"type": "output", "inputs": {"value": ["variants", "best"]}},
            "video": {"type": "output", "inputs": {"value": ["clip", "video"]}},
        },
        "layout": {"alice": {"x": 10, "y": 20.5}, "clip": {"x": -40, "y": 300}},
    }  # fmt: skip
    # An image port takes images only in the singular: "redraw.images" is refused for "clip".
    refused = api.client.post("/v1/workflows/validate", json={"graph": graph}, headers=alice)
    assert refused.status_code == 422
    assert [(e["node"], e["field"]) for e in refused.json()["errors"]] == [("clip", "image")]
    graph["nodes"]["clip"]["inputs"]["image"] = ["alice", "image"]

    saved = api.client.post("/v1/workflows", json={"name": "all", "graph": graph}, headers=alice)
    assert saved.status_code == 201, saved.text
    assert saved.json()["graph"]["layout"] == graph["layout"]  # kept for the editor
    task = api.client.post(f"/v1/workflows/{saved.json()['id']}/run", headers=alice).json()
    done = api.wait(task["id"], alice, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    nodes = done["result"]["nodes"]
    assert done["result"]["order"] == ["alice", "redraw", "clip", "variants", "best", "video"]
    (redrawn,) = nodes["redraw"]["outputs"]["images"]
    video = nodes["clip"]["outputs"]["video"]
    variants = nodes["variants"]["outputs"]["images"]
    assert len(variants) == 2 and redrawn not in variants
    scores = nodes["variants"]["scores"]
    assert [s["prompt"] for s in scores] == ["waving", "reading a book"]
    assert sum(s["best"] for s in scores) == 1
    assert done["result"]["outputs"] == {"best": nodes["variants"]["outputs"]["best"],
                                         "video": video}  # fmt: skip
    kinds = {o["id"]: (o["kind"], o["media_type"]) for o in done["outputs"]}
    assert kinds[video] == ("video", "video/mp4")
    assert kinds[redrawn] == ("image", "image/png")
    clip = api.client.get(f"/v1/results/{video}", headers=alice)
    assert clip.status_code == 200 and clip.content[4:8] == b"ftyp"
    # The character's reference was the init image: the redraw is 256 px like the preset.
    assert next(o for o in done["outputs"] if o["id"] == redrawn)["width"] == 256
    assert character["images"][0]["sha256"] not in kinds


@pytest.mark.parametrize(
    ("layout", "field"),
    [
        ([1, 2], "layout"),
        ({"ghost": {"x": 1, "y": 2}}, "layout.ghost"),
        ({"alice": {"x": "1", "y": 2}}, "layout"),
        ({"alice": {"x": 1}}, "layout"),
        ({"alice": {"x": 1, "y": 2, "z": 3}}, "layout"),
    ],
)
def test_a_bad_layout_is_refused_naming_it(
    make_api: ApiFactory, generating: Path, layout: Any, field: str
) -> None:
    api = make_api()
    alice = api.key("alice")
    add_character(api, alice)
    graph = {**GRAPH, "layout": layout}
    response = api.client.post("/v1/workflows/validate", json={"graph": graph}, headers=alice)
    assert response.status_code == 422, response.text
    (problem,) = response.json()["errors"]
    assert problem["field"] == field


def test_a_failing_node_is_named_and_earlier_results_are_kept(
    make_api: ApiFactory, generating: Path
) -> None:
    with (generating / "presets.toml").open("a") as presets:
        presets.write(
            '\n[presets.gone]\nbackend = "diffusers"\nmodel = "/nonexistent/model"\n'
            'modes = ["i2v"]\noptions = { family = "svd" }\n'
        )
    api = make_api()
    alice = api.key("alice")
    add_character(api, alice)
    graph = {"nodes": {
        "alice": {"type": "character", "inputs": {"character": "Alice"}},
        "gen": {"type": "text_to_image", "inputs": {"prompt": "at a cafe", "preset": "tiny",
                                                    "seed": 3}},
        "clip": {"type": "image_to_video", "inputs": {"image": ["alice", "image"],
                                                      "preset": "gone"}},
        "out": {"type": "output", "inputs": {"value": ["clip", "video"]}}}}  # fmt: skip
    task = api.client.post("/v1/workflows/run", json={"graph": graph}, headers=alice)
    assert task.status_code == 202, task.text
    done = api.wait(task.json()["id"], alice)
    assert done["status"] == "failed"
    assert done["error_data"] == {"type": "ModelNotAvailableError", "node": "clip"}
    assert "gone" in done["error"]
    # What ran before the failure is kept: the picture is the task's and downloadable.
    nodes = done["result"]["nodes"]
    assert {k: v["status"] for k, v in nodes.items()} == {
        "alice": "succeeded", "gen": "succeeded", "clip": "failed",
    }  # fmt: skip
    assert nodes["clip"]["error"] == done["error"]
    # It had prepared its request: what it would have sent is said too.
    assert (nodes["clip"]["prompt"], nodes["clip"]["negative_prompt"]) == ("", "")
    (made,) = nodes["gen"]["outputs"]["images"]
    assert [o["id"] for o in done["outputs"]] == [made]
    picture = api.client.get(f"/v1/results/{made}", headers=alice)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/png"
    assert done["result"]["outputs"] == {}


def test_a_cancelled_run_keeps_the_nodes_that_finished(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    alice = api.key("alice")
    graph = {"nodes": {
        "quick": {"type": "text_to_image", "inputs": {"prompt": "a cat", "preset": "tiny-plain"}},
        "slow": {"type": "text_to_image", "inputs": {"prompt": "a dog", "preset": "tiny-slow"}},
    }}  # fmt: skip
    task = api.client.post("/v1/workflows/run", json={"graph": graph}, headers=alice).json()
    deadline = time.monotonic() + 60
    while "node slow: running" not in (progress := api.client.get(
        f"/v1/tasks/{task['id']}", headers=alice
    ).json()["progress"]["message"]):  # fmt: skip
        assert time.monotonic() < deadline, progress
        time.sleep(0.02)
    api.client.post(f"/v1/tasks/{task['id']}/cancel", headers=alice)
    done = api.wait(task["id"], alice)
    assert done["status"] == "cancelled"
    nodes = done["result"]["nodes"]
    assert {k: v["status"] for k, v in nodes.items()} == {"quick": "succeeded", "slow": "cancelled"}
    assert [o["id"] for o in done["outputs"]] == nodes["quick"]["outputs"]["images"]


def test_a_rerun_reuses_nodes_whose_inputs_did_not_change(
    make_api: ApiFactory, generating: Path
) -> None:
    api = make_api()
    alice = api.key("alice")
    add_character(api, alice)

    def run(graph: dict[str, Any] = GRAPH, **options: Any) -> dict[str, Any]:
        body = {"graph": graph, **options}
        task = api.client.post("/v1/workflows/run", json=body, headers=alice)
        assert task.status_code == 202, task.text
        done = api.wait(task.json()["id"], alice)
        assert done["status"] == "succeeded", done["error"]
        return done

    first = run()
    nodes = first["result"]["nodes"]
    assert "cached_from" not in nodes["gen"] and nodes["gen"]["signature"]
    assert "signature" not in nodes["alice"]  # cheap nodes are not cached
    blobs = api.blobs()

    again = run()
    cached = again["result"]["nodes"]
    assert cached["gen"]["cached_from"] == cached["eval"]["cached_from"] == first["id"]
    assert cached["gen"]["outputs"] == nodes["gen"]["outputs"]
    assert cached["eval"]["scores"] == nodes["eval"]["scores"]
    assert [o["id"] for o in again["outputs"]] == [o["id"] for o in first["outputs"]]
    assert api.blobs() == blobs  # nothing rendered again
    for output in again["outputs"]:  # the files are this task's results too
        assert api.client.get(output["url"], headers=alice).status_code == 200

    # cache: false renders again.
    fresh = run(cache=False)
    assert "cached_from" not in fresh["result"]["nodes"]["gen"]
    assert "cached_from" not in fresh["result"]["nodes"]["eval"]
    assert api.blobs() - blobs == {o["id"] for o in fresh["outputs"]} - blobs
    # The re-render draws the same pixels as the cached picture (only PNG metadata differs).
    with_pixels = [
        Image.open(io.BytesIO(api.client.get(f"/v1/results/{sha}", headers=alice).content))
        for sha in (nodes["gen"]["outputs"]["images"][0],
                    fresh["result"]["nodes"]["gen"]["outputs"]["images"][0])
    ]  # fmt: skip
    assert with_pixels[0].tobytes() == with_pixels[1].tobytes()

    # A change to the character (its style prompt goes into the prompt) is a new signature.
    patched = api.client.patch(
        "/v1/characters/Alice", json={"style_prompt": "short red hair"}, headers=alice
    )
    assert patched.status_code == 200, patched.text
    changed = run()["result"]["nodes"]
    assert "cached_from" not in changed["gen"] and "cached_from" not in changed["eval"]
    assert changed["gen"]["signature"] != nodes["gen"]["signature"]

    # Without a seed every run is meant to differ: never cached.
    unseeded = {"nodes": {**GRAPH["nodes"], "gen": {"type": "text_to_image",
                "inputs": {**GRAPH["nodes"]["gen"]["inputs"]}}}}  # fmt: skip
    del unseeded["nodes"]["gen"]["inputs"]["seed"]
    run(unseeded)
    twice = run(unseeded)["result"]["nodes"]
    assert "signature" not in twice["gen"] and "cached_from" not in twice["gen"]
    assert "cached_from" not in twice["eval"]  # its images are new


def test_an_image_is_a_consistency_evals_reference_image_batch_render_eval(
    make_api: ApiFactory, generating: Path
) -> None:
    """Pixify's "Image Input → Batch Render → Consistency Eval": the eval scores against a
    plain image; every variant says the prompt its model was given."""
    api = make_api()
    alice = api.key("alice")
    reference = add_character(api, alice)["images"][0]["sha256"]
    graph = {"nodes": {
        "photo": {"type": "image", "inputs": {"image": reference}},
        "alice": {"type": "character", "inputs": {"character": "Alice"}},
        "variants": {"type": "batch_render",
                     "inputs": {"characters": [["alice", "character"]], "preset": "tiny",
                                "prompts": ["waving", "reading a book"], "seed": 4}},
        "by_image": {"type": "consistency_eval",
                     "inputs": {"images": ["variants", "images"], "character": ["photo", "image"]}},
        "by_character": {"type": "consistency_eval",
                         "inputs": {"images": ["variants", "images"],
                                    "character": ["alice", "character"]}},
        "best": {"type": "output", "inputs": {"value": ["by_image", "best"]}},
    }}  # fmt: skip
    valid = api.client.post("/v1/workflows/validate", json={"graph": graph}, headers=alice)
    assert valid.status_code == 200, valid.text
    task = api.client.post("/v1/workflows/run", json={"graph": graph}, headers=alice)
    assert task.status_code == 202, task.text
    done = api.wait(task.json()["id"], alice, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    nodes = done["result"]["nodes"]
    variants = nodes["variants"]["outputs"]["images"]
    scores = nodes["by_image"]["scores"]
    assert [s["image"] for s in scores] == variants
    for s in scores:
        assert s["reference"] == reference and "character" not in s
        assert 0 <= s["score"] <= 100
    assert sum(s["best"] for s in scores) == 1
    assert done["result"]["outputs"] == {"best": nodes["by_image"]["outputs"]["best"]}
    # Alice has this one reference image: scoring against it or against her is the same.
    assert [s["score"] for s in scores] == [s["score"] for s in nodes["by_character"]["scores"]]
    # Each variant: the user's prompt, and the prompt sent with Alice's style injected.
    sent = nodes["variants"]["scores"]
    assert [s["prompt"] for s in sent] == ["waving", "reading a book"]
    assert [s["final_prompt"] for s in sent] == [
        "long black hair, waving",
        "long black hair, reading a book",
    ]
    assert all(isinstance(s["negative_prompt"], str) for s in sent)
    # An image that is not the owner's is refused as a reference.
    foreign = {
        "nodes": {**graph["nodes"], "photo": {"type": "image", "inputs": {"image": "ab" * 32}}}
    }
    refused = api.client.post("/v1/workflows/validate", json={"graph": foreign}, headers=alice)
    assert refused.status_code == 422
    assert [(e["node"], e["field"]) for e in refused.json()["errors"]] == [("photo", "image")]


def test_image_to_video_takes_characters_and_results_carry_the_prompts_sent(
    make_api: ApiFactory, generating: Path, tiny_svd: Path
) -> None:
    with (generating / "presets.toml").open("a") as presets:
        presets.write(
            f'\n[presets.tiny-svd]\nbackend = "diffusers"\nmodel = "{tiny_svd}"\n'
            'modes = ["i2v"]\ndefaults = { width = 256, height = 256, steps = 2 }\n'
            'options = { family = "svd" }\n'
        )
    api = make_api()
    alice = api.key("alice")
    add_character(api, alice)
    add_character(api, alice, "Bob")
    patched = api.client.patch(
        "/v1/characters/Alice", json={"negative_prompt": "freckles"}, headers=alice
    )
    assert patched.status_code == 200, patched.text
    graph = {"nodes": {
        "alice": {"type": "character", "inputs": {"character": "Alice"}},
        "gen": {"type": "text_to_image",
                "inputs": {"prompt": "at a cafe", "preset": "tiny", "seed": 2,
                           "negative_prompt": "blurry", "characters": [["alice", "character"]]}},
        "clip": {"type": "image_to_video",
                 "inputs": {"image": ["alice", "image"], "prompt": "turning around",
                            "preset": "tiny-svd", "num_frames": 3, "fps": 4,
                            "characters": [["alice", "character"]]}},
    }}  # fmt: skip
    # Only the characters' words go to a video model: two characters do not need room for
    # two reference images (tiny-svd takes one).
    two = {
        "nodes": {
            **graph["nodes"],
            "clip": {
                "type": "image_to_video",
                "inputs": {
                    **graph["nodes"]["clip"]["inputs"],
                    "characters": [["alice", "character"], "Bob"],
                },
            },
        }
    }
    valid = api.client.post("/v1/workflows/validate", json={"graph": two}, headers=alice)
    assert valid.status_code == 200, valid.text

    task = api.client.post("/v1/workflows/run", json={"graph": graph}, headers=alice)
    assert task.status_code == 202, task.text
    done = api.wait(task.json()["id"], alice, timeout=180)
    assert done["status"] == "succeeded", done["error"]
    nodes = done["result"]["nodes"]
    assert nodes["gen"]["prompt"] == "long black hair, at a cafe"
    assert nodes["gen"]["negative_prompt"] == "blurry, freckles"
    assert nodes["clip"]["prompt"] == "long black hair, turning around"
    assert nodes["clip"]["negative_prompt"] == "freckles"
    assert "prompt" not in nodes["alice"]
    video = nodes["clip"]["outputs"]["video"]
    assert next(o for o in done["outputs"] if o["id"] == video)["kind"] == "video"

    # A re-run that re-uses the seeded node says what was sent too.
    again = api.client.post("/v1/workflows/run", json={"graph": graph}, headers=alice)
    cached = api.wait(again.json()["id"], alice, timeout=180)["result"]["nodes"]["gen"]
    assert cached["cached_from"] == done["id"]
    assert (cached["prompt"], cached["negative_prompt"]) == (
        "long black hair, at a cafe",
        "blurry, freckles",
    )
