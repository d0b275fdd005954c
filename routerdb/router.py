"""Router: prompts x LLMs -> scores, torch-free, on ONNX Runtime.

Each distinct prompt is encoded once per call, however many LLMs it is scored against: the graph
scores a batch of prompts against every LLM of the bundle at once ([P, ...] x [M, D] -> [P, M]).
Prompts are sorted by token length into batches so padding is small, and a bounded LRU cache
keyed by prompt text (per bundle) makes a repeated query nearly free.

One Router per bundle directory in this process, shared by SQL, rescoring, SQLAlchemy and Spark:
`shared_router(path)` returns the Router of the bundle now at `path`. When the bundle there is
re-exported (a new manifest digest), the next call loads the new one and the cache lets go of the
old Router: it is freed once no DuckDB connection registered with it is left
(`routerdb.duckdb` keeps a Router alive per registered connection, nothing else does). So a
service that picks up retrained bundles holds one Router per bundle path, not one per reload.
Checking a bundle again costs a manifest read and a few `stat` calls (`Bundle.load` verifies the
files' checksums once per process for an unchanged bundle).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from routerdb.bundle import Bundle, BundleError
from routerdb.features import FEATURE_NAMES, FEATURES_VERSION, compute_features
from routerdb.inputs import check_router_options, llm_list, prompt_list, threads_from_env
from routerdb.manifest import GRAPH_INPUTS, GRAPH_OUTPUT, PROMPT_VECTORS
from routerdb.prompt_keys import digest, distinct
from routerdb.tokenizer import Batch, PromptTokenizer, length_batches

log = logging.getLogger(__name__)

ENCODE_SLICE = 4_096  # prompts tokenised and encoded together (DuckDB chunks hold at most 2,048)
# From this many prompts up, the prompt features are computed on a worker thread while the calling
# thread tokenises (the tokenizer releases the GIL): 0.41 s -> 0.24 s for 2,048 real prompts here,
# which is most of the static tier's time. Below it a thread hand-off costs more than it saves.
OVERLAP_MIN = 64
PROBE_TOKENS = 1_024  # the longest row of the load-time probe (attention costs its square)


class UnknownModelError(KeyError):
    def __init__(self, unknown: Iterable[str], known: Sequence[str]):
        unknown = sorted(set(unknown))
        super().__init__(unknown)
        self.message = (f"unknown LLM {', '.join(map(repr, unknown))}; this router knows "
                        f"{len(known)}: {', '.join(known)}. Use one of these names (see the "
                        "router_models table), or add the LLM with `python -m training.add_model`.")

    def __str__(self) -> str:
        return self.message


def choose_providers(requested: Sequence[str] | None = None) -> list[str]:
    """CUDA when onnxruntime-gpu sees a usable GPU, else CPU. The choice is logged."""
    import onnxruntime as ort  # heavy: imported when a Router is built, not with routerdb

    available = ort.get_available_providers()
    if requested:
        missing = [p for p in requested if p not in available]
        if missing:
            raise ValueError(f"ONNX Runtime providers {missing} are not available here; available: "
                             f"{available}. Install onnxruntime-gpu for CUDAExecutionProvider.")
        return list(requested)
    if "CUDAExecutionProvider" in available and _gpu_present():
        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception as exc:  # CUDA libraries missing: fall back to CPU, said aloud
                log.warning("CUDA libraries could not be loaded (%s); using the CPU", exc)
                return ["CPUExecutionProvider"]
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _gpu_present() -> bool:
    return Path("/proc/driver/nvidia/version").exists() or bool(os.environ.get("CUDA_VISIBLE_DEVICES"))


class Router:
    """Scores prompts for the LLMs of one bundle.

    >>> router = Router("build/demo/bundle")
    >>> router.score(["Solve 2x + 3 = 7"], ["gpt-4", "llama-3-8b"])   # [P, M] float32 in [-1, 1]

    `threads`: ONNX Runtime intra-op threads (None or 0: `ROUTERDB_THREADS`, else ONNX Runtime's
    default of one per core); `batch_size`: prompts per encoder run; `cache_size`: prompts whose
    scores are kept (0: none). A bundle whose manifest does not fit its graph fails here, with a
    BundleError, not at the first query: the graph is run once on a batch padded to `max_length`.
    """

    def __init__(self, bundle: str | os.PathLike[str] | Bundle, *, providers: Sequence[str] | None = None,
                 threads: int | None = None, batch_size: int = 32, cache_size: int = 100_000):
        check_router_options(providers=providers, threads=threads, batch_size=batch_size,
                             cache_size=cache_size)
        self.bundle = Bundle.load(bundle)
        self.models: tuple[str, ...] = self.bundle.model_names
        self._model_index = {name: j for j, name in enumerate(self.models)}
        self.tokenizer = _load_tokenizer(self.bundle)
        self.threads = threads or threads_from_env() or None
        self.providers = choose_providers(providers)
        self.session = _load_session(self.bundle, self.threads, self.providers)
        self._inputs = {i.name for i in self.session.get_inputs()}
        self._outputs = [o.name for o in self.session.get_outputs()]
        self.batch_size = batch_size
        # prompt -> scores [M_all]; keyed by a 16-byte `digest` of the text so a huge prompt costs
        # no memory here. The cache belongs to this Router, i.e. to one bundle (path + digest).
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # guards the cache
        self._encode_lock = threading.Lock()  # one encoder run at a time
        self.encoded_prompts = 0  # prompts run through the encoder, for tests and benchmarks
        self._probe()

    @classmethod
    def for_verification(cls, bundle: str | os.PathLike[str] | Bundle) -> Router:
        """A Router on the CPU provider with no cache: the scores an export, a quantised copy or an
        added LLM are checked with, the same on every machine whatever GPU is present."""
        return cls(bundle, providers=["CPUExecutionProvider"], cache_size=0)

    # --- public API ----------------------------------------------------------------------------

    def score(self, prompts: Iterable[str | None], models: Iterable[str] | None = None) -> np.ndarray:
        """Scores [P, M] (float32 in [-1, 1]); `models` defaults to every LLM of the bundle.

        A missing prompt (None, NaN, pandas.NA) gets a row of NaN, as a NULL prompt gets NULL in SQL.
        """
        cols = self.model_columns(models) if models is not None else np.arange(len(self.models))
        return self.score_all(prompts)[:, cols]

    def score_pairs(self, prompts: Iterable[str | None], models: Iterable[str]) -> np.ndarray:
        """One score per (prompt, model) row; each distinct prompt encoded once."""
        texts = prompt_list(prompts)
        cols = self.model_columns(models)
        if len(cols) != len(texts):
            raise ValueError(f"score_pairs got {len(texts)} prompts and {len(cols)} LLM names; allowed: one "
                             "LLM name per prompt. Pass two lists of the same length.")
        uniq, inverse = distinct(texts)
        return self.score_all(uniq)[inverse, cols]

    def best(self, prompts: Iterable[str | None],
             candidates: Iterable[str] | None = None) -> list[str | None]:
        """The best LLM per prompt (of `candidates`, default all); None for a missing prompt."""
        names = llm_list(candidates, "candidates") if candidates is not None else list(self.models)
        if not names:
            raise ValueError("best() got an empty list of candidate LLMs; pass at least one name, or "
                             "candidates=None for every LLM of the bundle")
        scores = self.score(prompts, names)
        missing = np.isnan(scores).any(axis=1)
        return [None if gone else names[j] for j, gone in zip(scores.argmax(axis=1), missing, strict=True)]

    def model_columns(self, models: Iterable[str]) -> np.ndarray:
        """The column of each named LLM in `score_all`'s result; UnknownModelError for other names."""
        names = llm_list(models)
        try:
            return np.fromiter((self._model_index[m] for m in names), dtype=np.int64, count=len(names))
        except (KeyError, TypeError):  # TypeError: an unhashable name, e.g. a list
            raise UnknownModelError([m for m in names if not _known(m, self._model_index)],
                                    self.models) from None

    def score_all(self, prompts: Iterable[str | None]) -> np.ndarray:
        """Scores [P, M_all] against every LLM of the bundle, using and filling the cache."""
        texts = prompt_list(prompts)
        out = np.full((len(texts), len(self.models)), np.nan, dtype=np.float32)
        groups: dict[str, list[int]] = {}  # distinct prompt text -> its rows (missing prompts: none)
        for row, prompt in enumerate(texts):
            if prompt is not None:
                groups.setdefault(prompt, []).append(row)
        keys = {text: digest(text) for text in groups}
        missing = self._from_cache(groups, keys, out)
        if missing:
            # One encoder run at a time: DuckDB calls a UDF from several threads at once, often with
            # the same prompts (one chunk per LLM); the second caller then finds them cached.
            with self._encode_lock:
                self._encode_missing(self._from_cache(missing, keys, out), keys, out)
        return out

    def _encode_missing(self, missing: dict[str, list[int]], keys: dict[str, bytes], out: np.ndarray) -> None:
        texts = list(missing)
        # Slices of ENCODE_SLICE prompts, each sorted by length: memory stays bounded however many
        # prompts one call brings, and batches stay well bucketed.
        for start in range(0, len(texts), ENCODE_SLICE):
            part = texts[start:start + ENCODE_SLICE]
            fresh = self._encode_and_score(part)
            with self._lock:
                for text, scores in zip(part, fresh, strict=True):
                    out[missing[text]] = scores
                    self._remember(keys[text], scores.copy())  # not a view: frees the batch

    def _from_cache(self, groups: dict[str, list[int]], keys: dict[str, bytes],
                    out: np.ndarray) -> dict[str, list[int]]:
        """Fill the rows of cached prompts into `out`; returns the groups not in the cache."""
        missing: dict[str, list[int]] = {}
        with self._lock:
            for text, rows in groups.items():
                hit = self._cache.get(keys[text])
                if hit is None:
                    missing[text] = rows
                else:
                    self._cache.move_to_end(keys[text])
                    out[rows] = hit
        return missing

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()

    # --- internals -------------------------------------------------------------------------

    def _remember(self, key: bytes, scores: np.ndarray) -> None:
        if self._cache_size <= 0:
            return
        self._cache[key] = scores
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _encode_and_score(self, texts: list[str]) -> np.ndarray:
        out = self._encode(texts, "scores", len(self.models))
        self.encoded_prompts += len(texts)
        return out

    def prompt_vectors(self, prompts: Sequence[str]) -> np.ndarray:
        """[P, H + F] float32: what the graph's scoring head reads for each prompt (the pooled
        encoder vector and the normalised features), e.g. to fit a new LLM's row of the table
        (`python -m training.add_model`). Not cached."""
        if PROMPT_VECTORS not in self._outputs:
            raise BundleError(f"{self.bundle.path}: model.onnx returns {sorted(self._outputs)}, not "
                              f"{PROMPT_VECTORS!r} (bundles exported before routerdb wrote them); "
                              "re-export the bundle with python -m training.fit.")
        texts = ["" if p is None else p for p in prompts]
        return self._encode(texts, PROMPT_VECTORS, 0)

    def _encode(self, texts: list[str], output: str, width: int) -> np.ndarray:
        """One graph output [P, width] for `texts`, in batches of similar token length (`width`
        is the output's if it says otherwise)."""
        # features cost about as much as tokenising: only for a graph that reads them, and beside it
        if "features" not in self._inputs:
            ids, features = self.tokenizer.token_ids(texts), np.zeros((len(texts), 0))
        elif len(texts) < OVERLAP_MIN:
            ids, features = self.tokenizer.token_ids(texts), compute_features(texts)
        else:
            pending = _feature_pool().submit(compute_features, texts)
            try:
                ids = self.tokenizer.token_ids(texts)
            finally:
                features = pending.result()  # its exception, if any, is raised here
        out = np.empty((len(texts), width), dtype=np.float32)
        for rows in length_batches(ids, self.batch_size):
            part = self._run([ids[i] for i in rows], features[rows], output)
            if out.shape[1] != part.shape[1]:
                out = np.empty((len(texts), part.shape[1]), dtype=np.float32)
            out[rows] = part
        return out

    def _feeds(self, batch: Batch, features: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                 "features": features.astype(np.float32), "model_embeddings": self.bundle.model_embeddings}
        return {k: v for k, v in feeds.items() if k in self._inputs}

    def _run(self, ids: list[list[int]], features: np.ndarray, output: str = "scores") -> np.ndarray:
        feeds = self._feeds(self.tokenizer.pad(ids), features)
        try:
            return self.session.run([output], feeds)[0]
        except Exception as exc:  # ONNX Runtime's own exception types: said in our words
            raise RuntimeError(
                f"{self.bundle.path}: model.onnx failed on {len(ids)} prompt(s) of up to "
                f"{feeds['input_ids'].shape[1]} tokens ({type(exc).__name__}: {str(exc)[:300]}). The "
                "graph and the manifest's tokenizer settings do not fit each other; re-export the bundle."
            ) from None

    def _probe(self) -> None:
        """Run the graph once on a prompt padded with pad_id to max_length (at most PROBE_TOKENS):
        a max_length or pad_id the graph cannot take fails here, not at the first long prompt."""
        pad, vocab = self.tokenizer.pad_id, self.tokenizer.vocab_size
        if pad >= vocab:
            raise BundleError(f"{self.bundle.path}: the manifest's pad_id {pad} is not a token of "
                              f"tokenizer.json (vocabulary of {vocab}); allowed: a token id of that "
                              "tokenizer. Re-export the bundle.")
        length = min(self.tokenizer.max_length, PROBE_TOKENS)
        short = self.tokenizer.token_ids(["routerdb"])[0] or [pad]
        feeds = self._feeds(self.tokenizer.pad([short], width=length), compute_features(["routerdb"]))
        try:
            scores = self.session.run(["scores"], feeds)[0]
        except Exception as exc:  # ONNX Runtime's own exception types
            raise BundleError(
                f"{self.bundle.path}: model.onnx cannot score prompts of max_length {length} tokens padded "
                f"with pad_id {pad} ({type(exc).__name__}: {str(exc)[:300]}); the manifest's tokenizer "
                "settings do not fit the graph. Re-export the bundle.") from None
        if scores.shape != (1, len(self.models)) or not np.isfinite(scores).all():
            raise BundleError(f"{self.bundle.path}: model.onnx returned scores of shape {scores.shape} "
                              f"(allowed: [1, {len(self.models)}], finite) on a probe prompt; the graph and "
                              "models.parquet come from different exports. Re-export the bundle.")


_POOL: tuple[int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def _feature_pool() -> ThreadPoolExecutor:
    """The process's feature workers, made anew in a forked child (a pool's threads do not survive
    fork(), e.g. in Spark's Python workers, and a job queued to a dead thread would never run)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="routerdb-features"))
        return _POOL[1]


def _loaded(bundle: Bundle, name: str, load):
    """`load()`, with a failure reported as a damaged bundle file rather than a library's traceback."""
    try:
        return load()
    except Exception as exc:  # tokenizers and ONNX Runtime raise their own (or bare) exception types
        raise BundleError(f"{bundle.path}: {name} cannot be loaded ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); the file is damaged or was not written by routerdb. "
                          "Re-export the bundle.") from None


def _load_tokenizer(bundle: Bundle) -> PromptTokenizer:
    m, tok = bundle.manifest, bundle.manifest["tokenizer"]
    return _loaded(bundle, "tokenizer.json", lambda: PromptTokenizer.from_file(
        bundle.tokenizer_path, m["max_length"], tok["pad_id"], tok["padding_side"],
        tok.get("truncation", "head")))  # bundles written before the field cut the end


def _load_session(bundle: Bundle, threads: int | None, providers: list[str]):
    import onnxruntime as ort  # heavy: imported when a Router is built, not with routerdb

    options = ort.SessionOptions()
    if threads:  # else ONNX Runtime's own default, one thread per physical core
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = _loaded(bundle, "model.onnx", lambda: ort.InferenceSession(
        str(bundle.onnx_path), options, providers=providers))
    _check_graph(session, bundle)
    log.info("routerdb: %s on %s (providers available: %s), %s intra-op threads", bundle.path,
             session.get_providers()[0], ", ".join(ort.get_available_providers()), threads or "default")
    return session


def _check_graph(session, bundle: Bundle) -> None:
    """The graph must take the inputs the manifest declares, the bundle's LLM vectors and this
    routerdb's prompt features, and return scores."""
    names = [i.name for i in session.get_inputs()]
    declared = bundle.manifest.get("graph", {}).get("inputs", names)
    outputs = [o.name for o in session.get_outputs()]
    if set(names) != set(declared) or not set(names) <= set(GRAPH_INPUTS) or GRAPH_OUTPUT not in outputs:
        raise BundleError(f"{bundle.path}: model.onnx takes {names} and returns {outputs}; allowed: the "
                          f"inputs the manifest declares ({declared}), among {list(GRAPH_INPUTS)}, and an "
                          f"output {GRAPH_OUTPUT!r}. The files come from different exports; re-export the "
                          "bundle.")
    widths = {"model_embeddings": bundle.model_embeddings.shape[1], "features": len(FEATURE_NAMES)}
    sources = {"model_embeddings": "the LLM vectors in models.parquet",
               "features": f"prompt features (features version {FEATURES_VERSION})"}
    for graph_input in session.get_inputs():
        want = widths.get(graph_input.name)
        got = graph_input.shape[1] if len(graph_input.shape) == 2 else None
        if want is not None and isinstance(got, int) and got not in (want, 0):
            raise BundleError(
                f"{bundle.path}: model.onnx takes {graph_input.name} of width {got}, but "
                f"{sources[graph_input.name]} have width {want}. "
                "The files come from different exports, or the bundle needs another routerdb version; "
                "re-export the bundle.")


def _known(name: object, index: dict[str, int]) -> bool:
    try:
        return name in index
    except TypeError:  # unhashable
        return False


# --- one Router per bundle path, for the whole process -------------------------------------------

_ROUTERS: dict[str, Router] = {}  # resolved bundle path -> the Router of the bundle now there
_ROUTERS_LOCK = threading.Lock()


def shared_router(bundle: str | os.PathLike[str] | Bundle) -> Router:
    """The process-wide Router of the bundle at this path (loaded again when its manifest changed)."""
    loaded = Bundle.load(bundle)
    key = str(loaded.path.resolve())
    with _ROUTERS_LOCK:
        router = _ROUTERS.get(key)
        if router is None or router.bundle.digest != loaded.digest:
            router = _ROUTERS[key] = Router(loaded)
        return router


def as_router(bundle: str | os.PathLike[str] | Bundle | Router) -> Router:
    """`bundle` itself when it is a Router, else the process-wide Router of that bundle path."""
    return bundle if isinstance(bundle, Router) else shared_router(bundle)
