"""The architecture stays visible: the core names no plugin, no import cycles, files stay small.

These read the source, so they hold for code nobody ran yet.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "editors", "classifiers")
MAX_LINES = 400


def _sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _plugin_names() -> set[str]:
    """Every name a plugin declares: editor properties and directions and modes, asset names, classes."""
    import classifiers.assets  # noqa: F401 - registers the zoo's assets
    import editors.assets  # noqa: F401
    from editors.age import AgeEditor
    from editors.electrodes import ElectrodeEditor
    from editors.gender import GenderEditor
    from editors.placebo import PlaceboEditor
    from editors.symmetry import AsymmetryEditor, SymmetryEditor
    from editors.symmetry.editor import SOURCE_SIDES, SYMMETRY_MODES
    from engine.assets import REGISTRY

    names: set[str] = set()
    for cls in (AgeEditor, GenderEditor, SymmetryEditor, AsymmetryEditor, ElectrodeEditor, PlaceboEditor):
        names.add(cls.__name__)
        if cls.property != "none":
            names.add(cls.property)
    # Editor directions ("more"/"less" are also scipy's one-sided alternatives: left out) and modes.
    names |= {"older", "younger", "male", "female", "opposite"}
    names |= set(SYMMETRY_MODES) | set(SOURCE_SIDES) - {"average", "left", "right"}
    from engine.assets import CORE_ASSETS, load_plugin_assets

    load_plugin_assets()
    names |= set(REGISTRY) - CORE_ASSETS  # the plugins' weights
    names |= {"fer", "facex", "pyemotion", "semg", "electrodes"}
    return names


def _plugin_classes() -> set[str]:
    from editors.age import AgeEditor
    from editors.electrodes import ElectrodeEditor
    from editors.gender import GenderEditor
    from editors.placebo import PlaceboEditor
    from editors.symmetry import AsymmetryEditor, SymmetryEditor

    return {c.__name__ for c in (AgeEditor, GenderEditor, SymmetryEditor, AsymmetryEditor, ElectrodeEditor,
                                 PlaceboEditor)}


#: Metadata keys of one editor (the electrodes' site counts) that the old audit tested by name.
PLUGIN_PREFIXES = ("sites_", "edit_sites_")


def _string_literals(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docstrings]


def test_engine_names_no_plugin():
    """No property name, editor mode or direction, plugin class or plugin weight in the core's code.

    Docstrings may mention plugins as examples; code (string literals, identifiers, imports) may not.
    """
    names = _plugin_names()
    classes = _plugin_classes()
    found = []
    for path in _sources("engine"):
        rel = path.relative_to(ROOT)
        for line, text in _string_literals(path):
            if text in names or text.startswith(PLUGIN_PREFIXES):
                found.append(f"{rel}:{line}: string {text!r} names a plugin")
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
                if module and module.split(".")[0] in ("editors", "classifiers"):
                    found.append(f"{rel}:{node.lineno}: imports {module}")
            if isinstance(node, ast.Name) and node.id in classes:
                found.append(f"{rel}:{node.lineno}: identifier {node.id}")
    assert not found, "the core names plugins:\n" + "\n".join(found)


def test_the_grep_would_catch_a_plugin_name(tmp_path):
    """The check above is not vacuous: a property test like the old audit's is found."""
    bad = tmp_path / "bad.py"
    bad.write_text('def f(prop):\n    return prop == "semg" or mode in ("texture", "both") or "sites_drawn"\n')
    names = _plugin_names()
    hits = [t for _, t in _string_literals(bad) if t in names or t.startswith(PLUGIN_PREFIXES)]
    assert set(hits) == {"semg", "texture", "both", "sites_drawn"}


def _imports(path: Path, package_root: Path, modules: set[str]) -> set[str]:
    """Modules of our packages imported at module level (imports inside functions are lazy by design)."""
    tree = ast.parse(path.read_text())
    module = ".".join(path.relative_to(package_root).with_suffix("").parts)
    base = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    out = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")[: len(base.split(".")) - node.level + 1]
                target = ".".join(parts + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from pkg import submodule` needs the submodule, not the package's __init__.
            subs = {f"{target}.{a.name}" for a in node.names} & modules
            out |= subs if subs else {target}
    return {m for m in out if m.split(".")[0] in PACKAGES}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every back edge of a depth-first walk, as the cycle it closes."""
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return cycles


def test_cycle_finder_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    paths = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for package in PACKAGES for p in _sources(package)}
    modules = {name: _imports(path, ROOT, set(paths)) for name, path in paths.items()}
    graph = {m: {d for d in deps if d in modules and d != m} for m, deps in modules.items()}
    cycles = find_cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("package", [*PACKAGES, "tests", "benchmarks", "scripts"])
def test_files_stay_small(package):
    long = {str(p.relative_to(ROOT)): n for p in _sources(package)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these files (> {MAX_LINES} lines): {long}"
