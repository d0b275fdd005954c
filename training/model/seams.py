"""The typed seams between the router and the layers above it: what the trainer
(`training.trainer.loop`, `training.trainer.checkpoint`) and the export (`training.export`) may
read of a router. `training.router.TransformerEmbeddingModel` is the one implementation; the
trainer asks through `Trainable` and returns what it learned (`training.trainer.loop.TrainResult`)
instead of writing onto the model."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
import torch
from torch import nn

from routerdb.tokenizer import PromptTokenizer
from training.encoder.pretrained import EncoderRef
from training.model.heads import Head
from training.model.network import RouterNet
from training.specs import RouterConfig


@dataclass(frozen=True)
class ParameterGroups:
    """What the optimisers train: the encoder (its parameters that require grad, at the method's
    rate) and the head's group (head, learned LLM rows) with the modules that own it (for Muon)."""

    encoder: nn.Module
    head: list[nn.Parameter]
    head_modules: list[nn.Module]


class Trainable(Protocol):
    """What the training loop and its checkpoints use of a built router."""

    config: RouterConfig
    llm_names: list[str]
    device: torch.device

    @property
    def head(self) -> Head: ...

    @property
    def llm_embeddings(self) -> torch.Tensor:
        """The LLM rows [M, D] the head scores against (with gradients where they are learned)."""

    @property
    def frozen_encoder(self) -> bool: ...

    @property
    def uses_features(self) -> bool:
        """Whether the head reads the prompt features beside the pooled vector."""

    def token_ids(self, prompts: Sequence[str]) -> list[list[int]]: ...

    def tensors(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]: ...

    def embed_prompts(self, prompts: Sequence[str], batch_size: int = 32,
                      progress: bool = False) -> torch.Tensor: ...

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled vectors [B, H], with gradients through a trainable encoder."""

    def raw_scores(self, pooled: torch.Tensor, features: torch.Tensor,
                   llm_rows: torch.Tensor) -> torch.Tensor:
        """The head's raw values [P, M] of pooled vectors [P, H] and raw features [P, F]."""

    def parameter_groups(self) -> ParameterGroups: ...

    def set_training(self, on: bool) -> None:
        """Train or eval mode (a frozen encoder stays in eval mode)."""

    def finish_training(self, train_pairs: pa.Table) -> None:
        """After the last epoch: what the head completes from the training pairs."""

    def save(self, path: str | Path, history: list[dict[str, float]] | None = None) -> Path: ...

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None: ...


class SavesFiles(Protocol):
    def save(self, path: Path) -> None: ...


class Exportable(Protocol):
    """What the export reads of a trained router."""

    config: RouterConfig
    net: RouterNet
    encoder_ref: EncoderRef
    tokenizer: PromptTokenizer
    llm_names: list[str]
    llm_embedder: SavesFiles | None  # a phase-1 LLM embedder, saved into the bundle

    @property
    def llm_embeddings(self) -> torch.Tensor: ...

    def score_matrix(self, prompts: Sequence[str], batch_size: int = 32) -> Any: ...

    def features_tensor(self, prompts: Sequence[str]) -> torch.Tensor: ...

    def describe(self) -> dict[str, Any]: ...
