"""A graph checked against the owner's data: after its shape (:func:`parse_graph`), each
node's :meth:`~castbook.workflow.nodes.Node.check` says what only the owner's library,
presets and images can tell. The API gives the owner's data as a :class:`GraphChecker`."""

from __future__ import annotations

from typing import Any, Protocol

from castbook.errors import NotFoundError
from castbook.generation import Mode, Preset, PresetCatalog, mode_problem, preset_room_problem
from castbook.library import Character, CharacterLibrary
from castbook.workflow.graph import Graph, GraphError, GraphProblem, Link, ParsedNode, parse_graph

__all__ = ["CheckContext", "GraphChecker", "check_graph"]


class GraphChecker(Protocol):
    """One owner's data, as the checks need it."""

    @property
    def library(self) -> CharacterLibrary: ...

    @property
    def presets(self) -> PresetCatalog: ...

    def owns_image(self, sha256: str) -> bool:
        """Whether the owner may use this stored image."""
        ...


def check_graph(data: Any, checker: GraphChecker) -> Graph:
    """The graph's shape, then what the owner's data says of each node; raises
    :class:`GraphError` with every problem found."""
    graph = parse_graph(data)
    problems: list[GraphProblem] = []
    for node_id in graph.order:
        parsed = graph.nodes[node_id]
        parsed.node.check(CheckContext(parsed, checker, problems))
    if problems:
        raise GraphError(problems)
    return graph


class CheckContext:
    """One node's view of the owner's data while it is checked; problems it reports are
    collected with the graph's."""

    def __init__(
        self, node: ParsedNode, checker: GraphChecker, problems: list[GraphProblem]
    ) -> None:
        self.node = node
        self.checker = checker
        self.problems = problems

    def problem(self, field: str, message: str) -> None:
        self.problems.append(GraphProblem(self.node.id, field, message))

    def character(self, field: str, ref: str) -> Character | None:
        """The owner's character by name or id, which must have a reference image; None
        (reported) when there is no such character."""
        try:
            found = self.checker.library.find(ref)
        except NotFoundError:
            self.problem(field, f"no character {ref!r}")
            return None
        if not found.images:
            self.problem(field, f"{found.name} has no reference image; upload one")
        return found

    def names(self, port: str) -> list[tuple[int, str]]:
        """The character names or ids given (not linked) in a port, with their index."""
        given = self.node.links.get(port)
        items = given if isinstance(given, list) else []
        return [(index, item) for index, item in enumerate(items) if not isinstance(item, Link)]

    def character_count(self, port: str) -> int:
        """How many characters a port sends (links and names, without repeats)."""
        given = self.node.links.get(port)
        items = given if isinstance(given, list) else []
        return len({item.node if isinstance(item, Link) else item.casefold() for item in items})

    def preset(self, preset_id: str | None, mode: Mode) -> Preset | None:
        """The preset by id (or the default for ``mode``), which must do ``mode``; None
        (reported) otherwise."""
        catalog = self.checker.presets
        try:
            preset = catalog.get(preset_id) if preset_id else catalog.default_for(mode)
        except NotFoundError as exc:
            self.problem("preset", str(exc))
            return None
        problem = mode_problem(preset, mode)
        if problem is not None:
            self.problem("preset", problem)
            return None
        return preset

    def room(self, preset: Preset, count: int, mode: Mode) -> str | None:
        """Why ``count`` characters (one reference image each) do not fit the preset's
        backend in ``mode`` (an i2i init image takes a place where the backend counts it);
        None when they do, or when the backend cannot say before it runs (the run reports
        what is missing)."""
        return preset_room_problem(preset, count, mode)

    def owns_image(self, sha256: str) -> bool:
        return self.checker.owns_image(sha256)
