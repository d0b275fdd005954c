"""QLoRA and the other fine-tuning methods, checked for real on a CUDA GPU.

    python bench/gpu_check.py                       # CUDA: MiniLM-L6-shaped encoder, 300 steps per method
    python bench/gpu_check.py --cpu --steps 5       # CPU smoke run: tiny encoder, 5 steps per method
    python bench/gpu_check.py --out build/gpu_check # also write gpu_check.json and gpu_check.md there

Builds a random-init BERT of all-MiniLM-L6-v2's shape (6 layers, hidden 384, 12 heads, vocab
30,522) in a temporary directory (no downloads), then for each method prepares the encoder with
the project's own `training.encoder.finetuning` (QLoRA: 4-bit nf4 base + LoRA adapters), trains it with
`training.trainer.optim` (AdamW, the method's default rate, head at 10x, warm-up + cosine, clipping 1.0)
on random token batches (mean pooling -> linear head -> tanh, fitted to fixed random targets), and
reports steps/s, peak GPU memory (torch.cuda.max_memory_allocated, weights included) and, for
LoRA / QLoRA, merge fidelity: the trained model (QLoRA: 4-bit base + adapters) against the merged
full-precision encoder that export writes to ONNX (max |diff| and cosine of pooled vectors, max
|diff| of head scores). Prints one JSON object and a Markdown table.

Needs torch, transformers, peft and bitsandbytes; the project's `training` package is imported
from this checkout (it needs numpy, tokenizers and pyarrow too). Where that import fails, a
minimal inline copy of the methods is used and the JSON says so. Budget: under 5 minutes on an H100.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]

# variant -> (finetuning kind, spec fields). "qlora" is the spec default (nf4, float32 compute).
VARIANTS = {
    "qlora": ("qlora", {"bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"}),
    "qlora-bf16": ("qlora", {"bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "bfloat16"}),
    "lora": ("lora", {}),
    "last_layers": ("last_layers", {"num_layers": 2}),
    "bitfit": ("bitfit", {}),
    "full": ("full", {}),
    "frozen": ("frozen", {}),
}
DEFAULT_LR = {"lora": 2e-4, "qlora": 2e-4, "last_layers": 5e-5, "bitfit": 1e-3, "full": 2e-5, "frozen": 1e-3}
LORA_FIELDS = {"rank": 8, "alpha": 16.0, "dropout": 0.05, "target_modules": "auto"}
SHAPES = {  # BertConfig fields
    "minilm": {"vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6, "num_attention_heads": 12,
               "intermediate_size": 1536, "max_position_embeddings": 512},
    "tiny": {"vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "intermediate_size": 128, "max_position_embeddings": 128},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU (hides CUDA); default shape tiny")
    p.add_argument("--steps", type=int, default=300, help="timed training steps per method")
    p.add_argument("--warmup-steps", type=int, default=None, help="untimed steps first (default 10; CPU 1)")
    p.add_argument("--batch", type=int, default=None, help="prompts per step (default 64; CPU 8)")
    p.add_argument("--seq", type=int, default=None, help="longest prompt in tokens (default 96; CPU 32)")
    p.add_argument("--shape", choices=sorted(SHAPES), default=None,
                   help="encoder shape (default minilm; CPU tiny)")
    p.add_argument("--methods", default=",".join(VARIANTS), help=f"comma-separated, from {list(VARIANTS)}")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="directory for gpu_check.json / gpu_check.md")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in VARIANTS]
    if unknown:
        p.error(f"--methods: unknown {unknown}; choose from {list(VARIANTS)}")
    args.shape = args.shape or ("tiny" if args.cpu else "minilm")
    args.batch = args.batch or (8 if args.cpu else 64)
    args.seq = args.seq or (32 if args.cpu else 96)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else (1 if args.cpu else 10)
    return args


# --- the methods: the project's code, or a minimal inline copy ------------------------------------


def project_code():
    """(finetuning module, optim module, Pooling class, EncoderRef class, note)."""
    sys.path.insert(0, str(REPO))
    try:
        from training.encoder import finetuning
        from training.encoder.pooling import Pooling
        from training.encoder.pretrained import EncoderRef
        from training.trainer import optim

        where = "training.encoder.finetuning + training.trainer.optim (this checkout)"
        return finetuning, optim, Pooling, EncoderRef, where
    except ImportError as exc:
        return None, None, None, None, f"inline copy (training not importable: {exc})"


def spec_for(variant: str):
    kind, fields = VARIANTS[variant]
    extra = LORA_FIELDS if kind in ("lora", "qlora") else {}
    try:
        from training import specs

        return specs.RouterConfig.model_validate({"finetuning": {"kind": kind, **extra, **fields}}).finetuning
    except ImportError:  # no pydantic here: the same fields as a plain namespace
        return SimpleNamespace(kind=kind, lr=DEFAULT_LR[kind], **extra, **fields)


class Inline:
    """Stand-ins for training.encoder.finetuning / training.trainer.optim where the project cannot be
    imported."""

    @staticmethod
    def prepare(spec, location: str, device):
        import torch
        from transformers import AutoModel, BitsAndBytesConfig

        kwargs = {}
        if spec.kind == "qlora":
            kwargs = {"quantization_config": BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type=spec.bnb_4bit_quant_type,
                bnb_4bit_compute_dtype=getattr(torch, spec.bnb_4bit_compute_dtype)),
                "device_map": {"": 0} if device.type == "cuda" else {"": "cpu"}}
        model = AutoModel.from_pretrained(location, add_pooling_layer=False, **kwargs)
        for m in model.modules():  # see training.encoder.finetuning._keep_4bit_layout
            if hasattr(m, "support_avx512bf16_for_cpu"):
                m.support_avx512bf16_for_cpu = False
        if spec.kind in ("lora", "qlora"):
            from peft import get_peft_model

            return get_peft_model(model, Inline.lora_config(spec, model))
        blocks = model.encoder.layer
        model.requires_grad_(spec.kind == "full")
        if spec.kind == "last_layers":
            blocks[len(blocks) - spec.num_layers:].requires_grad_(True)
        if spec.kind == "bitfit":
            for n, p in model.named_parameters():
                p.requires_grad_(n.endswith(".bias"))
        return model

    @staticmethod
    def lora_config(spec, model):
        from peft import LoraConfig
        from torch import nn

        targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".layer." in n]
        return LoraConfig(r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                          target_modules=targets, bias="none")

    @staticmethod
    def merged(spec, location: str, trained):
        import copy

        from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
        from transformers import AutoModel

        if spec.kind == "lora":
            return copy.deepcopy(trained).merge_and_unload().float().cpu().eval()
        full = AutoModel.from_pretrained(location, add_pooling_layer=False)
        peft_model = get_peft_model(full, Inline.lora_config(spec, full))
        adapters = {k: v.detach().float().cpu() for k, v in get_peft_model_state_dict(trained).items()}
        set_peft_model_state_dict(peft_model, adapters)
        return peft_model.merge_and_unload().float().cpu().eval()


def mean_pool(hidden, mask):
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)


# --- one method --------------------------------------------------------------------------------------


def random_batches(n_prompts: int, batch: int, seq: int, vocab: int, seed: int):
    """A fixed bank of random prompts (right-padded ids, masks) and a random target per prompt."""
    import torch

    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(max(2, seq // 4), seq + 1, (n_prompts,), generator=g)
    ids = torch.randint(5, vocab, (n_prompts, seq), generator=g)
    mask = (torch.arange(seq).unsqueeze(0) < lengths.unsqueeze(1)).long()
    ids = ids * mask  # pad id 0 after each prompt
    targets = torch.rand(n_prompts, generator=g) * 1.6 - 0.8
    return ids, mask, targets, g


def run_variant(variant: str, args, location: str, code, device) -> dict:
    import torch
    from torch import nn

    finetuning, optim, Pooling, EncoderRef, _ = code
    spec = spec_for(variant)
    shape = SHAPES[args.shape]
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t_load = time.perf_counter()
    if finetuning is not None:
        ref = EncoderRef(location, location, "local")
        encoder = finetuning.prepare_encoder(spec, ref)
        trainable, total = finetuning.count_parameters(encoder)
    else:
        encoder = Inline.prepare(spec, location, device)
        trainable = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
        total = sum(p.numel() * (2 if p.dtype == torch.uint8 else 1) for p in encoder.parameters())
    if spec.kind != "qlora":
        encoder.to(device)
    load_s = time.perf_counter() - t_load
    head = nn.Linear(shape["hidden_size"], 1).to(device)
    pool = Pooling("mean") if Pooling is not None else mean_pool

    ids, mask, targets, g = random_batches(max(512, 4 * args.batch), args.batch, args.seq,
                                           shape["vocab_size"], args.seed)
    held = slice(0, min(64, args.batch * 2))  # evaluation prompts for the merge check

    def forward(rows):
        x, m = ids[rows].to(device), mask[rows].to(device)
        hidden = encoder(input_ids=x, attention_mask=m).last_hidden_state
        pooled = pool(hidden, m).float()
        return pooled, torch.tanh(head(pooled).squeeze(-1))

    result = {"method": variant, "kind": spec.kind, "trainable_parameters": trainable,
              "total_parameters": total, "trainable_pct": round(100.0 * trainable / max(total, 1), 3),
              "load_seconds": round(load_s, 2)}
    if spec.kind == "qlora":
        result["quant_type"] = spec.bnb_4bit_quant_type
        result["compute_dtype"] = spec.bnb_4bit_compute_dtype
    frozen = trainable == 0
    lr = spec.lr
    head_lr = lr if frozen else lr * 10.0
    steps = args.warmup_steps + args.steps
    if optim is not None:
        opt = optim.build_optimizers(SimpleNamespace(kind="adamw", betas=(0.9, 0.999), weight_decay=0.01),
                                     encoder, list(head.parameters()), lr, head_lr, head_modules=[head])
        opt.set_schedule(optim.schedule_factor("cosine", int(0.1 * steps), steps))
        optimizers, step_all = opt.optimizers, opt.step
    else:
        groups = [{"params": [p for p in encoder.parameters() if p.requires_grad], "lr": lr},
                  {"params": list(head.parameters()), "lr": head_lr}]
        optimizers = [torch.optim.AdamW([gr for gr in groups if gr["params"]], weight_decay=0.01)]
        step_all = optimizers[0].step
    params = [p for o in optimizers for gr in o.param_groups for p in gr["params"]]

    encoder.train()
    if frozen:
        encoder.eval()
    losses = []
    t0 = None
    for step in range(steps):
        if step == args.warmup_steps:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        rows = torch.randint(held.stop, len(ids), (args.batch,), generator=g)
        with torch.set_grad_enabled(not frozen):
            pooled, score = forward(rows)
        if frozen:  # the router caches frozen vectors; here the head trains on them each step
            score = torch.tanh(head(pooled.detach()).squeeze(-1))
        loss = nn.functional.mse_loss(score, targets[rows].to(device))
        for o in optimizers:
            o.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        step_all()
        losses.append(float(loss.detach()))
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0 if t0 is not None else float("nan")
    result.update({
        "steps_timed": args.steps,
        "steps_per_s": round(args.steps / elapsed, 2) if elapsed > 0 else None,
        "prompts_per_s": round(args.steps * args.batch / elapsed, 1) if elapsed > 0 else None,
        "loss_first": round(float(sum(losses[:5]) / len(losses[:5])), 4),
        "loss_last": round(float(sum(losses[-5:]) / len(losses[-5:])), 4),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if device.type == "cuda"
        else None,
    })
    if spec.kind in ("lora", "qlora"):
        result.update(merge_fidelity(spec, location, encoder, head, pool, ids[held], mask[held], device,
                                     finetuning, EncoderRef))
    return result


def merge_fidelity(spec, location, trained, head, pool, ids, mask, device, finetuning, EncoderRef) -> dict:
    """Trained model (adapters unmerged; QLoRA: on its 4-bit base) vs the merged full-precision
    encoder that export writes to ONNX, on held-out prompts."""
    import torch

    trained.eval()
    head.eval()
    if finetuning is not None:
        merged = finetuning.export_encoder(spec, EncoderRef(location, location, "local"), trained)
    else:
        merged = Inline.merged(spec, location, trained)
    merged.to(device)
    x, m = ids.to(device), mask.to(device)
    with torch.no_grad():
        a = pool(trained(input_ids=x, attention_mask=m).last_hidden_state, m).float()
        b = pool(merged(input_ids=x, attention_mask=m).last_hidden_state, m).float()
        cos = torch.nn.functional.cosine_similarity(a, b, dim=-1)
        sa, sb = torch.tanh(head(a)).squeeze(-1), torch.tanh(head(b)).squeeze(-1)
    out = {"merge_max_abs_diff": float((a - b).abs().max()), "merge_cosine_mean": float(cos.mean()),
           "merge_cosine_min": float(cos.min()), "merge_score_max_abs_diff": float((sa - sb).abs().max()),
           "merge_prompts": int(x.shape[0])}
    del merged
    return out


# --- report --------------------------------------------------------------------------------------------


def environment(device) -> dict:
    import importlib.metadata as md

    import torch

    versions = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = None
    cpu = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else cpu, "versions": versions,
            "python": platform.python_version()}


def markdown(report: dict) -> str:
    def fmt(v, spec=""):
        if v is None:
            return "-"
        if isinstance(v, float) and math.isnan(v):
            return "nan"
        return format(v, spec) if spec else str(v)

    lines = [f"Device: {report['environment']['device']}; encoder: {report['shape']} random-init BERT; "
             f"{report['steps']} timed steps x {report['batch']} prompts x <= {report['seq']} tokens; "
             f"code: {report['code']}.", "",
             "| method | trainable % | steps/s | prompts/s | peak GPU MiB | loss first -> last | "
             "merge max abs diff | merge cosine min | score max abs diff |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} | | | | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {fmt(r['trainable_pct'], '.3f')} | {fmt(r['steps_per_s'])} | "
            f"{fmt(r['prompts_per_s'])} | {fmt(r['peak_gpu_mib'])} | {r['loss_first']} -> {r['loss_last']} | "
            f"{fmt(r.get('merge_max_abs_diff'), '.2e')} | {fmt(r.get('merge_cosine_min'), '.6f')} | "
            f"{fmt(r.get('merge_score_max_abs_diff'), '.2e')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import BertConfig, BertModel

    device = torch.device("cpu" if args.cpu or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.cpu:
        print("note: no CUDA device visible; running on the CPU", file=sys.stderr)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the merge comparison
    torch.backends.cudnn.allow_tf32 = False
    code = project_code()
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        torch.manual_seed(args.seed)
        BertModel(BertConfig(**SHAPES[args.shape]), add_pooling_layer=False).save_pretrained(tmp)
        for variant in args.methods:
            t = time.perf_counter()
            try:
                results.append(run_variant(variant, args, tmp, code, device))
            except Exception as exc:  # one method failing must not hide the others' numbers
                results.append({"method": variant, "error": f"{type(exc).__name__}: {exc}"[:300]})
            results[-1]["wall_seconds"] = round(time.perf_counter() - t, 1)
            gc.collect()  # free this method's model before the next one is measured
            if device.type == "cuda":
                torch.cuda.empty_cache()
            print(f"{variant}: {json.dumps(results[-1])}", file=sys.stderr, flush=True)
    report = {"environment": environment(device), "code": code[-1], "shape": args.shape, "steps": args.steps,
              "warmup_steps": args.warmup_steps, "batch": args.batch, "seq": args.seq, "results": results,
              "command": "python bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    table = markdown(report)
    print(json.dumps(report, indent=2))
    print()
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2))
        (args.out / "gpu_check.md").write_text(table + "\n")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
