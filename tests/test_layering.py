"""The package's import graph: no cycles, and the library (learners, nets, data, training, l2o,
bench, types) imports nothing of the application (config, experiment, protocol, episodic_run,
l2o_run, cli, registry, run_dir).
Static: every import statement counts, including those inside functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "metajax"
LIBRARY = ("metajax.learners", "metajax.nets", "metajax.data", "metajax.training", "metajax.l2o",
           "metajax.bench", "metajax.types")
APPLICATION = ("metajax.config", "metajax.experiment", "metajax.protocol", "metajax.episodic_run",
               "metajax.l2o_run", "metajax.cli", "metajax.registry", "metajax.run_dir",
               "metajax.__main__")


def _modules() -> dict[str, set[str]]:
    files = {}
    for f in PACKAGE.rglob("*.py"):
        name = ".".join(f.relative_to(PACKAGE.parent).with_suffix("").parts)
        files[name.removesuffix(".__init__")] = f
    graph = {}
    for name, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("metajax"):
                deps.add(node.module)
                deps |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def _in(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def test_the_library_imports_no_application_module():
    graph = _modules()
    assert any(_in(m, APPLICATION) for m in graph) and any(_in(m, LIBRARY) for m in graph)
    bad = {m: sorted(d for d in deps if _in(d, APPLICATION))
           for m, deps in graph.items() if _in(m, LIBRARY)}
    assert not {m: d for m, d in bad.items() if d}


def test_no_import_cycles():
    graph = _modules()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            assert state.get(d) != 1, " -> ".join([*path[path.index(d):], d])
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
