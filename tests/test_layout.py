"""The package's shape, read from its source: imports form no cycle, only the CLI layer knows
argparse, and every subpackage says what it is for."""

import ast
from pathlib import Path

import pytest

import deconas

PACKAGE = Path(deconas.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def deconas_imports(name: str) -> set:
    """The deconas modules ``name`` imports anywhere in its source (inside functions too), as
    modules: ``from deconas.x import y`` is deconas.x.y when that is a module, else deconas.x.
    Relative imports are resolved against the module's package."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "deconas"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                mod = f"{base}.{node.module}" if node.module else base
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "deconas":
                continue
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in MODULES else mod)
    return {m for m in out if m in MODULES and m != name}


def import_graph() -> dict:
    # A subpackage's __init__ is imported with any of its modules; ours hold only a docstring,
    # so the edge from a module to its package's __init__ carries nothing and is left out.
    return {name: {m for m in deconas_imports(name) if not (name.startswith(m + ".") and m != "deconas")}
            for name in MODULES}


def find_cycle(graph: dict):
    """One import cycle as a list of modules, or None (depth-first search, three colours)."""
    colour, stack = {}, []

    def visit(n):
        colour[n] = "grey"
        stack.append(n)
        for m in sorted(graph[n]):
            if colour.get(m) == "grey":
                return stack[stack.index(m):] + [m]
            if m not in colour:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        colour[n] = "black"
        return None

    for n in sorted(graph):
        if n not in colour:
            found = visit(n)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle_when_there_is_one():
    graph = import_graph()
    graph["deconas.space.genotype"] = graph["deconas.space.genotype"] | {"deconas.search.loop"}
    assert find_cycle(graph) is not None  # search.loop imports the genotype: a way back closes a cycle
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_only_the_cli_layer_imports_argparse():
    outside = [name for name, tree in TREES.items() if not name.startswith("deconas.cli")
               for node in ast.walk(tree)
               if (isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names))
               or (isinstance(node, ast.ImportFrom) and node.module == "argparse")]
    assert outside == []


def test_no_domain_function_takes_parsed_arguments():
    """Outside deconas.cli, no function has a parameter named ``args`` whose attributes it reads
    (what a handler taking an argparse.Namespace does) or annotated as a Namespace."""
    found = []
    for name, tree in TREES.items():
        if name.startswith("deconas.cli"):
            continue
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for a in fn.args.args + fn.args.kwonlyargs:
                annotated = a.annotation is not None and "Namespace" in ast.unparse(a.annotation)
                reads = any(isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == a.arg
                            for n in ast.walk(fn)) if a.arg == "args" else False
                if annotated or reads:
                    found.append(f"{name}.{fn.name}({a.arg})")
    assert found == []


@pytest.mark.parametrize("package", sorted(n for n, p in MODULES.items() if p.name == "__init__.py"))
def test_every_subpackage_has_a_docstring_that_says_what_it_is_for(package):
    doc = ast.get_docstring(TREES[package])
    assert doc and len(doc.split()) >= 15 and "TODO" not in doc


def _promises() -> str:
    readme = (PACKAGE.parents[1] / "README.md").read_text()
    start = readme.index("## What deconas promises")
    return readme[start:readme.index("\n## ", start + 1)]


def test_every_test_the_readme_names_as_holding_a_promise_exists():
    # The promises section names a test for each promise; a renamed or deleted test must not
    # leave a promise that nothing holds.
    import re

    tests = Path(__file__).resolve().parent
    short = {"H": "test_hardening.py", "F": "test_fuzz.py"}
    named = re.findall(r"`(\w+(?:\.py)?)::(test_\w+)`", _promises())
    assert len(named) > 50
    defined = {}
    for f in tests.glob("test_*.py"):
        defined[f.name] = {n.name for n in ast.walk(ast.parse(f.read_text())) if isinstance(n, ast.FunctionDef)}
    missing = [f"{f}::{t}" for f, t in named if t not in defined.get(short.get(f, f), set())]
    assert not missing, missing
