"""The layout's rules, checked on the source (imports inside functions included):

- no import cycle in ase_nnip, md_harness or studies;
- ``ase_nnip.core`` (the shared core) imports nothing else of ours but ``ase_nnip.version``;
- ``ase_nnip`` never imports ``md_harness`` or ``studies``;
- ``md_harness`` imports from ``ase_nnip`` only the core and the model loader
  (:data:`HARNESS_MAY_IMPORT`);
- nothing imports the studies layer but the studies layer itself.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("ase_nnip", "md_harness", "studies")
CORE = "ase_nnip.core"
#: What md_harness may import from ase_nnip: the core, and the calculator and model-file reader
#: it loads a model file with (md_harness.models).
HARNESS_MAY_IMPORT = ("ase_nnip", "ase_nnip.version", "ase_nnip.calculator", "ase_nnip.io.model_file")


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def import_graph() -> dict[str, set]:
    """{module: modules of ours it imports anywhere in its source}."""
    mods = modules()

    def ours(name):
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in map(ours, targets):
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(graph: dict[str, set], importer: str, allowed) -> dict[str, list]:
    """{module of package ``importer``: the imports of ours that ``allowed(target)`` refuses}."""
    out = {m: sorted(t for t in targets if not allowed(t)) for m, targets in graph.items() if in_package(m, importer)}
    return {m: t for m, t in out.items() if t}


def core_may_import(target: str) -> bool:
    return in_package(target, CORE) or target == "ase_nnip.version"


def ase_nnip_may_import(target: str) -> bool:
    return in_package(target, "ase_nnip")


def harness_may_import(target: str) -> bool:
    return in_package(target, "md_harness") or in_package(target, CORE) or target in HARNESS_MAY_IMPORT


def test_the_rules_catch_planted_violations():
    graph = {
        "ase_nnip.core.threads": {"ase_nnip.models.base"},
        "ase_nnip.calculator": {"md_harness.store"},
        "md_harness.report": {"ase_nnip.landscape.files", "ase_nnip.core.statistics"},
        "md_harness.models": {"studies.jobs"},
    }
    assert violations(graph, CORE, core_may_import) == {"ase_nnip.core.threads": ["ase_nnip.models.base"]}
    assert violations(graph, "ase_nnip", ase_nnip_may_import) == {"ase_nnip.calculator": ["md_harness.store"]}
    assert violations(graph, "md_harness", harness_may_import) == {
        "md_harness.report": ["ase_nnip.landscape.files"], "md_harness.models": ["studies.jobs"]}


def test_the_core_imports_only_the_core():
    assert violations(import_graph(), CORE, core_may_import) == {}


def test_ase_nnip_never_imports_md_harness_or_studies():
    assert violations(import_graph(), "ase_nnip", ase_nnip_may_import) == {}


def test_md_harness_imports_only_the_core_and_the_model_loader():
    assert violations(import_graph(), "md_harness", harness_may_import) == {}


def test_nothing_imports_the_studies_layer():
    graph = import_graph()
    wrong = {m: sorted(t for t in targets if in_package(t, "studies"))
             for m, targets in graph.items() if not in_package(m, "studies")}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_the_harness_command_line_loads_only_the_core():
    """What `md-harness run` imports before it reads a config: the core, never torch or models."""
    import subprocess
    import sys

    code = ("import sys, md_harness.cli, md_harness.runner, md_harness.report; "
            "print(sorted(m for m in sys.modules if m.startswith('ase_nnip') or m == 'torch'))")
    loaded = eval(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert [m for m in loaded if not (m == "ase_nnip" or core_may_import(m))] == []
