"""The node types as JSON, for editors: what each node takes, gives and allows.

::

    {"accepts": {"image": ["image", "character"], …},
     "nodes": [{"type": "text_to_image", "version": "1.0", "title": "Text to image",
                "description": "…", "mode": "t2i",
                "inputs": [{"name": "prompt", "kind": "value", "type": "string",
                            "required": false, "default": "", "max_length": 4000}, …,
                           {"name": "characters", "kind": "port", "type": "character",
                            "required": false, "many": true, "names": true}],
                "outputs": [{"name": "images", "type": "images"}]}, …]}

Ranges come from the pydantic models themselves (and so from the API's limits): an editor
that builds its forms from this answer cannot drift from what the server accepts.
"""

from __future__ import annotations

import inspect
from typing import Any

from castbook.workflow.nodes import NODE_TYPES, Node, PortType, accepted_types

__all__ = ["node_catalog"]

# JSON-schema keywords an editor needs, under the names the catalogue uses.
_KEYWORDS = {
    "minimum": "minimum",
    "maximum": "maximum",
    "exclusiveMaximum": "exclusive_maximum",
    "minLength": "min_length",
    "maxLength": "max_length",
    "minItems": "min_items",
    "maxItems": "max_items",
    "pattern": "pattern",
}


def node_catalog() -> dict[str, Any]:
    """Every node type, its inputs (values and ports) and outputs, and the wiring rules."""
    accepts = {port.value: accepted_types(port) for port in PortType}
    return {"accepts": accepts, "nodes": [_describe(cls) for cls in NODE_TYPES.values()]}


def _describe(cls: type[Node]) -> dict[str, Any]:
    kind = cls.type_id()
    schema = cls.model_json_schema()
    required = set(schema.get("required", ())) - {"type"}
    inputs: list[dict[str, Any]] = []
    for name, prop in schema["properties"].items():
        if name == "type":
            continue
        inputs.append(_value_input(name, prop, name in required))
    for name, port in cls.ports.items():
        entry: dict[str, Any] = {
            "name": name,
            "kind": "port",
            "type": port.type.value,
            "required": port.required,
            "many": port.many,
            "names": port.names,
        }
        inputs.append(entry)
    return {
        "type": kind,
        "version": cls.version,
        "title": cls.title or kind.replace("_", " ").capitalize(),
        # Docstrings mark code as ``name``; the catalogue is plain text.
        "description": inspect.cleandoc(cls.__doc__ or "").replace("\n", " ").replace("``", ""),
        "mode": cls.mode.value if cls.mode else None,
        "inputs": inputs,
        "outputs": [{"name": n, "type": t.value} for n, t in cls.outputs.items()],
    }


def _value_input(name: str, prop: dict[str, Any], required: bool) -> dict[str, Any]:
    options = [p for p in prop.get("anyOf", [prop]) if p.get("type") != "null"]
    nullable = len(options) < len(prop.get("anyOf", [prop]))
    main = options[0] if options else {}
    entry: dict[str, Any] = {
        "name": name,
        "kind": "value",
        "type": main.get("type", "string"),
        "required": required,
        "nullable": nullable,
    }
    if "default" in prop:
        entry["default"] = prop["default"]
    for keyword, key in _KEYWORDS.items():
        if keyword in main:
            entry[key] = main[keyword]
    items = main.get("items")
    if isinstance(items, dict):
        entry["items"] = {
            key: items[keyword] for keyword, key in _KEYWORDS.items() if keyword in items
        }
        entry["items"]["type"] = items.get("type", "string")
    return entry
