"""docs/architecture.md lists every module file of the two packages, by its path, with a line on
what it holds: a new or renamed module that the map does not name fails here."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.paths import REPO

DOC = REPO / "docs" / "architecture.md"
PACKAGES = ("routerdb", "training")


def module_files(root: Path = REPO) -> list[str]:
    """Repo-relative paths of the packages' modules; an `__init__.py` that holds only a docstring
    is the folder itself, not a module to describe."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            body = ast.parse(path.read_text(encoding="utf-8")).body
            only_docstring = len(body) <= 1 and all(isinstance(n, ast.Expr) for n in body)
            if path.name != "__init__.py" or not only_docstring:
                out.append(path.relative_to(root).as_posix())
    return out


def unlisted(doc_text: str, root: Path = REPO) -> list[str]:
    """Module files not named (as `package/.../module.py`) in a table row of the document."""
    rows = "\n".join(line for line in doc_text.splitlines() if line.startswith("|"))
    return [path for path in module_files(root) if f"`{path}`" not in rows]


def test_every_module_is_in_the_architecture_doc():
    missing = unlisted(DOC.read_text(encoding="utf-8"))
    assert not missing, "docs/architecture.md: add a table row for each of\n" + "\n".join(missing)


def test_a_module_missing_from_the_doc_is_found(tmp_path):
    (tmp_path / "routerdb").mkdir()
    (tmp_path / "training" / "model").mkdir(parents=True)
    (tmp_path / "routerdb" / "__init__.py").write_text('"""Only a docstring."""\n')
    (tmp_path / "routerdb" / "bundle.py").write_text("X = 1\n")
    (tmp_path / "training" / "__init__.py").write_text('"""Doc."""\nfrom x import y\n')
    (tmp_path / "training" / "model" / "heads.py").write_text("Y = 2\n")
    doc = "| `routerdb/bundle.py` | the bundle |\nnamed in prose only: `training/model/heads.py`\n"
    assert unlisted(doc, tmp_path) == ["training/__init__.py", "training/model/heads.py"]
    assert unlisted(doc + "| `training/__init__.py` | x |\n| `training/model/heads.py` | y |", tmp_path) == []
