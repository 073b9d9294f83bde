"""What a running node sees: :class:`NodeContext`, one per node, over the run's shared
:class:`RunState` (the process's services, the owner's library, the values and files so
far)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from castbook.blobs import Blobs
from castbook.db import Database
from castbook.evaluation.shared import SharedScorer
from castbook.generation import BackendPool, Mode, Preset, load_presets
from castbook.jobs import JobContext, JobOutput
from castbook.library import Character, CharacterLibrary
from castbook.settings import Settings
from castbook.workflow.graph import Link, ParsedNode
from castbook.workflow.values import CharacterValue, reference_of

if TYPE_CHECKING:
    from castbook.evaluation import Scorer
    from castbook.generation import Backend, PresetCatalog

__all__ = ["NodeContext", "RunState", "WorkflowServices"]


@dataclass(frozen=True)
class WorkflowServices:
    """What a run uses of its process: storage, and the backends (loaded models) and the
    scorer that every job kind of the process shares."""

    settings: Settings
    database: Database
    blobs: Blobs
    backends: BackendPool
    scorer: SharedScorer


class RunState:
    """What the nodes of one run share: services, the owner's library, every finished node's
    outputs, the files kept so far and the run's progress."""

    def __init__(self, services: WorkflowServices, owner: str, job: JobContext, total: int) -> None:
        self.services = services
        self.library = CharacterLibrary(services.database, services.blobs, owner=owner)
        self.job = job
        self.total = total  # nodes in the graph
        self.done = 0  # nodes finished
        self.values: dict[str, dict[str, Any]] = {}
        self.files: list[JobOutput] = []
        self._presets: PresetCatalog | None = None  # read once per run

    def value(self, link: Link) -> Any:
        return self.values[link.node][link.output]

    def preset(self, preset_id: str | None, mode: Mode) -> Preset:
        if self._presets is None:
            self._presets = load_presets(self.services.settings.home)
        return self._presets.get(preset_id) if preset_id else self._presets.default_for(mode)

    def progress(self, node_id: str, step: int, total: int) -> None:
        message = f"node {node_id}: running {step}/{total}"
        self.job.progress(self.done, self.total, message)


class NodeContext:
    """One node's view of its run: its inputs by port name, resolved to values, and what it
    may use to compute its outputs."""

    def __init__(self, run: RunState, node: ParsedNode) -> None:
        self.run = run
        self.node = node
        self.id = node.id
        self.details: dict[str, Any] = {}  # added to the node's entry in the task's result

    @property
    def library(self) -> CharacterLibrary:
        return self.run.library

    @property
    def blobs(self) -> Blobs:
        return self.run.services.blobs

    # ---- inputs ---------------------------------------------------------------------------

    def value(self, port: str) -> Any:
        """The value wired into a single-link port."""
        link = self.node.links[port]
        assert isinstance(link, Link)
        return self.run.value(link)

    def image(self, port: str) -> str:
        """An image port's image id; a character gives its chosen (or primary) reference."""
        value = self.value(port)
        if isinstance(value, CharacterValue):
            return value.reference or reference_of(self.library.get_by_id(value.id))
        return str(value)

    def images(self, port: str) -> list[str]:
        """An images port's image ids (a single image or character is a list of one)."""
        value = self.value(port)
        return list(value) if isinstance(value, list) else [self.image(port)]

    def character(self, port: str) -> Character:
        """The library's character wired into a character port."""
        return self.library.get_by_id(self.value(port).id)

    def characters(self, port: str) -> list[str]:
        """Character names from a port's links and names, in order, without repeats."""
        given = self.node.links.get(port, [])
        items = given if isinstance(given, list) else [given]
        names: list[str] = []
        for item in items:
            if isinstance(item, Link):
                names.append(self.run.value(item).name)
            else:
                names.append(self.library.get(item).name)
        return list(dict.fromkeys(names))

    # ---- services -------------------------------------------------------------------------

    def preset(self, preset_id: str | None, mode: Mode) -> Preset:
        """The preset by id, or the default for ``mode``."""
        return self.run.preset(preset_id, mode)

    def backend(self, preset: Preset) -> Backend:
        """The process's loaded backend for the preset."""
        return self.run.services.backends.get(preset)

    def scorer(self) -> Scorer:
        return self.run.services.scorer.get()

    def keep(self, data: bytes, output: JobOutput) -> str:
        """Store a file the node made as one of the task's outputs; returns its id."""
        sha = self.blobs.put(data)[0]
        self.run.files.append(replace(output, sha256=sha))
        return sha

    def progress(self, step: int, total: int) -> None:
        """Where the node is (also where a cancel arrives)."""
        self.run.progress(self.id, step, total)

    def report(self, **details: Any) -> None:
        """Add to the node's entry in the task's result, next to its outputs (what a
        generating node sent: ``prompt``, ``negative_prompt``). Kept when the node fails
        afterwards, and taken with the outputs when a re-run re-uses the node."""
        self.details.update(details)
