"""Where a torch module runs: the device chosen for training, and whether a module is pinned to
the device bitsandbytes loaded it on. A leaf: it imports nothing else of `training`."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["is_quantized", "pick_device"]


def pick_device() -> torch.device:
    """CUDA when present, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_quantized(module: nn.Module) -> bool:
    """Loaded in 4 or 8 bits by bitsandbytes (such a module is placed on its device when loaded
    and must not be moved with `.to()`)."""
    return bool(getattr(module, "is_loaded_in_4bit", False) or getattr(module, "is_quantized", False)
                or any(p.dtype == torch.uint8 for p in module.parameters()))
