"""Imports point one way: a module imports only from its own floor or the floors below it (issue 11).

Every `import` in julnet/, ray_jobs/ and pipelines/ counts, function-local and TYPE_CHECKING ones too, and so do
the packages an import runs on the way (`import julnet.evaluation.fid` runs julnet/evaluation/__init__.py).
A shared helper that a lower floor needs moves down to it; it is never imported from above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("julnet", "ray_jobs", "pipelines")

# Bottom to top. An entry is a module or a package (all its modules); the bare `julnet` is julnet/__init__.py only.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation", ("julnet", "julnet.version", "julnet.errors", "julnet.config", "julnet.progress", "julnet.redact", "julnet.table")),
    ("storage", ("julnet.storage", "julnet.tracking", "julnet.artifacts", "julnet.paths", "julnet.cluster")),
    ("data", ("julnet.face", "julnet.data")),
    ("models", ("julnet.models", "julnet.pretrained")),  # the networks, their checkpoints and loading a trained one
    ("losses", ("julnet.losses",)),
    ("figures", ("julnet.visualize",)),
    ("evaluation", ("julnet.evaluation",)),  # scores a trained model: needs nothing of training (issue 29)
    ("inference", ("julnet.inference", "julnet.batch")),
    ("training", ("julnet.training",)),
    ("sweeps", ("julnet.sweep",)),  # a trial trains, then the suite scores it
    ("registry", ("julnet.registry", "julnet.promotion", "julnet.freshness", "julnet.pyfunc", "julnet.pyfunc_model",
                  "julnet.retrain")),  # the retraining chain registers and promotes; julnet.cli hands it the commands to run
    ("cli", ("julnet.cli", "julnet.info", "julnet.__main__")),
    ("ray_jobs", ("ray_jobs",)),  # may import julnet
    ("pipelines", ("pipelines",)),  # imports julnet only: its steps' Ray jobs run `julnet` commands (see below)
)


def floor_of(module: str) -> int | None:
    """Index in FLOORS of the most specific entry that holds `module`, or None when no entry does."""
    best: tuple[int, int] | None = None
    for index, (_, entries) in enumerate(FLOORS):
        for entry in entries:
            if module == entry or (entry != "julnet" and module.startswith(entry + ".")):
                if best is None or len(entry) > best[1]:
                    best = (index, len(entry))
    return None if best is None else best[0]


def module_name(path: Path) -> str:
    """Dotted name of a source file under the repository (a package's __init__.py is the package)."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    base = REPO.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, module) for every module of this repository that `source` imports, the packages on the way included."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]
        for target in targets:
            if target.split(".")[0] not in ROOTS:
                continue
            parts = target.split(".")
            found += [(node.lineno, ".".join(parts[:i])) for i in range(1, len(parts) + 1)]
    return found


def sources() -> list[Path]:
    return sorted(p for root in ROOTS for p in (REPO / root).rglob("*.py"))


def test_every_module_has_a_floor() -> None:
    missing = [module_name(p) for p in sources() if floor_of(module_name(p)) is None]
    assert not missing, f"add these modules to FLOORS in tests/test_layers.py: {missing}"


def test_no_upward_import() -> None:
    upward = []
    for path in sources():
        module = module_name(path)
        own = floor_of(module)
        if own is None:
            continue
        for line, target in imported(path.read_text(), module, path.name == "__init__.py"):
            floor = floor_of(target)
            if floor is not None and floor > own:
                upward.append(f"{path.relative_to(REPO)}:{line}: {module} ({FLOORS[own][0]}) imports {target} ({FLOORS[floor][0]})")
    assert not upward, "imports that point up a floor (move the shared helper down instead):\n" + "\n".join(sorted(set(upward)))


def test_pipelines_import_julnet_not_the_job_scripts() -> None:
    """A pipeline step runs `julnet` commands as Ray jobs; the job scripts in ray_jobs/ are that command's thin drivers."""
    found = [f"{p.relative_to(REPO)}:{line}: {target}" for p in (REPO / "pipelines").rglob("*.py")
             for line, target in imported(p.read_text(), module_name(p), p.name == "__init__.py") if target.split(".")[0] == "ray_jobs"]
    assert not found, found


def test_no_import_circle() -> None:
    """No module reaches itself through the imports (function-local ones included), in julnet, ray_jobs or pipelines.
    Fails on the code before issue 29: pipelines.raysubmit and pipelines.rayjob imported each other."""
    graph: dict[str, set[str]] = {}
    for path in sources():
        module = module_name(path)
        # A module's own packages are left out: a sibling import runs them on the way, which Python allows.
        graph[module] = {t for _, t in imported(path.read_text(), module, path.name == "__init__.py")
                         if _is_module(t) and not f"{module}.".startswith(f"{t}.")}
    circles, state = [], {}  # state: 1 on the current path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def f():\n    from julnet.pyfunc import log_pyfunc\n", [(2, "julnet"), (2, "julnet.pyfunc")]),
        ("from ..evaluation import fid\n", [(1, "julnet"), (1, "julnet.evaluation"), (1, "julnet.evaluation.fid")]),
        ("import numpy\nimport julnet.inference as inf\n", [(2, "julnet"), (2, "julnet.inference")]),
    ],
)
def test_imports_are_found_where_they_hide(source: str, expected: list[tuple[int, str]]) -> None:
    assert imported(source, "julnet.training.heldout", False) == expected


def test_floors_rank_as_the_table_says() -> None:
    assert floor_of("julnet.models.trained") < floor_of("julnet.evaluation.suite") < floor_of("julnet.inference") < floor_of("julnet.training.heldout")  # type: ignore[operator]
    assert floor_of("julnet") == 0 and floor_of("julnet.nothing_listed") is None
