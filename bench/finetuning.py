"""Every fine-tuning method trained on the same real data, side by side, on this machine's CPU.

    nice -n 10 .venv/bin/python bench/finetuning.py    # all methods; rewrites docs/finetuning.md's table
    .venv/bin/python bench/finetuning.py --prompts 40 --epochs 1 --no-doc   # a quick look

Each method runs in its own subprocess (so its peak resident memory, `ru_maxrss`, is its own)
with the same sample of prompts, the same split, seed, batches and number of steps, and the
method's default learning rate. Reported per method: trainable share of the encoder, peak RSS
(and RSS after imports, before the model is built), training throughput (decisive pairs and
prompts per second of training steps: forward, backward, optimiser), validation pairwise accuracy
after the last epoch, and wall time. The table between the bench markers in docs/finetuning.md is
replaced; the rest of the document is left as written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS = ("frozen", "bitfit", "lora", "qlora", "last_layers", "full")
START, END = "<!-- bench/finetuning.py:start -->", "<!-- bench/finetuning.py:end -->"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(REPO / "data/sample/llmrouter_sample.parquet"),
                   help="per-model scores or pairwise file (default: the shipped LLMRouter sample)")
    p.add_argument("--prompts", type=int, default=300, help="distinct prompts drawn from --data")
    p.add_argument("--encoder", default="sentence-transformers/all-MiniLM-L6-v2")
    p.add_argument("--max-length", type=int, default=64, help="tokens per prompt")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64, help="pairs per step (whole prompts)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per method (1: on a shared 2-core machine, 2 OpenMP threads spent "
                        "most of their time waiting for each other, 5-15x slower)")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--json", type=Path, default=REPO / "build/bench/finetuning.json")
    p.add_argument("--doc", type=Path, default=REPO / "docs/finetuning.md")
    p.add_argument("--no-doc", action="store_true", help="print the table; leave docs/ alone")
    p.add_argument("--timeout", type=int, default=900, help="seconds allowed per method")
    p.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one method, print JSON
    p.add_argument("--sample", help=argparse.SUPPRESS)  # internal: the sampled table's path
    return p.parse_args(argv)


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --- one method, in its own process ----------------------------------------------------------------


def run_child(args) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(REPO))
    import numpy as np
    import pyarrow.parquet as pq
    import torch

    import training.trainer.loop as loop
    from training.encoder.finetuning import count_parameters
    from training.router import TransformerEmbeddingModel
    from training.specs import ValidationSplit

    if args.child == "qlora":
        import bitsandbytes  # noqa: F401  (counted in the baseline of the method that needs it)
    import peft  # noqa: F401

    torch.set_num_threads(args.threads)
    baseline = _rss_mib()
    timing = {"seconds": 0.0, "cpu_seconds": 0.0, "pairs": 0, "prompts": 0, "steps": 0, "all_pairs": 0}
    real_step = loop.train_step

    def timed_step(model, state, train, rows, *rest):
        t, c = time.perf_counter(), time.process_time()
        loss = real_step(model, state, train, rows, *rest)
        timing["steps"] += 1
        timing["all_pairs"] += len(rows)
        if timing["steps"] > 1:  # the first step pays one-off allocations: not timed
            timing["seconds"] += time.perf_counter() - t
            timing["cpu_seconds"] += time.process_time() - c
            timing["pairs"] += len(rows)
            timing["prompts"] += len(np.unique(train.batch_keys()[rows]))
        return loss

    loop.train_step = timed_step
    table = pq.read_table(args.sample)
    model = TransformerEmbeddingModel(encoder={"name": args.encoder, "max_length": args.max_length},
                                      finetuning={"kind": args.child}, epochs=args.epochs,
                                      batch_size=args.batch_size, seed=args.seed, progress=False)
    t0 = time.perf_counter()
    history = model.train(table, validation_split=ValidationSplit(0.2, args.seed))
    wall = time.perf_counter() - t0
    trainable, total = count_parameters(model.net.encoder)
    gap = merge_gap(model, args) if args.child in ("lora", "qlora") else None
    step_s = timing["seconds"]
    return {
        "method": args.child, "trainable_parameters": trainable, "total_parameters": total,
        "trainable_pct": 100.0 * trainable / total, "lr": model.config.finetuning.lr,
        "steps": timing["steps"], "train_pairs_per_epoch": timing["all_pairs"] // max(args.epochs, 1),
        "pairs_per_s": timing["pairs"] / step_s, "prompts_per_s": timing["prompts"] / step_s,
        "pairs_per_cpu_s": timing["pairs"] / timing["cpu_seconds"],
        "step_seconds": step_s, "cpu_seconds": timing["cpu_seconds"], "wall_seconds": wall,
        "val_accuracy": history[-1]["val_accuracy"], "val_loss": history[-1]["val_loss"],
        "train_loss": history[-1]["train_loss"], "history": history,
        "rss_after_imports_mib": baseline, "peak_rss_mib": _rss_mib(),
        "torch_threads": torch.get_num_threads(), "merge_gap": gap,
    }


def merge_gap(model, args) -> float:
    """Max |score| difference, on up to 64 validation prompts, between the model as trained
    (adapters unmerged; QLoRA: on its 4-bit base) and the merged full-precision graph export writes:
    what a bundle's manifest records as finetuning.max_abs_diff_merged_vs_trained."""
    import torch

    from training.data import read as data_mod
    from training.data.splits import split_by_prompt
    from training.export import merged_graph

    _, val = split_by_prompt(data_mod.load_pairs(args.sample), 0.2, args.seed)
    prompts = sorted(set(val["prompt"].to_pylist()))[:64]
    batch = model.tokenizer(prompts)
    with torch.no_grad():
        graph = merged_graph(model)
        merged = graph(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask),
                       model.features_tensor(prompts).cpu(), model.llm_embeddings.detach().float().cpu())
    merged = merged.numpy()
    return float(abs(merged - model.score_matrix(prompts)).max())


# --- the side-by-side run ----------------------------------------------------------------------------


def sample_table(args, out: Path) -> dict:
    """Draw --prompts distinct prompts (seeded) with all their rows; write them to `out`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(args.data)
    prompts = sorted(set(table["prompt"].to_pylist()))
    rng = np.random.default_rng(args.seed)
    keep = sorted(rng.choice(len(prompts), size=min(args.prompts, len(prompts)), replace=False))
    chosen = pa.array([prompts[i] for i in keep])
    sample = table.filter(pc.is_in(table["prompt"], value_set=chosen))
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(sample, out)
    models = sorted(set(sample["model"].to_pylist())) if "model" in sample.column_names else []
    return {"file": os.path.relpath(args.data, REPO), "prompts": len(keep), "rows": sample.num_rows,
            "llms": len(models)}


def run_all(args) -> dict:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    sample_path = args.json.parent / "finetuning_sample.parquet"
    data = sample_table(args, sample_path)
    common = ["--encoder", args.encoder, "--max-length", str(args.max_length), "--epochs", str(args.epochs),
              "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--threads", str(args.threads),
              "--sample", str(sample_path)]
    # Untimed warm-up, so the first measured method does not pay for cold file caches (seen: 6x).
    subprocess.run([sys.executable, __file__, "--child", "frozen", *common, "--epochs", "1"],
                   capture_output=True, timeout=args.timeout, cwd=REPO)
    results, load = [], [os.getloadavg()[0]]
    for method in methods:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--child", method, *common], capture_output=True,
                              text=True, timeout=args.timeout, cwd=REPO)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            results.append({"method": method, "error": tail[0][:300]})
        else:
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        load.append(os.getloadavg()[0])
        print(f"{method}: {time.perf_counter() - t:.0f}s "
              f"{json.dumps({k: v for k, v in results[-1].items() if k != 'history'})}", file=sys.stderr)
    import torch

    command = "nice -n 10 .venv/bin/python bench/finetuning.py" + "".join(f" {a}" for a in sys.argv[1:])
    return {"command": command, "data": data, "encoder": args.encoder, "max_length": args.max_length,
            "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
            "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                        "python": platform.python_version(), "torch": torch.__version__,
                        "load_average_1min": [round(x, 2) for x in load]},
            "date": time.strftime("%Y-%m-%d"), "results": results}


def markdown(report: dict) -> str:
    d, m = report["data"], report["machine"]
    ok = [r for r in report["results"] if "error" not in r]
    first = ok[0] if ok else {}
    steps = first.get("steps", 0) // max(report["epochs"], 1)
    loads = " / ".join(str(x) for x in m["load_average_1min"])
    lines = [
        f"Measured {report['date']} with `{report['command']}`: {d['prompts']} prompts of `{d['file']}` "
        f"({d['llms']} LLMs; 80/20 prompt split, seed {report['seed']}), encoder `{report['encoder']}`, "
        f"max_length {report['max_length']}, {report['epochs']} epoch(s) of {steps} steps (batch "
        f"{report['batch_size']} pairs, {first.get('train_pairs_per_epoch', '?')} decisive training pairs "
        f"per epoch), each method at its default learning rate, one subprocess per method after an "
        f"untimed warm-up, {m['cpus']} CPUs ({m['processor']}), torch {m['torch']}, "
        f"{first.get('torch_threads', '?')} torch thread(s); "
        f"1-minute load average {loads} (before the first method, then after each: the machine was "
        "shared, so compare methods more than absolute speeds).",
        "",
        "| method | trainable (of encoder) | peak RSS MiB (after imports) | pairs/s | prompts/s | "
        "pairs per CPU-s | val. accuracy | val. loss | merge gap | wall s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['method']} | error: {r['error']} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['method']} | {r['trainable_parameters']:,} ({r['trainable_pct']:.2f}%) | "
            f"{r['peak_rss_mib']:,.0f} ({r['rss_after_imports_mib']:,.0f}) | {r['pairs_per_s']:,.0f} | "
            f"{r['prompts_per_s']:,.1f} | {r['pairs_per_cpu_s']:,.0f} | {r['val_accuracy']:.3f} | "
            f"{r['val_loss']:.4f} | {'-' if r.get('merge_gap') is None else format(r['merge_gap'], '.1e')} | "
            f"{r['wall_seconds']:.0f} |")
    lines += ["", "pairs/s and prompts/s count only training steps (forward, backward, optimiser; the "
              "first step, which pays one-off allocations, is left out); pairs per CPU-s divides by the "
              "process's CPU time instead of the wall clock, so it moves less with the machine's load. "
              "`frozen` encodes every prompt once before training (in its wall time), so its steps run "
              "the head alone. Peak RSS is the whole process (Python, torch, the data); the figure in "
              "brackets is the same process after its imports, before the encoder is loaded. Merge gap: "
              "max |score difference| on 64 validation prompts between the model as trained (adapters "
              "unmerged; QLoRA: its 4-bit base) and the merged full-precision encoder that is exported."]
    return "\n".join(lines)


def write_doc(doc: Path, table: str) -> None:
    text = doc.read_text(encoding="utf-8") if doc.exists() else f"# Fine-tuning methods\n\n{START}\n{END}\n"
    if START not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n## CPU benchmark\n\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return 0
    report = run_all(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    table = markdown(report)
    print(table)
    if not args.no_doc:
        write_doc(args.doc, table)
        print(f"\nwrote {args.doc} and {args.json}", file=sys.stderr)
    return 1 if any("error" in r for r in report["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
