"""The SQL recipes of `sql/`, shipped inside the package (`routerdb/sql` is that folder), and run.

`routerdb sql BUNDLE --recipe cost_routing` (or `-f sql/cost_routing.sql` in a checkout) runs a
recipe from any directory on the user's tables; `run_recipe` runs the same file from Python, so
`routerdb report` draws exactly the numbers the recipes define (one implementation of the threshold
table and the cost-quality curve).
"""

from __future__ import annotations

from importlib import resources

import duckdb

RECIPES = resources.files("routerdb") / "sql"


def names() -> list[str]:
    """The names of the shipped SQL recipes (`routerdb sql BUNDLE --recipe NAME`)."""
    return sorted(p.name.removesuffix(".sql") for p in RECIPES.iterdir() if p.name.endswith(".sql"))


def recipe_text(name: str) -> str:
    """The text of the shipped recipe `name`, with or without `.sql` (e.g. 'cost_routing')."""
    stem = name.removesuffix(".sql")
    if stem not in names():
        raise ValueError(f"--recipe {name!r} is not a shipped recipe; allowed: {', '.join(names())}. "
                         "Pass one of them, or your own file with -f FILE.")
    return (RECIPES / f"{stem}.sql").read_text(encoding="utf-8")


def run_recipe(con: duckdb.DuckDBPyConnection, name: str,
               variables: dict[str, object]) -> duckdb.DuckDBPyRelation:
    """Run recipe `name` on `con` (routing functions registered) as `routerdb sql --set` runs it:
    each variable set first, then every statement; returns the last statement's result."""
    for key, value in variables.items():
        con.execute(f"SET VARIABLE {key} = ?", [value])
    result = None
    for statement in duckdb.extract_statements(recipe_text(name)):
        result = con.sql(statement.query)
    return result
