"""`register(con, bundle)`: route_score and friends as vectorised Arrow UDFs, plus `router_models`.

    import duckdb, routerdb
    con = duckdb.connect()
    routerdb.register(con, "build/demo/bundle")
    con.sql("SELECT model, route_score('Prove Fermat''s little theorem', model) FROM router_models")

Functions (NULL prompts give NULL; an unknown LLM name is an error listing the known ones):
    route_score(prompt VARCHAR, model VARCHAR) -> DOUBLE         score in [-1, 1]
    route_best(prompt VARCHAR) -> VARCHAR                         best LLM of the bundle
    route_best_among(prompt VARCHAR, candidates VARCHAR[]) -> VARCHAR   NULL for no candidates
    route_scores(prompt VARCHAR) -> MAP(VARCHAR, DOUBLE)          every LLM's score
Table:
    router_models(model VARCHAR, embedding FLOAT[])               one row per LLM

Registering again (same or another bundle) replaces the functions and the table. Routers are
shared per bundle across connections, so the prompt cache serves every connection.
"""

from __future__ import annotations

import os

import duckdb
import pyarrow as pa
from duckdb import sqltypes as T

from routerdb.bundle import Bundle, models_table
from routerdb.routers import shared_router
from routerdb.score_map import score_map
from routerdb.scorer import Router

FUNCTIONS = ("route_score", "route_best", "route_best_among", "route_scores")


def register(con: duckdb.DuckDBPyConnection, bundle: str | os.PathLike[str] | Bundle | Router, *,
             table: str = "router_models", functions: bool = True) -> Router:
    """Register the routing functions and the LLM table on `con`; returns the Router used.

    DuckDB keeps Python functions in the database, not the connection: every connection to the
    same database file in this process sees them, and they stop working (DuckDB 2.0 crashes) once
    the connection that registered them is closed. So register once per database file on a
    connection that stays open, and pass `functions=False` on the other connections to create only
    their own `router_models` table (TEMP on a database file, so per connection, and nothing is
    written into the file); `routerdb.sqlalchemy` does this for a pool.
    """
    router = bundle if isinstance(bundle, Router) else shared_router(bundle)
    if functions:
        _create_functions(con, router)
    _create_models_table(con, router, table)
    return router


def has_functions(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the routing functions are registered in `con`'s database (by any connection)."""
    found = con.execute("SELECT count(DISTINCT function_name) FROM duckdb_functions() "
                        "WHERE function_name IN ?", [list(FUNCTIONS)]).fetchall()[0][0]
    return found == len(FUNCTIONS)


def _create_functions(con: duckdb.DuckDBPyConnection, router: Router) -> None:
    for name in FUNCTIONS:
        try:
            con.remove_function(name)
        except duckdb.Error:  # not registered yet, or by another connection (caught below)
            pass
    if has_functions(con):
        raise duckdb.CatalogException(
            "the routing functions are already registered in this database by another connection "
            "(DuckDB shares them between connections to one database file). Register once per "
            "database and call register(con, bundle, functions=False) on the other connections, or "
            "use routerdb.sqlalchemy.create_engine for a pool.")
    varchar, double = T.VARCHAR, T.DOUBLE
    con.create_function("route_score", _route_score(router), [varchar, varchar], double, type="arrow")
    con.create_function("route_best", _route_best(router), [varchar], varchar, type="arrow")
    # "special": an empty candidate list is a row too (-> NULL), which DEFAULT handling refuses.
    con.create_function("route_best_among", _route_best_among(router),
                        [varchar, con.list_type(varchar)], varchar, type="arrow", null_handling="special")
    con.create_function("route_scores", _route_scores(router), [varchar],
                        con.map_type(varchar, double), type="arrow")


def _create_models_table(con, router: Router, table: str) -> None:
    arrow = models_table(router.models, router.bundle.model_embeddings)
    name = '"' + table.replace('"', '""') + '"'
    con.register("__routerdb_models", arrow)
    try:
        # In memory: a plain table, which cursors of the connection see too. On a database file:
        # TEMP, so nothing is written into the user's file and a read-only file works.
        on_file = con.execute("SELECT path IS NOT NULL FROM duckdb_databases() "
                              "WHERE database_name = current_database()").fetchall()[0][0]
        kind = "TEMP TABLE" if on_file else "TABLE"
        con.execute(f"CREATE OR REPLACE {kind} {name} AS SELECT * FROM __routerdb_models ORDER BY model")
    finally:
        con.unregister("__routerdb_models")


def _strings(column) -> list:
    return column.to_pylist()


def _route_score(router: Router):
    def route_score(prompts, models):
        return pa.array(router.score_pairs(_strings(prompts), _strings(models)), type=pa.float64())
    return route_score


def _route_best(router: Router):
    def route_best(prompts):
        return pa.array(router.best(_strings(prompts)), type=pa.string())
    return route_best


def _route_best_among(router: Router):
    def route_best_among(prompts, candidates):
        # NULL prompt, NULL or empty list, or only NULL names -> NULL; NULL names are skipped.
        texts = _strings(prompts)
        lists = [[n for n in (names or []) if n is not None] for names in _strings(candidates)]
        live = [row for row, names in enumerate(lists) if names and texts[row] is not None]
        scores = router.score_all([texts[row] for row in live])  # [live, M_all]: each prompt once
        out: list[str | None] = [None] * len(texts)
        for i, row in enumerate(live):
            out[row] = lists[row][int(scores[i, router.model_columns(lists[row])].argmax())]
        return pa.array(out, type=pa.string())
    return route_best_among


def _route_scores(router: Router):
    names = list(router.models)

    def route_scores(prompts):
        return score_map(names, router.score(_strings(prompts)))
    return route_scores
