"""Ways to fine-tune the prompt encoder, one registry keyed by the spec's `kind`.

Each method has the same shape: `prepare(spec, ref)` loads the encoder ready to train (frozen
parts frozen, adapters attached) and `for_export(spec, ref, trained)` returns a plain,
full-precision encoder with the same function, for ONNX export. QLoRA merges its adapters into
a freshly loaded full-precision copy of the base, not into the 4-bit weights (lossy).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers import BitsAndBytesConfig
from transformers.pytorch_utils import Conv1D

from training import specs
from training.encoder.pretrained import EncoderRef, load_base_model

log = logging.getLogger(__name__)


class FineTuningError(ValueError):
    """A fine-tuning method that cannot apply to this encoder; says why and what to use."""


@dataclass(frozen=True)
class Method:
    prepare: Callable[[object, EncoderRef], nn.Module]
    for_export: Callable[[object, EncoderRef, nn.Module], nn.Module]


# --- LoRA and QLoRA ------------------------------------------------------------------------

# the projection layers of transformer blocks: GPT-2's are Conv1D ([in, out] weights), which peft's
# LoRA supports too
LINEAR_LAYERS: tuple[type, ...] = (nn.Linear, Conv1D)


def linear_module_names(model: nn.Module) -> list[str]:
    """Full names of the attention / MLP projections inside the transformer blocks."""
    blocks_name, _ = find_blocks(model)
    return [n for n, m in model.named_modules()
            if isinstance(m, LINEAR_LAYERS) and n.startswith(blocks_name + ".")]


def resolve_target_modules(model: nn.Module, wanted) -> list[str]:
    """Full module names for LoRA: every block projection ("auto"), or those named in `wanted`
    (a suffix such as "query" / "q_proj" / "c_attn", or a full name)."""
    candidates = linear_module_names(model)
    if wanted == "auto":
        if not candidates:
            raise FineTuningError(
                f"finetuning.target_modules \"auto\" found no linear layers in the transformer blocks "
                f"of {type(model).__name__}; use kind 'last_layers' or 'full' for this encoder."
            )
        return candidates
    suffixes = sorted({n.rsplit(".", 1)[-1] for n in candidates})
    if not wanted:
        raise FineTuningError(
            f"finetuning.target_modules is an empty list; name some of {type(model).__name__}'s "
            f"block projections {suffixes}, or use \"auto\" for all of them."
        )
    unknown = [w for w in wanted if w not in suffixes and w not in candidates]
    if unknown:
        raise FineTuningError(
            f"finetuning.target_modules {unknown} not found in {type(model).__name__}; "
            f"its block projections are {suffixes}. Use some of those, or \"auto\"."
        )
    return [n for n in candidates if n in wanted or n.rsplit(".", 1)[-1] in wanted]


def _lora_config(spec, model: nn.Module):
    from peft import LoraConfig  # peft takes 7-8 s to import: only for LoRA / QLoRA

    targets = resolve_target_modules(model, spec.target_modules)
    modules = dict(model.named_modules())
    # GPT-2's Conv1D stores its weight as [in, out]; peft needs to know, or it warns and guesses.
    fan_in_fan_out = all(not isinstance(modules[n], nn.Linear) for n in targets)
    return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=targets, fan_in_fan_out=fan_in_fan_out, bias="none")


def _prepare_lora(spec: specs.LoRA, ref: EncoderRef) -> nn.Module:
    from peft import get_peft_model  # 7-8 s to import: only for LoRA / QLoRA

    base = load_base_model(ref)
    return get_peft_model(base, _lora_config(spec, base))


def _export_lora(spec, ref: EncoderRef, trained: nn.Module) -> nn.Module:
    return copy.deepcopy(trained).merge_and_unload()


def check_4bit_support() -> None:
    """Stop before training, with the alternative, where bitsandbytes cannot run 4-bit here."""
    try:
        import bitsandbytes.functional as bnbf  # optional at run time, 3-4 s to import: QLoRA only

        device = "cuda" if torch.cuda.is_available() else "cpu"
        bnbf.quantize_4bit(torch.randn(64, 64, device=device), quant_type="nf4")
    except Exception as exc:  # any failure means 4-bit cannot run on this machine
        raise FineTuningError(
            f"finetuning.kind 'qlora' needs bitsandbytes 4-bit support, which failed here: "
            f"{type(exc).__name__}: {exc}. Install bitsandbytes>=0.45, or use finetuning.kind "
            "'lora' (same adapters, full-precision base)."
        ) from None


def _prepare_qlora(spec: specs.QLoRA, ref: EncoderRef) -> nn.Module:
    from peft import get_peft_model  # 7-8 s to import: only for LoRA / QLoRA

    check_4bit_support()
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.bnb_4bit_quant_type,
                               bnb_4bit_compute_dtype=getattr(torch, spec.bnb_4bit_compute_dtype))
    base = load_base_model(ref, quantization_config=quant,
                           device_map={"": 0} if torch.cuda.is_available() else {"": "cpu"})
    _keep_4bit_layout(base)
    return get_peft_model(base, _lora_config(spec, base))


def _keep_4bit_layout(model: nn.Module) -> None:
    """Stop bitsandbytes repacking 4-bit weights in place on CPUs with AVX512-BF16.

    bitsandbytes 0.50 rewrites a Linear4bit's weights into a CPU inference layout on its first
    no-grad eval forward (validation, `.predict`). Training on the rewritten weights fails in
    backward, and the rewrite itself fails for layers narrower than one quantisation block (64),
    so the router keeps the one layout that both training and inference can use.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def _export_qlora(spec, ref: EncoderRef, trained: nn.Module) -> nn.Module:
    # peft takes 7-8 s to import: only for LoRA / QLoRA
    from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict

    full = load_base_model(ref)  # full precision: merging into 4-bit weights loses accuracy
    peft_model = get_peft_model(full, _lora_config(spec, full))
    adapters = {k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(trained).items()}
    set_peft_model_state_dict(peft_model, adapters)
    return peft_model.merge_and_unload()


# --- partial and full fine-tuning ---------------------------------------------------------

# The norm applied after the last block (Llama / Qwen / Mistral `norm`, GPT-2 `ln_f`, ModernBERT
# `final_norm`); it is a sibling of the block list. BERT-style encoders have none.
_FINAL_NORMS = ("norm", "ln_f", "final_norm", "final_layer_norm", "final_layernorm")


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ModuleList of transformer blocks (the longest one)."""
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise FineTuningError(f"cannot find the transformer blocks of {type(model).__name__}")
    return max(lists, key=lambda nm: (len(nm[1]), -nm[0].count(".")))


def final_norm_names(model: nn.Module) -> list[str]:
    """Names of the norm(s) after the last transformer block: siblings of the block list."""
    blocks_name, _ = find_blocks(model)
    parent = blocks_name.rpartition(".")[0]
    return [n for n, _ in model.named_modules()
            if n and n.rpartition(".")[0] == parent and n.rpartition(".")[2] in _FINAL_NORMS]


def _prepare_last_layers(spec: specs.LastLayers, ref: EncoderRef) -> nn.Module:
    model = load_base_model(ref)
    _, blocks = find_blocks(model)
    if spec.num_layers > len(blocks):
        raise FineTuningError(
            f"finetuning.num_layers is {spec.num_layers} but {type(model).__name__} has "
            f"{len(blocks)} layers; use 1 to {len(blocks)}, or kind 'full' to train everything."
        )
    model.requires_grad_(False)
    for block in blocks[len(blocks) - spec.num_layers:]:
        block.requires_grad_(True)
    modules = dict(model.named_modules())
    norms = final_norm_names(model)
    for name in norms:
        modules[name].requires_grad_(True)
    log.info("last_layers: training the last %d of %d blocks%s", spec.num_layers, len(blocks),
             f" and the final norm {', '.join(norms)}" if norms else " (no final norm in this architecture)")
    return model


def _prepare_bitfit(spec: specs.BitFit, ref: EncoderRef) -> nn.Module:
    model = load_base_model(ref)
    biases = 0
    for name, param in model.named_parameters():
        is_bias = name.endswith(".bias") or name == "bias"
        param.requires_grad_(is_bias)
        biases += is_bias
    if not biases:
        raise FineTuningError(
            f"finetuning.kind 'bitfit' trains bias terms, but {type(model).__name__} has none; "
            "use 'lora' or 'last_layers'."
        )
    return model


def _prepare_full(spec, ref: EncoderRef) -> nn.Module:
    return load_base_model(ref)


def _prepare_frozen(spec, ref: EncoderRef) -> nn.Module:
    return load_base_model(ref).requires_grad_(False)


def _export_plain(spec, ref: EncoderRef, trained: nn.Module) -> nn.Module:
    return copy.deepcopy(trained)


METHODS: dict[str, Method] = {
    "lora": Method(_prepare_lora, _export_lora),
    "qlora": Method(_prepare_qlora, _export_qlora),
    "last_layers": Method(_prepare_last_layers, _export_plain),
    "bitfit": Method(_prepare_bitfit, _export_plain),
    "full": Method(_prepare_full, _export_plain),
    "frozen": Method(_prepare_frozen, _export_plain),
}


# a static encoder is one table: it is trained whole or not at all
STATIC_METHODS = ("frozen", "full")


def check_method(spec, ref: EncoderRef) -> None:
    """FineTuningError where the method cannot apply to the encoder's kind."""
    if ref.kind == "static" and spec.kind not in STATIC_METHODS:
        raise FineTuningError(
            f"finetuning.kind {spec.kind!r} needs a transformer, but encoder.kind is 'static' (a table of "
            f"token vectors); use finetuning.kind 'frozen' (the distilled table as it is) or 'full' "
            "(the table tuned on the training pairs).")


def prepare_encoder(spec, ref: EncoderRef) -> nn.Module:
    check_method(spec, ref)
    encoder = METHODS[spec.kind].prepare(spec, ref)
    trainable, total = count_parameters(encoder)
    log.info("fine-tuning %s: %s of %s encoder parameters trainable (%.3f%%)", spec.kind,
             f"{trainable:,}", f"{total:,}", 100.0 * trainable / max(total, 1))
    return encoder


def export_encoder(spec, ref: EncoderRef, trained: nn.Module) -> nn.Module:
    encoder = METHODS[spec.kind].for_export(spec, ref, trained).float().cpu().eval()
    if hasattr(encoder, "set_attn_implementation"):  # a transformers model (the static tier is not)
        # Eager attention traces to MatMul, Add, Softmax; SDPA's trace adds a Where over every
        # [batch, heads, length, length] score tensor (its NaN guard), which was a tenth of the fp32
        # graph's time and a fifth of the int8 graph's (bench/int8.py, docs/performance.md). The
        # copy is ours: training keeps its own attention. The scores agree within 1e-7.
        encoder.set_attn_implementation("eager")
    return encoder


def count_parameters(module: nn.Module) -> tuple[int, int]:
    trainable = total = 0
    for p in module.parameters():
        n = p.numel() * (2 if p.dtype == torch.uint8 else 1)  # 4-bit weights: two per byte
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total
