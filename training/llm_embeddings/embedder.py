"""The LLM embedding model (phase 1): records -> one vector per LLM.

One registry, `KINDS`, keyed by `embedding_spec.kind`:

* ``learned``: one trainable vector per LLM, learned with the head. No phase 1; it cannot embed
  an LLM it was not trained with.
* ``frozen``: a frozen sentence encoder embeds each record's text; a small trainable network
  turns a record (text vector, outcome, opponent strength) into a vector; an LLM's embedding is
  the L2-normalised projection of the mean over its records.
* ``finetunable``: as ``frozen``, and the sentence encoder is fine-tuned in phase 1 too
  (``embedding_spec.finetuning``, any method of `training.encoder.finetuning.METHODS`).
* ``attention``: as ``frozen``, but the records of a set attend to each other (self-attention
  blocks) and are pooled by attention with a learned query (a set transformer).

Phase 1 (`training.llm_embeddings.phase1`) trains the record network on triplets of record sets
with the triplet margin loss on cosine distance (`training.llm_embeddings.records` says exactly how
triplets are built), before the head, on the training split only, and reports top-1
identification on held-out prompts.
The model is saved on its own (``embedding_model.json`` + ``embedding_model.safetensors``, no
pickle) in the run's checkpoint and in the bundle, and reused through ``load_embedding_model_from``.

In phase 2 the head reads the LLMs through a table of `training.llm_embeddings.tables`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import TypeAdapter
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from training.device import is_quantized, pick_device
from training.encoder.pretrained import resolve_encoder
from training.encoder.text_encoder import TextEncoder, TextVectors
from training.formats import (
    EMBEDDER_CONFIG,
    EMBEDDER_FORMAT,
    EMBEDDER_FORMAT_VERSION,
    EMBEDDER_WEIGHTS,
    library_versions,
)
from training.llm_embeddings import records as rec
from training.specs import EmbeddingSpec

log = logging.getLogger(__name__)

IDENTIFICATION_SETS_PER_LLM = 20  # held-out query sets per LLM for top-1 identification


@dataclass(frozen=True)
class Kind:
    description: str
    phase1: bool  # has a phase-1 model (can embed a new LLM)
    attention: bool  # set encoder with attention instead of a mean over records
    finetunes_encoder: bool


KINDS: dict[str, Kind] = {
    "learned": Kind("one trainable vector per LLM, learned with the head", False, False, False),
    "frozen": Kind("frozen sentence encoder + record network, mean over records", True, False, False),
    "finetunable": Kind("sentence encoder fine-tuned in phase 1 + record network", True, False, True),
    "attention": Kind("frozen sentence encoder + self-attention over records, attention pooling",
                      True, True, False),
}


# --- the record network -----------------------------------------------------------------------


class AttentionPool(nn.Module):
    """Self-attention blocks over a set, then attention pooling with one learned query."""

    def __init__(self, width: int, heads: int, layers: int):
        super().__init__()
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.0,
                                                               batch_first=True) for _ in range(layers))
        self.query = nn.Parameter(0.02 * torch.randn(1, 1, width))
        self.attend = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # h [S, R, W], mask [S, R] (True = a record) -> [S, W]
        pad = ~mask
        for block in self.blocks:
            h = block(h, src_key_padding_mask=pad)
        query = self.query.expand(len(h), -1, -1)
        out, _ = self.attend(query, h, h, key_padding_mask=pad, need_weights=False)
        return out.squeeze(1)


class RecordNet(nn.Module):
    """Record sets -> one unit vector per set.

    A record's input places [text vector, opponent strength] in the slot of its outcome (lost /
    tie / won), so "won on this prompt against a strong LLM" and "lost on it" are linearly
    separable. The opponent enters only by its strength (its win rate in phase-1 data, centred),
    not its identity: identity would leak "never plays itself" (see training/llm_embeddings/records.py).
    """

    def __init__(self, text_dim: int, spec, attention: bool):
        super().__init__()
        width = spec.hidden_dim
        self.record = nn.Sequential(nn.Linear(3 * (text_dim + 1), width), nn.GELU(), nn.Linear(width, width))
        self.pool = AttentionPool(width, spec.heads, spec.layers) if attention else None
        self.out = nn.Linear(width, spec.dim - 1)  # the last coordinate is the measured strength

    def forward(self, text: torch.Tensor, opponent: torch.Tensor, outcome: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        # text [S, R, H], opponent [S, R] strength - 0.5, outcome [S, R] in {-1, 0, 1}, mask [S, R]
        x = torch.cat([text, opponent.unsqueeze(-1).to(text.dtype)], dim=-1)
        slots = F.one_hot(outcome.long() + 1, 3).to(x.dtype)  # [S, R, 3]
        h = self.record((slots.unsqueeze(-1) * x.unsqueeze(-2)).flatten(-2))  # [S, R, W]
        if self.pool is None:
            m = mask.to(h.dtype).unsqueeze(-1)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        else:
            pooled = self.pool(h, mask)
        return F.normalize(self.out(pooled), dim=-1)  # [S, D]


# --- the phase-1 model -------------------------------------------------------------------------


class LLMEmbedder:
    """Embeds an LLM from its comparison records. Build with `train_embedding_model` or `load`."""

    def __init__(self, spec, text: TextEncoder, win_rates: dict[str, float], bt: dict[str, float],
                 device: torch.device):
        self.spec = spec
        self.text = text
        self.win_rates = dict(win_rates)  # known LLM -> win rate in phase-1 data (opponent input)
        self.bt = dict(bt)  # known LLM -> Bradley-Terry strength in phase-1 data (strength coordinate)
        values = np.array(list(self.bt.values()) or [0.0])
        self._bt_mean, self._bt_std = float(values.mean()), float(max(values.std(), 1e-6))
        self.net = RecordNet(text.hidden_size, spec, KINDS[spec.kind].attention)
        self.device = device
        self.report: dict[str, Any] = {}
        self.text_vectors: TextVectors | None = None  # e.g. a PromptCache lookup, frozen kinds only
        self.center = torch.zeros(spec.dim - 1)  # set after phase 1 (see standardize)
        self.scale = torch.eye(spec.dim - 1)
        if not is_quantized(self.text.encoder):
            self.text.to(device)
        self.net.to(device)

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def dim(self) -> int:
        return self.spec.dim

    # --- inputs ------------------------------------------------------------------------------

    def vectors(self, records: rec.Records) -> torch.Tensor:
        """Frozen vectors of every text of `records` [T, H] (zeros where no record uses a text)."""
        used = np.unique(records.text)
        texts = [records.texts[i] for i in used]
        if self.text_vectors is not None and not self.text.trainable:
            values = np.asarray(self.text_vectors(texts), np.float32)
        else:
            values = self.text.vectors(texts)
        out = torch.zeros(len(records.texts), self.text.hidden_size, device=self.device)
        out[torch.as_tensor(used, device=self.device)] = torch.from_numpy(values).to(self.device)
        return out

    def opponent_strength(self, records: rec.Records) -> np.ndarray:
        """Per record: the opponent's win rate minus 0.5 (0 for an LLM phase 1 never saw)."""
        strength = np.array([self.win_rates.get(name, 0.5) - 0.5 for name in records.llms], np.float32)
        return strength[records.opponent]

    def set_inputs(self, records: rec.Records, rows: np.ndarray, vectors: torch.Tensor | None):
        """Network inputs for sets of record rows [S, k] (-1 = padding). `vectors` is [T, H],
        or None to run the encoder on the sets' texts now (with gradients when it trains)."""
        mask = rows >= 0
        safe = np.where(mask, rows, 0)
        text_idx = records.text[safe]
        if vectors is None:
            used, inverse = np.unique(text_idx, return_inverse=True)
            encoded = self.text([records.texts[i] for i in used])
            text = encoded[torch.as_tensor(inverse.reshape(text_idx.shape), device=encoded.device)]
        else:
            text = vectors[torch.as_tensor(text_idx, device=vectors.device)]
        t = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        return text, t(self.opponent_strength(records)[safe]), t(records.outcome[safe]), t(mask)

    def embed_sets(self, records: rec.Records, rows: np.ndarray,
                   vectors: torch.Tensor | None) -> torch.Tensor:
        return self.net(*self.set_inputs(records, rows, vectors))  # [S, D]

    # --- embeddings --------------------------------------------------------------------------

    def profiles(self, records: rec.Records, names: Sequence[str]) -> np.ndarray:
        """Rows [M, L] (-1 padded) of the records each LLM's embedding is computed from."""
        sets = []
        for name in names:
            llm = records.llms.index(name) if name in records.llms else -1
            sets.append(rec.profile_rows(records, llm, self.spec.profile_records, 0) if llm >= 0
                        else np.zeros(0, np.int64))
        width = max([len(s) for s in sets] + [1])
        out = np.full((len(sets), width), -1, np.int64)
        for j, rows in enumerate(sets):
            out[j, :len(rows)] = rows
        return out

    def standardize(self, raw: torch.Tensor) -> torch.Tensor:
        """What the head reads: unit vectors centred on the phase-1 LLMs' mean and whitened (with
        shrinkage) over their spread. Phase-1 vectors of LLMs of similar strength can be close
        (cosine ~0.99); without this the head would need very large weights to tell them apart."""
        return (raw - self.center.to(raw.device)) @ self.scale.to(raw.device)

    def strength_column(self, records: rec.Records, names: Sequence[str]) -> np.ndarray:
        """[M, 1]: each LLM's strength measured from all its records (the known LLMs' phase-1
        Bradley-Terry strengths held fixed as opponents), standardised over the known LLMs; 0 (the
        average) for an LLM without records."""
        out = np.zeros((len(names), 1), np.float32)
        for j, name in enumerate(names):
            if name in records.llms:
                theta = rec.strength_given(records.of(name), self.bt)
                out[j, 0] = (theta - self._bt_mean) / self._bt_std
        return out

    @torch.no_grad()
    def embed_llms(self, records: rec.Records, names: Sequence[str] | None = None,
                   vectors: torch.Tensor | None = None) -> np.ndarray:
        """What the head reads, [M, D]: the standardised unit vector of the record network (D - 1
        coordinates, from at most `profile_records` records) and the measured strength (last
        coordinate, from all records). An LLM without records gets 0: the average LLM."""
        names = list(records.llms if names is None else names)
        raw = torch.from_numpy(self.raw_embeddings(records, names, vectors))
        has = raw.norm(dim=1, keepdim=True) > 0
        learned = torch.where(has, self.standardize(raw), torch.zeros_like(raw)).numpy()
        return np.concatenate([learned, self.strength_column(records, names)], axis=1)

    @torch.no_grad()
    def raw_embeddings(self, records: rec.Records, names: Sequence[str] | None = None,
                       vectors: torch.Tensor | None = None) -> np.ndarray:
        """Unit vectors [M, D - 1] as phase 1 trains them (zeros for an LLM without records, logged)."""
        names = list(records.llms if names is None else names)
        missing = [n for n in names if n not in records.llms]
        if missing:
            log.warning("no comparison records of %s: it gets the average LLM's embedding",
                        ", ".join(missing))
        rows = self.profiles(records, names)
        vectors = self.vectors(records) if vectors is None else vectors
        self.net.eval()
        out = torch.zeros(len(names), self.dim - 1, device=self.device)
        has = rows[:, 0] >= 0
        for start in range(0, len(names), 16):  # 16 LLMs x profile_records at a time
            part = np.flatnonzero(has[start:start + 16]) + start
            if len(part):
                out[torch.as_tensor(part, device=self.device)] = self.embed_sets(records, rows[part], vectors)
        return out.cpu().numpy()

    @torch.no_grad()
    def identification(self, fit: rec.Records, heldout: rec.Records,
                       vectors: torch.Tensor | None = None) -> float:
        """Top-1 accuracy: held-out sets of `records_per_set` records, nearest LLM prototype
        (each LLM's embedding from its fit records) by cosine. NaN without held-out records."""
        names = [n for n in fit.llms if n in heldout.llms]
        if not names or len(heldout) == 0:
            return float("nan")
        heldout = heldout.take(np.isin(heldout.llm, [heldout.llms.index(n) for n in names]))
        prototypes = torch.from_numpy(self.raw_embeddings(fit, names, vectors)).to(self.device)
        sets, truth = rec.identification_sets(heldout, IDENTIFICATION_SETS_PER_LLM,
                                              self.spec.records_per_set, seed=1)
        self.net.eval()
        if vectors is None or heldout.texts is not fit.texts:
            vectors = self.vectors(heldout)
        queries = torch.cat([self.embed_sets(heldout, sets[i:i + 256], vectors)
                             for i in range(0, len(sets), 256)])
        guess = (queries @ prototypes.T).argmax(dim=1).cpu().numpy()
        true_names = [heldout.llms[t] for t in truth]
        return float(np.mean([names[g] == t for g, t in zip(guess, true_names, strict=True)]))

    # --- persistence ---------------------------------------------------------------------------

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"net.{k}": v for k, v in self.net.state_dict().items()}
        out.update({"standardize.center": self.center, "standardize.scale": self.scale})
        if KINDS[self.kind].finetunes_encoder:
            trained = self.text.encoder.named_parameters()
            out.update({f"encoder.{n}": p for n, p in trained if p.requires_grad})
        return {k: v.detach().float().cpu().contiguous() for k, v in out.items()}

    def describe(self) -> dict[str, Any]:
        return {"format": EMBEDDER_FORMAT, "format_version": EMBEDDER_FORMAT_VERSION, "kind": self.kind,
                "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "library_versions": library_versions(), "spec": self.spec.model_dump(mode="json"),
                "encoder": {"name": self.text.ref.name, "max_length": self.text.tokenizer.max_length,
                            "truncation": self.text.tokenizer.truncation, "pooling": self.text.pooling.mode},
                "text_dim": self.text.hidden_size, "opponent_win_rate": self.win_rates,
                "bt_strength": self.bt, "report": self.report}

    def save(self, path: str | Path) -> Path:
        """Write `path/embedding_model.json` and `path/embedding_model.safetensors`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file(self.tensors(), str(path / EMBEDDER_WEIGHTS))
        (path / EMBEDDER_CONFIG).write_text(json.dumps(self.describe(), indent=2), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | Path, device: torch.device | None = None) -> LLMEmbedder:
        """Load from a directory holding the two files, a checkpoint or run directory, or a bundle."""
        folder = find_embedding_model(path)
        meta = json.loads((folder / EMBEDDER_CONFIG).read_text(encoding="utf-8"))
        return cls.from_files(meta, load_file(str(folder / EMBEDDER_WEIGHTS)), device, where=str(folder))

    @classmethod
    def from_files(cls, meta: dict, tensors: dict[str, torch.Tensor], device: torch.device | None = None,
                   *, where: str = "<embedding model>") -> LLMEmbedder:
        _check_meta(meta, where)
        spec = TypeAdapter(EmbeddingSpec).validate_python(meta["spec"])
        finetuning = spec.finetuning if KINDS[spec.kind].finetunes_encoder else None
        enc = meta["encoder"]
        text = TextEncoder(resolve_encoder(enc["name"]), enc["max_length"], enc["pooling"], finetuning,
                           enc.get("truncation", "head"))  # saved before truncation was a choice: head
        model = cls(spec, text, meta["opponent_win_rate"], meta["bt_strength"], device or pick_device())
        model.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        model.center, model.scale = tensors["standardize.center"], tensors["standardize.scale"]
        params = dict(model.text.encoder.named_parameters())
        with torch.no_grad():
            for key, value in tensors.items():
                if key.startswith("encoder."):
                    params[key[8:]].copy_(value.to(params[key[8:]].dtype))
        model.report = meta.get("report", {})
        return model


def find_embedding_model(path: str | Path) -> Path:
    """The folder holding embedding_model.json: `path` itself, its embedding_model/, or
    checkpoint/embedding_model/ of a run directory."""
    path = Path(path)
    for folder in (path, path / "embedding_model", path / "checkpoint" / "embedding_model"):
        if (folder / EMBEDDER_CONFIG).is_file() and (folder / EMBEDDER_WEIGHTS).is_file():
            return folder
    raise FileNotFoundError(
        f"no LLM embedding model at {str(path)!r}: expected {EMBEDDER_CONFIG} and {EMBEDDER_WEIGHTS} "
        "there, in embedding_model/, or in checkpoint/embedding_model/. Pass a bundle or run trained with "
        "embedding_spec.kind 'frozen', 'finetunable' or 'attention' (kind 'learned' has no such model)."
    )


def _check_meta(meta: Any, where: str) -> None:
    if not isinstance(meta, dict) or meta.get("format") != EMBEDDER_FORMAT:
        raise ValueError(f"{where}: not a routerdb LLM embedding model (format {EMBEDDER_FORMAT!r} "
                         "expected); save it with LLMEmbedder.save")
    if int(meta.get("format_version", 0)) > EMBEDDER_FORMAT_VERSION:
        raise ValueError(f"{where}: embedding model format version {meta['format_version']} is newer than "
                         f"this routerdb reads ({EMBEDDER_FORMAT_VERSION}); upgrade routerdb.")
    if meta.get("kind") not in KINDS or not KINDS[meta["kind"]].phase1:
        phase1 = [k for k, v in KINDS.items() if v.phase1]
        raise ValueError(f"{where}: embedding model kind {meta.get('kind')!r}; allowed: {phase1}.")
