"""TransformerEmbeddingModel: the router's Python API (train / predict / save / load).

    model = TransformerEmbeddingModel(encoder="sentence-transformers/all-MiniLM-L6-v2")
    history = model.train("pairs.parquet", validation_split=ValidationSplit(0.2, 42), epochs=3)
    scores = model.predict(["Prove that sqrt(2) is irrational."])   # {llm name: np.ndarray}
    model.save("run/"); model = TransformerEmbeddingModel.load("run/")

The router is a `RouterNet` (encoder -> pooling -> [prompt, features] -> head, `training.model.
network`) scored against a table of LLM embeddings (`llm_table`, `training.llm_embeddings.tables`).
"model" is the router; the LLMs it routes between are `llm_names` / `llm_embeddings`.
This facade sits above the trainer: it builds the network (`training.model`), hands itself to
`training.trainer.loop.fit_loop` through the `training.model.seams.Trainable` protocol and stores
what the loop returns (the history, the loss as trained); `training.export` reads it as `Exportable`.
A frozen encoder's prompt vectors can come from outside (`frozen_vectors`, e.g. a
`training.encoder.prompt_cache.PromptCache`), so that no prompt is encoded twice across runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from routerdb.features import FEATURE_NAMES, FeatureStats, compute_features
from routerdb.tokenizer import PromptTokenizer, length_batches
from training.data.columns import check_llm_spellings
from training.data.read import PAIR_COLUMNS, TABLE_NAME, concat_pairs, load_pairs, pair_llms
from training.data.splits import decisive_counts, drop_llms, drop_rare_models, split_by_prompt
from training.device import is_quantized, pick_device
from training.encoder.finetuning import count_parameters, prepare_encoder
from training.encoder.pooling import Pooling, detect_pooling
from training.encoder.pretrained import EncoderRef, load_config, load_tokenizer
from training.encoder.resolve import encoder_ref
from training.encoder.text_encoder import TextVectors
from training.formats import CHECKPOINT_CONFIG, CHECKPOINT_VERSION, CHECKPOINT_WEIGHTS, TOKENIZER_FILE
from training.llm_embeddings.embedder import KINDS as EMBEDDING_KINDS
from training.llm_embeddings.embedder import LLMEmbedder
from training.llm_embeddings.phase1 import phase1_embedder
from training.llm_embeddings.records import comparison_records
from training.llm_embeddings.tables import FixedTable, LearnedTable, phase1_table
from training.model.difficulty import (
    ScoredPromptGate,
    fit_gate_mlp,
    fit_logistic,
    fit_prior,
    prompt_targets,
    ridge_prior,
)
from training.model.heads import Head, build_head
from training.model.network import FeatureNorm, RouterNet
from training.model.priors import bradley_terry_strengths
from training.model.seams import ParameterGroups
from training.specs import RouterConfig, ValidationSplit
from training.trainer.loop import fit_loop

log = logging.getLogger(__name__)

# ridge strength of the scored-prompt gate (head.served_difficulty_gate), in standardised units
GATE_ALPHA = 0.01
FEW_DECISIVE_PAIRS = 10  # an LLM with fewer decisive training pairs than this is named in a warning


class TransformerEmbeddingModel:
    """A prompt encoder + LLM embeddings + scoring head, trained from pairwise comparisons."""

    def __init__(self, config: RouterConfig | None = None, **fields: Any):
        base = (config or RouterConfig()).model_dump()
        self.config = RouterConfig.model_validate({**base, **fields})
        self.net: RouterNet | None = None
        self.llm_names: list[str] = []
        self.llm_table: nn.Module | None = None  # () -> LLM embeddings [M, D]; training.llm_embeddings.tables
        self.llm_embedder: LLMEmbedder | None = None  # phase 1, for kinds other than "learned"
        # prompts -> [P, H] vectors of this router's frozen encoder (read instead of running it)
        self.frozen_vectors: TextVectors | None = None
        self.tokenizer: PromptTokenizer | None = None
        self.encoder_ref: EncoderRef | None = None
        self.pooling_reason = ""
        self.feature_stats: FeatureStats | None = None
        self.history: list[dict[str, float]] = []
        self.validation_prompts: list[str] = []  # the prompts `train` held out, sorted
        # the pairwise loss as trained (training.trainer.losses.PairLoss: e.g. its per-source scales)
        self.loss: nn.Module | None = None
        self.dropped_llms: dict[str, str] = {}  # LLM name -> why `train` left it out (in the manifest)
        self.device = pick_device()

    # --- building --------------------------------------------------------------------------

    def build(self, llm_names: Sequence[str], stats: FeatureStats | None) -> None:
        """Create the network (seeded) for these LLMs; `stats` normalise the prompt features."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.encoder_ref = encoder_ref(cfg.encoder)
        self.tokenizer = load_tokenizer(self.encoder_ref, cfg.encoder.max_length, cfg.encoder.truncation)
        hf_config = load_config(self.encoder_ref)
        pooling = self._pooling(hf_config)
        encoder = prepare_encoder(cfg.finetuning, self.encoder_ref)
        feature_norm = None
        if cfg.use_prompt_features:
            self.feature_stats = stats or FeatureStats(tuple([0.0] * len(FEATURE_NAMES)),
                                                       tuple([1.0] * len(FEATURE_NAMES)))
            feature_norm = FeatureNorm(self.feature_stats.mean, self.feature_stats.std)
        n_features = len(FEATURE_NAMES) if cfg.use_prompt_features else 0
        head = build_head(cfg.head, hf_config.hidden_size + n_features, cfg.embedding_spec.dim)
        self.net = RouterNet(encoder, pooling, feature_norm, head)
        self.llm_names = list(llm_names)
        initial = 0.1 * torch.randn(len(llm_names), cfg.embedding_spec.dim)
        # Phase-1 kinds: filled by train() from the LLM embedder, or by load_state_tensors().
        learned = cfg.embedding_spec.kind == "learned"
        self.llm_table = LearnedTable(initial) if learned else FixedTable(torch.zeros_like(initial))
        self._to_device()

    def _pooling(self, hf_config) -> Pooling:
        mode, normalize, reason = detect_pooling(self.encoder_ref.local_dir, hf_config)
        if self.config.encoder.pooling != "auto":
            mode, reason = self.config.encoder.pooling, "set in the spec"
        self.pooling_reason = reason
        log.info("pooling: %s%s (%s)", mode, " + L2 normalise" if normalize else "", reason)
        return Pooling(mode, normalize)

    def _to_device(self) -> None:
        if not is_quantized(self.net.encoder):  # a 4-bit encoder sits where bitsandbytes put it
            self.net.to(self.device)
        self.net.head.to(self.device)
        if self.net.feature_norm is not None:
            self.net.feature_norm.to(self.device)
        self.llm_table.to(self.device)

    @property
    def llm_embeddings(self) -> torch.Tensor | None:
        """The LLM embeddings [M, D] the head scores against (rows in `llm_names` order)."""
        return None if self.llm_table is None else self.llm_table()

    @property
    def frozen_encoder(self) -> bool:
        return not any(p.requires_grad for p in self.net.encoder.parameters())

    @property
    def head(self) -> Head:
        return self.net.head

    @property
    def uses_features(self) -> bool:
        return self.net.feature_norm is not None

    def head_parameters(self) -> list[nn.Parameter]:
        """What trains beside the encoder: the head and the learned LLM rows."""
        return [*self.net.head.parameters(), *(p for p in self.llm_table.parameters() if p.requires_grad)]

    def parameter_groups(self) -> ParameterGroups:
        return ParameterGroups(self.net.encoder, self.head_parameters(), [self.net.head])

    def set_training(self, on: bool) -> None:
        self.net.train(on)
        if on and self.frozen_encoder:
            self.net.encoder.eval()

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled vectors [B, H] of a token batch, with gradients through a trainable encoder."""
        return self.net.embed(input_ids, attention_mask)

    def raw_scores(self, pooled: torch.Tensor, features: torch.Tensor,
                   llm_rows: torch.Tensor) -> torch.Tensor:
        """The head's raw values [P, M] (what the losses read) of pooled vectors and raw features."""
        return self.net.raw(pooled, features, llm_rows)

    # --- tokens ----------------------------------------------------------------------------

    def token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Token ids per prompt, cut to max_length as the bundle will cut them."""
        return self.tokenizer.token_ids(prompts)

    def tensors(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) [B, T] on the model's device, padded to the longest."""
        batch = self.tokenizer.pad(ids)
        return (torch.from_numpy(batch.input_ids).to(self.device),
                torch.from_numpy(batch.attention_mask).to(self.device))

    # --- training --------------------------------------------------------------------------

    def train(self, data, validation_split: ValidationSplit | None = ValidationSplit(0.2, 42), *,
              epochs: int | None = None, batch_size: int | None = None, aliases=None,
              run_dir: str | Path | None = None, resume: bool = False,
              validation_data: pa.Table | None = None) -> list[dict[str, float]]:
        """Train on pairwise or per-model-score data; returns one dict of metrics per epoch.

        Validation: `validation_split` of the distinct prompts (seeded), or the pairs given as
        `validation_data` (then `data` is trained on whole), or none."""
        updates = {k: v for k, v in {"epochs": epochs, "batch_size": batch_size}.items() if v is not None}
        if updates:
            self.config = self.config.model_copy(update=updates)
        train_pairs, val_pairs = self._split(_as_pairs(data, aliases), validation_split, validation_data)
        self.validation_prompts = sorted(set(val_pairs["prompt"].to_pylist()))
        both = pa.concat_tables([train_pairs, val_pairs.select(train_pairs.column_names)])
        names = sorted(set(both["model_a"].to_pylist()) | set(both["model_b"].to_pylist()))
        if self.net is None:
            self.build(names, self._feature_stats(train_pairs))
        if EMBEDDING_KINDS[self.config.embedding_spec.kind].phase1:
            self._phase1(train_pairs, names, run_dir, resume)
        self._fit_difficulty_prior(train_pairs)
        result = fit_loop(self, train_pairs, val_pairs, run_dir=run_dir, resume=resume)
        self.history, self.loss = result.history, result.loss
        return self.history

    def _split(self, pairs: pa.Table, validation_split: ValidationSplit | None,
               validation_data: pa.Table | None) -> tuple[pa.Table, pa.Table]:
        cfg = self.config
        pairs, dropped = drop_rare_models(pairs, cfg.min_model_comparisons)
        self.dropped_llms = {name: f"fewer than {cfg.min_model_comparisons} comparisons" for name in dropped}
        if dropped:
            log.info("dropped %d LLM(s) with fewer than %d comparisons: %s", len(dropped),
                     cfg.min_model_comparisons, ", ".join(dropped))
        if validation_data is not None:
            train, val = pairs, validation_data
        elif validation_split is not None:
            train, val = split_by_prompt(pairs, validation_split.fraction, validation_split.seed)
        else:
            train, val = pairs, pairs.slice(0, 0)
        return self._drop_untrained(train, val)

    def _drop_untrained(self, train: pa.Table, val: pa.Table) -> tuple[pa.Table, pa.Table]:
        """Leave out every LLM without a decisive training pair (nothing would train its row: it
        would be served as initialised), repeating while dropping one leaves another without any;
        or stop, with `untrained_llms` "error"."""
        names = sorted(pair_llms(train) | pair_llms(val))
        check_llm_spellings(names, TABLE_NAME)  # pairs tables handed in directly were not checked
        while True:
            counts = decisive_counts(train, names)
            untrained = [name for name, n in counts.items() if n == 0]
            if not untrained:
                break
            if self.config.untrained_llms == "error":
                raise ValueError(
                    f"LLM(s) {', '.join(map(repr, untrained))} have no decisive training pair after the "
                    "split (all their comparisons are ties or on validation prompts), so nothing would "
                    "train their rows; allowed: LLMs with at least one win or loss on a training prompt; "
                    "fix: add comparisons for them, drop them from the data, or set untrained_llms "
                    '"drop" to leave them out of the router with a warning.')
            log.warning("left out %d LLM(s) without a decisive training pair after the split (all their "
                        "comparisons are ties or on validation prompts; served, they would score at "
                        "random): %s. Add comparisons for them to route to them.", len(untrained),
                        ", ".join(untrained))
            self.dropped_llms.update(dict.fromkeys(untrained, "no decisive training pair after the split"))
            train, val = drop_llms(train, untrained), drop_llms(val, untrained)
            names = [name for name in names if name not in untrained]
        few = {name: n for name, n in counts.items() if n < FEW_DECISIVE_PAIRS}
        if few:
            log.warning("LLM(s) with fewer than %d decisive training pairs, their rows barely trained: %s. "
                        "Add comparisons for them, or drop them with min_model_comparisons.",
                        FEW_DECISIVE_PAIRS, ", ".join(f"{k} ({v})" for k, v in few.items()))
        if not names:
            raise ValueError("no LLM has a decisive training pair (every comparison is a tie or on a "
                             "validation prompt); allowed: data where some LLM wins or loses on a "
                             "training prompt; fix: check the winner / score columns and the split.")
        return train, val

    def _feature_stats(self, train_pairs: pa.Table) -> FeatureStats | None:
        if not self.config.use_prompt_features:
            return None
        return FeatureStats.fit(compute_features(sorted(set(train_pairs["prompt"].to_pylist()))))

    def _fit_difficulty_prior(self, train_pairs: pa.Table) -> None:
        """With head.difficulty_prior: fit the head's fixed difficulty prior on the training prompts'
        mean correctness (`training.model.difficulty`), before the first step."""
        prior = getattr(self.net.head, "prior", None)
        if prior is None:
            return
        targets = prompt_targets(train_pairs, centre=self.config.head.difficulty_centred)
        vectors = self.prompt_vectors(targets.prompts) if targets.prompts else np.zeros((0, 0))
        fit_prior(prior, vectors.astype(np.float64), targets, self.config.head.difficulty_prior)

    def _serve_difficulty(self, train_pairs: pa.Table) -> None:
        """With head.served_difficulty: the ridge prior of the training prompts' mean correctness
        becomes the difficulty the head serves, on its learned difficulty's scale (with the gates,
        only off the prompts with per-model scores). Every training prompt is encoded once."""
        alpha = getattr(self.config.head, "served_difficulty", None)
        if alpha is None:
            return
        head_spec = self.config.head
        targets = prompt_targets(train_pairs, centre=head_spec.difficulty_centred)
        prompts = sorted(set(train_pairs["prompt"].to_pylist()))
        # prompt_vectors leaves the network in eval mode: the trained difficulty without dropout, as served
        vectors = self.prompt_vectors(prompts).astype(np.float64)
        scored = np.isin(np.asarray(prompts, dtype=object), np.asarray(targets.prompts, dtype=object))
        row = {p: i for i, p in enumerate(prompts)}
        on_scored = vectors[[row[p] for p in targets.prompts]] if targets.prompts else np.zeros((0, 0))
        coef, intercept, _ = ridge_prior(on_scored, targets, alpha, "head.served_difficulty")
        gated = head_spec.served_difficulty_gate or head_spec.served_skills_gate
        gate = self._scored_prompt_gate(vectors, scored) if gated else None
        pairwise = (torch.as_tensor(vectors[~scored], dtype=torch.float32, device=self.device)
                    if head_spec.served_skills_gate else None)
        self.net.head.serve_difficulty(torch.as_tensor(on_scored, dtype=torch.float32, device=self.device),
                                       coef, intercept, gate, pairwise)

    def _scored_prompt_gate(self, vectors: np.ndarray, scored: np.ndarray) -> dict:
        """The parameters of the gate telling the training prompts (`vectors` [P, H + F]) with
        per-model scores (`scored` [P], 1) from those with pairwise judgments only (0), the two
        classes weighted equally: a logistic regression, or with head.served_gate_hidden an MLP."""
        hidden = self.config.head.served_gate_hidden
        if scored.all():  # every prompt was scored: the gate as built, open everywhere
            return {k: v.numpy() for k, v in ScoredPromptGate(vectors.shape[1], hidden).state_dict().items()}
        weight = np.where(scored, 0.5 / scored.sum(), 0.5 / (~scored).sum())
        if hidden:
            gate = fit_gate_mlp(vectors, scored.astype(np.float64), hidden, weight, seed=self.config.seed)
        else:
            coef, intercept = fit_logistic(vectors, scored.astype(np.float64), GATE_ALPHA, weight)
            gate = {"coef": coef, "intercept": intercept}
        g = ScoredPromptGate(vectors.shape[1], hidden).set(**gate)(
            torch.as_tensor(vectors, dtype=torch.float32))[:, 0].numpy()
        log.info("scored-prompt gate (%s): mean %.3f on the %d scored prompts, %.3f on the %d "
                 "pairwise-only ones",
                 f"MLP, {hidden} hidden" if hidden else "logistic",
                 g[scored].mean(), scored.sum(), g[~scored].mean(), (~scored).sum())
        return gate

    def _phase1(self, train_pairs: pa.Table, names: list[str], run_dir, resume: bool) -> None:
        """Train (or load) the LLM embedder on the training split; set the head's LLM table."""
        cfg = self.config
        source = cfg.load_embedding_model_from
        if source is None and resume and run_dir is not None and (Path(run_dir) / "checkpoint").is_dir():
            source = str(Path(run_dir) / "checkpoint")  # resume: the checkpoint's phase-1 model
        self.llm_embedder = phase1_embedder(cfg, train_pairs, source, self.device, self._phase1_vectors())
        self.llm_table = phase1_table(self.llm_embedder, comparison_records(train_pairs), names)

    def _phase1_vectors(self) -> TextVectors | None:
        """`frozen_vectors` where phase 1 encodes texts exactly as the router does (same encoder,
        frozen), so that record texts are read from the same cache; else None."""
        spec = self.config.embedding_spec
        same = getattr(spec, "encoder", None) in (None, self.config.encoder.name)
        return self.frozen_vectors if same and not EMBEDDING_KINDS[spec.kind].finetunes_encoder else None

    @torch.no_grad()
    def finish_training(self, train_pairs: pa.Table) -> None:
        """After the last epoch: the head completes the LLM rows from what the training pairs say
        of each LLM (the IRT head's measured regions and levels; nothing for the mlp head)."""
        head = self.net.head
        self._serve_difficulty(train_pairs)
        if not head.needs_measured_prompts:
            return
        prompt_codes, prompts = np.unique(np.asarray(train_pairs["prompt"].to_pylist(), dtype=object),
                                          return_inverse=True)[::-1]
        vectors = torch.as_tensor(self.prompt_vectors(list(prompts)), device=self.device)
        column = {name: j for j, name in enumerate(self.llm_names)}
        a = np.array([column[x] for x in train_pairs["model_a"].to_pylist()])
        b = np.array([column[x] for x in train_pairs["model_b"].to_pylist()])
        measured = []
        for j in range(len(self.llm_names)):
            mine = np.unique(prompt_codes[(a == j) | (b == j)])
            measured.append(vectors[torch.as_tensor(mine, device=self.device)] if len(mine) else None)
        strengths = None
        if head.needs_strengths:  # fitted on the training pairs, ties half
            found = bradley_terry_strengths(train_pairs["model_a"].to_numpy(zero_copy_only=False),
                                            train_pairs["model_b"].to_numpy(zero_copy_only=False),
                                            train_pairs["label"].to_numpy(), ties="half")
            strengths = np.array([found.get(name, 0.0) for name in self.llm_names])
        head.finish_rows(self.llm_table.weight.data, measured, strengths)

    # --- inference -------------------------------------------------------------------------

    @torch.no_grad()
    def embed_prompts(self, prompts: Sequence[str], batch_size: int = 32,
                      progress: bool = False) -> torch.Tensor:
        """Pooled encoder vectors [P, H] (float32, on the model's device), in input order."""
        if self.frozen_vectors is not None and self.frozen_encoder:
            return torch.from_numpy(self.frozen_vectors(list(prompts))).to(self.device)
        self.net.eval()
        ids = self.token_ids(prompts)
        out = torch.empty(len(prompts), self._hidden_size(), device=self.device)
        batches = length_batches(ids, batch_size)
        for rows in tqdm(batches, desc="encoding", disable=not progress, unit="batch"):
            input_ids, mask = self.tensors([ids[i] for i in rows])
            out[torch.as_tensor(rows, device=self.device)] = self.net.embed(input_ids, mask).float()
        return out

    def _hidden_size(self) -> int:
        return self.net.head.prompt_dim - (len(FEATURE_NAMES) if self.net.feature_norm else 0)

    def features_tensor(self, prompts: Sequence[str]) -> torch.Tensor:
        n_features = len(FEATURE_NAMES) if self.net.feature_norm is not None else 0
        if not n_features:
            return torch.zeros(len(prompts), 0, device=self.device)
        return torch.from_numpy(compute_features(list(prompts))).to(self.device)

    @torch.no_grad()
    def score_matrix(self, prompts: Sequence[str], batch_size: int = 32,
                     llm_embeddings: np.ndarray | None = None) -> np.ndarray:
        """Scores [P, M] for every prompt against every LLM in `self.llm_names` (or against the
        rows of `llm_embeddings` [M, D], e.g. the table with a new LLM's row added)."""
        self._require_built()
        table = self.llm_embeddings if llm_embeddings is None else torch.as_tensor(
            llm_embeddings, dtype=torch.float32, device=self.device)
        self.net.eval()
        scores = self.net.score(self.embed_prompts(prompts, batch_size), self.features_tensor(prompts), table)
        return scores.float().cpu().numpy()

    @torch.no_grad()
    def prompt_vectors(self, prompts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """[P, H + F]: what the head reads for each prompt (the bundle's `prompt_vectors` output)."""
        self._require_built()
        self.net.eval()
        pooled = self.embed_prompts(prompts, batch_size)
        return self.net.prompt_vector(pooled.float(), self.features_tensor(prompts)).float().cpu().numpy()

    def predict(self, input_data, batch_size: int = 32) -> dict[str, np.ndarray]:
        """{LLM name: scores in [-1, 1] for each prompt}; input: prompts, or a table with `prompt`."""
        prompts = _prompts_of(input_data)
        matrix = self.score_matrix(prompts, batch_size)
        return {name: matrix[:, j] for j, name in enumerate(self.llm_names)}

    def _require_built(self) -> None:
        if self.net is None:
            raise RuntimeError("this model has not been trained or loaded; call .train(...) or "
                               "TransformerEmbeddingModel.load(path) first")

    # --- persistence -------------------------------------------------------------------------

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: trainable encoder weights, head, LLM vectors, feature stats."""
        out = {f"encoder.{n}": p for n, p in self.net.encoder.named_parameters() if p.requires_grad}
        out.update({f"head.{n}": p for n, p in self.net.head.state_dict().items()})
        out["model_embeddings"] = self.llm_embeddings  # the checkpoint format's name for the LLM table
        if not isinstance(self.llm_table, (LearnedTable, FixedTable)):  # trained with the head
            out.update({f"llm_table.{n}": p for n, p in self.llm_table.state_dict().items()})
        return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        encoder_params = dict(self.net.encoder.named_parameters())
        head = {k[5:]: v for k, v in tensors.items() if k.startswith("head.")}
        self.net.head.load_state_dict(head)
        with torch.no_grad():
            if isinstance(self.llm_table, (LearnedTable, FixedTable)):
                self.llm_table.weight.data = tensors["model_embeddings"].to(self.device)
            else:
                self.llm_table.load_state_dict({k[10:]: v for k, v in tensors.items()
                                                if k.startswith("llm_table.")})
            for key, value in tensors.items():
                if key.startswith("encoder."):
                    param = encoder_params[key[8:]]
                    param.copy_(value.to(param.dtype))

    def describe(self, history: list[dict[str, float]] | None = None) -> dict[str, Any]:
        """The checkpoint's `router.json` (and the source of a bundle's manifest); `history`: the
        epochs so far, where a checkpoint is written during training (else `self.history`)."""
        trainable, total = count_parameters(self.net.encoder)
        features = self.net.feature_norm is not None
        return {
            "checkpoint_version": CHECKPOINT_VERSION,
            "config": self.config.model_dump(mode="json"),
            "model_names": self.llm_names,  # the checkpoint format's name for the LLMs
            "pooling": {"mode": self.net.pooling.mode, "normalize": self.net.pooling.normalize,
                        "reason": self.pooling_reason},
            "feature_names": list(FEATURE_NAMES) if features else [],
            "feature_stats": self.feature_stats.to_dict() if features else None,
            "encoder": {"name": self.encoder_ref.name, "origin": self.encoder_ref.origin,
                        "trainable_parameters": trainable, "total_parameters": total},
            "tokenizer": {"max_length": self.tokenizer.max_length, "pad_id": self.tokenizer.pad_id,
                          "padding_side": self.tokenizer.padding_side,
                          "truncation": self.tokenizer.truncation},
            "history": self.history if history is None else history,
            "dropped_llms": self.dropped_llms,
            "embedding_model": None if self.llm_embedder is None else {
                "kind": self.llm_embedder.kind, **self.llm_embedder.report},
        }

    def save(self, path: str | Path, history: list[dict[str, float]] | None = None) -> Path:
        """Write the checkpoint files (weights, tokenizer, router.json, a phase-1 embedder) to
        `path`; `history` as in `describe`."""
        self._require_built()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(self.state_tensors(), str(path / CHECKPOINT_WEIGHTS))
        (path / TOKENIZER_FILE).write_text(self.tokenizer.json, encoding="utf-8")
        (path / CHECKPOINT_CONFIG).write_text(json.dumps(self.describe(history), indent=2), encoding="utf-8")
        if self.llm_embedder is not None:
            self.llm_embedder.save(path / "embedding_model")
        return path

    @classmethod
    def load(cls, path: str | Path) -> TransformerEmbeddingModel:
        path = Path(path)
        if not (path / CHECKPOINT_CONFIG).is_file():
            raise FileNotFoundError(f"{str(path)!r} holds no {CHECKPOINT_CONFIG}: not a saved router. "
                                    "Pass the directory given to .save() (or a run's checkpoint/).")
        meta = json.loads((path / CHECKPOINT_CONFIG).read_text(encoding="utf-8"))
        if meta.get("checkpoint_version", 0) > CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {meta['checkpoint_version']} is newer than this "
                             f"routerdb reads ({CHECKPOINT_VERSION}); upgrade routerdb.")
        model = cls(RouterConfig.from_stored(meta["config"]))
        stats = FeatureStats.from_dict(meta["feature_stats"]) if meta["feature_stats"] else None
        model.build(meta["model_names"], stats)
        model.load_state_tensors(load_file(str(path / CHECKPOINT_WEIGHTS)))
        model.history = meta.get("history", [])
        model.dropped_llms = meta.get("dropped_llms", {})
        if (path / "embedding_model").is_dir():
            model.llm_embedder = LLMEmbedder.load(path / "embedding_model", model.device)
        return model


def _as_pairs(data, aliases=None) -> pa.Table:
    """A pairs table from a pairs table, a path / table / DataFrame, or a list of them."""
    if isinstance(data, pa.Table) and set(PAIR_COLUMNS) <= set(data.column_names):
        return data
    if isinstance(data, (list, tuple)):
        return concat_pairs([load_pairs(d, aliases=aliases) for d in data])
    return load_pairs(data, aliases=aliases)


def _prompts_of(input_data) -> list[str]:
    if isinstance(input_data, str):
        return [input_data]
    if isinstance(input_data, pa.Table):
        return input_data.column("prompt").to_pylist()
    if hasattr(input_data, "columns") and "prompt" in getattr(input_data, "columns", []):
        return list(input_data["prompt"])
    return list(input_data)
