"""Every dotted path into `training` or `routerdb`, and every file path, that the prose names still
exists: in README.md, docs/, sql/, the docstrings and comments of the code (and the strings of
the two packages, which users read in error messages). A path resolves when its longest importable prefix is a
module and the rest are attributes of it (a class's pydantic or dataclass field, or an attribute
its methods assign to `self`, counts)."""

from __future__ import annotations

import ast
import importlib
import inspect
import io
import re
import tokenize
from pathlib import Path

import pytest

from tests.paths import REPO

DOTTED = re.compile(r"(?<![\w./-])(?:training|routerdb)(?:\.[A-Za-z_]\w*)+")
# dotted names that are not Python: what routerdb.register creates in DuckDB
NOT_PYTHON = {"routerdb.router_models": "the LLM table in the DuckDB schema `routerdb`",
              "routerdb.main": "the DuckDB catalog `routerdb` and its schema `main`"}
# a file of this repository named by its path, e.g. training/model/network.py or sql/demo.sql
FILE_PATH = re.compile(r"(?<![\w./-])(?:routerdb|training|tests|experiments|bench|examples|sql|docs)/"
                       r"[\w./-]*?\.(?:py|sql|md|json)\b")
PROSE = ("README.md", "docs/**/*.md", "sql/*.sql", "examples/**/*.md")
CODE = ("routerdb", "training", "experiments", "bench", "tests")
PACKAGES = ("routerdb", "training")  # their string literals count too: error messages name paths


def texts_of_python(path: Path, *, strings: bool) -> list[tuple[int, str]]:
    """(line, text) of the comments and docstrings of a Python file (and every string, if asked)."""
    source = path.read_text(encoding="utf-8")
    out = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
           if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source, str(path))):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                out.append((body[0].lineno, body[0].value.value))
        if strings and isinstance(node, ast.Constant) and isinstance(node.value, str):
            out.append((node.lineno, node.value))
    return out


def named_paths(root: Path = REPO, pattern: re.Pattern = DOTTED) -> dict[str, list[str]]:
    """{path: [file:line, ...]} of every match of `pattern` (by default the dotted `training.` /
    `routerdb.` paths) in the prose, the SQL, and the docstrings and comments of the code."""
    found: dict[str, list[str]] = {}

    def add(where: Path, line: int, text: str) -> None:
        for match in pattern.finditer(text):
            places = found.setdefault(match.group(0), [])
            if (place := f"{where.relative_to(root)}:{line}") not in places:  # a docstring is a string too
                places.append(place)

    for files in PROSE:
        for path in sorted(root.glob(files)):
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                add(path, n, line)
    for folder in CODE:
        for path in sorted((root / folder).rglob("*.py")):
            for n, text in texts_of_python(path, strings=folder in PACKAGES):
                add(path, n, text)
    return found


def _member(obj: object, name: str) -> tuple[bool, object]:
    if hasattr(obj, name):
        return True, getattr(obj, name)
    if inspect.isclass(obj):
        fields = {**getattr(obj, "model_fields", {}), **getattr(obj, "__dataclass_fields__", {})}
        if name in fields or name in getattr(obj, "__annotations__", {}):
            return True, None
        source = inspect.getsource(obj)
        if re.search(rf"\bself\.{re.escape(name)}\s*(:[^=\n]+)?=(?!=)", source):
            return True, None
    return False, None


def resolves(path: str) -> bool:
    """Whether `path` names a module, or an attribute (chain) of one."""
    parts = path.split(".")
    for k in range(len(parts), 0, -1):
        name = ".".join(parts[:k])
        try:
            obj = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and not name.startswith(exc.name):
                raise  # a dependency of a real module is missing: not a stale path
            continue
        if not Path(obj.__file__).resolve().is_relative_to(REPO):
            return False  # found elsewhere on the path (an older install): not in this tree
        break
    else:
        return False
    for attr in parts[k:]:
        ok, obj = _member(obj, attr)
        if not ok:
            return False
        if obj is None:  # a field or instance attribute: nothing further to look into
            return attr == parts[-1]
    return True


def stale_paths(root: Path = REPO) -> list[str]:
    return [f"{path} ({', '.join(where[:3])})" for path, where in sorted(named_paths(root).items())
            if path not in NOT_PYTHON and not resolves(path)]


def missing_files(root: Path = REPO) -> list[str]:
    return [f"{path} ({', '.join(where[:3])})" for path, where in sorted(named_paths(root, FILE_PATH).items())
            if not (root / path).exists()]


def test_every_file_path_exists():
    missing = missing_files()
    assert not missing, "file paths that no longer exist (name the file that holds it now):\n" + \
        "\n".join(missing)


def test_a_missing_file_path_is_found(tmp_path):
    (tmp_path / "training" / "data").mkdir(parents=True)
    (tmp_path / "training" / "data" / "splits.py").write_text('"""Splits; see training/data/splits.py."""\n')
    (tmp_path / "README.md").write_text("Read training/splits.py and training/data/splits.py.\n")
    assert missing_files(tmp_path) == ["training/splits.py (README.md:1)"]


def test_every_dotted_path_resolves():
    stale = stale_paths()
    assert not stale, "dotted paths that no longer exist (rename them to what holds the thing now):\n" + \
        "\n".join(stale)


def test_the_check_sees_every_place(tmp_path):
    """A planted bad path is found in prose, SQL, a comment and a docstring; good ones pass."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "sql").mkdir(parents=True)
    (tmp_path / "training").mkdir()
    (tmp_path / "README.md").write_text("Run `training.fit.main`, see training.metrics.apgr.\n")
    (tmp_path / "docs" / "x.md").write_text("The Router: routerdb.Bundle.load and routerdb.no_such.\n")
    (tmp_path / "sql" / "x.sql").write_text(
        "-- the rule of training.evaluation.metrics.cost_quality_curve\n")
    (tmp_path / "training" / "x.py").write_text(
        '"""Reads training.specs.FitSpec.output and training.model.nowhere."""\n'
        "# see training.command.Command.run and routerdb.router.Router.nope\n"
        "TEXT = 'python -m training.quantise'\n")
    assert stale_paths(tmp_path) == [
        "routerdb.no_such (docs/x.md:1)", "routerdb.router.Router.nope (training/x.py:2)",
        "training.metrics.apgr (README.md:1)", "training.model.nowhere (training/x.py:1)",
        "training.quantise (training/x.py:3)"]


@pytest.mark.parametrize("path", ["training.specs.FitSpec.output", "training.command.Command.run",
                                  "routerdb.Bundle.load", "training.fit",
                                  "routerdb.tokenizer.length_batches"])
def test_real_paths_resolve(path):
    assert resolves(path)


@pytest.mark.parametrize("path", ["training.metrics", "training.artifacts", "training.fit.no_such",
                                  "routerdb.Bundle.nope", "training.specs.FitSpec.outputs"])
def test_stale_paths_do_not(path):
    assert not resolves(path)
