"""routerdb: score prompts for LLMs from SQL. Torch-free: ONNX Runtime, tokenizers, numpy, DuckDB.

    import duckdb, routerdb
    con = duckdb.connect()
    routerdb.register(con, "build/demo/bundle")
    con.sql("SELECT model, route_score(prompt, model) FROM logs CROSS JOIN router_models")

    router = routerdb.Router("build/demo/bundle")
    router.score(["Prove that sqrt(2) is irrational."])   # [P, M] scores in [-1, 1]
"""

from __future__ import annotations

from routerdb.bundle import Bundle, BundleError
from routerdb.duckdb import register
from routerdb.router import Router, UnknownModelError

__version__ = "0.1.0"
__all__ = ["Bundle", "BundleError", "Router", "UnknownModelError", "register"]


