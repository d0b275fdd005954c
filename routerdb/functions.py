"""The SQL functions routerdb adds to DuckDB, each declared once, and the callables DuckDB is given.

`FUNCTIONS` holds one `SqlFunction` per SQL function: its name, its callable, its arguments and
result as DuckDB types, how it treats NULLs and a one-line doc. `routerdb.duckdb` registers exactly
these, and the README's table of functions is `markdown_table()` (a test checks the README holds
it as written from `FUNCTIONS`, and prints it when it does not). Adding a function: write its
callable here (a Router and one Arrow array per argument in, an Arrow array of one value per row
out) and add its line to `FUNCTIONS`.

Why the callables are never freed. DuckDB's Python client keeps a function's Python callable alive
only while the connection that registered it is open, yet every connection to the same database
can call the function; a call after that connection closed read freed memory and killed the
process (rc 139). So the callables made here live as long as the process (`functions_for` keeps
them: well under a kilobyte per Router ever registered), and they hold their Router weakly. The
Router itself is freed when no registered connection holds it (`routerdb.duckdb`); a call after
that raises RouterReleasedError, which says what to do, instead of reading freed memory.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from routerdb.router import Router
from routerdb.score_map import score_map


@dataclass(frozen=True)
class SqlFunction:
    """One SQL function: what DuckDB is told about it and what the docs say of it."""

    name: str
    call: Callable[..., pa.Array]  # (router, one Arrow array per argument) -> one value per row
    args: tuple[tuple[str, str], ...]  # (argument name, DuckDB type) in call order
    returns: str  # DuckDB type of the result
    doc: str  # one line: what it returns, and what a NULL or a bad argument gives
    # False: a row with a NULL argument is NULL and never reaches `call` (DuckDB's default);
    # True: NULLs are passed in and `call` decides (DuckDB's null_handling="special").
    passes_nulls: bool = False

    @property
    def signature(self) -> str:
        """`route_score(prompt VARCHAR, model VARCHAR) -> DOUBLE`."""
        return f"{self.name}({', '.join(f'{arg} {kind}' for arg, kind in self.args)}) -> {self.returns}"


def route_score(router: Router, prompts: pa.Array, models: pa.Array) -> pa.Array:
    return pa.array(router.score_pairs(prompts.to_pylist(), models.to_pylist()), type=pa.float64())


def route_best(router: Router, prompts: pa.Array) -> pa.Array:
    return pa.array(router.best(prompts.to_pylist()), type=pa.string())


def route_best_among(router: Router, prompts: pa.Array, candidates: pa.Array) -> pa.Array:
    # NULL prompt, NULL or empty list, or only NULL names -> NULL; NULL names are skipped.
    texts = prompts.to_pylist()
    lists = [[n for n in (names or []) if n is not None] for names in candidates.to_pylist()]
    live = [row for row, names in enumerate(lists) if names and texts[row] is not None]
    scores = router.score_all([texts[row] for row in live])  # [live, M_all]: each prompt once
    out: list[str | None] = [None] * len(texts)
    for i, row in enumerate(live):
        out[row] = lists[row][int(scores[i, router.model_columns(lists[row])].argmax())]
    return pa.array(out, type=pa.string())


def route_scores(router: Router, prompts: pa.Array) -> pa.Array:
    names = sorted(router.models)  # the order of router_models (an added LLM is last in the bundle)
    return score_map(names, router.score(prompts.to_pylist(), names))


FUNCTIONS: tuple[SqlFunction, ...] = (
    SqlFunction("route_score", route_score, (("prompt", "VARCHAR"), ("model", "VARCHAR")), "DOUBLE",
                "the LLM's score for the prompt, in [-1, 1] (an unknown LLM is an error listing the "
                "known ones)"),
    SqlFunction("route_best", route_best, (("prompt", "VARCHAR"),), "VARCHAR",
                "the name of the bundle's best LLM for the prompt"),
    # passes_nulls: an empty candidate list is a row too (-> NULL), which DuckDB's default refuses.
    SqlFunction("route_best_among", route_best_among, (("prompt", "VARCHAR"), ("candidates", "VARCHAR[]")),
                "VARCHAR", "the best of the candidates (NULL names skipped; no candidates -> NULL)",
                passes_nulls=True),
    SqlFunction("route_scores", route_scores, (("prompt", "VARCHAR"),), "MAP(VARCHAR, DOUBLE)",
                "every LLM's score for the prompt"),
)


def markdown_table() -> str:
    """The README's table of SQL functions, written from `FUNCTIONS`."""
    rows = [f"| `{f.signature}` | {f.doc} |" for f in FUNCTIONS]
    return "\n".join(["| function | returns (a NULL prompt gives NULL) |", "|---|---|", *rows])


# --- the callables of one Router, kept for the process's lifetime ------------------------------


class RouterReleasedError(RuntimeError):
    """A routing function called after the Router it served was released."""


class RoutingFunctions:
    """The callables of `FUNCTIONS` bound to one Router (the exact objects DuckDB is given, in
    `callables`, keyed by name)."""

    def __init__(self, router: Router):
        self.bundle = str(router.bundle.path)
        self.digest = router.bundle.digest
        self._router = weakref.ref(router)
        self.callables = {f.name: self._bound(f.call) for f in FUNCTIONS}

    def _bound(self, call: Callable[..., pa.Array]) -> Callable[..., pa.Array]:
        def run(*columns: pa.Array) -> pa.Array:
            return call(self.router(), *columns)

        # DuckDB counts the parameters it will pass from the signature: `call`'s, less the router.
        signature = inspect.signature(call)
        run.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])
        run.__name__ = call.__name__
        return run

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
