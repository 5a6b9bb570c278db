"""The package's shape: the domain modules never import Dagster, and no module imports itself back.

The import graph is read from the source (every import, including those inside functions,
which is how an import cycle hides), so a new module is covered without being listed here.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "batch_predict"

# The Dagster layer: definitions and what they are built from, plus the CLI that runs them.
# Everything else is domain code that must work, and be tested, without Dagster.
DAGSTER_LAYER = {
    "batch_predict.assets",
    "batch_predict.checks",
    "batch_predict.cli",
    "batch_predict.definitions",
    "batch_predict.partitions",
    "batch_predict.resources",
    "batch_predict.results",
    "batch_predict.runs",
    "batch_predict.schedules",
    "batch_predict.training_assets",
}


def module_files() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports: those of this package, and `dagster` for any dagster import."""
    modules = module_files()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
                # `from package import submodule` needs the submodule, not the package's other names
                targets.update(submodules or {node.module})
        graph[name] = {t for t in targets if t in modules} | {
            "dagster" for t in targets if t.split(".")[0] == "dagster"
        }
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module `start` imports, directly or not, with the module that imports it."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        current = todo.pop()
        for target in graph.get(current, set()):
            if target not in seen:
                seen[target] = current
                todo.append(target)
    return seen


def test_the_graph_sees_the_package() -> None:
    graph = import_graph()
    assert {"batch_predict.assets", "batch_predict.models.registry", "batch_predict.warehouse.ledger"} <= graph.keys()
    assert "dagster" in graph["batch_predict.assets"]
    assert "batch_predict.models.types" in graph["batch_predict.models.registry"]


@pytest.mark.parametrize("module", sorted(set(module_files()) - DAGSTER_LAYER))
def test_domain_module_never_imports_dagster(module: str) -> None:
    found = reachable(import_graph(), module)
    if "dagster" in found:
        chain = ["dagster"]
        while chain[-1] != module:
            chain.append(found[chain[-1]])
        pytest.fail(f"{module} imports Dagster through {' <- '.join(chain)}; keep Dagster in the Dagster layer")


def test_no_import_cycle() -> None:
    graph = import_graph()
    cycles = sorted(module for module in graph if module in reachable(graph, module))
    assert not cycles, f"modules that import themselves back: {cycles}"


def test_cycle_detection_finds_a_cycle() -> None:
    """The check above can fail: a graph with a cycle through a function-level import is caught."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert "a" in reachable(graph, "a") and "d" not in reachable(graph, "d")


def test_domain_modules_import_without_dagster() -> None:
    """Importing every domain module in a fresh interpreter leaves Dagster unloaded."""
    domain = sorted(set(module_files()) - DAGSTER_LAYER)
    code = "import sys\n" + "".join(f"import {m}\n" for m in domain) + "print('dagster' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr


def test_definitions_lists_everything_by_name() -> None:
    """definitions.py is the table of contents: every asset, check, job, schedule and sensor it defines
    appears there by name (as `pipeline.inputs`, `checks.model_not_outdated`, `automation.training_job`, ...)."""
    from batch_predict.definitions import defs

    source = (PACKAGE / "definitions.py").read_text()
    listed = {node.attr for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Attribute)}
    repository = defs.get_repository_def()
    names = {key.to_user_string() for key in repository.asset_graph.get_all_asset_keys()}
    # A check definition of several checks (one step for them) is listed by its name, and names its checks.
    for checks in defs.asset_checks or []:
        specs = list(checks.check_specs)  # type: ignore[union-attr]
        if len(specs) == 1:
            names.add(specs[0].name)
        else:
            names.add(checks.node_def.name)  # type: ignore[union-attr]
            assert all(spec.name in source for spec in specs), f"{checks.node_def.name} does not name its checks"  # type: ignore[union-attr]
    names |= {job.name for job in repository.get_all_jobs() if not job.name.startswith("__")}
    # Schedules are named after their job (`predictions_job_schedule`); definitions.py says `predictions_schedule`.
    names |= {schedule.job_name.removesuffix("_job") + "_schedule" for schedule in repository.schedule_defs}
    names |= {sensor.name for sensor in repository.sensor_defs}
    assert names - listed == set(), f"not listed by name in definitions.py: {sorted(names - listed)}"


ONE_SCREEN = 60  # lines


@pytest.mark.parametrize("module", ["assets.py", "training_assets.py"])
def test_asset_bodies_read_in_one_screen(module: str) -> None:
    """Asset bodies translate between Dagster and the domain; the logic itself lives in Dagster-free modules."""
    tree = ast.parse((PACKAGE / module).read_text())
    assets = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and any("asset" in ast.unparse(decorator) for decorator in node.decorator_list)
    ]
    assert assets, f"no @dg.asset found in {module}"
    long = {
        node.name: node.end_lineno - node.lineno + 1 for node in assets if node.end_lineno - node.lineno >= ONE_SCREEN
    }  # type: ignore[operator]
    assert not long, f"asset bodies longer than {ONE_SCREEN} lines: {long}"


def test_resources_only_configure_and_construct() -> None:
    """Resource methods build domain objects from their configuration; none holds domain logic."""
    tree = ast.parse((PACKAGE / "resources.py").read_text())
    methods = [
        node
        for cls in tree.body
        if isinstance(cls, ast.ClassDef)
        for node in cls.body
        if isinstance(node, ast.FunctionDef)
    ]
    long = {node.name: node.end_lineno - node.lineno + 1 for node in methods if node.end_lineno - node.lineno >= 15}  # type: ignore[operator]
    assert methods and not long, f"resource methods with more than construction in them: {long}"
