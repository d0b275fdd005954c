"""What the public API accepts: prompt lists, LLM name lists, Router options, `ROUTERDB_THREADS`.

Every entry point (Router, the SQL functions, the command line, rescoring) goes through these, so a
bad argument gets the same message everywhere: what was received, what is allowed, how to fix it.

A missing prompt (None, a float NaN, pandas.NA: what a DataFrame holds for a missing text) is
`None` here; the Router gives it NaN scores and no best LLM, as SQL gives a NULL prompt NULL.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from routerdb.manifest import is_int

THREADS_VARIABLE = "ROUTERDB_THREADS"


def prompt_list(prompts: Iterable[Any]) -> list[str | None]:
    """Prompts as a list of str, missing ones None; any iterable (a list, a generator, a Series)."""
    items = _as_list(prompts, "prompts", "strings")
    out: list[str | None] = []
    for row, prompt in enumerate(items):
        if isinstance(prompt, str):
            out.append(prompt)
        elif is_missing(prompt):
            out.append(None)
        else:
            raise TypeError(f"prompt {row} is {type(prompt).__name__} {prompt!r:.80}; allowed: str, or "
                            "None / NaN / pandas.NA for a missing prompt (scored NaN). Convert it with str() "
                            "or decode it first.")
    return out


def llm_list(models: Iterable[Any], what: str = "models") -> list[Any]:
    """LLM names as a list (unknown names are the caller's to report, with the names it knows)."""
    return _as_list(models, what, "LLM names")


def llm_names(text: str) -> list[str]:
    """A comma-separated list of LLM names from the command line: 'a, b' -> ['a', 'b']."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise ValueError(f"--models {text!r}: an empty name{' between commas' if text.strip() else ''}; "
                         "allowed: LLM names separated by commas, e.g. --models gpt-4,llama-3-8b (leave "
                         "--models out for every LLM)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:  # rescore would write a MAP with the key twice, which DuckDB refuses to read
        raise ValueError(f"--models {text!r}: {', '.join(map(repr, repeated))} named more than once; "
                         "allowed: each LLM once. Drop the repeats.")
    return names


def is_missing(value: Any) -> bool:
    """None, a float NaN, or pandas.NA (checked only where pandas is already imported)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    pandas = sys.modules.get("pandas")
    return pandas is not None and value is getattr(pandas, "NA", None)


def threads_from_env() -> int:
    """`ROUTERDB_THREADS` as a thread count (0 when unset: ONNX Runtime's default)."""
    text = os.environ.get(THREADS_VARIABLE, "").strip()
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"environment variable {THREADS_VARIABLE}={text!r:.40}; allowed: a whole number of "
                         "ONNX Runtime threads (1, 2, ...), or 0 / unset for ONNX Runtime's default (one "
                         f"per core). Fix or unset {THREADS_VARIABLE}.")
    return value


def check_router_options(*, providers: Sequence[str] | None, threads: int | None, batch_size: int,
                         cache_size: int) -> None:
    """Raise ValueError listing every Router option out of range."""
    problems = []
    if not is_int(batch_size, 1):
        problems.append(f"batch_size={batch_size!r:.40} (allowed: an integer >= 1, prompts per encoder "
                        "run; default 32)")
    if not is_int(cache_size, 0):
        problems.append(f"cache_size={cache_size!r:.40} (allowed: an integer >= 0, prompts whose scores "
                        "are kept, 0 for none; default 100000)")
    if threads is not None and not is_int(threads, 0):
        problems.append(f"threads={threads!r:.40} (allowed: None or 0 for the default, or an integer >= 1)")
    if providers is not None and (isinstance(providers, str)
                                  or not all(isinstance(p, str) for p in _as_list(providers, "providers"))):
        problems.append(f"providers={providers!r:.80} (allowed: None, or a list of ONNX Runtime provider "
                        "names such as ['CPUExecutionProvider'])")
    if problems:
        raise ValueError(f"Router: {'; '.join(problems)}. Pass values in range.")


def _as_list(values: Iterable[Any], what: str, of: str = "values") -> list[Any]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what} must be a list of {of}, got a single {type(values).__name__} "
                        f"{values[:80]!r}; wrap it in a list: [{values[:80]!r}]")
    try:
        return list(values)
    except TypeError:
        raise TypeError(f"{what} must be a list (or another iterable) of {of}, got "
                        f"{type(values).__name__} {values!r:.80}; pass a list.") from None
