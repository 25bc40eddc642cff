"""The layout holds: no import cycle between packages, pure modules stay pure, pieces stay small.

The package graph is read from the source (``ast``), lazy imports inside functions included, so a
cycle hidden in a function body fails here too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("backends", "deployments", "pipelines")
FRAMEWORKS = ("ray", "torch", "tensorflow", "onnxruntime")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60

# Modules that must import no Ray and no framework: their unit tests run in milliseconds.
PURE = [
    "backends", "backends.errors", "backends.dtypes", "backends.model_config", "backends.signature",
    "backends.registry", "backends.gpu", "backends.base",
    "deployments.names", "deployments.settings",
    "deployments.protocol.v2", "deployments.protocol.tensors", "deployments.protocol.limits",
    "deployments.protocol.openapi", "deployments.protocol.tfserving_apis", "deployments.protocol.tfserving_grpc",
    "deployments.protocol.tfserving_examples",
    "deployments.repository.config", "deployments.repository.triton_schema", "deployments.repository.scan",
    "deployments.repository.watch", "deployments.repository.events", "deployments.repository.status",
    "deployments.repository.roots", "deployments.repository.tfserving_config",
    "deployments.repository.tfserving_batching", "deployments.repository.tfserving_monitoring",
    "deployments.launch.tfserving_start", "deployments.launch.torchserve_start", "deployments.repository.mar",
    "deployments.repository.ts_registry", "deployments.launch.torchserve_properties",
    "deployments.protocol.torchserve_openapi", "deployments.dataplane.traffic", "deployments.repository.traffic",
    "deployments.launch.traffic_cli", "deployments.launch.compare_cli", "deployments.dataplane.guard",
    "deployments.dataplane.shadow", "deployments.dataplane.replica_load", "deployments.repository.autoscaling",
    "deployments.control.autoscale_policy", "deployments.control.scaling_watch",
    "backends.torchserve", "backends.torchserve.wire",
    "deployments.dataplane.auth", "deployments.dataplane.table", "deployments.dataplane.batching",
    "deployments.dataplane.tf_warmup",
    "deployments.control.plan", "deployments.control.state", "deployments.control.views",
    "deployments.observability.metrics", "deployments.observability.hub", "deployments.observability.logs",
    "deployments.observability.torchserve_metrics",
    "deployments.ingress.http", "deployments.applications.serve_config",
    "pipelines", "pipelines.base", "pipelines.graph", "pipelines.spec", "pipelines.ensemble",
    "pipelines.loan_decision",
]


def _modules() -> dict[str, Path]:
    """Every product module by dotted name."""
    found = {}
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _package_of(module: str, modules: dict[str, Path]) -> str:
    path = modules[module]
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imported(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """Product modules a module imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n in modules}


def package_graph() -> dict[str, set[str]]:
    """Package -> the other product packages its modules import."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        source = _package_of(module, modules)
        targets = {_package_of(t, modules) for t in _imported(ast.parse(path.read_text()), modules)}
        graph.setdefault(source, set()).update(targets - {source})
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path (first node repeated at the end), or None."""
    done: set[str] = set()

    def visit(node: str, stack: list[str]) -> list[str] | None:
        if node in stack:
            return stack[stack.index(node):] + [node]
        if node in done:
            return None
        for target in sorted(graph.get(node, ())):
            cycle = visit(target, [*stack, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_cycle_between_packages() -> None:
    graph = package_graph()
    assert {"backends", "pipelines", "deployments.control", "deployments.dataplane"} <= set(graph)
    assert find_cycle(graph) is None, f"import cycle between packages: {' -> '.join(find_cycle(graph))}"


def test_pipelines_and_backends_never_import_the_ray_side() -> None:
    graph = package_graph()
    for package in ("pipelines", "backends"):
        upward = {t for t in graph[package] if t.startswith("deployments")}
        assert not upward, f"{package} imports {sorted(upward)}"
    assert not {t for t in graph["deployments"] if t != "backends"}, "deployments/*.py must stay at the bottom"


def test_pure_modules_import_no_framework_and_no_ray() -> None:
    assert set(PURE) <= set(_modules()), set(PURE) - set(_modules())
    code = ("import importlib, sys\n"
            f"for name in {PURE!r}:\n"
            "    importlib.import_module(name)\n"
            f"    bad = [m for m in {FRAMEWORKS!r} if m in sys.modules]\n"
            "    if bad:\n"
            "        print(name, 'imported', ','.join(bad))\n"
            "        break\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == ""


def test_modules_and_functions_stay_small() -> None:
    too_big = []
    for module, path in _modules().items():
        source = path.read_text()
        lines = len(source.splitlines())
        if lines > MAX_MODULE_LINES:
            too_big.append(f"{module}: {lines} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_big.append(f"{module}.{node.name}: {length} lines")
    assert not too_big, too_big
