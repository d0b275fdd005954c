"""Typed training specs: closed pydantic models, one JSON file per run. No torch import.

A spec is data; the behaviour for each `kind` lives in a registry beside the code that runs it
(`training.encoder.finetuning.METHODS`, `training.llm_embeddings.embedder.KINDS`,
`training.model.heads.HEADS`, `training.trainer.losses.LOSSES`, `training.trainer.optim.OPTIMIZERS`
and `SCHEDULES`), and a test checks that every union member here has a
registry entry there.

Relative paths in a spec are resolved against the current working directory.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

DEFAULT_TRUNCATION = "head_tail"  # what a prompt over max_length keeps (routerdb/tokenizer.py)

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
Path_ = Annotated[str, Field(min_length=1)]  # a file or directory path: "" would mean the working directory


def _no_bool(value):
    if isinstance(value, bool):
        raise ValueError(f"got {str(value).lower()}, a boolean, where a number is expected")
    return value


# Numbers in a spec are numbers: JSON's true is not 1, and a count takes no decimal point.
Int = Annotated[int, Strict()]
Float = Annotated[float, BeforeValidator(_no_bool)]
Beta = Annotated[Float, Field(ge=0, lt=1)]  # Adam's moment decay rates


class Closed(BaseModel):
    # allow_inf_nan=False: NaN or Infinity in any float field (JSON allows the literals) is an error.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- data -----------------------------------------------------------------------------------


class ValidationSplit(Closed):
    fraction: Float = Field(0.2, gt=0.0, lt=1.0)  # share of distinct prompts held out
    seed: Int = Field(42, ge=0, lt=2**64)  # the split's own seed, independent of the training seed

    def __init__(self, fraction: float = 0.2, seed: int = 42, /, **kw):  # ValidationSplit(0.2, 42)
        super().__init__(fraction=kw.pop("fraction", fraction), seed=kw.pop("seed", seed), **kw)


class DataSpec(Closed):
    train: list[Path_] = Field(min_length=1)  # Parquet / CSV / JSONL files, pairwise or per-model scores
    aliases: str | None = None  # model_aliases.json: spellings of one LLM mapped to one name
    validation: ValidationSplit = ValidationSplit()


# --- encoder and fine-tuning ------------------------------------------------------------------


class EncoderSpec(Closed):
    # transformer: run the network `name` on the prompt's tokens; static: a vector per vocabulary
    # token, mean-pooled (training/encoder/static.py), distilled from the transformer `name` or
    # read from a local model2vec folder `name`: ~100x faster, a little less accurate
    kind: Literal["transformer", "static"] = "transformer"
    name: str = Field(DEFAULT_ENCODER, min_length=1)  # local path, installed packaged copy, or hub name
    max_length: Int = Field(128, ge=8, le=8192)  # tokens; longer prompts are truncated
    # what a longer prompt keeps: its beginning, its end, or a quarter from the beginning and the
    # rest from the end (routerdb/tokenizer.py; few-shot prompts differ only at the end)
    truncation: Literal["head", "tail", "head_tail"] = DEFAULT_TRUNCATION
    pooling: Literal["auto", "mean", "cls", "last_token"] = "auto"  # auto: from the encoder's files
    static_dims: Int = Field(256, ge=2, le=4096)  # static, distilled: PCA dimensions of the token table

    @model_validator(mode="after")
    def _static_pools_by_mean(self) -> EncoderSpec:
        if self.kind == "static" and self.pooling not in ("auto", "mean"):
            raise ValueError(f"encoder.kind 'static' averages its token vectors, but encoder.pooling is "
                             f"{self.pooling!r}; set pooling to 'auto' or 'mean'")
        return self


class _Adapters(Closed):
    """The LoRA adapter fields LoRA and QLoRA share."""

    rank: Int = Field(8, ge=1, le=1024)
    alpha: Float = Field(16.0, gt=0, le=10_000)
    dropout: Float = Field(0.05, ge=0, lt=1)
    target_modules: Literal["auto"] | list[str] = "auto"  # auto: every projection of the blocks
    lr: Float = Field(2e-4, gt=0, le=10)


class LoRA(_Adapters):
    kind: Literal["lora"] = "lora"


class QLoRA(_Adapters):
    kind: Literal["qlora"] = "qlora"
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class LastLayers(Closed):
    kind: Literal["last_layers"] = "last_layers"
    num_layers: Int = Field(2, ge=1, le=1024)
    lr: Float = Field(5e-5, gt=0, le=10)


class BitFit(Closed):
    kind: Literal["bitfit"] = "bitfit"
    lr: Float = Field(1e-3, gt=0, le=10)


class Full(Closed):
    kind: Literal["full"] = "full"
    lr: Float = Field(2e-5, gt=0, le=10)


class Frozen(Closed):
    kind: Literal["frozen"] = "frozen"  # encoder not trained; prompt embeddings computed once
    lr: Float = Field(1e-3, gt=0, le=10)  # unused for the encoder; kept so every method has a rate


FineTuning = Annotated[LoRA | QLoRA | LastLayers | BitFit | Full | Frozen, Field(discriminator="kind")]


# --- LLM embeddings -----------------------------------------------------------------------------


# "learned" is one trainable vector per LLM. The other kinds are phase-1 embedding models
# (training/llm_embeddings/embedder.py, docs/embeddings.md): trained before the head on triplets of an LLM's
# comparison records, they embed any LLM, a new one included, from a few hundred of its records.


class LearnedEmbedding(Closed):
    kind: Literal["learned"] = "learned"  # a trainable vector per LLM, learned with the head
    dim: Int = Field(32, ge=1, le=4096)


# --- head, optimiser, schedule ----------------------------------------------------------------


def _kind_or(default: str):
    """A discriminator that reads `kind`, and takes `default` where a spec leaves it out."""

    def kind(value) -> str | None:
        return value.get("kind", default) if isinstance(value, dict) else getattr(value, "kind", None)

    return Discriminator(kind)


class _Head(Closed):
    """Fields every head has (training/model/heads.py: one class per kind, `HEADS`)."""

    hidden_dims: list[Annotated[Int, Field(ge=1, le=65_536)]] = Field(default_factory=lambda: [256, 64],
                                                                   min_length=1, max_length=16)
    dropout: Float = Field(0.1, ge=0, lt=1)
    negative_slope: Float = Field(0.01, ge=0)  # LeakyReLU
    lr_multiplier: Float = Field(10.0, gt=0, le=1000)  # head rate = method rate x this (encoder-relative)


class MLPHeadSpec(_Head):
    kind: Literal["mlp"] = "mlp"  # tanh(MLP([prompt, llm row]))
    # add a linear, prompt-agnostic strength per LLM (w . model_embedding) beside the MLP
    llm_strength: bool = False


class IRTHeadSpec(_Head):
    # sigmoid(ability - difficulty(p) + skills . loadings(p)); an LLM row is [ability, skills...]:
    # embedding_spec.dim = skills + 1
    kind: Literal["irt"] = "irt"
    skills: Int = Field(8, ge=0, le=1024)  # skill dimensions K beside the ability
    # an LLM's skills count only near the prompts it was measured on; its row also holds that
    # region ([ability, K skills, K centre, 1 radius]: embedding_spec.dim = 2 K + 2)
    coverage: bool = False
    # coverage: each LLM's measured level (ability + skills at its region's centre) is set after
    # training on a linear map of its Bradley-Terry strength on the training pairs: the prompt-agnostic
    # prior that the prompt only corrects, inside the LLM's measured region
    bradley_terry_level: bool = False
    # difficulty = a fixed ridge prior + the learned difficulty x learned_difficulty. The prior is
    # fitted before training on the training prompts' mean correctness over the LLMs scored on them
    # (training/model/difficulty.py); the value is its ridge strength (None: no prior)
    difficulty_prior: Float | None = Field(None, ge=0, le=1e6)
    difficulty_centred: bool = False  # the prior's target: scores relative to each LLM's mean
    learned_difficulty: Float = Field(1.0, ge=0, le=10)  # 0: the prior alone is the difficulty
    # the prompt's skill term b . z(p) x this: below 1 the prompt moves an LLM off its level more
    # slowly (a shrinkage of the prompt's correction; 0: levels and difficulty only)
    learned_skills: Float = Field(1.0, ge=0, le=10)
    # after training, the difficulty served (and exported) is a ridge prior of the training prompts'
    # mean correctness, put on the learned difficulty's scale by least squares; the value is its ridge
    # strength (None: the learned difficulty is served). Difficulty cancels in every pair's logit, so
    # the LLMs' ranking on each prompt is unchanged; what changes is where a pair's gap is large
    served_difficulty: Float | None = Field(None, ge=0, le=1e6)
    # served_difficulty only off the prompts the learned difficulty was taught on: a logistic gate
    # fitted to tell the per-model-score prompts from the pairwise-only ones mixes the two
    served_difficulty_gate: bool = False
    # after training, on prompts the same gate reads as pairwise-only, an LLM's skill term is held at
    # its mean over the pairwise-only training prompts (its chat level): the prompt corrects the
    # level where per-model scores taught it to, not on chat (needs served_difficulty for the gate)
    served_skills_gate: bool = False
    # the gate of both: 0 a logistic regression on the prompt vector; above 0 one hidden ReLU layer
    # of this width (training/model/difficulty.py `fit_gate_mlp`), which reads short benchmark
    # questions (open QA) as scored where the logistic gate reads them as chat
    served_gate_hidden: int = Field(0, ge=0, le=1024)
    # added to the gate's logit before the skills gate reads it (x3): above 0 the skills are held only
    # where the gate is sure a prompt is chat (3: below 0.05), so a benchmark question the gate
    # hesitates on keeps its skill term; 0 holds them wherever the gate leans to chat
    served_skills_gate_offset: Float = Field(0.0, ge=-20, le=20)

    @property
    def row_width(self) -> int:
        return 2 * self.skills + 2 if self.coverage else self.skills + 1

    @model_validator(mode="after")
    def _gate_needs_served_difficulty(self) -> IRTHeadSpec:
        if self.served_difficulty_gate and self.served_difficulty is None:
            raise ValueError("served_difficulty_gate chooses where the served difficulty replaces the "
                             "learned one; set served_difficulty (its ridge strength, e.g. 0.1) too")
        if self.served_skills_gate and self.served_difficulty is None:
            raise ValueError("served_skills_gate is fitted with the served difficulty's gate after training; "
                             "set served_difficulty (its ridge strength, e.g. 0.1) too")
        if self.served_skills_gate_offset and not self.served_skills_gate:
            raise ValueError(f"served_skills_gate_offset is {self.served_skills_gate_offset:g}, but "
                             "served_skills_gate is not set: set it (with served_difficulty), or drop the "
                             "offset")
        if self.served_gate_hidden and not (self.served_difficulty_gate or self.served_skills_gate):
            raise ValueError(f"served_gate_hidden is {self.served_gate_hidden}, the width of the gate of "
                             "served_difficulty_gate and served_skills_gate, but neither is set; set one "
                             "of them, or drop served_gate_hidden")
        return self

    @model_validator(mode="after")
    def _level_needs_coverage(self) -> IRTHeadSpec:
        if self.bradley_terry_level and not self.coverage:
            raise ValueError("bradley_terry_level sets the level that coverage falls back to; set "
                             "coverage too")
        return self


# a head without `kind` is the mlp head
HeadSpec = Annotated[Annotated[MLPHeadSpec, Tag("mlp")] | Annotated[IRTHeadSpec, Tag("irt")], _kind_or("mlp")]


class AdamW(Closed):
    kind: Literal["adamw"] = "adamw"
    weight_decay: Float = Field(0.01, ge=0)
    betas: tuple[Beta, Beta] = (0.9, 0.999)


class Adam(Closed):
    kind: Literal["adam"] = "adam"
    betas: tuple[Beta, Beta] = (0.9, 0.999)


class Muon(Closed):
    kind: Literal["muon"] = "muon"  # torch.optim.Muon on 2-D weight matrices, AdamW on the rest
    momentum: Float = Field(0.95, gt=0, lt=1)
    weight_decay: Float = Field(0.01, ge=0)


Optimizer = Annotated[AdamW | Adam | Muon, Field(discriminator="kind")]


class _RecordEmbedding(Closed):
    """Fields shared by the phase-1 kinds; see docs/embeddings.md for how records become triplets."""

    dim: Int = Field(32, ge=2, le=4096)  # size of an LLM's embedding: dim - 1 learned + its measured strength
    encoder: str | None = None  # sentence encoder for record texts; None: the router's encoder.name
    hidden_dim: Int = Field(256, ge=1, le=65_536)  # width of the per-record network
    records_per_set: Int = Field(64, ge=1, le=100_000)  # records per anchor / positive set (and query)
    prompts_per_step: Int = Field(32, ge=2, le=100_000)  # prompts per step, halved into anchor / positive
    profile_records: Int = Field(512, ge=1, le=1_000_000)  # at most this many records make an LLM's embedding
    margin: Float = Field(0.2, gt=0, le=2)  # triplet margin (cosine distance on unit vectors)
    heldout_fraction: Float = Field(0.2, gt=0, lt=1)  # prompts kept out of phase 1 to measure identification
    train_with_head: bool = False  # True: the record network keeps training with the head (phase 2)
    lr: Float = Field(1e-3, gt=0, le=10)  # rate of the record network in phase 1
    optimizer: Optimizer = AdamW()  # phase-1 optimiser (epochs: RouterConfig.embedding_model_epochs)


class FrozenEncoderEmbedding(_RecordEmbedding):
    kind: Literal["frozen"] = "frozen"  # frozen sentence encoder + small trainable record network


class FinetunableEmbedding(_RecordEmbedding):
    kind: Literal["finetunable"] = "finetunable"  # the sentence encoder is fine-tuned in phase 1 too
    prompts_per_step: Int = Field(16, ge=2, le=100_000)  # each step runs the encoder with gradients on these
    finetuning: FineTuning = LastLayers(num_layers=1)  # how the phase-1 encoder is fine-tuned


class AttentionEmbedding(_RecordEmbedding):
    kind: Literal["attention"] = "attention"  # set encoder: self-attention over an LLM's records
    heads: Int = Field(4, ge=1, le=256)  # attention heads; must divide hidden_dim
    layers: Int = Field(1, ge=0, le=64)  # self-attention blocks before attention pooling

    @model_validator(mode="after")
    def _heads_divide_width(self) -> AttentionEmbedding:
        if self.hidden_dim % self.heads:
            raise ValueError(f"hidden_dim {self.hidden_dim} is not divisible by heads {self.heads}; "
                             "pick heads that divide hidden_dim (e.g. 4 for 256)")
        return self


EmbeddingSpec = Annotated[
    LearnedEmbedding | FrozenEncoderEmbedding | FinetunableEmbedding | AttentionEmbedding,
    Field(discriminator="kind"),
]


class _Schedule(Closed):
    """Learning-rate schedules (training/trainer/optim.py `SCHEDULES`): linear warm-up, then the kind's."""

    warmup_ratio: Float = Field(0.1, ge=0, lt=1)


class CosineSchedule(_Schedule):
    kind: Literal["cosine"] = "cosine"  # half a cosine from the rate down to 0


class LinearSchedule(_Schedule):
    kind: Literal["linear"] = "linear"  # a straight line from the rate down to 0


class ConstantSchedule(_Schedule):
    kind: Literal["constant"] = "constant"  # the rate, after warm-up


Schedule = Annotated[CosineSchedule | LinearSchedule | ConstantSchedule, Field(discriminator="kind")]


# --- losses -----------------------------------------------------------------------------------


class _Loss(Closed):
    """Fields every loss has: which pairs enter it, what each weighs, and the pointwise part
    (training/trainer/losses.py: one class per kind, `LOSSES`)."""

    ties: Literal["ignore", "half"] = "ignore"  # half: a tie is half a win for each side
    prompt_weighting: Literal["pairs", "sqrt", "prompts"] = "pairs"  # what a prompt's pairs weigh in all
    # loss multiplier per `source` value
    source_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    # per-model scores (correctness, grades) also fit P(correct) directly (binary cross-entropy),
    # with this weight beside the pairwise loss: it is what teaches a prompt's difficulty
    pointwise_weight: Float = Field(0.0, ge=0, le=1000)
    # which pairs enter the pairwise loss: all, or only those of pairwise (judge) data, leaving
    # per-model scores to the pointwise loss
    pair_sources: Literal["all", "pairwise"] = "all"

    @model_validator(mode="after")
    def _pairwise_needs_points(self) -> _Loss:
        if self.pair_sources == "pairwise" and self.pointwise_weight == 0:
            raise ValueError("pair_sources 'pairwise' leaves per-model scores to the pointwise loss, "
                             "but pointwise_weight is 0; set pointwise_weight > 0 or pair_sources 'all'")
        return self


class MarginRankingSpec(_Loss):
    kind: Literal["margin_ranking"] = "margin_ranking"  # max(0, margin - label (s_a - s_b)) on scores
    margin: Float = Field(0.1, ge=0, le=2)  # scores live in [-1, 1]


class BradleyTerrySpec(_Loss):
    kind: Literal["bradley_terry"] = "bradley_terry"  # -log sigmoid(label x the head's pair logit)
    source_scale: bool = False  # a learned Bradley-Terry scale per source (how decisive its labels are)


# a loss without `kind` is the margin ranking loss
LossSpec = Annotated[Annotated[MarginRankingSpec, Tag("margin_ranking")]
                     | Annotated[BradleyTerrySpec, Tag("bradley_terry")], _kind_or("margin_ranking")]
# the RouterConfig fields of the flat format (before issue 17) that `loss` now holds
FLAT_LOSS_FIELDS = ("margin", "pointwise_weight", "pair_sources", "source_scale", "ties", "prompt_weighting",
                    "source_weights")


def migrate_flat_loss(data: dict) -> dict:
    """A spec or stored config of the flat format (`"loss": "bradley_terry"` and the loss settings
    at the top level) in the current one (`"loss": {"kind": "bradley_terry", ...}`); a spec of the
    current format comes back unchanged (the same object). Flat settings beside a nested `loss`
    are merged into it, the nested values winning. Checkpoints and bundles written before issue 17
    load through it; a spec file of the flat format is refused with its migrated `loss` in the message."""
    if not isinstance(data, dict):
        return data
    loss = data.get("loss")
    if not (isinstance(loss, str) or set(FLAT_LOSS_FIELDS) & set(data)):
        return data
    nested = loss if isinstance(loss, dict) else {}
    kind = loss if isinstance(loss, str) else nested.get("kind", "margin_ranking")
    moved = {k: data[k] for k in FLAT_LOSS_FIELDS if k in data}
    if kind != "margin_ranking":
        moved.pop("margin", None)  # only the margin ranking loss has a margin
    if kind != "bradley_terry" and not moved.get("source_scale"):
        moved.pop("source_scale", None)  # only Bradley-Terry scales its sources
    out = {k: v for k, v in data.items() if k not in ("loss", *FLAT_LOSS_FIELDS)}
    out["loss"] = {"kind": kind, **moved, **nested}
    return out


# the flat HeadSpec of configs stored before issue 17 carried both heads' fields; a head of the other
# kind at these defaults (what every such config holds) means nothing for this one
OTHER_HEAD_DEFAULTS = {"mlp": {"skills": 8, "coverage": False, "bradley_terry_level": False},
                       "irt": {"llm_strength": False}}


def migrate_flat_head(data: dict) -> dict:
    """A stored config whose `head` carries the other head kind's fields at their defaults (the flat
    HeadSpec of checkpoints and bundles written before issue 17) without those fields; anything else
    comes back unchanged, so a real conflict is still refused by the union."""
    head = data.get("head") if isinstance(data, dict) else None
    if not isinstance(head, dict):
        return data
    other = OTHER_HEAD_DEFAULTS.get(head.get("kind", "mlp"), {})
    kept = {k: v for k, v in head.items() if not (k in other and v == other[k])}
    return data if kept == head else {**data, "head": kept}


class OutputSpec(Closed):
    run_dir: Path_  # checkpoints and the training log
    bundle_dir: Path_  # the exported ONNX bundle


class ExportSpec(Closed):
    opset: Int = Field(17, ge=14, le=20)  # 20: the newest the TorchScript ONNX exporter writes
    quantize: Literal["none", "int8"] = "none"
    verify_prompts: Int = Field(64, ge=1, le=100_000)  # held-out prompts checked ONNX vs torch
    tolerance: Float = Field(1e-4, gt=0, le=1)


class RouterConfig(Closed):
    """How the router is built and trained. Defaults are the recommended values."""

    encoder: EncoderSpec = EncoderSpec()
    finetuning: FineTuning = LoRA()
    embedding_spec: EmbeddingSpec = LearnedEmbedding()
    embedding_model_epochs: Int = Field(5, ge=0, le=10_000)
    min_model_comparisons: Int = Field(0, ge=0, le=1_000_000_000)  # drop LLMs with fewer comparisons (logged)
    # an LLM without a decisive training pair after the split (all its rows on validation prompts,
    # or all ties) would be served with an untrained row: "drop" it with a warning, or "error"
    untrained_llms: Literal["drop", "error"] = "drop"
    load_embedding_model_from: str | None = None
    head: HeadSpec = MLPHeadSpec()
    use_prompt_features: bool = True
    optimizer: Optimizer = AdamW()
    schedule: Schedule = CosineSchedule()
    loss: LossSpec = MarginRankingSpec()
    epochs: Int = Field(3, ge=1, le=10_000)
    batch_size: Int = Field(64, ge=1, le=1 << 20)  # pairs per step
    grad_clip: Float | None = Field(1.0, gt=0)
    balance_model_samples: bool = False
    seed: Int = Field(42, ge=0, lt=2**64)  # numpy and torch seeds: non-negative, 64-bit
    export: ExportSpec = ExportSpec()
    progress: bool = True  # progress bars

    @model_validator(mode="before")
    @classmethod
    def _no_flat_loss(cls, data):
        if isinstance(data, dict) and migrate_flat_loss(data) is not data:
            loss = json.dumps(migrate_flat_loss(data)["loss"])
            flat = sorted(set(data) & {"loss", *FLAT_LOSS_FIELDS})
            raise ValueError(f"the loss settings moved into `loss` (issue 17): got {flat} at the top level; "
                             f"write \"loss\": {loss} instead (training.specs.migrate_flat_loss converts "
                             "a whole spec)")
        return data

    @model_validator(mode="after")
    def _head_fits_rows(self) -> RouterConfig:
        head = self.head
        if head.kind == "irt" and self.embedding_spec.dim != head.row_width:
            k = head.skills
            row = f"[ability, {k} skills" + (f", {k} centre, 1 radius]" if head.coverage else "]")
            raise ValueError(f"head.kind 'irt' reads LLM rows of {row}, but embedding_spec.dim is "
                             f"{self.embedding_spec.dim}; set embedding_spec.dim to {head.row_width}")
        if head.kind == "irt" and head.coverage and self.embedding_spec.kind != "learned":
            raise ValueError("head.coverage gates the irt head's skills on learned LLM rows; set "
                             "embedding_spec.kind 'learned', or drop coverage")
        if head.kind == "irt" and self.loss.kind == "margin_ranking":
            raise ValueError("head.kind 'irt' is fitted by likelihood: set loss.kind to 'bradley_terry'")
        return self

    @classmethod
    def from_stored(cls, data: dict) -> RouterConfig:
        """The config a checkpoint's router.json or a bundle's manifest stored (a FitSpec's fields
        beyond RouterConfig's are left out; the flat loss and head formats of older ones are migrated)."""
        data = migrate_flat_head(migrate_flat_loss(data))
        return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})

    @field_validator("encoder", mode="before")
    @classmethod
    def _encoder_by_name(cls, value):
        return {"name": value} if isinstance(value, str) else value  # encoder="path/or/hub-id"


class FitSpec(RouterConfig):
    """Everything `python -m training.fit` needs: a RouterConfig plus where data and outputs are."""

    data: DataSpec
    output: OutputSpec

    @model_validator(mode="after")
    def _check_paths(self) -> FitSpec:
        if Path(self.output.run_dir).resolve() == Path(self.output.bundle_dir).resolve():
            raise ValueError(
                "output.run_dir and output.bundle_dir are the same directory; the bundle is "
                "replaced atomically, so give it its own directory (e.g. RUN_DIR/bundle)."
            )
        return self

    def router_config(self) -> RouterConfig:
        return RouterConfig.model_validate(self.model_dump(exclude={"data", "output"}))


class SpecError(ValueError):
    """A spec that cannot be used; the message lists every problem at once."""


def parse_spec(data: dict, *, where: str = "<spec>") -> FitSpec:
    try:
        return FitSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe(exc, where)) from None


def load_spec(path: str | Path) -> FitSpec:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read spec {str(path)!r}: {exc.strerror}. Pass a JSON spec file.") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}). Save the spec as "
                        "UTF-8 JSON; see examples/specs/.") from None
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise SpecError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}. "
            "Specs are JSON objects; see examples/specs/."
        ) from None
    except RecursionError:
        raise SpecError(f"{path}: JSON nested too deeply to be a spec; see examples/specs/.") from None
    except SpecError as exc:  # from _unique_keys
        raise SpecError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}: a spec is a JSON object, got {type(data).__name__}.")
    return parse_spec(data, where=str(path))


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's dict; a key given twice is an error (json.loads would keep the last silently)."""
    counts = Counter(key for key, _ in pairs)
    repeated = sorted(key for key, n in counts.items() if n > 1)
    if repeated:
        raise SpecError(f"key(s) {repeated} appear more than once in one JSON object; the spec would "
                        "silently keep the last. Keep one of each.")
    return dict(pairs)


def _describe(exc: ValidationError, where: str) -> str:
    lines = [f"{where}: {exc.error_count()} problem(s):"]
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        got = err.get("input")
        got_text = "" if isinstance(got, dict) else f" (got {got!r:.100})"
        hint = ""
        if err["type"] == "extra_forbidden":
            hint = " Remove it or check its spelling; see FitSpec in training/specs.py for the fields."
        lines.append(f"  - {loc}: {err['msg']}{got_text}.{hint}")
    return "\n".join(lines)
