"""SQLAlchemy engines on DuckDB whose every pooled connection can call route_score & co.

    from sqlalchemy import text
    from routerdb.sqlalchemy import create_engine

    engine = create_engine("duckdb:///logs.duckdb", "build/demo/bundle")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT prompt, route_best(prompt) FROM logs")).all()

A `connect` event listener registers each new DBAPI connection the pool opens (duckdb-engine), so
connections opened later, by other threads, or after `engine.dispose()` can route too. On a
database file the first one registers the functions for the whole database (DuckDB shares them
between connections) and every later one costs milliseconds: it gets its `router_models` view and
holds the Router. Closing pooled connections, the first one included, never breaks the others
(`routerdb.duckdb`). An in-memory URL gives every pooled connection its own database, each
registered in full. One Router per bundle serves the whole pool, prompt cache included.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import sqlalchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine

from routerdb.bundle import Bundle
from routerdb.duckdb import register
from routerdb.router import Router, as_router

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
    attach(engine, bundle)
    return engine


def attach(engine: Engine, bundle: str | os.PathLike[str] | Bundle | Router, **register_options: Any
           ) -> Router:
    """Make every connection `engine` opens from now on able to route.

    `register_options` go to `routerdb.register` (e.g. `prefix="b_"` for a second bundle).
    """
    router = as_router(bundle)  # a bad bundle fails here

    @event.listens_for(engine, "connect")
    def _prepare(dbapi_connection, connection_record) -> None:
        register(duckdb_connection(dbapi_connection), router, **register_options)

    log.info("routerdb: routing functions on every connection of %s", engine.url)
    return router


def duckdb_connection(dbapi_connection: Any):
    """The DuckDB connection behind a DBAPI connection from duckdb-engine or a pooled proxy.

    From `engine.connect()` reach it with `duckdb_connection(conn.connection.driver_connection)`.
    """
    raw = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    # duckdb-engine wraps the DuckDB connection in a ConnectionWrapper that forwards attributes.
    return getattr(raw, "_ConnectionWrapper__c", raw)
