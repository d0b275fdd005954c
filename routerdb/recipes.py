"""The SQL recipes of `sql/`, shipped inside the package (`routerdb/sql` is that folder), and run.

`routerdb sql BUNDLE sql/cost_routing.sql` runs a recipe from a checkout; `run_recipe` runs the same
file from an installed routerdb, so `routerdb report` draws exactly the numbers the recipes define
(one implementation of the threshold table and the cost-quality curve).
"""

from __future__ import annotations

from importlib import resources

import duckdb

RECIPES = resources.files("routerdb") / "sql"


def recipe_text(name: str) -> str:
    """The text of the shipped recipe `name` (e.g. 'cost_routing.sql')."""
    path = RECIPES / name
    if not path.is_file():
        known = sorted(p.name for p in RECIPES.iterdir() if p.name.endswith(".sql"))
        raise FileNotFoundError(f"no recipe {name!r} in {RECIPES}; the shipped recipes are {known}.")
    return path.read_text(encoding="utf-8")


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
