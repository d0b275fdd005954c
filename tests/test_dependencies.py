"""The README's list of runtime dependencies is pyproject's `dependencies`, name for name."""

from __future__ import annotations

import re

from tests.paths import REPO


def runtime_dependencies() -> set[str]:
    """Distribution names of `[project] dependencies` in pyproject.toml (one quoted spec a line)."""
    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(encoding="utf-8"),
                      re.M | re.S)
    specs = re.findall(r'^\s*"([^"]+)"', block.group(1), re.M)
    return {re.match(r"[A-Za-z0-9_.-]+", spec).group(0).lower() for spec in specs}


def readme_runtime_list() -> set[str]:
    """The backticked names of the README's sentence "The runtime needs only ...; no torch"."""
    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    sentence = re.search(r"The runtime needs only pyproject's `dependencies`:(.*?); no torch", text)
    assert sentence, "README.md lost its sentence 'The runtime needs only pyproject's `dependencies`: ...'"
    return {name.lower() for name in re.findall(r"`([^`]+)`", sentence.group(1))}


def test_readme_names_every_extra_of_pyproject():
    extras = re.findall(r"^(\w+) = \[", (REPO / "pyproject.toml").read_text(encoding="utf-8")
                        .split("[project.optional-dependencies]")[1].split("\n[")[0], re.M)
    text = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    sentence = re.search(r"Extras: (.*?)\. ONNX Runtime comes as", text)
    assert sentence, "README.md lost its sentence 'Extras: `name` (what for), ...'"
    assert set(re.findall(r"`(\w+)` \(", sentence.group(1))) == set(extras), extras


def test_readme_lists_the_runtime_dependencies_of_pyproject():
    assert runtime_dependencies() >= {"duckdb", "sqlalchemy", "duckdb-engine", "tqdm"}
    assert readme_runtime_list() == runtime_dependencies(), (
        "README.md's runtime dependency list and pyproject.toml's [project] dependencies differ: "
        f"only in the README {sorted(readme_runtime_list() - runtime_dependencies())}, only in pyproject "
        f"{sorted(runtime_dependencies() - readme_runtime_list())}; make them name the same packages.")
