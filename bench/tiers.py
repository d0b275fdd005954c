"""The encoder tiers side by side in one run: MiniLM-L6 (transformer) against the static tier.

    python -m training.fit examples/specs/demo.json        # build/demo/bundle (MiniLM-L6, LoRA)
    python -m training.fit examples/specs/demo-fast.json   # build/demo-fast/bundle (static)
    nice -n 10 .venv/bin/python bench/tiers.py             # writes build/bench/tiers.json

Per tier (each bundle copied with a 10-row LLM table, as bench/sql_throughput.py does):

- throughput: `SELECT count(*), sum(route_score(prompt, model)) FROM prompts CROSS JOIN
  router_models` over P distinct real prompts x 10 LLMs, empty cache. The tiers are interleaved:
  the prompts are cut into --groups slices and per slice every tier runs its query back to back,
  the order alternating (ABBA), so the shared machine's changing load hits all tiers alike. The
  ratio of prompts/s is the number to read; absolute speeds depend on the load;
- where the time goes: per tier, on the same prompts, tokenising alone, prompt features alone and
  ONNX Runtime alone on prepared inputs;
- latency of one new prompt x 10 LLMs through SQL and through Router.score (p50, p99);
- bundle size, and pairwise accuracy on the validation split of the sample data the demo specs
  train with;
- the static tier only (--rescore-rows, default 1,000,000): `routerdb rescore` of a log whose every
  row is a distinct prompt (the 35,928 distinct real prompts of ../shared/data, each with a
  distinct suffix " (request N)", so no prompt is scored from the cache), in a fresh process: wall
  time and peak RSS. The transformer tier is not rescored at that size (hours on this CPU); its
  prompts/s above is what it would run at.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from routerdb.features import compute_features
from routerdb.router import Router

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sql_throughput import (  # noqa: E402  (bench/ is not a package)
    RESCORE,
    connection,
    latency,
    ort_limit,
    timed_query,
    validation_accuracy,
    with_models,
)

REPO = Path(__file__).resolve().parents[1]


def all_prompts(data_dir: Path) -> list[str]:
    """Every distinct non-empty prompt of the Parquet files in `data_dir`, in a seeded order."""
    pool: set[str] = set()
    for path in sorted(data_dir.glob("*.parquet")):
        pool.update(p for p in pq.read_table(path, columns=["prompt"])["prompt"].to_pylist() if p)
    prompts = sorted(pool)
    random.Random(0).shuffle(prompts)
    return prompts


def throughput(bundles: dict[str, Path], prompts: list[str], threads: int | None, groups: int) -> dict:
    """route_score's first query per tier, interleaved slice by slice (ABBA)."""
    cons = {name: connection(Router(b, threads=threads), prompts, groups) for name, b in bundles.items()}
    seconds = {name: 0.0 for name in bundles}
    order = list(bundles)
    for g in range(groups):
        for name in order if g % 2 == 0 else order[::-1]:
            seconds[name] += timed_query(cons[name], g)
    return {name: {"seconds": s, "prompts_per_s": len(prompts) / s} for name, s in seconds.items()}


def breakdown(bundle: Path, prompts: list[str], threads: int | None) -> dict:
    """Seconds for tokenising, prompt features and ONNX Runtime alone on the same prompts."""
    router = Router(bundle, threads=threads, cache_size=0)
    t0 = time.perf_counter()
    router.tokenizer.token_ids(prompts)
    t1 = time.perf_counter()
    compute_features(prompts)
    t2 = time.perf_counter()
    onnx_s = ort_limit(router, prompts)
    return {"prompts": len(prompts), "tokenise_s": t1 - t0, "features_s": t2 - t1, "onnx_s": onnx_s,
            "graph_reads_features": "features" in router._inputs}


def bundle_mib(bundle: Path) -> float:
    return sum(f.stat().st_size for f in bundle.iterdir() if f.is_file()) / 2**20


def rescore_distinct(bundle: Path, pool: list[str], rows: int, work: Path) -> dict:
    """`rescore` of a `rows`-row log of distinct prompts, in a fresh process."""
    src, out = work / f"distinct_{rows}.parquet", work / f"distinct_{rows}_scored.parquet"
    with pq.ParquetWriter(src, pa.schema([("id", pa.int64()), ("prompt", pa.string())])) as writer:
        for start in range(0, rows, 100_000):
            ids = np.arange(start, min(rows, start + 100_000))
            writer.write_table(pa.table({"id": ids, "prompt": [f"{pool[i % len(pool)]} (request {i})"
                                                               for i in ids]}))
    done = subprocess.run([sys.executable, "-c", RESCORE, str(bundle), str(src), str(out)],
                          check=True, capture_output=True, text=True, cwd=REPO)
    seconds, hwm = done.stdout.split()[-2:]
    written = pq.ParquetFile(out).metadata.num_rows
    src.unlink()
    out.unlink()
    return {"rows": rows, "distinct_prompts": rows, "seconds": float(seconds),
            "rows_per_s": rows / float(seconds), "peak_rss_mib": int(hwm), "rows_written": written}


def parse_tiers(values: list[str]) -> dict[str, Path]:
    tiers = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not Path(path).is_dir():
            raise SystemExit(f"--tier {value!r}: expected NAME=BUNDLE_DIR with an existing bundle directory "
                             "(train it with python -m training.fit examples/specs/<spec>.json)")
        tiers[name] = Path(path)
    return tiers


def report(results: dict, baseline: str) -> None:
    base = results["throughput"][baseline]["prompts_per_s"]
    for name, t in results["throughput"].items():
        b, lat, acc = results["breakdown"][name], results["latency"][name], results["accuracy"][name]
        print(f"[{name}] route_score {t['prompts_per_s']:.1f} prompts/s ({t['prompts_per_s'] / base:.1f}x "
              f"{baseline}); tokenise {b['tokenise_s']:.2f}s, features {b['features_s']:.2f}s, ONNX Runtime "
              f"{b['onnx_s']:.2f}s for {b['prompts']} prompts; one prompt x {results['models']} LLMs: "
              f"SQL p50 {lat['sql_p50_ms']:.1f} / p99 {lat['sql_p99_ms']:.1f} ms, Router.score p50 "
              f"{lat['router_p50_ms']:.1f} / p99 {lat['router_p99_ms']:.1f} ms; bundle "
              f"{results['bundle_mib'][name]:.1f} MiB; validation accuracy {acc['accuracy']:.4f} "
              f"({acc['pairs']} pairs)", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tier", action="append", default=None,
                        help="NAME=BUNDLE (repeat); the first is the baseline of the ratios")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--prompts", type=int, default=2_000)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--groups", type=int, default=10)
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--breakdown-prompts", type=int, default=500,
                        help="prompts (of the P) timed part by part: tokenising, features, ONNX Runtime")
    parser.add_argument("--rescore-tier", default="fast", help="the tier rescored (a NAME of --tier)")
    parser.add_argument("--rescore-rows", type=int, default=1_000_000, help="0 skips the rescore")
    parser.add_argument("--sample", default=str(REPO / "data" / "sample" / "llmrouter_sample.parquet"))
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--json", default=str(REPO / "build" / "bench" / "tiers.json"))
    args = parser.parse_args(argv)
    tiers = parse_tiers(args.tier or ["minilm=build/demo/bundle", "fast=build/demo-fast/bundle"])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    pool = all_prompts(Path(args.data))
    prompts, fresh = pool[:args.prompts], pool[args.prompts:args.prompts + args.latency_calls]
    copies = {n: with_models(b, args.models, work / f"tier-{n}-{args.models}llm") for n, b in tiers.items()}
    results: dict = {"command": " ".join(sys.argv), "cpus": os.cpu_count(), "threads": args.threads,
                     "duckdb": duckdb.__version__, "prompts": len(prompts), "models": args.models,
                     "load_average_start": os.getloadavg()}
    print(f"{len(prompts)} prompts x {args.models} LLMs; tiers {', '.join(tiers)}; load average "
          f"{results['load_average_start'][0]:.1f}", flush=True)
    results["throughput"] = throughput(copies, prompts, args.threads, args.groups)
    part = prompts[:args.breakdown_prompts]
    results["breakdown"] = {n: breakdown(b, part, args.threads) for n, b in copies.items()}
    results["latency"] = {n: latency(b, fresh, args.threads) for n, b in copies.items()}
    results["bundle_mib"] = {n: bundle_mib(b) for n, b in tiers.items()}
    results["accuracy"] = {}
    for name, bundle in tiers.items():
        split = json.loads((bundle / "manifest.json").read_text()).get("spec", {}).get("data", {})
        split = split.get("validation") or {"fraction": 0.2, "seed": 42}
        acc = validation_accuracy(bundle, Path(args.sample), split["fraction"], split["seed"])
        results["accuracy"][name] = {k: v for k, v in acc.items() if k != "scores"}
    report(results, next(iter(tiers)))
    if args.rescore_rows and args.rescore_tier in copies:
        run = rescore_distinct(copies[args.rescore_tier], pool, args.rescore_rows, work)
        r = results["rescore"] = {"tier": args.rescore_tier, **run}
        print(f"[{args.rescore_tier}] rescore of {r['rows']:,} distinct prompts: {r['seconds']:.0f}s = "
              f"{r['rows_per_s']:,.0f} rows/s, peak RSS {r['peak_rss_mib']} MiB", flush=True)
    results["load_average_end"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    print(f"load average at the end {results['load_average_end'][0]:.1f}; wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
