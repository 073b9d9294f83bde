"""The package graph is one-way (docs/architecture.md): a package imports only packages on
a lower floor — at module level, inside functions and under TYPE_CHECKING alike, so no
function-level import can hide an upward dependency — and so there are no cycles."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "castbook"

# Floors, lowest first. A package may import any package on a lower floor, never one on
# its own floor or above. Keep docs/architecture.md's table in step with this one.
FLOORS: list[set[str]] = [
    {"errors"},
    {"settings"},
    {"images", "blobs", "db", "models", "providers"},
    {"library"},
    {"evaluation", "generation"},
    {"jobs"},
    {"render", "extract"},
    {"workflow"},
    {"tasks"},
    {"api"},
    {"cli"},
]
FLOOR = {package: level for level, packages in enumerate(FLOORS) for package in packages}
ENTRY_POINTS = {"__main__", "__init__"}  # `python -m castbook` and the version string


def package_of(module: str) -> str:
    """``castbook.generation.presets`` → ``generation``; ``castbook.errors`` → ``errors``."""
    return module.split(".")[1]


def imports() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) → where, for every castbook import."""
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted(SRC.rglob("*.py")):
        relative = path.relative_to(SRC)
        if len(relative.parts) == 1 and relative.stem in ENTRY_POINTS:
            continue
        source = relative.parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name.startswith("castbook."):
                    target = package_of(name)
                    if target != source:
                        found[source, target].append(f"{relative}:{node.lineno}")
    return found


def test_every_package_has_a_floor() -> None:
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py")} - ENTRY_POINTS
    assert packages | modules <= set(FLOOR), (
        f"give these a floor: {packages | modules - set(FLOOR)}"
    )


def test_imports_only_go_down() -> None:
    upward = [
        f"{source} (floor {FLOOR[source]}) imports {target} (floor {FLOOR[target]}) at "
        + ", ".join(where[:3])
        for (source, target), where in sorted(imports().items())
        if FLOOR[target] >= FLOOR[source]
    ]
    assert not upward, "imports against the package graph:\n" + "\n".join(upward)


def test_jobs_knows_no_job_kind() -> None:
    """The executors run whatever handlers they are given; the kinds live in tasks."""
    below = {target for source, target in imports() if source == "jobs"}
    assert below <= {"errors", "settings", "db", "blobs"}, below


def test_the_graph_is_read() -> None:
    """Guard against a scan that finds nothing (and so nothing wrong)."""
    edges = imports()
    assert {("api", "tasks"), ("tasks", "workflow"), ("workflow", "render")} <= set(edges)
    assert ("generation", "models") in edges and ("cli", "api") in edges


def test_no_test_module_imports_another() -> None:
    """What tests share lives in tests/conftest.py and tests/support/, never in a test module
    (importing one re-registers its fixtures: a session fixture is then built once per
    importing module)."""
    tests = SRC.parents[1] / "tests"
    offenders = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(name.split(".")[:2][-1].startswith("test_") for name in names if
                   name.startswith("tests.")):  # fmt: skip
                offenders.append(f"{path.relative_to(tests.parent)}:{node.lineno}")
    assert not offenders, f"test modules imported from: {offenders}"


def test_route_modules_do_not_import_each_other() -> None:
    """Shared route helpers live in api/submission.py (and the other non-route modules);
    only routes_v1 assembles the routers."""
    api = SRC / "api"
    crossing = [
        f"{path.name}:{node.lineno}"
        for path in sorted(api.glob("*.py"))
        if path.name != "routes_v1.py"
        for node in ast.walk(ast.parse(path.read_text("utf-8")))
        if isinstance(node, ast.ImportFrom)
        and (node.module or "").startswith("castbook.api.routes_")
    ]
    assert not crossing, crossing
