"""LLM embedding kinds side by side on real data, and the held-out-LLM experiment; writes docs/embeddings.md.

    nice -n 10 .venv/bin/python bench/embeddings.py                  # the documented run (~15 min)
    .venv/bin/python bench/embeddings.py --prompts 400 --no-doc      # a quick look

Data: `scores_llmrouter_9model.parquet` (MIT, 9 LLMs) from the shared data folder, `--prompts`
prompts drawn with a fixed seed, split prompt-disjoint (20% validation, seed 42). Every router uses
the frozen all-MiniLM-L6-v2 prompt encoder (its vectors read from `training.encoder.prompt_cache`, filled
on first use), the same head, seed, epochs and batches; only `embedding_spec.kind` changes.

1. **Kinds side by side**: for learned / frozen / attention / finetunable (and frozen with
   `train_with_head`), the phase-1 held-out top-1 identification accuracy and the router's
   validation pairwise accuracy, with a prompt-ignoring Bradley-Terry baseline for scale.
2. **Held-out LLM**: for each `--held-out` LLM, a router is trained without it (phase 1 and
   head), the LLM is embedded from `--new-records` of its training-split records by the phase-1
   model, and its validation pairs are scored. Compared on the same pairs: the router trained
   with it (same kind), the learned-vector router, and Bradley-Terry fitted with those records.
   The first held-out LLM also goes through the real path (export a bundle, `add_model`, score
   with the ONNX runtime) to check it gives the same accuracy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from training import data as data_mod  # noqa: E402
from training.data.splits import split_by_prompt  # noqa: E402
from training.encoder.prompt_cache import PromptCache  # noqa: E402
from training.evaluation.baselines import BradleyTerry  # noqa: E402
from training.llm_embeddings.records import comparison_records  # noqa: E402
from training.router import TransformerEmbeddingModel  # noqa: E402
from training.specs import Frozen, ValidationSplit  # noqa: E402

log = logging.getLogger("bench.embeddings")
ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
KIND_ROWS = (  # (label, embedding_spec)
    ("learned", {"kind": "learned"}),
    ("frozen", {"kind": "frozen"}),
    ("attention", {"kind": "attention"}),
    ("finetunable", {"kind": "finetunable"}),
    ("frozen + train_with_head", {"kind": "frozen", "train_with_head": True}),
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="/work/shared/data/scores_llmrouter_9model.parquet")
    p.add_argument("--prompts", type=int, default=2000, help="distinct prompts drawn from --data")
    p.add_argument("--epochs", type=int, default=5, help="head epochs")
    p.add_argument("--embedding-epochs", type=int, default=8, help="phase-1 epochs (embedding_model_epochs)")
    p.add_argument(
        "--finetunable-prompts",
        type=int,
        default=600,
        help="training prompts phase 1 of 'finetunable' sees (its encoder runs with gradients)",
    )
    p.add_argument("--held-out", default="qwen2.5-7b-instruct,mistral-7b-instruct-v0.3")
    p.add_argument("--held-out-kinds", default="frozen,attention")
    p.add_argument("--new-records", type=int, default=400, help="records the new LLM is embedded from")
    p.add_argument("--kinds", default=",".join(label for label, _ in KIND_ROWS))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 is fastest on a shared 2-core box)"
    )
    p.add_argument("--doc", type=Path, default=REPO / "docs/embeddings.md")
    p.add_argument("--json", type=Path, default=REPO / "build/bench/embeddings.json")
    p.add_argument("--no-doc", action="store_true")
    return p.parse_args(argv)


def load_data(args) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(all pairs of the drawn prompts, train, validation)."""
    pairs = data_mod.load_pairs(args.data)
    prompts = sorted(set(pairs["prompt"].to_pylist()))
    keep = np.random.default_rng(0).choice(prompts, min(args.prompts, len(prompts)), replace=False)
    pairs = pairs.filter(pc.is_in(pairs["prompt"], value_set=pa.array(list(keep))))
    train, val = split_by_prompt(pairs, 0.2, 42)
    return pairs, train, val


def router(args, cache: PromptCache, spec: dict) -> TransformerEmbeddingModel:
    """A frozen-encoder router whose prompt vectors come from the disk cache (same values)."""
    model = TransformerEmbeddingModel(
        encoder=ENCODER,
        finetuning=Frozen(),
        embedding_spec=spec,
        epochs=args.epochs,
        embedding_model_epochs=args.embedding_epochs,
        batch_size=256,
        seed=args.seed,
        progress=False,
    )
    model.frozen_vectors = cache.vectors
    return model


def involving(pairs: pa.Table, name: str, decisive: bool = True) -> pa.Table:
    a, b = (pairs[c].to_numpy(zero_copy_only=False) for c in ("model_a", "model_b"))
    keep = (a == name) | (b == name)
    if decisive:
        keep &= pairs["label"].to_numpy() != 0
    return pairs.filter(pa.array(keep))


def pair_accuracy(scores: np.ndarray, prompts: list[str], names: list[str], pairs: pa.Table) -> float:
    """Decisive-pair accuracy of a [P, M] score matrix (equal scores count half)."""
    row = {p: i for i, p in enumerate(prompts)}
    col = {m: j for j, m in enumerate(names)}
    pairs = pairs.filter(pa.array(pairs["label"].to_numpy() != 0))
    rows = np.array([row[p] for p in pairs["prompt"].to_pylist()])
    diff = (
        scores[rows, [col[m] for m in pairs["model_a"].to_pylist()]]
        - scores[rows, [col[m] for m in pairs["model_b"].to_pylist()]]
    ) * pairs["label"].to_numpy()
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def bradley_terry(train: pa.Table, val: pa.Table) -> tuple[BradleyTerry, float]:
    bt = BradleyTerry().fit(
        None,
        None,
        *(train[c].to_numpy(zero_copy_only=False) for c in ("model_a", "model_b")),
        train["label"].to_numpy(),
    )
    prompts = sorted(set(val["prompt"].to_pylist()))
    scores = bt.score(None, np.ones(len(prompts)), bt.models_)
    return bt, pair_accuracy(scores, prompts, list(bt.models_), val)


# --- 1. kinds side by side -------------------------------------------------------------------------


def run_kinds(args, cache, pairs, train, val) -> tuple[list[dict], dict[str, TransformerEmbeddingModel]]:
    rows, models = [], {}
    wanted = args.kinds.split(",")
    for label, spec in KIND_ROWS:
        if label not in wanted:
            continue
        t0 = time.perf_counter()
        if spec["kind"] == "finetunable":  # phase 1 on a share of the training prompts (CPU cost)
            model = _finetunable_router(args, cache, spec, train)
        else:
            model = router(args, cache, spec)
        model.train(pairs, validation_split=ValidationSplit(0.2, 42))
        report = model.llm_embedder.report if model.llm_embedder else {}
        rows.append(
            {
                "kind": label,
                "val_accuracy": model.history[-1]["val_accuracy"],
                "best_val_accuracy": max(h["val_accuracy"] for h in model.history),
                "identification_top1": report.get("identification_top1"),
                "phase1_seconds": sum(h["seconds"] for h in report.get("history", [])),
                "seconds": time.perf_counter() - t0,
            }
        )
        log.info("%s: %s", label, rows[-1])
        models[label] = model
    return rows, models


def _finetunable_router(args, cache, spec, train: pa.Table) -> TransformerEmbeddingModel:
    """Phase 1 of 'finetunable' on `--finetunable-prompts` training prompts (saved, then reused
    through load_embedding_model_from), so its encoder fine-tuning fits the CPU budget."""
    prompts = sorted(set(train["prompt"].to_pylist()))
    keep = np.random.default_rng(1).choice(
        prompts, min(args.finetunable_prompts, len(prompts)), replace=False
    )
    subset = train.filter(pc.is_in(train["prompt"], value_set=pa.array(list(keep))))
    from training.llm_embeddings.phase1 import train_embedding_model
    from training.specs import RouterConfig

    phase1 = train_embedding_model(
        RouterConfig(embedding_spec=spec).embedding_spec,
        subset,
        encoder=ENCODER,
        epochs=max(1, args.embedding_epochs // 4),
        seed=args.seed,
    )
    folder = Path(tempfile.mkdtemp(prefix="finetunable-"))
    phase1.save(folder)
    model = router(args, cache, spec)
    model.config = model.config.model_copy(update={"load_embedding_model_from": str(folder)})
    return model


# --- 2. held-out LLM ----------------------------------------------------------------------------


def run_held_out(args, cache, pairs, train, val, full: dict) -> list[dict]:
    out = []
    prompts = sorted(set(val["prompt"].to_pylist()))
    full_scores = {label: m.score_matrix(prompts) for label, m in full.items()}
    for n, name in enumerate(args.held_out.split(",")):
        target = involving(val, name)
        others = pairs.filter(pa.array(~_mask(pairs, name)))
        mine = comparison_records(train).of(name)
        rows = np.random.default_rng(0).choice(len(mine), min(args.new_records, len(mine)), replace=False)
        mine = mine.take(np.sort(rows))
        bt_pairs = pa.concat_tables(
            [train.filter(pa.array(~_mask(train, name))), _as_pairs(mine, name, train)]
        )
        bt, _ = bradley_terry(bt_pairs, target)
        bt_acc = pair_accuracy(
            bt.score(None, np.ones(len(prompts)), bt.models_), prompts, list(bt.models_), target
        )
        for kind in args.held_out_kinds.split(","):
            model = router(args, cache, {"kind": kind})
            model.train(others, validation_split=ValidationSplit(0.2, 42))
            vector = model.llm_embedder.embed_llms(mine, [name])
            names = [*model.llm_names, name]
            emb = torch.cat([model.llm_embeddings.detach(), torch.from_numpy(vector).to(model.device)])
            with torch.no_grad():
                scores = model.net.score(model.embed_prompts(prompts), model.features_tensor(prompts), emb)
            added = pair_accuracy(scores.cpu().numpy(), prompts, names, target)
            row = {
                "llm": name,
                "kind": kind,
                "pairs": target.num_rows,
                "records": len(mine),
                "added": added,
                "trained_with_it": pair_accuracy(full_scores[kind], prompts, full[kind].llm_names, target),
                "learned_trained_with_it": pair_accuracy(
                    full_scores["learned"], prompts, full["learned"].llm_names, target
                ),
                "bradley_terry_from_records": bt_acc,
            }
            if n == 0 and kind == args.held_out_kinds.split(",")[0]:
                row["bundle_added"] = _through_bundle(model, mine, name, train, target)
            log.info("held out %s", row)
            out.append(row)
    return out


def _mask(pairs: pa.Table, name: str) -> np.ndarray:
    a, b = (pairs[c].to_numpy(zero_copy_only=False) for c in ("model_a", "model_b"))
    return (a == name) | (b == name)


def _as_pairs(records, name, train: pa.Table) -> pa.Table:
    n = len(records)
    table = {c: train[c].slice(0, 0) for c in train.column_names}
    cols = {
        "prompt": [records.prompts[p] for p in records.prompt],
        "model_a": [name] * n,
        "model_b": [records.llms[o] for o in records.opponent],
        "label": records.outcome.astype(np.int8),
    }
    return pa.table(
        {
            c: pa.array(cols[c], table[c].type) if c in cols else pa.nulls(n, table[c].type)
            for c in train.column_names
        }
    )


def _through_bundle(model, records, name: str, train: pa.Table, target: pa.Table) -> float:
    """Export, add_model from a records file, score the pairs with the ONNX runtime."""
    from routerdb.router import Router
    from training.add_model import add_model
    from training.export import export_bundle

    folder = Path(tempfile.mkdtemp(prefix="bench-embeddings-"))
    prompts = sorted(set(target["prompt"].to_pylist()))
    bundle = export_bundle(model, folder / "bundle", prompts[:8])
    winner = np.where(records.outcome > 0, "model_a", np.where(records.outcome < 0, "model_b", "tie"))
    table = _as_pairs(records, name, train).select(["prompt", "model_a", "model_b"])
    pq.write_table(table.append_column("winner", pa.array(winner)), folder / "records.parquet")
    out = add_model(bundle, folder / "records.parquet", name, folder / "added")
    scorer = Router.for_verification(out)
    return pair_accuracy(scorer.score(prompts), prompts, list(scorer.models), target)


# --- report --------------------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in (
        "training.encoder.finetuning",
        "training.encoder.pooling",
        "training.encoder.pretrained",
        "routerdb",
        "training.export",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    pairs, train, val = load_data(args)
    cache = PromptCache.for_encoder(ENCODER, 128)
    cache.fill(sorted(set(pairs["prompt"].to_pylist())))
    _, bt_acc = bradley_terry(train, val)
    kinds, models = run_kinds(args, cache, pairs, train, val)
    held = run_held_out(args, cache, pairs, train, val, models) if args.held_out else []
    result = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "bradley_terry_val_accuracy": bt_acc,
        "kinds": kinds,
        "held_out": held,
        "seconds": time.perf_counter() - t0,
        "prompts": {
            "train": len(set(train["prompt"].to_pylist())),
            "val": len(set(val["prompt"].to_pylist())),
        },
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{args.threads} torch thread(s)",
        "date": dt.date.today().isoformat(),
        "command": "nice -n 10 .venv/bin/python bench/embeddings.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    table = render(result)
    print(table)
    if not args.no_doc:
        write_doc(args.doc, table)
    return 0


START, END = "<!-- bench/embeddings.py:start -->", "<!-- bench/embeddings.py:end -->"


def render(r: dict) -> str:
    pct = lambda x: "–" if x is None or x != x else f"{100 * x:.1f}%"  # noqa: E731
    lines = [
        f"Measured {r['date']} on {r['machine']}; {r['prompts']['train']} training / "
        f"{r['prompts']['val']} validation prompts (prompt-disjoint) of scores_llmrouter_9model, "
        f"{r['seconds'] / 60:.1f} min in all. Command: `{r['command'].strip()}`.",
        "",
        "| embedding kind | held-out identification (top-1) | router validation accuracy (last / best epoch) "
        "| phase 1 | total |",
        "|---|---|---|---|---|",
    ]
    for k in r["kinds"]:
        lines.append(
            f"| {k['kind']} | {pct(k['identification_top1'])} | {pct(k['val_accuracy'])} / "
            f"{pct(k['best_val_accuracy'])} | {k['phase1_seconds']:.0f} s | {k['seconds']:.0f} s |"
        )
    lines.append(f"| *Bradley-Terry (prompt ignored)* | – | {pct(r['bradley_terry_val_accuracy'])} | – | – |")
    if r["held_out"]:
        lines += [
            "",
            "| held-out LLM | kind | its validation pairs | records embedded | added back | "
            "trained with it (same kind) | learned vector, trained with it | "
            "Bradley-Terry from those records |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for h in r["held_out"]:
            extra = f" (bundle: {pct(h['bundle_added'])})" if "bundle_added" in h else ""
            lines.append(
                f"| {h['llm']} | {h['kind']} | {h['pairs']} | {h['records']} | {pct(h['added'])}{extra} | "
                f"{pct(h['trained_with_it'])} | {pct(h['learned_trained_with_it'])} | "
                f"{pct(h['bradley_terry_from_records'])} |"
            )
    return "\n".join(lines)


def write_doc(path: Path, table: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else f"{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table}\n{END}{tail}", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
