"""The SQL functions are declared once (`routerdb.functions.FUNCTIONS`): DuckDB gets exactly the
declared names, types and NULL handling, the README's table is written from the declarations, and
one more declaration is all a new function needs to be registered and called."""

from __future__ import annotations

import duckdb
import pyarrow as pa

import routerdb.duckdb
import routerdb.functions
from routerdb.duckdb import register
from routerdb.functions import FUNCTIONS, SqlFunction, markdown_table
from routerdb.router import Router
from tests.paths import REPO


def registered(con: duckdb.DuckDBPyConnection, names: list[str]) -> dict[str, tuple[list[str], str]]:
    """{name: ([parameter types], return type)} of the functions of con's database named `names`."""
    rows = con.execute("SELECT function_name, parameter_types, return_type FROM duckdb_functions() "
                       "WHERE function_name IN ?", [names]).fetchall()
    return {name: (list(params), result) for name, params, result in rows}


def test_duckdb_gets_the_declared_names_and_types(tiny_bundle):
    con = duckdb.connect()
    register(con, Router(tiny_bundle))
    assert registered(con, [f.name for f in FUNCTIONS]) == {
        "route_score": (["VARCHAR", "VARCHAR"], "DOUBLE"),
        "route_best": (["VARCHAR"], "VARCHAR"),
        "route_best_among": (["VARCHAR", "VARCHAR[]"], "VARCHAR"),
        "route_scores": (["VARCHAR"], "MAP(VARCHAR, DOUBLE)"),
    }


def test_declared_null_handling_reaches_duckdb(tiny_bundle):
    """route_score skips a NULL row without a call (DuckDB's default); route_best_among is passed
    its NULLs (an empty or NULL candidate list is a row it answers, with NULL)."""
    con = duckdb.connect()
    register(con, Router(tiny_bundle))
    model = con.execute("SELECT min(model) FROM router_models").fetchall()[0][0]
    got = con.execute("SELECT route_score(NULL, ?), route_best_among('hi', []::VARCHAR[]), "
                      "route_best_among('hi', [NULL, ?])", [model, model]).fetchall()
    assert got == [(None, None, model)]
    assert [f.name for f in FUNCTIONS if f.passes_nulls] == ["route_best_among"]



def test_signature_says_names_and_types():
    route_score = next(f for f in FUNCTIONS if f.name == "route_score")
    assert route_score.signature == "route_score(prompt VARCHAR, model VARCHAR) -> DOUBLE"


def test_readme_table_is_written_from_the_declarations():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = markdown_table()
    assert table.count("\n| `route_") == len(FUNCTIONS)
    assert table in readme, ("README.md's table of SQL functions is not the one the declarations in "
                             "routerdb/functions.py give; replace it with:\n" + table)


def test_one_declaration_adds_a_function(tiny_bundle, monkeypatch):
    """A throwaway function, declared and nothing else, is registered with its types and runs."""
    def route_llm_count(router: Router, prompts: pa.Array) -> pa.Array:
        return pa.array([len(router.models)] * len(prompts), type=pa.int32())

    extra = SqlFunction("route_llm_count", route_llm_count, (("prompt", "VARCHAR"),), "INTEGER",
                        "how many LLMs the bundle scores")
    declared = (*FUNCTIONS, extra)
    monkeypatch.setattr(routerdb.functions, "FUNCTIONS", declared)
    monkeypatch.setattr(routerdb.duckdb, "FUNCTIONS", declared)
    router = Router(tiny_bundle)  # a fresh Router: its functions are made with the new declaration
    con = duckdb.connect()
    register(con, router)
    assert registered(con, ["route_llm_count"]) == {"route_llm_count": (["VARCHAR"], "INTEGER")}
    assert con.execute("SELECT route_llm_count('hi'), route_llm_count(NULL)").fetchall() == [
        (len(router.models), None)]
    assert "| `route_llm_count(prompt VARCHAR) -> INTEGER` | how many LLMs the bundle scores |" in (
        routerdb.functions.markdown_table())
