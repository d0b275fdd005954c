"""Router: prompts x LLMs -> scores, torch-free, on ONNX Runtime.

Each distinct prompt is encoded once per call, however many LLMs it is scored against: the graph
scores a batch of prompts against every LLM of the bundle at once ([P, ...] x [M, D] -> [P, M]).
Prompts are sorted by token length into batches so padding is small, and a bounded LRU cache
keyed by prompt text (per bundle) makes a repeated query nearly free.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from routerdb.bundle import Bundle, BundleError
from routerdb.features import FEATURE_NAMES, FEATURES_VERSION, compute_features
from routerdb.tokenizer import PromptTokenizer

log = logging.getLogger(__name__)

ENCODE_SLICE = 4_096  # prompts tokenised and encoded together (DuckDB chunks hold at most 2,048)


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
    import onnxruntime as ort

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
    """

    def __init__(self, bundle: str | os.PathLike[str] | Bundle, *, providers: Sequence[str] | None = None,
                 threads: int | None = None, batch_size: int = 32, cache_size: int = 100_000):
        import onnxruntime as ort

        self.bundle = Bundle.load(bundle)
        m = self.bundle.manifest
        self.models: tuple[str, ...] = self.bundle.model_names
        self._model_index = {name: j for j, name in enumerate(self.models)}
        tok = m["tokenizer"]
        self.tokenizer = _loaded(self.bundle, "tokenizer.json", lambda: PromptTokenizer.from_file(
            self.bundle.tokenizer_path, m["max_length"], tok["pad_id"], tok["padding_side"],
            tok.get("truncation", "head")))  # bundles written before the field cut the end
        options = ort.SessionOptions()
        # ONNX Runtime's own default (one thread per physical core) unless set here or by
        # ROUTERDB_THREADS; 0 or unset keeps the default.
        self.threads = threads or int(os.environ.get("ROUTERDB_THREADS") or 0) or None
        if self.threads:
            options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        self.providers = choose_providers(providers)
        self.session = _loaded(self.bundle, "model.onnx", lambda: ort.InferenceSession(
            str(self.bundle.onnx_path), options, providers=self.providers))
        _check_graph_inputs(self.session, self.bundle)
        log.info("routerdb: %s on %s (providers available: %s), %s intra-op threads", self.bundle.path,
                 self.session.get_providers()[0], ", ".join(ort.get_available_providers()),
                 self.threads or "default")
        self._inputs = {i.name for i in self.session.get_inputs()}
        self.batch_size = batch_size
        # prompt -> scores [M_all]; keyed by a 16-byte digest of the text so a huge prompt costs
        # no memory here. The cache belongs to this Router, i.e. to one bundle (path + digest).
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # guards the cache
        self._encode_lock = threading.Lock()  # one encoder run at a time
        self.encoded_prompts = 0  # prompts run through the encoder, for tests and benchmarks

    # --- public API ----------------------------------------------------------------------------

    def score(self, prompts: Sequence[str | None], models: Sequence[str] | None = None) -> np.ndarray:
        """Scores [P, M] (float32 in [-1, 1]); `models` defaults to every LLM of the bundle."""
        cols = self.model_columns(models) if models is not None else np.arange(len(self.models))
        return self.score_all(prompts)[:, cols]

    def score_pairs(self, prompts: Sequence[str | None], models: Sequence[str]) -> np.ndarray:
        """One score per (prompt, model) row; each distinct prompt encoded once."""
        cols = self.model_columns(models)
        uniq, inverse = _unique(prompts)
        return self.score_all(uniq)[inverse, cols]

    def best(self, prompts: Sequence[str | None], candidates: Sequence[str] | None = None) -> list[str]:
        names = list(candidates) if candidates is not None else list(self.models)
        if not names:
            raise ValueError("best() got an empty list of candidate LLMs; pass at least one name, or "
                             "candidates=None for every LLM of the bundle")
        scores = self.score(prompts, names)
        return [names[j] for j in scores.argmax(axis=1)]

    def model_columns(self, models: Sequence[str]) -> np.ndarray:
        if isinstance(models, (str, bytes)):
            raise TypeError(f"models must be a list of LLM names, got the single {type(models).__name__} "
                            f"{models[:80]!r}; wrap it in a list: [{models[:80]!r}]")
        try:
            return np.fromiter((self._model_index[m] for m in models), dtype=np.int64, count=len(models))
        except KeyError:
            raise UnknownModelError([m for m in models if m not in self._model_index], self.models) from None

    def score_all(self, prompts: Sequence[str | None]) -> np.ndarray:
        """Scores [P, M_all] against every LLM of the bundle, using and filling the cache."""
        _check_prompts(prompts)
        out = np.empty((len(prompts), len(self.models)), dtype=np.float32)
        groups: dict[str, list[int]] = {}  # distinct prompt text -> its rows
        for row, prompt in enumerate(prompts):
            groups.setdefault("" if prompt is None else prompt, []).append(row)
        keys = {text: cache_key(text) for text in groups}
        missing = self._from_cache(groups, keys, out)
        if missing:
            # One encoder run at a time: DuckDB calls a UDF from several threads at once, often with
            # the same prompts (one chunk per LLM); the second caller then finds them cached.
            with self._encode_lock:
                missing = self._from_cache(missing, keys, out)
                texts = list(missing)
                # Slices of ENCODE_SLICE prompts, each sorted by length: memory stays bounded
                # however many prompts one call brings, and batches stay well bucketed.
                for start in range(0, len(texts), ENCODE_SLICE):
                    part = texts[start:start + ENCODE_SLICE]
                    fresh = self._encode_and_score(part)
                    with self._lock:
                        for text, scores in zip(part, fresh, strict=True):
                            out[missing[text]] = scores
                            self._remember(keys[text], scores.copy())  # not a view: frees the batch
        return out

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
        ids = self.tokenizer.token_ids(texts)
        features = compute_features(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        out = np.empty((len(texts), len(self.models)), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            out[rows] = self._run([ids[i] for i in rows], features[rows])
        self.encoded_prompts += len(texts)
        return out

    def _run(self, ids: list[list[int]], features: np.ndarray) -> np.ndarray:
        batch = self.tokenizer.pad(ids)
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                 "features": features.astype(np.float32), "model_embeddings": self.bundle.model_embeddings}
        return self.session.run(["scores"], {k: v for k, v in feeds.items() if k in self._inputs})[0]


def _loaded(bundle: Bundle, name: str, load):
    """`load()`, with a failure reported as a damaged bundle file rather than a library's traceback."""
    try:
        return load()
    except Exception as exc:  # tokenizers and ONNX Runtime raise their own (or bare) exception types
        raise BundleError(f"{bundle.path}: {name} cannot be loaded ({type(exc).__name__}: "
                          f"{str(exc)[:300]}); the file is damaged or was not written by routerdb. "
                          "Re-export the bundle.") from None


def _check_graph_inputs(session, bundle: Bundle) -> None:
    """The graph must take the bundle's LLM vectors and this routerdb's prompt features."""
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


def _check_prompts(prompts) -> None:
    if isinstance(prompts, (str, bytes)):
        raise TypeError(f"prompts must be a list of strings, got a single {type(prompts).__name__} "
                        f"{prompts[:80]!r}; wrap it in a list: [{prompts[:80]!r}]")
    for row, prompt in enumerate(prompts):
        if prompt is not None and not isinstance(prompt, str):
            raise TypeError(f"prompt {row} is {type(prompt).__name__} {prompt!r:.80}; allowed: str or None "
                            "(None scores as the empty prompt). Convert it with str() or decode it first.")


def cache_key(text: str) -> bytes:
    """The cache key of a prompt: a 128-bit BLAKE2b digest of its exact text."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _unique(prompts: Sequence[str | None]) -> tuple[list[str | None], np.ndarray]:
    index: dict[str | None, int] = {}
    inverse = np.fromiter((index.setdefault(p, len(index)) for p in prompts), dtype=np.int64,
                          count=len(prompts))
    return list(index), inverse
