"""SQLAlchemy engines on DuckDB whose every pooled connection can call route_score & co.

    from sqlalchemy import text
    from routerdb.sqlalchemy import create_engine

    engine = create_engine("duckdb:///logs.duckdb", "build/demo/bundle")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT prompt, route_best(prompt) FROM logs")).all()

A `connect` event listener prepares each new DBAPI connection the pool opens (duckdb-engine), so
connections opened later, by other threads, or after `engine.dispose()` can route too. DuckDB keeps
Python functions per database, not per connection, and they break once the connection that
registered them closes; so for a database file the functions are registered once, on a connection
of the engine's own that the pool never closes (it closes when the engine is garbage-collected),
and each pooled connection gets its own `router_models` table. An in-memory URL gives every pooled
connection its own database, and each is registered in full. One Router per bundle serves the
whole pool, prompt cache included.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine

from routerdb.bundle import Bundle
from routerdb.duckdb import has_functions, register
from routerdb.routers import shared_router
from routerdb.scorer import Router

log = logging.getLogger(__name__)


def create_engine(url: str | sqlalchemy.URL, bundle: str | os.PathLike[str] | Bundle | Router,
                  **kwargs: Any) -> Engine:
    """`sqlalchemy.create_engine(url, **kwargs)` with the routing functions on every connection.

    `url` must use duckdb-engine (`duckdb:///path.duckdb` or `duckdb:///:memory:`).
    """
    engine = sqlalchemy.create_engine(url, **kwargs)
    if engine.dialect.name != "duckdb":
        engine.dispose()
        raise ValueError(f"create_engine got a {engine.dialect.name!r} URL ({engine.url!r}); the routing "
                         "functions run inside DuckDB. Use a duckdb:/// URL (pip install duckdb-engine).")
    attach(engine, bundle, kwargs.get("connect_args"))
    return engine


def attach(engine: Engine, bundle: str | os.PathLike[str] | Bundle | Router,
           connect_args: dict[str, Any] | None = None) -> Router:
    """Make every connection `engine` opens from now on able to route.

    `connect_args`: those given to `sqlalchemy.create_engine`, if any (the engine's own connection
    must be opened exactly like the pool's, or DuckDB refuses a second configuration of the file).
    """
    router = bundle if isinstance(bundle, Router) else shared_router(bundle)  # a bad bundle fails here
    if _shared_database(engine.url.database):
        cargs, cparams = engine.dialect.create_connect_args(engine.url)
        owner = engine.dialect.connect(*cargs, **{**cparams, **(connect_args or {})})
        register(duckdb_connection(owner), router)
        weakref.finalize(engine, owner.close)

    @event.listens_for(engine, "connect")
    def _prepare(dbapi_connection, connection_record) -> None:
        con = duckdb_connection(dbapi_connection)
        register(con, router, functions=not has_functions(con))

    log.info("routerdb: routing functions on every connection of %s", engine.url)
    return router


def _shared_database(database: str | None) -> bool:
    """A database file (or a named in-memory database) that pooled connections share."""
    return bool(database) and database != ":memory:"


def duckdb_connection(dbapi_connection: Any):
    """The DuckDB connection behind a DBAPI connection from duckdb-engine or a pooled proxy.

    From `engine.connect()` reach it with `duckdb_connection(conn.connection.driver_connection)`.
    """
    raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    # duckdb-engine wraps the DuckDB connection in a ConnectionWrapper that forwards attributes.
    return getattr(raw, "_ConnectionWrapper__c", raw)
