"""Graph JSON, parsed and validated completely before anything is queued.

::

    {"nodes": {"alice": {"type": "character", "inputs": {"character": "Alice"}},
               "gen": {"type": "text_to_image",
                       "inputs": {"prompt": "at a cafe", "characters": [["alice", "character"]]}},
               "out": {"type": "output", "inputs": {"value": ["gen", "images"]}}}}

An input is a literal or a link ``[node_id, output_name]``. An optional ``layout``
(``{node_id: {"x": 10, "y": 20}}``, with ``"collapsed": true`` for a node the editor shows
folded) keeps where an editor drew each node; it is validated and stored, never used to run
the graph. :func:`parse_graph` returns every problem at once (unknown types and inputs,
missing required inputs, literals out of range, links to missing nodes or outputs, type
mismatches, cycles), each naming its node. :func:`check_draft` checks only the JSON shape,
for a draft saved before it is complete.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, get_origin

from pydantic import ValidationError

from castbook.errors import InvalidInputError
from castbook.generation.request import LIMITS, range_message
from castbook.workflow.nodes import NODE_TYPES, Node, Port, PortType, accepts

__all__ = [
    "MAX_NODES",
    "Graph",
    "GraphError",
    "GraphProblem",
    "Link",
    "ParsedNode",
    "check_draft",
    "parse_graph",
    "topological_order",
]

MAX_NODES = 64
_NODE_ID = 64


@dataclass(frozen=True)
class Link:
    node: str
    output: str

    def to_json(self) -> list[str]:
        return [self.node, self.output]


@dataclass(frozen=True)
class GraphProblem:
    node: str | None
    field: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        where = ".".join(p for p in (self.node, self.field) if p)
        return f"{where}: {self.message}" if where else self.message


class GraphError(InvalidInputError):
    """A workflow graph with problems; ``problems`` lists every one."""

    def __init__(self, problems: list[GraphProblem]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


# A port's value: one link, or (``many``) a list of links and character names.
PortValue = Link | list[Link | str]


@dataclass(frozen=True)
class ParsedNode:
    id: str
    node: Node
    links: dict[str, PortValue] = field(default_factory=dict)

    def sources(self) -> list[Link]:
        found: list[Link] = []
        for value in self.links.values():
            items = value if isinstance(value, list) else [value]
            found.extend(item for item in items if isinstance(item, Link))
        return found


@dataclass(frozen=True)
class Graph:
    nodes: dict[str, ParsedNode]
    order: list[str]  # topological: every node after the nodes it takes links from
    source: dict[str, Any]  # the graph JSON as given, for storing

    def output_type(self, link: Link) -> PortType:
        return type(self.nodes[link.node].node).outputs[link.output]


def _is_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], str)
    )


def _outline(data: Any, problems: list[GraphProblem]) -> dict[str, Any]:
    """The graph's ``nodes`` (at least one, at most MAX_NODES; raises GraphError otherwise),
    with a problem for each key besides ``nodes`` and ``layout`` and for a bad layout."""
    raw_nodes = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(raw_nodes, dict) or not raw_nodes:
        raise GraphError(
            [GraphProblem(None, "nodes", "give at least one node: {id: {type, inputs}}")]
        )
    if len(raw_nodes) > MAX_NODES:
        raise GraphError(
            [GraphProblem(None, "nodes", f"{len(raw_nodes)} nodes; the limit is {MAX_NODES}")]
        )
    unknown = {k for k in data if k not in ("nodes", "layout")}
    if unknown:
        problems.append(
            GraphProblem(None, sorted(unknown)[0], "unknown key; a graph has nodes and layout")
        )
    _check_layout(data.get("layout"), raw_nodes, problems)
    return raw_nodes


def check_draft(data: Any) -> dict[str, Any]:
    """A draft's JSON shape only — ``{nodes: {id: {type, inputs}}, layout}`` with ids of
    1-64 characters, a type named, inputs an object, a valid layout — and not whether it
    would run (unknown types, missing inputs, values out of range, wires that do not fit are
    for Run to report): an unfinished workflow can be saved and finished later. Returns a
    copy of the JSON; raises :class:`GraphError` with every shape problem."""
    problems: list[GraphProblem] = []
    raw_nodes = _outline(data, problems)
    for node_id, spec in raw_nodes.items():
        if not isinstance(node_id, str) or not node_id or len(node_id) > _NODE_ID:
            problems.append(
                GraphProblem(str(node_id), None, f"node ids are 1-{_NODE_ID} characters")
            )
        elif not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
            problems.append(GraphProblem(node_id, "type", "a node is {type, inputs}"))
        elif extra := sorted(k for k in spec if k not in ("type", "inputs")):
            problems.append(
                GraphProblem(node_id, extra[0], "unknown key; a node is {type, inputs}")
            )
        elif not isinstance(spec.get("inputs", {}), dict):
            problems.append(GraphProblem(node_id, "inputs", "must be an object {name: value}"))
    if problems:
        raise GraphError(problems)
    copied: dict[str, Any] = json.loads(json.dumps(data))
    return copied


def parse_graph(data: Any) -> Graph:
    """The graph, validated; raises :class:`GraphError` with every problem found."""
    problems: list[GraphProblem] = []
    raw_nodes = _outline(data, problems)

    parsed: dict[str, ParsedNode] = {}
    for node_id, spec in raw_nodes.items():
        node = _parse_node(node_id, spec, raw_nodes, problems)
        if node is not None:
            parsed[node_id] = node

    # Links: the source node and output exist, and the port types fit.
    for node_id, node in parsed.items():
        ports = type(node.node).ports
        for name, value in node.links.items():
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                if not isinstance(item, Link):
                    continue
                where = f"{name}.{index}" if isinstance(value, list) else name
                _check_link(node_id, where, ports[name], item, raw_nodes, problems)

    order = topological_order({nid: [s.node for s in n.sources()] for nid, n in parsed.items()})
    if order is None:
        cycle = _cycle({nid: [s.node for s in n.sources()] for nid, n in parsed.items()})
        problems.append(
            GraphProblem(cycle[0], None, "is in a cycle: " + " -> ".join([*cycle, cycle[0]]))
        )
    if problems:
        raise GraphError(problems)
    assert order is not None
    return Graph(parsed, order, json.loads(json.dumps(data)))


def _check_layout(layout: Any, raw_nodes: dict[str, Any], problems: list[GraphProblem]) -> None:
    """``layout``: where an editor drew each node, ``{node_id: {"x": n, "y": n}}`` (and
    ``"collapsed": true`` when it shows the node folded); kept with the graph, never used to
    run it."""
    if layout is None:
        return
    if not isinstance(layout, dict):
        problems.append(GraphProblem(None, "layout", "must be an object {node_id: {x, y}}"))
        return
    for node_id, place in layout.items():
        where = f"layout.{node_id}"
        if node_id not in raw_nodes:
            problems.append(GraphProblem(None, where, f"places {node_id!r}: no such node"))
        elif (
            not isinstance(place, dict)
            or not {"x", "y"} <= set(place) <= {"x", "y", "collapsed"}
            or not all(_is_coordinate(place[k]) for k in ("x", "y"))
            or not isinstance(place.get("collapsed", False), bool)
        ):
            problems.append(
                GraphProblem(
                    node_id, "layout", "must be {x, y} with finite numbers (and collapsed: bool)"
                )
            )


def _is_coordinate(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) <= 1e6
    )


def _parse_node(
    node_id: Any, spec: Any, raw_nodes: dict[str, Any], problems: list[GraphProblem]
) -> ParsedNode | None:
    if not isinstance(node_id, str) or not node_id or len(node_id) > _NODE_ID:
        problems.append(GraphProblem(str(node_id), None, f"node ids are 1-{_NODE_ID} characters"))
        return None
    if not isinstance(spec, dict) or not isinstance(spec.get("type"), str):
        problems.append(GraphProblem(node_id, "type", "a node is {type, inputs}"))
        return None
    kind = spec["type"]
    node_class = NODE_TYPES.get(kind)
    if node_class is None:
        known = ", ".join(NODE_TYPES)
        problems.append(
            GraphProblem(node_id, "type", f"unknown node type {kind!r}; known: {known}")
        )
        return None
    extra = {k for k in spec if k not in ("type", "inputs")}
    if extra:
        problems.append(
            GraphProblem(node_id, sorted(extra)[0], "unknown key; a node is {type, inputs}")
        )
    inputs = spec.get("inputs", {})
    if not isinstance(inputs, dict):
        problems.append(GraphProblem(node_id, "inputs", "must be an object {name: value}"))
        return None

    literals: dict[str, Any] = {}
    links: dict[str, PortValue] = {}
    failed = False
    for given, value in inputs.items():
        name = node_class.renamed.get(given, given)
        port = node_class.ports.get(name)
        if port is not None:
            parsed = _port_value(node_id, name, port, value, raw_nodes, problems)
            if parsed is None:
                failed = True
            else:
                links[name] = parsed
        elif name in node_class.model_fields and name != "type":
            # A list field's two strings (two prompts) are a value, not a link.
            if _is_link(value) and get_origin(node_class.model_fields[name].annotation) is not list:
                problems.append(
                    GraphProblem(node_id, name, "takes a value, not a link: it has no port")
                )
                failed = True
            else:
                literals[name] = value
        else:
            allowed = sorted({*node_class.ports, *node_class.model_fields} - {"type"})
            problems.append(
                GraphProblem(
                    node_id, name, f"unknown input for {kind}; inputs: {', '.join(allowed)}"
                )
            )
            failed = True
    for name, port in node_class.ports.items():
        if port.required and name not in links and name not in inputs:
            problems.append(GraphProblem(node_id, name, f"is required (a link to {port.rule()})"))
            failed = True
    try:
        node = node_class.model_validate({**literals, "type": kind})
    except ValidationError as exc:
        for error in exc.errors():
            problems.append(GraphProblem(node_id, *_literal_problem(error)))
        return None
    return None if failed else ParsedNode(node_id, node, links)


def _literal_problem(error: Any) -> tuple[str, str]:
    loc = [str(part) for part in error.get("loc", ())]
    name = ".".join(loc) or "inputs"
    kind = error.get("type", "")
    if kind == "missing":
        return name, "is required"
    if loc and loc[0] in LIMITS and kind in ("greater_than_equal", "less_than_equal"):
        return name, range_message(loc[0], error.get("input"))
    given = error.get("input")
    return name, f"{str(error.get('msg', 'is invalid')).lower()}, got {given!r}"


def _port_value(
    node_id: str,
    name: str,
    port: Port,
    value: Any,
    raw_nodes: dict[str, Any],
    problems: list[GraphProblem],
) -> PortValue | None:
    if _is_link(value) and (not port.many or value[0] in raw_nodes):
        return Link(value[0], value[1]) if not port.many else [Link(value[0], value[1])]
    if port.many and isinstance(value, list):
        items: list[Link | str] = []
        for index, item in enumerate(value):
            if _is_link(item):
                items.append(Link(item[0], item[1]))
            elif port.names and isinstance(item, str) and item.strip():
                items.append(item)
            else:
                what = "a link [node, output] or a character name" if port.names else "a link"
                problems.append(GraphProblem(node_id, f"{name}.{index}", f"must be {what}"))
                return None
        if port.required and not items:
            problems.append(GraphProblem(node_id, name, "give at least one"))
            return None
        return items
    what = "a list of links [node, output]" if port.many else "a link [node, output]"
    problems.append(GraphProblem(node_id, name, f"must be {what} to {port.rule()}"))
    return None


def _check_link(
    node_id: str,
    where: str,
    port: Port,
    link: Link,
    raw_nodes: dict[str, Any],
    problems: list[GraphProblem],
) -> None:
    source = raw_nodes.get(link.node)
    if source is None:
        problems.append(GraphProblem(node_id, where, f"links to {link.node!r}: no such node"))
        return
    source_class = NODE_TYPES.get(source.get("type")) if isinstance(source, dict) else None
    if source_class is None:
        return  # that node's own problem is reported
    given = source_class.outputs.get(link.output)
    if given is None:
        outputs = ", ".join(source_class.outputs) or "none"
        problems.append(
            GraphProblem(
                node_id, where, f"{link.node} has no output {link.output!r}; outputs: {outputs}"
            )
        )
        return
    if not accepts(port.type, given):
        problems.append(
            GraphProblem(
                node_id,
                where,
                f"takes {port.rule()}, but {link.node}.{link.output} is {given.value}",
            )
        )


def topological_order(edges: dict[str, list[str]]) -> list[str] | None:
    """Node ids, each after those it depends on (``edges``: node -> its sources), in the
    graph's own order where it is free; None if there is a cycle."""
    order: list[str] = []
    done: set[str] = set()
    remaining = [n for n in edges]
    while remaining:
        ready = [n for n in remaining if all(s in done or s not in edges for s in edges[n])]
        if not ready:
            return None
        for n in ready:
            done.add(n)
            order.append(n)
        remaining = [n for n in remaining if n not in done]
    return order


def _cycle(edges: dict[str, list[str]]) -> list[str]:
    """One cycle, as the nodes in it."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for s in edges.get(n, []):
            if s not in edges:
                continue
            if state.get(s) == 1:
                return list(reversed(stack[stack.index(s) :]))
            if s not in state and (found := visit(s)) is not None:
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in edges:
        if n not in state and (found := visit(n)) is not None:
            return found
    return []
