"""The shape of the code: imports go one way without cycles, the installed packages hold no
experiment, functions stay short, private names stay private, no block is written twice."""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path

import pytest
from setuptools import find_packages

from tests.paths import REPO

PACKAGES = ("routerdb", "training")
MAX_FUNCTION_LINES = 60
MAX_REPEATED_LINES = 6  # a block of more lines than this may appear once in the packages


def _modules() -> dict[str, Path]:
    """{dotted module name: file} of every module of the packages."""
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), str(path)) for name, path in MODULES.items()}


def _imported(node: ast.Import | ast.ImportFrom, module: str) -> list[str]:
    """Project modules an import statement loads (a package's __init__ included)."""
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative import
            base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
        targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
    # Python runs every package __init__ on the way to a module, except the importer's own
    # packages, which are initialised before it runs
    own = {".".join(module.split(".")[:k]) for k in range(1, module.count(".") + 1)}
    loaded = set()
    for target in targets:
        parts = target.split(".")
        loaded |= {".".join(parts[:k]) for k in range(1, len(parts) + 1)} & set(MODULES)
    return sorted(loaded - own)


def _function_level(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    top = {id(n) for n in tree.body}
    # module-level `if TYPE_CHECKING:` and `try: import x / except ImportError:` count as the top
    top |= {id(n) for stmt in tree.body if isinstance(stmt, (ast.If, ast.Try)) for n in ast.walk(stmt)}
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in top]


def import_graph() -> dict[str, set[str]]:
    """Module -> project modules it imports, at module level or inside functions."""
    graph: dict[str, set[str]] = defaultdict(set)
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name] |= set(_imported(node, name)) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_imports_go_one_way():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("routerdb"):
            assert not [t for t in targets if t.startswith("training")], f"{name} imports training"


# training/ in pipeline order: a module imports only from its own entry and the entries before it.
# llm_embeddings trains its own networks (trainer.optim, trainer.losses) against the model's heads;
# evaluation reads data and the model's priors; the router facade trains (trainer) and embeds LLMs
# (llm_embeddings); export writes what the facade trained; the commands sit on top.
LAYERS = (
    # leaves every layer may use (formats, device, verification: artifacts.py split by concern;
    # command: the commands' logging setup and exit codes)
    ("training", "training.specs", "training.artifacts", "training.formats", "training.device",
     "training.verification", "training.command"),
    ("training.data",),
    ("training.encoder",),
    ("training.model",),
    ("training.trainer",),
    ("training.llm_embeddings",),
    ("training.evaluation",),
    ("training.router",),
    ("training.export", "training.quantize"),
    ("training.preflight", "training.fit", "training.evaluate", "training.add_model", "training.cli",
     "training.__main__"),
)


def layer_of(module: str, layers=LAYERS) -> int | None:
    """The index in `layers` of the entry that holds `module`: the entry naming it or, longest
    first, a package above it ("training" itself names the package's __init__ only)."""
    matches = [(len(p), k) for k, entry in enumerate(layers) for p in entry
               if module == p or ("." in p and module.startswith(p + "."))]
    return max(matches)[1] if matches else None


def against_the_order(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    """Every import of a training module from a later layer, and every module with no layer."""
    problems = []
    for name in sorted(graph):
        if not name.startswith("training"):
            continue
        here = layer_of(name, layers)
        if here is None:
            problems.append(f"{name} is in no layer of LAYERS: add it where its imports put it")
            continue
        for target in sorted(graph[name]):
            there = layer_of(target, layers) if target.startswith("training") else -1
            if there is not None and there > here:
                problems.append(f"{name} (layer {here}: {', '.join(layers[here])}) imports {target} "
                                f"(layer {there}: {', '.join(layers[there])}), a later layer")
    return problems


def test_against_the_order_finds_a_backward_import():
    layers = (("training",), ("training.data",), ("training.model",))
    graph = {"training.data.read": {"training.model.heads", "routerdb.features"},
             "training.model.heads": {"training.data.read"}, "training.other": set()}
    assert against_the_order(graph, layers) == [
        "training.data.read (layer 1: training.data) imports training.model.heads (layer 2: training.model), "
        "a later layer",
        "training.other is in no layer of LAYERS: add it where its imports put it"]


def test_training_imports_follow_the_pipeline_order():
    graph = import_graph()
    for name in MODULES:
        graph.setdefault(name, set())
    problems = against_the_order(graph)
    assert not problems, "imports against the pipeline order:\n" + "\n".join(problems)


def test_function_level_imports_are_third_party_with_a_reason():
    """An import inside a function is for an optional or heavy dependency, with a one-line reason
    (a comment on its line or the line above); project modules are imported at the top."""
    problems = []
    for name, tree in TREES.items():
        lines = MODULES[name].read_text().splitlines()
        for node in _function_level(tree):
            where = f"{MODULES[name].relative_to(REPO)}:{node.lineno}"
            if _imported(node, name):
                problems.append(f"{where}: project module imported inside a function")
            elif "#" not in lines[node.lineno - 1] and not lines[node.lineno - 2].strip().startswith("#"):
                problems.append(f"{where}: function-level import without a reason comment")
    assert not problems, "\n".join(problems)


def test_installed_packages_hold_no_experiment_bench_or_shared_data():
    pyproject = (REPO / "pyproject.toml").read_text()
    include = re.search(r'\[tool\.setuptools\.packages\.find\]\s*include\s*=\s*\[([^]]*)\]', pyproject)
    patterns = re.findall(r'"([^"]+)"', include.group(1))
    packages = find_packages(where=str(REPO), include=patterns)
    assert {p.split(".")[0] for p in packages} == set(PACKAGES), packages
    assert (REPO / "experiments" / "quality.py").is_file()  # the study exists, outside the packages
    for package in packages:
        for path in (REPO / package.replace(".", "/")).glob("*.py"):
            text = path.read_text()
            assert "shared/data" not in text and "../shared" not in text, f"{path} names ../shared"


def test_functions_are_short():
    functions = [(name, node) for name, tree in TREES.items() for node in ast.walk(tree)
                 if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))]
    size = {id(node): node.end_lineno - node.lineno + 1 for _, node in functions}
    long = [f"{MODULES[name].relative_to(REPO)}:{node.lineno} {node.name} ({size[id(node)]})"
            for name, node in functions if size[id(node)] > MAX_FUNCTION_LINES]
    assert not long, "functions over 60 lines:\n" + "\n".join(long)


def _private_definitions() -> dict[str, set[str]]:
    """{_name: modules defining it} for module-level and class-level private names."""
    out: dict[str, set[str]] = defaultdict(set)
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if node.name.startswith("_") and not node.name.startswith("__"):
                    out[node.name].add(name)
    return out


def test_no_private_name_of_another_module_is_used():
    defined = _private_definitions()
    problems = []
    for name, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _imported(node, name):
                problems += [f"{name} imports {node.module}.{a.name}" for a in node.names
                             if a.name.startswith("_")]
            if isinstance(node, ast.Attribute) and node.attr in defined and name not in defined[node.attr]:
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    problems.append(f"{name}:{node.lineno} uses {node.attr} of {sorted(defined[node.attr])}")
    assert not problems, "\n".join(problems)


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the lines that carry code (no blanks, comments, imports)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if text and not text.startswith(("#", "import ", "from ")) and len(text) > 3:
            out.append((n, text))
    return out


def repeated_blocks(files: list[Path], size: int, root: Path = REPO) -> list[tuple[str, str]]:
    """Pairs of places (`file:line`, relative to `root`) where `size` consecutive code lines match."""
    seen: dict[tuple[str, ...], str] = {}
    found = []
    for path in files:
        lines = _code_lines(path)
        for k in range(len(lines) - size + 1):
            window = tuple(text for _, text in lines[k:k + size])
            where = f"{path.relative_to(root)}:{lines[k][0]}"
            if window in seen:
                found.append((seen[window], where))
            seen.setdefault(window, where)
    return found


def test_repeated_blocks_are_found(tmp_path):
    block = "\n".join(f"value_{i} = compute({i}) + offset" for i in range(7))
    (tmp_path / "a.py").write_text(block)
    (tmp_path / "b.py").write_text("x = 1\n\n" + block)
    files = [tmp_path / "a.py", tmp_path / "b.py"]
    assert repeated_blocks(files, 7, tmp_path) == [("a.py:1", "b.py:3")]
    assert repeated_blocks(files, 8, tmp_path) == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_block_is_repeated(package):
    files = sorted((REPO / package).rglob("*.py"))
    found = repeated_blocks(files, MAX_REPEATED_LINES + 1)
    assert not found, "repeated blocks:\n" + "\n".join(f"{a} ~ {b}" for a, b in found)
