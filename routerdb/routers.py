"""One Router per bundle directory in this process, shared by SQL, rescoring, SQLAlchemy and Spark.

`shared_router(path)` returns the Router of the bundle now at `path`. When the bundle there is
re-exported (a new manifest digest), the next call loads the new one and the cache lets go of the
old Router: it is freed once no DuckDB connection registered with it is left
(`routerdb.duckdb` keeps a Router alive per registered connection, nothing else does). So a
service that picks up retrained bundles holds one Router per bundle path, not one per reload.
Checking a bundle again costs a manifest read and a few `stat` calls (`Bundle.load` verifies the
files' checksums once per process for an unchanged bundle).
"""

from __future__ import annotations

import os
import threading

from routerdb.bundle import Bundle
from routerdb.scorer import Router

_ROUTERS: dict[str, Router] = {}  # resolved bundle path -> the Router of the bundle now there
_LOCK = threading.Lock()


def shared_router(bundle: str | os.PathLike[str] | Bundle) -> Router:
    """The process-wide Router of the bundle at this path (loaded again when its manifest changed)."""
    loaded = Bundle.load(bundle)
    key = str(loaded.path.resolve())
    with _LOCK:
        router = _ROUTERS.get(key)
        if router is None or router.bundle.digest != loaded.digest:
            router = _ROUTERS[key] = Router(loaded)
        return router
