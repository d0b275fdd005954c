"""`register(con, bundle)`: route_score and friends as vectorised Arrow UDFs, plus `router_models`.

    import duckdb, routerdb
    con = duckdb.connect()
    routerdb.register(con, "build/demo/bundle")
    con.sql("SELECT model, route_score('Prove Fermat''s little theorem', model) FROM router_models")

Functions: those declared in `routerdb.functions` (`FUNCTIONS`: name, types, NULL handling, doc),
registered together by `_create_functions`; the README's table lists them.
Table (one row per LLM):
    routerdb.router_models(model VARCHAR, embedding FLOAT[])      every connection of the database
    router_models                                                  a view of it, see below

Where things live. DuckDB keeps Python functions per database, not per connection: once registered
they serve every connection and cursor of the database. The LLM table is kept in a small in-memory
database attached as `routerdb` (nothing is written into your database file, and a read-only file
works), so every connection and cursor sees `routerdb.router_models`. The short name
`router_models` is a view of it: in an in-memory database a view in `main`, which cursors see too;
on a database file a TEMP view of the registered connection (DuckDB has no other place a name
could live without writing into the file), so a cursor of a file database uses
`routerdb.router_models`, or `register(cursor, bundle)` (milliseconds) for the short name.

Registering again. The same bundle on another connection of the database costs milliseconds and
changes nothing (the functions are shared). Another bundle replaces the functions only from the
connection that registered them (DuckDB's rule); beside them, give it a prefix:
`register(con, other, prefix="other_")` makes `other_route_score`, ..., `other_router_models`.
routerdb never drops or hides a table or view of yours: a name in use is an error naming it.

Lifetime. A registered connection holds its Router; a Router no connection holds is freed (the
process-wide cache keeps only the newest Router per bundle path), so re-exporting a bundle and
registering it again does not grow memory. The functions outlive the connection that registered
them (`routerdb.functions`), so closing it never breaks, or crashes, another connection's query.
"""

from __future__ import annotations

import os
import re
import threading
import weakref

import duckdb

from routerdb.bundle import Bundle, models_table
from routerdb.functions import FUNCTIONS, RoutingFunctions, functions_by_id, functions_for
from routerdb.router import Router, as_router

CATALOG = "routerdb"  # the in-memory database attached to hold the LLM tables
MARK = "routerdb"  # the comment on every object routerdb creates: the only ones it replaces
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LOCK = threading.RLock()  # one registration at a time in this process: catalog writes never conflict
_HOLDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # connection -> {prefix: Router}


class RegisterError(ValueError):
    """The routing functions or table cannot be registered as asked (a name in use, another bundle)."""


def register(con: duckdb.DuckDBPyConnection, bundle: str | os.PathLike[str] | Bundle | Router, *,
             prefix: str = "", table: str | None = None, functions: bool = True) -> Router:
    """Register the routing functions and the LLM table on `con`; returns the Router used.

    `prefix` names a second bundle's functions and table beside the first (`prefix="b_"`:
    `b_route_score`, ..., `b_router_models`); `table` names the LLM table (default
    `{prefix}router_models`). `functions=False` only adds the table (the functions of the database
    are shared by every connection anyway); kept for callers of earlier versions.
    """
    _check_connection(con)
    prefix, table = _check_names(prefix, table)
    router = as_router(bundle)
    with _LOCK:
        _attach_catalog(con)
        on_file = _free_name(con, table)
        serving = _serve(con, router, prefix) if functions else _check_served(con, router, prefix)
        _publish_table(con, router, table)
        _alias(con, table, on_file)
        _HOLDS.setdefault(con, {})[prefix] = serving  # keeps it alive while this connection lives
    return router


def has_functions(con: duckdb.DuckDBPyConnection, prefix: str = "") -> bool:
    """Whether the routing functions are registered in `con`'s database (by any connection)."""
    found = con.execute("SELECT count(DISTINCT function_name) FROM duckdb_functions() "
                        "WHERE function_name IN ?", [[prefix + f.name for f in FUNCTIONS]]).fetchall()[0][0]
    return found == len(FUNCTIONS)


def _check_connection(con) -> None:
    if not isinstance(con, duckdb.DuckDBPyConnection):
        raise RegisterError(f"register got {type(con).__name__} {con!r:.80}; allowed: a DuckDB connection "
                            "(duckdb.connect(...)). For SQLAlchemy use routerdb.sqlalchemy.create_engine, or "
                            "routerdb.sqlalchemy.duckdb_connection(conn.connection.driver_connection).")


def _check_names(prefix: str, table: str | None) -> tuple[str, str]:
    if not isinstance(prefix, str) or (prefix and not _IDENTIFIER.fullmatch(prefix)):
        raise RegisterError(f"prefix {prefix!r:.60}; allowed: '' or letters, digits and _ not starting with "
                            "a digit (e.g. prefix='b_' gives b_route_score, b_router_models).")
    table = f"{prefix}router_models" if table is None else table
    if not isinstance(table, str) or not _IDENTIFIER.fullmatch(table):
        raise RegisterError(f"table {table!r:.60}; allowed: a plain SQL name (letters, digits and _ not "
                            "starting with a digit), e.g. table='llms'.")
    return prefix, table


def _attach_catalog(con: duckdb.DuckDBPyConnection) -> None:
    """Attach the in-memory `routerdb` database to con's database instance (once per instance)."""
    rows = con.execute("SELECT path FROM duckdb_databases() WHERE database_name = ?", [CATALOG]).fetchall()
    if not rows:
        # READ_WRITE: a read-only database file otherwise makes every attached database read-only.
        con.execute(f"ATTACH ':memory:' AS {CATALOG} (READ_WRITE)")
        con.execute(f"CREATE TABLE {CATALOG}.main.served (prefix VARCHAR PRIMARY KEY, bundle VARCHAR, "
                    "digest VARCHAR, functions UBIGINT)")
    elif rows[0][0] is not None:
        raise RegisterError(f"this connection has a database named {CATALOG!r} ({rows[0][0]}); routerdb "
                            "keeps its LLM tables in an in-memory database of that name. Attach yours under "
                            f"another name (ATTACH '{rows[0][0]}' AS logs).")


def _served(con, prefix: str) -> tuple[tuple[str, str, int] | None, RoutingFunctions | None]:
    """((bundle, digest, functions id) recorded for `prefix` in con's database, those functions)."""
    rows = con.execute(f"SELECT bundle, digest, functions FROM {CATALOG}.main.served WHERE prefix = ?",
                       [prefix]).fetchall()
    return (rows[0], functions_by_id(rows[0][2])) if rows else (None, None)


def _serving_on(con, prefix: str, served: tuple[str, str, int], present: RoutingFunctions) -> Router:
    """The Router of the functions that keep serving `prefix` (having adopted the caller's bundle,
    recorded again if that changed their bundle)."""
    if served[1] != present.digest:
        _record(con, prefix, present)
    return present.router()


def _serve(con, router: Router, prefix: str) -> Router:
    """Make the functions under `prefix` in con's database serve `router`'s bundle; returns the
    Router they run on (another Router of the same bundle if one already serves the database)."""
    served, present = _served(con, prefix)
    if present is not None and present.adopt(router):  # this bundle, or the old one is unused
        return _serving_on(con, prefix, served, present)
    functions = functions_for(router)
    _remove_functions(con, prefix)  # ours from this connection, if any; DuckDB refuses any other
    try:
        _create_functions(con, functions, prefix)
    except duckdb.CatalogException:  # the names are taken: another connection's functions, or a user's
        raise RegisterError(
            f"{prefix}route_score & co. in this database already serve "
            f"{'bundle ' + served[0] if served else 'other functions'}, registered by another "
            "connection that still uses them; DuckDB lets only that connection replace them. Register "
            f"{router.bundle.path} beside them under a prefix (register(con, bundle, prefix='b_')), or "
            "register it again on the connection that registered the others.") from None
    _record(con, prefix, functions)
    return router


def _record(con, prefix: str, functions: RoutingFunctions) -> None:
    con.execute(f"INSERT OR REPLACE INTO {CATALOG}.main.served VALUES (?, ?, ?, ?)",
                [prefix, functions.bundle, functions.digest, id(functions)])


def _remove_functions(con, prefix: str) -> None:
    """Remove the functions under `prefix` that this connection registered (DuckDB's rule)."""
    for f in FUNCTIONS:
        try:
            con.remove_function(prefix + f.name)
        except duckdb.Error:  # registered by another connection, or not at all
            pass


def _create_functions(con, functions: RoutingFunctions, prefix: str) -> None:
    """Create every function of `FUNCTIONS`, or none (a name already taken leaves no half set behind)."""
    created = []
    try:
        for f in FUNCTIONS:
            con.create_function(prefix + f.name, functions.callables[f.name],
                                [con.sqltype(kind) for _, kind in f.args], con.sqltype(f.returns),
                                type="arrow", null_handling="special" if f.passes_nulls else "default")
            created.append(prefix + f.name)
    except duckdb.Error:
        for name in created:
            con.remove_function(name)
        raise


def _check_served(con, router: Router, prefix: str) -> Router:
    """functions=False: the functions under `prefix`, if any, must serve `router`'s bundle."""
    served, present = _served(con, prefix)
    if present is None:
        return router
    if not present.adopt(router):
        raise RegisterError(f"{prefix}route_score & co. in this database serve bundle {present.bundle}, not "
                            f"{router.bundle.path}; its router_models would not match them. Register "
                            "the same bundle, or the other one under a prefix (prefix='b_').")
    return _serving_on(con, prefix, served, present)


def _publish_table(con, router: Router, table: str) -> None:
    """routerdb.main.<table>: the LLM table, seen by every connection of the database."""
    mark = f"{MARK} {router.bundle.digest}"
    rows = con.execute("SELECT comment FROM duckdb_tables() WHERE database_name = ? AND table_name = ?",
                       [CATALOG, table]).fetchall()
    if rows and rows[0][0] == mark:
        return
    con.register("__routerdb_models", models_table(router.models, router.bundle.model_embeddings))
    try:
        con.execute(f'CREATE OR REPLACE TABLE {CATALOG}.main."{table}" AS '
                    "SELECT * FROM __routerdb_models ORDER BY model")
        con.execute(f"COMMENT ON TABLE {CATALOG}.main.\"{table}\" IS '{mark}'")
    finally:
        con.unregister("__routerdb_models")


def _free_name(con, table: str) -> bool:
    """Refuse a table or view of the user's named `table` where the short name would go (before any
    change is made); returns whether con's database is a file (the short name is then a TEMP view)."""
    on_file = con.execute("SELECT path IS NOT NULL FROM duckdb_databases() "
                          "WHERE database_name = current_database()").fetchall()[0][0]
    taken = con.execute(
        "SELECT database_name, 'table' FROM duckdb_tables() WHERE table_name = $1 AND schema_name = 'main' "
        "AND database_name IN ('temp', current_database()) UNION ALL "
        "SELECT database_name, 'view' FROM duckdb_views() WHERE view_name = $1 AND schema_name = 'main' "
        "AND database_name IN ('temp', current_database()) AND coalesce(comment, '') <> $2",
        [table, MARK]).fetchall()
    if taken:
        where, kind = taken[0]
        raise RegisterError(
            f"this connection already has a {kind} named {table!r} ({where}.main.{table}), not made by "
            f"routerdb; registering would {'hide' if on_file else 'replace'} it, so nothing was changed. "
            "Pass table='llms' (or a prefix) to name routerdb's table otherwise, or rename yours.")
    return on_file


def _alias(con, table: str, on_file: bool) -> None:
    """The short name: a view in main for an in-memory database, a TEMP view on a database file."""
    kind = "TEMP VIEW" if on_file else "VIEW"
    con.execute(f'CREATE OR REPLACE {kind} "{table}" AS SELECT * FROM {CATALOG}.main."{table}"')
    con.execute(f"COMMENT ON VIEW \"{table}\" IS '{MARK}'")
