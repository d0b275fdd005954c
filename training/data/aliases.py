"""Model-name aliases: spelling -> canonical model name (no torch).

``training.data.read`` maps every model name through them before any check, so two spellings of one
LLM become one model. Problems raise ``DataError`` naming the file (``<aliases>`` for a mapping).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from training.data.errors import data_error, show_value


def load_aliases(spec: str | os.PathLike | Mapping | None = None) -> dict[str, str]:
    """Spelling -> canonical model name, from a model_aliases.json path or mapping
    (``{"aliases": {canonical: [spellings]}}``) or a plain ``{spelling: canonical}`` mapping."""
    if spec is None:
        return {}
    name = "<aliases>"
    if isinstance(spec, (str, os.PathLike)):
        name = str(spec)
        spec = _read_aliases_file(Path(spec))
    if not isinstance(spec, Mapping):
        raise TypeError(f"aliases must be a path or a mapping, got {type(spec).__name__}")
    if isinstance(spec.get("aliases"), Mapping):
        return _grouped_aliases(spec["aliases"], name)
    bad = [k for k, v in spec.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise data_error(
            name,
            column=bad[0],
            received=f"value {show_value(spec[bad[0]])}",
            allowed='{"aliases": {canonical: [spellings]}} or {spelling: canonical} with text',
            fix="write the aliases in one of these two forms",
        )
    return {k: v for k, v in spec.items() if k != v}


def _read_aliases_file(path: Path) -> Any:
    allowed = 'a JSON file {"aliases": {canonical: [spellings]}} or {spelling: canonical}'
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        received = f"a path that cannot be read ({exc.strerror})"
        fix = "pass the path of an existing aliases file (data.aliases in the spec)"
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        received, fix = f"text that is not valid JSON ({exc})", "fix the JSON (UTF-8, one object)"
    raise data_error(str(path), received=received, allowed=allowed, fix=fix)


def _grouped_aliases(groups: Mapping, name: str) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for canonical, spellings in groups.items():
        if not isinstance(spellings, list) or not all(isinstance(s, str) for s in spellings):
            raise data_error(
                name,
                column=canonical,
                received=f"spellings {show_value(spellings)}",
                allowed="a list of model names",
                fix=f'write "{canonical}": ["spelling", ...]',
            )
        for spelling in spellings:
            if mapping.get(spelling, canonical) != canonical:
                raise data_error(
                    name,
                    column=spelling,
                    received=f"two canonical names {mapping[spelling]!r} and {canonical!r}",
                    allowed="one canonical name per spelling",
                    fix="list the spelling under one canonical name only",
                )
            mapping[spelling] = canonical
    return mapping
