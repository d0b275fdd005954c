"""The routing functions of one Router as vectorised Arrow UDFs, and why they are never freed.

DuckDB's Python client keeps a function's Python callable alive only while the connection that
registered it is open, yet every connection to the same database can call the function; a call
after that connection closed read freed memory and killed the process (rc 139). So the callables
made here live as long as the process (`functions_for` keeps them: well under a kilobyte per
Router ever registered), and they hold their Router weakly. The Router itself is freed when no
registered connection holds it (`routerdb.duckdb`); a call after that raises RouterReleasedError,
which says what to do, instead of reading freed memory.

    route_score(prompt VARCHAR, model VARCHAR) -> DOUBLE                 score in [-1, 1]
    route_best(prompt VARCHAR) -> VARCHAR                                 best LLM of the bundle
    route_best_among(prompt VARCHAR, candidates VARCHAR[]) -> VARCHAR     NULL for no candidates
    route_scores(prompt VARCHAR) -> MAP(VARCHAR, DOUBLE)                  every LLM's score
"""

from __future__ import annotations

import threading
import weakref

import pyarrow as pa

from routerdb.router import Router
from routerdb.score_map import score_map

NAMES = ("route_score", "route_best", "route_best_among", "route_scores")


class RouterReleasedError(RuntimeError):
    """A routing function called after the Router it served was released."""


class RoutingFunctions:
    """The four UDF callables for one Router (the exact objects DuckDB is given, in `callables`)."""

    def __init__(self, router: Router):
        self.bundle = str(router.bundle.path)
        self.digest = router.bundle.digest
        self._router = weakref.ref(router)
        self.callables = {"route_score": self.route_score, "route_best": self.route_best,
                          "route_best_among": self.route_best_among, "route_scores": self.route_scores}

    def adopt(self, router: Router) -> bool:
        """Whether these functions can serve `router`: they already serve its bundle (keeping the
        Router they run on), or the Router they were made for is gone, no connection using it any
        more, and they take `router` on. DuckDB lets only the connection that registered a function
        replace it; this is how a database whose registering connection is closed gets a new bundle."""
        current = self._router()
        if current is not None:
            return current.bundle.digest == router.bundle.digest
        self._router = weakref.ref(router)
        self.bundle, self.digest = str(router.bundle.path), router.bundle.digest
        return True

    def router(self) -> Router:
        router = self._router()
        if router is None:
            raise RouterReleasedError(
                f"the routing functions of bundle {self.bundle} (sha256 {self.digest[:12]}...) were "
                "released: every connection registered with that bundle is closed, or it was re-exported "
                "and registered again. Call routerdb.register(con, bundle) on this connection.")
        return router

    def route_score(self, prompts: pa.Array, models: pa.Array) -> pa.Array:
        return pa.array(self.router().score_pairs(prompts.to_pylist(), models.to_pylist()), type=pa.float64())

    def route_best(self, prompts: pa.Array) -> pa.Array:
        return pa.array(self.router().best(prompts.to_pylist()), type=pa.string())

    def route_best_among(self, prompts: pa.Array, candidates: pa.Array) -> pa.Array:
        # NULL prompt, NULL or empty list, or only NULL names -> NULL; NULL names are skipped.
        router = self.router()
        texts = prompts.to_pylist()
        lists = [[n for n in (names or []) if n is not None] for names in candidates.to_pylist()]
        live = [row for row, names in enumerate(lists) if names and texts[row] is not None]
        scores = router.score_all([texts[row] for row in live])  # [live, M_all]: each prompt once
        out: list[str | None] = [None] * len(texts)
        for i, row in enumerate(live):
            out[row] = lists[row][int(scores[i, router.model_columns(lists[row])].argmax())]
        return pa.array(out, type=pa.string())

    def route_scores(self, prompts: pa.Array) -> pa.Array:
        router = self.router()
        return score_map(router.models, router.score(prompts.to_pylist()))


_KEPT: dict[int, RoutingFunctions] = {}  # never shrinks: DuckDB may call any of these until the process ends
_BY_ROUTER: weakref.WeakKeyDictionary[Router, RoutingFunctions] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def functions_for(router: Router) -> RoutingFunctions:
    """The routing functions of `router` (made once per Router, kept for the process's lifetime)."""
    with _LOCK:
        functions = _BY_ROUTER.get(router)
        if functions is None:
            functions = _BY_ROUTER[router] = RoutingFunctions(router)
            _KEPT[id(functions)] = functions
        return functions


def functions_by_id(key: int) -> RoutingFunctions | None:
    """The functions whose `id()` a database recorded (ids stay unique: these are never freed)."""
    return _KEPT.get(key)
