"""Pooling token states into one prompt vector: mean, CLS or last token. Export-safe.

The mode comes from the encoder's own files: a sentence-transformers `modules.json` with its
Pooling (and Normalize) config, else the architecture (decoder-only -> last token), else mean
with a logged note. CLS and last-token pooling find the first / last real token from the
attention mask, so pooling is correct with left or right padding. (The router itself pads on the
right, see `training.encoder.pretrained.load_tokenizer`: left padding shifts absolute position embeddings.)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

MODES = ("mean", "cls", "last_token")


class Pooling(nn.Module):
    def __init__(self, mode: str, normalize: bool = False):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"pooling must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.normalize = normalize

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # hidden [B, T, H], mask [B, T] -> [B, H]
        m = mask.to(hidden.dtype).unsqueeze(-1)
        if self.mode == "mean":
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        elif self.mode == "cls":
            first = mask.argmax(dim=1)  # first real token: 0 unless padded on the left
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
        else:
            positions = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
            last = (positions * mask.to(positions.dtype)).argmax(dim=1)  # last real token
            pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        if self.normalize:
            pooled = nn.functional.normalize(pooled, p=2.0, dim=-1)
        return pooled

    def extra_repr(self) -> str:
        return f"mode={self.mode}, normalize={self.normalize}"


def detect_pooling(encoder_dir: str | Path | None, config) -> tuple[str, bool, str]:
    """(mode, normalize, reason) from the encoder's files and config."""
    if getattr(config, "model_type", None) == "model2vec":  # training.encoder.static
        return "mean", bool(config.normalize), "static encoder: the mean of its token vectors"
    if encoder_dir is not None:
        found = _sentence_transformers_pooling(Path(encoder_dir))
        if found is not None:
            return found
    if getattr(config, "is_decoder", False) or _is_decoder_only(config):
        return "last_token", False, f"decoder-only architecture ({config.model_type})"
    log.info("no sentence-transformers pooling config for %s: falling back to mean pooling",
             getattr(config, "model_type", "encoder"))
    return "mean", False, "fallback: no pooling config found"


def _sentence_transformers_pooling(root: Path) -> tuple[str, bool, str] | None:
    modules_file = root / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    normalize = any(m.get("type", "").endswith("Normalize") for m in modules)
    for module in modules:
        if module.get("type", "").endswith("Pooling"):
            cfg_file = root / module.get("path", "") / "config.json"
            if not cfg_file.is_file():
                return None
            cfg = json.loads(cfg_file.read_text())
            if cfg.get("pooling_mode_cls_token"):
                mode = "cls"
            elif cfg.get("pooling_mode_lasttoken"):
                mode = "last_token"
            elif cfg.get("pooling_mode_mean_tokens"):
                mode = "mean"
            else:
                return None
            return mode, normalize, f"sentence-transformers config {cfg_file.relative_to(root).as_posix()}"
    return None


_DECODER_TYPES = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3",
                  "gpt_neox", "opt", "falcon", "bloom", "gptj", "mixtral"}


def _is_decoder_only(config) -> bool:
    archs = getattr(config, "architectures", None) or []
    return config.model_type in _DECODER_TYPES or any("CausalLM" in a for a in archs)
