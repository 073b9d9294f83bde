"""ComfyUI workflow templates: loading them, filling their placeholders, bypassing unused nodes.

See castbook.generation.comfyui_backend for the placeholder language; this module only
turns a template and a request's values into an API-format graph ComfyUI can run.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from castbook.errors import InvalidInputError, ModelNotAvailableError

__all__ = [
    "BUILTIN_WORKFLOWS",
    "I2I_SIBLINGS",
    "LORA_PLACEHOLDER",
    "OPTION_DEFAULTS",
    "REFERENCE_PLACEHOLDER",
    "REQUEST_PLACEHOLDERS",
    "Workflow",
    "fill_workflow",
    "load_workflow",
    "lora_placeholders",
    "reference_placeholder",
]

WORKFLOW_DIR = Path(__file__).parent / "workflows"
BUILTIN_WORKFLOWS = {
    "sd15-ip-adapter": "sd15_ip_adapter.json",
    "sd15-img2img": "sd15_img2img.json",
}
I2I_SIBLINGS = {"sd15-ip-adapter": "workflow:sd15-img2img"}

OPTION_DEFAULTS: dict[str, Any] = {
    "checkpoint": "v1-5-pruned-emaonly.safetensors",
    "ipadapter_model": "ip-adapter_sd15.safetensors",
    "clip_vision": "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors",
    "sampler": "euler",
    "scheduler": "normal",
}
REQUEST_PLACEHOLDERS = (
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance",
    "width",
    "height",
    "batch",
    "denoise",
    "strength",
    "reference_scale",
    "init_image",
    "reference_image",
)
# IP-Adapter nodes from ComfyUI_IPAdapter_plus: without a reference image they pass the model on;
# ComfyUI's own LoRA loaders, without a LoRA, pass on the model (and the text encoder).
_PASSTHROUGH_BY_CLASS = {
    "LoraLoader": ("model", "clip"),
    "LoraLoaderModelOnly": ("model",),
    **{
        name: ("model",)
        for name in (
            "IPAdapter",
            "IPAdapterAdvanced",
            "IPAdapterFaceID",
            "IPAdapterBatch",
            "IPAdapterTiled",
            "IPAdapterStyleComposition",
            "IPAdapterPreciseStyleTransfer",
            "IPAdapterPreciseComposition",
        )
    },
}
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
REFERENCE_PLACEHOLDER = re.compile(r"reference_image(?:_([2-9]))?")
# A character LoRA slot: the file's name in ComfyUI's loras folder and its strength.
LORA_PLACEHOLDER = re.compile(r"lora_(?:name|strength)(?:_([2-9]))?")


@dataclass(frozen=True)
class Workflow:
    """An API-format workflow template: ``{node_id: {class_type, inputs, _meta?}}``."""

    name: str
    nodes: Mapping[str, Any]
    placeholders: frozenset[str]

    @property
    def reference_slots(self) -> int:
        return sum(1 for name in self.placeholders if REFERENCE_PLACEHOLDER.fullmatch(name))

    @property
    def lora_slots(self) -> int:
        """How many character LoRAs the template applies (``{{lora_name}}``,
        ``{{lora_name_2}}`` …, each in a LoraLoader node)."""
        names = {p for p in self.placeholders if p.startswith("lora_name")}
        return sum(1 for p in names if LORA_PLACEHOLDER.fullmatch(p))

    def supported(self) -> str:
        return ", ".join("{{" + name + "}}" for name in sorted(self.placeholders)) or "none"


def load_workflow(spec: str, *, relative_to: Path | None = None) -> Workflow:
    """Read ``workflow:<built-in name>`` or an API-format JSON file into a :class:`Workflow`."""
    if spec.startswith("workflow:"):
        name = spec.removeprefix("workflow:")
        if name not in BUILTIN_WORKFLOWS:
            known = ", ".join(f"workflow:{n}" for n in BUILTIN_WORKFLOWS)
            raise ModelNotAvailableError(
                f"no built-in ComfyUI workflow {spec!r}; built in: {known}, "
                "or give the path of a workflow exported from ComfyUI in API format"
            )
        path = WORKFLOW_DIR / BUILTIN_WORKFLOWS[name]
    else:
        name = spec
        path = Path(spec).expanduser()
        if not path.is_absolute() and relative_to is not None:
            path = relative_to / path
        if not path.is_file():
            raise ModelNotAvailableError(
                f"ComfyUI workflow file not found: {path} "
                "(export yours from ComfyUI with Workflow → Export (API))"
            )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"cannot read ComfyUI workflow {path}: {exc}") from None
    return _parse_workflow(name, path, document)


def _parse_workflow(name: str, path: Path, document: Any) -> Workflow:
    if isinstance(document, dict) and isinstance(document.get("prompt"), dict):
        document = document["prompt"]  # a saved POST /prompt body
    if isinstance(document, dict) and isinstance(document.get("nodes"), list):
        raise InvalidInputError(
            f"{path} is a ComfyUI editor workflow, not the API format castbook sends; "
            "in ComfyUI use Workflow → Export (API) (older versions: enable dev mode "
            "options in the settings, then 'Save (API Format)')"
        )
    if not isinstance(document, dict) or not document:
        raise InvalidInputError(f"{path} is not an API-format ComfyUI workflow")
    placeholders: set[str] = set()
    for node_id, node in document.items():
        if not (
            isinstance(node, dict)
            and isinstance(node.get("class_type"), str)
            and isinstance(node.get("inputs", {}), dict)
        ):
            raise InvalidInputError(
                f"{path}: node {node_id!r} must be an object with class_type and inputs"
            )
        for value in node.get("inputs", {}).values():
            if isinstance(value, str):
                placeholders.update(_PLACEHOLDER.findall(value))
    slots = sorted(_slot(p) for p in placeholders if REFERENCE_PLACEHOLDER.fullmatch(p))
    if slots != list(range(1, len(slots) + 1)):
        raise InvalidInputError(
            f"{path}: reference placeholders must be numbered without gaps "
            "({{reference_image}}, {{reference_image_2}}, …)"
        )
    return Workflow(name=name, nodes=document, placeholders=frozenset(placeholders))


def _slot(placeholder: str) -> int:
    match = REFERENCE_PLACEHOLDER.fullmatch(placeholder)
    assert match is not None
    return int(match.group(1) or 1)


def reference_placeholder(slot: int) -> str:
    return "reference_image" if slot == 1 else f"reference_image_{slot}"


def lora_placeholders(slot: int) -> tuple[str, str]:
    """The placeholders of LoRA slot ``slot`` (1-based): the file name and the strength."""
    suffix = "" if slot == 1 else f"_{slot}"
    return f"lora_name{suffix}", f"lora_strength{suffix}"


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def fill_workflow(
    workflow: Workflow, values: Mapping[str, Any], *, unused: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The graph to queue: placeholders replaced (typed when a whole input is one), the nodes
    that read an ``unused`` placeholder dropped and the nodes that depended on them bypassed."""
    nodes = _drop_unused(workflow, unused) if unused else copy.deepcopy(dict(workflow.nodes))
    for node in nodes.values():
        inputs = node.get("inputs", {})
        for key, value in inputs.items():
            if isinstance(value, str):
                inputs[key] = _fill_text(value, values)
    return nodes


def _fill_text(text: str, values: Mapping[str, Any]) -> Any:
    whole = _PLACEHOLDER.fullmatch(text)
    if whole:
        return values[whole.group(1)]
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), text)


def _passthrough(node: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The inputs ``node`` passes on in place of its outputs when it is bypassed."""
    meta = node.get("_meta") or {}
    through = meta.get("castbook_passthrough") or _PASSTHROUGH_BY_CLASS.get(node["class_type"])
    return tuple(through) if through else None


def _drop_unused(workflow: Workflow, unused: frozenset[str]) -> dict[str, Any]:
    nodes = copy.deepcopy(dict(workflow.nodes))
    consumed = {v[0] for n in nodes.values() for v in n.get("inputs", {}).values() if _is_link(v)}
    reading = {
        node_id
        for node_id, node in nodes.items()
        if any(
            isinstance(v, str) and unused.intersection(_PLACEHOLDER.findall(v))
            for v in node.get("inputs", {}).values()
        )
    }
    bypassed: dict[str, tuple[Any, ...]] = {}
    # A node that reads an unused value itself but passes its linked inputs on (a LoraLoader
    # without a LoRA) is bypassed; any other such node (a LoadImage) is dropped.
    for node_id in sorted(reading):
        inputs = nodes[node_id].get("inputs", {})
        through = _passthrough(nodes[node_id])
        if through and all(_is_link(inputs.get(name)) for name in through):
            bypassed[node_id] = tuple(inputs[name] for name in through)
    dropped = reading - set(bypassed)
    changed = True
    while changed:
        changed = False
        for node_id, node in nodes.items():
            if node_id in dropped or node_id in bypassed:
                continue
            inputs = node.get("inputs", {})
            if not any(_is_link(v) and v[0] in dropped for v in inputs.values()):
                continue
            through = _passthrough(node)
            if not through or not all(name in inputs for name in through):
                raise InvalidInputError(
                    f"workflow {workflow.name}: node {node_id} ({node['class_type']}) needs "
                    f"{', '.join('{{' + u + '}}' for u in sorted(unused))}, which this request "
                    "does not give; give it, or name the inputs this node passes on without it "
                    'in its "_meta": {"castbook_passthrough": ["model"]}'
                )
            bypassed[node_id] = tuple(inputs[name] for name in through)
            changed = True

    def resolve(link: Any) -> Any:
        for _ in range(len(nodes)):
            if not (_is_link(link) and link[0] in bypassed):
                break
            outputs = bypassed[link[0]]
            if link[1] >= len(outputs):
                raise InvalidInputError(
                    f"workflow {workflow.name}: node {link[0]} passes on {len(outputs)} "
                    f"input(s) in castbook_passthrough, but output {link[1]} is used"
                )
            link = copy.deepcopy(outputs[link[1]])
        return link

    kept = {k: v for k, v in nodes.items() if k not in dropped and k not in bypassed}
    for node in kept.values():
        inputs = node.get("inputs", {})
        for key, value in inputs.items():
            if _is_link(value):
                inputs[key] = resolve(value)
                if _is_link(inputs[key]) and inputs[key][0] in dropped:
                    raise InvalidInputError(
                        f"workflow {workflow.name}: node {inputs[key][0]} is needed without "
                        f"{', '.join(sorted(unused))}; it cannot be skipped"
                    )
    # Loaders that only fed the removed nodes would still be validated by ComfyUI: drop them.
    while True:
        used = {v[0] for n in kept.values() for v in n.get("inputs", {}).values() if _is_link(v)}
        orphans = [k for k in kept if k in consumed and k not in used]
        if not orphans:
            return kept
        for orphan in orphans:
            del kept[orphan]
