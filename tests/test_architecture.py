"""The package's shape, read from its source with `ast` (nothing is imported):

- no import cycle between semrec modules (lazy imports inside functions count too);
- a module imports only from its own floor or below (the floor map below; a new room must be placed);
- no room reaches into another room's private (`_name`) members;
- no module-level public function that nothing outside the tests uses (dead code).
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "semrec"

# room (first name under semrec; "" = the package itself) -> floor. Lower floors know nothing of higher ones.
FLOORS = {
    "": 0, "errors": 0, "config": 0, "artifacts": 0, "runtime": 0, "threads": 0, "distributed": 0,
    "data": 1, "trie": 1, "metrics": 1,
    "embeddings": 2, "quantizers": 2, "tca": 2, "llm_assets": 2,
    "itemtok": 3, "cf": 3,
    "models": 4, "decoding": 4,
    "training": 5, "evaluation": 5,
    "pipeline": 6,
    "report": 7, "serving": 7,
    "cli": 8, "__main__": 8,
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def source_files() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """semrec modules that `module` imports anywhere in its body (a `from pkg import sub` counts as sub)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "semrec")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "semrec":
                continue
            subs = {f"{target}.{a.name}" for a in node.names} & known
            out.update(subs)
            if len(subs) < len(node.names):
                out.add(target)
    return out - {module}


def import_graph() -> dict[str, set[str]]:
    files = source_files()
    known = set(files)
    return {m: imported_modules(m, p, known) for m, p in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in graph:
                continue
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
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle_and_only_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles inside semrec: " + "; ".join(" <-> ".join(c) for c in found)


def test_every_room_has_a_floor():
    rooms = {room(m) for m in source_files()}
    assert not rooms - set(FLOORS), f"place these rooms in FLOORS: {sorted(rooms - set(FLOORS))}"
    assert not set(FLOORS) - rooms, f"FLOORS names rooms that do not exist: {sorted(set(FLOORS) - rooms)}"


def test_no_module_imports_a_higher_floor():
    bad = [f"{m} (floor {FLOORS[room(m)]}) imports {t} (floor {FLOORS[room(t)]})"
           for m, targets in import_graph().items() for t in sorted(targets)
           if FLOORS.get(room(t), 0) > FLOORS.get(room(m), 0)]
    assert not bad, "imports of a higher floor:\n" + "\n".join(bad)


def test_no_module_shadows_the_standard_library():
    import sys

    shadows = [m for m in source_files() if m.rpartition(".")[2] in sys.stdlib_module_names]
    assert not shadows, f"modules named like standard-library modules: {shadows}"


# ------------------------------------------------------------------------------------ private members


def private_names_defined(tree: ast.AST) -> set[str]:
    """`_names` a module defines: functions, classes, module/class attributes, `self._x = ...` attributes."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Name, ast.Attribute)) and isinstance(node.ctx, ast.Store):
            out.add(node.id if isinstance(node, ast.Name) else node.attr)
        elif isinstance(node, ast.arg):
            out.add(node.arg)
    return {n for n in out if n.startswith("_") and not n.startswith("__")}


def test_no_room_uses_another_rooms_private_members():
    trees = {m: ast.parse(p.read_text(), str(p)) for m, p in source_files().items()}
    defined_in: dict[str, set[str]] = defaultdict(set)  # private name -> rooms defining it
    for m, tree in trees.items():
        for name in private_names_defined(tree):
            defined_in[name].add(room(m))
    bad = []
    for m, tree in trees.items():
        here = room(m)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("semrec"):
                for a in node.names:
                    if a.name.startswith("_") and not a.name.startswith("__") and room(node.module) != here:
                        bad.append(f"{m}: imports {a.name} from {node.module}")
            elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                  and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
                  and not (isinstance(node.value, ast.Call) and getattr(node.value.func, "id", "") == "super")
                  and defined_in.get(node.attr) and here not in defined_in[node.attr]):
                bad.append(f"{m}:{node.lineno}: uses .{node.attr} (defined in {sorted(defined_in[node.attr])})")
    assert not bad, "private members used across rooms:\n" + "\n".join(bad)


# ----------------------------------------------------------------------------------------- dead code


def names_used(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            out.add(node.id)
        elif isinstance(node, ast.Attribute):
            out.add(node.attr)
    return out


def declared_api() -> set[str]:
    """Names a package's __init__ lists in __all__: the room's public API (e.g. semrec.tca's losses)."""
    out = set()
    for p in PACKAGE.rglob("__init__.py"):
        for node in ast.parse(p.read_text(), str(p)).body:
            if isinstance(node, (ast.Assign, ast.AugAssign)) and "__all__" in ast.unparse(node).split("=")[0]:
                out |= {c.value for c in ast.walk(node.value) if isinstance(c, ast.Constant)}
    return out


def test_no_public_function_is_used_only_by_tests():
    """Every module-level public function is used by the package, a benchmark, a script or a README code
    example, or is part of a room's declared API (its __init__'s __all__). Imports alone are not uses."""
    used: set[str] = declared_api()
    for p in [*PACKAGE.rglob("*.py"), *(REPO / "benchmarks").rglob("*.py"), *(REPO / "scripts").rglob("*.py")]:
        used |= names_used(ast.parse(p.read_text(), str(p)))
    readme = (REPO / "README.md").read_text()
    for block in re.findall(r"```python\n(.*?)```", readme, flags=re.S):
        used |= names_used(ast.parse(block))
    unused = []
    for m, p in source_files().items():
        for node in ast.parse(p.read_text(), str(p)).body:
            if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_")
                    and node.name not in used):
                unused.append(f"{m}.{node.name}")
    assert not unused, "public functions nothing outside the tests uses (remove them or make them private):\n" + \
        "\n".join(unused)


# ------------------------------------------------------------------------------------------ the tests


def test_tests_mirror_the_rooms_and_never_import_each_other():
    """Test modules live in a folder per room (tests/<room>/test_*.py, plus this file), have distinct
    names, and import shared code from tests/helpers or conftest fixtures, never from another test module."""
    tests = REPO / "tests"
    modules = sorted(tests.rglob("test_*.py"))
    names = [p.stem for p in modules]
    twins = sorted({n for n in names if names.count(n) > 1})
    assert not twins, f"test modules with the same name: {twins}"
    loose = [p.name for p in modules if p.parent == tests and p.name != "test_architecture.py"]
    assert not loose, f"put these in the folder of the room they test: {loose}"
    bad = []
    for p in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            targets = ([a.name for a in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            bad += [f"{p.relative_to(tests)} imports {t}" for t in targets if t.split(".")[-1] in names]
    assert not bad, "test modules importing test modules:\n" + "\n".join(bad)


def test_readme_layout_table_names_every_room():
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = {m.strip("`").rstrip("/") for row in table.splitlines() if row.startswith("| ") and "|" in row[2:]
             for m in re.findall(r"`[\w/]+`", row.split("|")[2])}
    assert named == set(FLOORS) - {""}, f"README layout vs package: missing {sorted(set(FLOORS) - {''} - named)}, " \
        f"not rooms {sorted(named - set(FLOORS))}"
    for row in table.splitlines():
        cells = row.split("|")
        if len(cells) > 3 and cells[1].strip().isdigit():
            for m in re.findall(r"`([\w/]+)`", cells[2]):
                assert FLOORS[m.rstrip("/")] == int(cells[1]), f"README puts {m} on floor {cells[1].strip()}"


# ------------------------------------------------------------------------------------ size and copies

MAIN_PATH = ("pipeline", "training", "evaluation")  # rooms whose functions stay short enough to read whole
MAX_FUNCTION_LINES = 80
COPY_WINDOW = 6  # non-blank, non-comment, non-import lines


def test_main_path_functions_fit_on_a_screen():
    long = []
    for m, p in source_files().items():
        if room(m) not in MAIN_PATH:
            continue
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{m}.{node.name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines on the main path:\n" + "\n".join(long)


def copied_blocks(files: dict[str, str], window: int = COPY_WINDOW) -> list[list[str]]:
    """Places where the same `window` consecutive code lines (stripped; blank, comment and import lines
    skipped; trivial windows under 120 characters ignored) occur more than once."""
    seen: dict[tuple, list[str]] = defaultdict(list)
    for name, text in files.items():
        lines = [(i + 1, s.strip()) for i, s in enumerate(text.splitlines())]
        lines = [(i, s) for i, s in lines if s and not s.startswith(("#", "import ", "from "))]
        for k in range(len(lines) - window + 1):
            block = tuple(s for _, s in lines[k:k + window])
            if sum(map(len, block)) >= 120:
                seen[block].append(f"{name}:{lines[k][0]}")
    return [places for places in seen.values() if len(places) > 1]


def test_copy_finder_finds_a_copy():
    body = "\n".join(f"value_number_{i} = compute_something_long(argument_{i}, other_argument)" for i in range(6))
    assert copied_blocks({"a.py": body, "b.py": "x = 1\n" + body}) == [["a.py:1", "b.py:2"]]
    assert copied_blocks({"a.py": body}) == []


def test_no_block_of_code_is_repeated():
    found = copied_blocks({m: p.read_text() for m, p in source_files().items()})
    assert not found, f"blocks of {COPY_WINDOW}+ lines that occur more than once (make one helper):\n" + \
        "\n".join(", ".join(places) for places in found)
