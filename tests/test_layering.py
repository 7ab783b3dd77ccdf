"""The package's import layering, checked over every import in research/ (module level and
inside functions): no cycles, and no module imports one of a higher layer.

The one written layer order (lowest first). A module's layer is its stage's subpackage, except
command modules (`cli.py`, `*_cli.py`, `research/cli.py`, `__main__.py`), which form the top
layer: they parse arguments and call their stage, and may draw on any stage (e.g. `scaling fit
--holdout` writes a figure).

Imports inside functions are allowed only with a `# lazy: <reason>` comment on the import,
where there is a measured start-up reason (a heavy library, jax ~2-5 s, matplotlib ~1-3 s,
pandas ~1 s on a 2-core machine, kept off `scaling --help` and off processes that never need
it). Code under `if __name__ == "__main__":` is a program entry point, not a dependency, and
is not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

LAYERS = ("base", "config", "data", "model", "train", "bench", "fit", "curves", "plots", "sweep", "cli")
BASE = {"research", "research.errors", "research.fsutil", "research.guards", "research.records"}
LAZY_MARKER = "# lazy:"
PACKAGE = Path(__file__).resolve().parent.parent / "research"


def modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        out[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = path
    return out


def layer(module: str) -> str:
    last = module.rsplit(".", 1)[-1]
    if last in ("cli", "__main__") or last.endswith("_cli"):
        return "cli"
    if module in BASE:
        return "base"
    stage = module.split(".")[1]
    assert stage in LAYERS, f"{module}: subpackage {stage!r} is in no layer; add it to LAYERS"
    return stage


def _is_main_guard(node) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def imports(mods: dict[str, Path]):
    """(importer, imported module, line, inside a function, the statement's source) for every
    import of a research module."""
    for name, path in mods.items():
        source = path.read_text()
        lines = source.splitlines()

        def walk(node, in_function):
            for child in ast.iter_child_nodes(node):
                if _is_main_guard(child):
                    continue
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    text = "\n".join(lines[child.lineno - 1:child.end_lineno])
                    for target in _targets(name, path, child, mods):
                        yield name, target, child.lineno, in_function, text
                yield from walk(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

        yield from walk(ast.parse(source), False)


def _targets(name: str, path: Path, node, mods) -> list[str]:
    if isinstance(node, ast.Import):
        found = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        found = [base] + [f"{base}.{a.name}" for a in node.names]
    # a module importing its own package (research.fit.x -> research.fit) is its package's business
    return [t for t in found if t in mods and t != name and not name.startswith(t + ".")]


def cycles(mods) -> list[list[str]]:
    graph = {m: set() for m in mods}
    for src, dst, *_ in imports(mods):
        graph[src].add(dst)
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            # a package __init__ re-exporting its submodules is not a cycle between modules
            if sum(1 for m in component if mods[m].name != "__init__.py") > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert cycles(modules()) == []


def test_no_upward_imports():
    mods = modules()
    upward = [f"{src}:{line} ({layer(src)}) imports {dst} ({layer(dst)})"
              for src, dst, line, _, _ in imports(mods) if LAYERS.index(layer(dst)) > LAYERS.index(layer(src))]
    assert upward == []


def test_imports_inside_functions_say_why():
    unexplained = [f"{src}:{line} imports {dst} inside a function without a '{LAZY_MARKER} <reason>' comment"
                   for src, dst, line, inside, text in imports(modules()) if inside and LAZY_MARKER not in text]
    assert unexplained == []


def test_the_checks_see_what_they_must(tmp_path):
    """The walk finds function-level and relative imports, and the checks flag a cycle and an upward import."""
    pkg = tmp_path / "research"
    (pkg / "fit").mkdir(parents=True)
    (pkg / "train").mkdir()
    for f in ("__init__.py", "fit/__init__.py", "train/__init__.py"):
        (pkg / f).write_text("")
    (pkg / "fit" / "a.py").write_text("def f():\n    from research.train import b\n")
    (pkg / "train" / "b.py").write_text("from ..fit import a\n")
    mods = {n: p for n, p in ((f"research.{p.relative_to(pkg).with_suffix('').as_posix().replace('/', '.')}", p)
                              for p in pkg.rglob("*.py"))}
    mods = {n.removesuffix(".__init__"): p for n, p in mods.items()}
    found = {(s, d, inside) for s, d, _, inside, _ in imports(mods)}
    assert ("research.fit.a", "research.train.b", True) in found
    assert ("research.train.b", "research.fit.a", False) in found
    assert cycles(mods) == [["research.fit.a", "research.train.b"]]
    assert sorted((s, d) for s, d, *_ in imports(mods) if LAYERS.index(layer(d)) > LAYERS.index(layer(s))) \
        == [("research.train.b", "research.fit"), ("research.train.b", "research.fit.a")]
    assert {s for s, _, _, inside, text in imports(mods) if inside and LAZY_MARKER not in text} == {"research.fit.a"}
    (pkg / "fit" / "a.py").write_text("def f():\n    from research.train import b  # lazy: a reason\n")
    assert {s for s, _, _, inside, text in imports(mods) if inside and LAZY_MARKER not in text} == set()
