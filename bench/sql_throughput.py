"""route_score from SQL against the encoder's own limit, side by side in one run.

    make demo        # once: trains build/demo/bundle (MiniLM-L6)
    nice -n 10 .venv/bin/python bench/sql_throughput.py --bundle build/demo/bundle

Workload: P distinct real prompts from ../shared/data (seeded sample across every file) x M LLMs
(the bundle's LLMs, topped up to M with synthetic LLM rows in a copy of the bundle: an LLM is a row
of models.parquet, so this changes nothing in the graph). For the full-precision bundle and its
int8 copy (`training.export.quantize_bundle`) it measures, each time on the same Router session
(same bundle, same threads):

- limit: ONNX Runtime alone encoding the P prompts, tokenised beforehand, sorted by token length
  into batches of the Router's batch size;
- first query: `SELECT sum(route_score(prompt, model)) FROM prompts CROSS JOIN router_models` with
  an empty cache, and its ratio to the limit (target <= 1.15). The two are interleaved: the
  prompts are cut into --groups slices, and per slice the limit and the query run back to back,
  alternating which goes first, so the machine's changing load (it is shared) hits both alike;
- repeated query: the same query over all P prompts again, and the speed-up (target >= 20x);
- peak memory of the first query at P/4 and at P prompts (flat in P);
- latency of one new prompt x M LLMs through SQL and through Router.score (p50, p99);
- int8: speed-up over fp32 and the pairwise accuracy on the validation split of the sample data
  (the split the demo spec trains with) for both bundles;
- `routerdb rescore` of an N-row log (default 1,000,000 rows, prompts drawn from the P prompts) in a
  subprocess: wall time and peak memory.

Results go to stdout and to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from routerdb.bundle import Bundle, models_table, write_bundle
from routerdb.duckdb import register
from routerdb.features import compute_features
from routerdb.router import Router

REPO = Path(__file__).resolve().parents[1]
QUERY = "SELECT count(*), sum(route_score(prompt, model)) FROM prompts CROSS JOIN router_models"


# --- workload -------------------------------------------------------------------------------


def real_prompts(data_dir: Path, n: int, seed: int = 0) -> list[str]:
    """n distinct non-empty prompts, a seeded sample over every Parquet file in `data_dir`."""
    pool: set[str] = set()
    for path in sorted(data_dir.glob("*.parquet")):
        pool.update(p for p in pq.read_table(path, columns=["prompt"])["prompt"].to_pylist() if p)
    prompts = sorted(pool)
    random.Random(seed).shuffle(prompts)
    if len(prompts) < n:
        raise SystemExit(f"{data_dir} has {len(prompts)} distinct prompts, fewer than the {n} asked for")
    return prompts[:n]


def with_models(source: Path, m: int, target: Path) -> Path:
    """A copy of the bundle whose LLM table has exactly m rows (synthetic rows added if needed)."""
    src = Bundle.load(source)
    names, emb = list(src.model_names[:m]), src.model_embeddings[:m]
    rng = np.random.default_rng(0)
    while len(names) < m:  # a blend of two real LLMs: a plausible vector, clearly named
        i, j = rng.choice(len(src.model_names), 2, replace=False)
        names.append(f"synthetic-llm-{len(names)}")
        emb = np.vstack([emb, (src.model_embeddings[i] + src.model_embeddings[j]) / 2])
    files = {name: entry["path"] for name, entry in src.manifest["files"].items()}
    manifest = {k: v for k, v in src.manifest.items() if k not in ("format", "format_version", "files")}
    manifest["models"] = {**manifest.get("models", {}), "count": m}

    def write_files(tmp: Path) -> dict[str, str]:
        for name, rel in files.items():
            if name != "models.parquet":
                shutil.copyfile(src.path / rel, tmp / rel)
        pq.write_table(models_table(names, emb), tmp / files["models.parquet"])
        return files

    return write_bundle(target, manifest, write_files)


# --- measurements ---------------------------------------------------------------------------


def ort_limit(router: Router, prompts: list[str]) -> float:
    """Seconds ONNX Runtime alone takes to score `prompts` (inputs prepared beforehand)."""
    batches = prepared_batches(router, prompts)
    t0 = time.perf_counter()
    for feeds in batches:
        router.session.run(["scores"], feeds)
    return time.perf_counter() - t0


def prepared_batches(router: Router, prompts: list[str]) -> list[dict[str, np.ndarray]]:
    """The router's ONNX feeds for `prompts`: tokenised, with features, in length-sorted batches."""
    ids = router.tokenizer.token_ids(prompts)
    features = compute_features(prompts)
    order = np.argsort([len(x) for x in ids], kind="stable")
    batches = []
    for start in range(0, len(order), router.batch_size):
        rows = order[start:start + router.batch_size]
        batch = router.tokenizer.pad([ids[i] for i in rows])
        feeds = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                 "features": features[rows], "model_embeddings": router.bundle.model_embeddings}
        batches.append({k: v for k, v in feeds.items() if k in router._inputs})
    return batches


def connection(router: Router, prompts: list[str], groups: int = 1) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    register(con, router)
    con.register("prompt_list", pa.table({"prompt": prompts, "grp": np.arange(len(prompts)) % groups}))
    con.execute("CREATE TABLE prompts AS SELECT prompt, grp FROM prompt_list")
    con.unregister("prompt_list")
    return con


def timed_query(con, group: int | None = None) -> float:
    if group is None:
        query, params = QUERY, []
    else:
        query = QUERY.replace("FROM prompts", "FROM (SELECT prompt FROM prompts WHERE grp = ?)")
        params = [group]
    t0 = time.perf_counter()
    con.execute(query, params).fetchall()
    return time.perf_counter() - t0


def peak() -> int:
    return _status("VmHWM")


def _status(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def sql_workload(bundle: Path, prompts: list[str], threads: int | None, groups: int) -> dict:
    """The first query against the limit, interleaved: the prompts are cut into `groups` slices;
    for each slice ONNX Runtime alone and the SQL query run back to back, alternating which goes
    first (ABBA), so a change in the machine's load hits both alike. Then the repeated query over
    all prompts. One Router (one ONNX Runtime session) for both: same bundle, same threads."""
    router = Router(bundle, threads=threads)
    con = connection(router, prompts, groups)
    limit, first, cpu_limit, cpu_first = [], [], [], []

    def run_limit(part):
        c0 = time.process_time()
        limit.append(ort_limit(router, part))  # wall clock: session.run only
        cpu_limit.append(time.process_time() - c0)  # CPU: tokenising and features included

    def run_query(g):
        c0 = time.process_time()
        first.append(timed_query(con, g))
        cpu_first.append(time.process_time() - c0)

    for g in range(groups):
        part = prompts[g::groups]  # the rows with grp = g
        if g % 2 == 0:
            run_limit(part)
            run_query(g)
        else:
            run_query(g)
            run_limit(part)
    encoded = router.encoded_prompts
    repeat = timed_query(con)
    total_limit, total_first = sum(limit), sum(first)
    return {"prompts": len(prompts), "models": len(router.models), "encoded_prompts": encoded,
            "groups": groups, "limit_s": total_limit, "limit_prompts_per_s": len(prompts) / total_limit,
            "first_query_s": total_first, "ratio_to_limit": total_first / total_limit,
            "ratio_per_group": [f / x for f, x in zip(first, limit, strict=True)],
            "median_group_ratio": float(np.median([f / x for f, x in zip(first, limit, strict=True)])),
            "cpu_limit_s": sum(cpu_limit), "cpu_first_query_s": sum(cpu_first),
            "cpu_ratio": sum(cpu_first) / sum(cpu_limit), "repeat_query_s": repeat,
            "repeat_speedup": total_first / repeat,
            "duckdb_threads": con.execute("SELECT current_setting('threads')").fetchall()[0][0]}


def memory_at(bundle: Path, n: int, args) -> dict:
    """Peak memory of a fresh process running the first query over n prompts (--probe-memory)."""
    cmd = [sys.executable, __file__, "--probe-memory", str(n), "--bundle", str(bundle), "--data", args.data]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO)
    return json.loads(done.stdout.strip().splitlines()[-1])


def probe_memory(bundle: Path, prompts: list[str], threads: int | None) -> dict:
    router = Router(bundle, threads=threads)
    con = connection(router, prompts)
    before = _status("VmRSS")
    timed_query(con)
    return {"prompts": len(prompts), "rss_before_query_mib": before, "peak_rss_mib": peak(),
            "growth_mib": peak() - before}


def latency(bundle: Path, prompts: list[str], threads: int | None) -> dict:
    """One new prompt x every LLM per call, through SQL and through Router.score, interleaved on
    the same prompts (two Routers, so each path meets every prompt uncached)."""
    via_sql, direct = Router(bundle, threads=threads), Router(bundle, threads=threads)
    con = duckdb.connect()
    register(con, via_sql)
    query = "SELECT model, route_score(?, model) FROM router_models"
    con.execute(query, ["warm up"]).fetchall()
    direct.score(["warm up"])
    sql, plain = [], []
    for prompt in prompts:
        t0 = time.perf_counter()
        con.execute(query, [prompt]).fetchall()
        t1 = time.perf_counter()
        direct.score([prompt])
        plain.append(time.perf_counter() - t1)
        sql.append(t1 - t0)
    ms = lambda xs, q: float(np.percentile(xs, q) * 1000)  # noqa: E731
    return {"calls": len(prompts), "sql_p50_ms": ms(sql, 50), "sql_p99_ms": ms(sql, 99),
            "router_p50_ms": ms(plain, 50), "router_p99_ms": ms(plain, 99)}


def validation_accuracy(bundle: Path, sample: Path, fraction: float, seed: int,
                        router: Router | None = None) -> dict:
    """Pairwise accuracy on the prompt-disjoint validation split the demo spec trains with (of
    `router` where given, e.g. one whose ONNX session was swapped, else of the bundle's own)."""
    from training.data import read as data_mod
    from training.data.splits import split_by_prompt
    from training.evaluation.metrics import pair_diff, pairwise_accuracy

    pairs = data_mod.load_pairs(str(sample))
    _, val = split_by_prompt(pairs, fraction, seed)
    prompts = sorted(set(val["prompt"].to_pylist()))
    index = {p: i for i, p in enumerate(prompts)}
    router = router or Router(bundle, cache_size=0)
    scores = router.score(prompts)
    diff = pair_diff(scores, router.models, np.array([index[p] for p in val["prompt"].to_pylist()]),
                     np.array(val["model_a"].to_pylist()), np.array(val["model_b"].to_pylist()))
    return {"accuracy": pairwise_accuracy(diff, np.array(val["label"].to_pylist())),
            "pairs": val.num_rows, "prompts": len(prompts), "scores": scores}


RESCORE = """
import re, sys, time
from routerdb.rescore import rescore
t0 = time.perf_counter()
rescore(sys.argv[1], sys.argv[2], sys.argv[3], progress=False)
hwm = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print(time.perf_counter() - t0, int(hwm) // 1024)
"""


def rescore_run(bundle: Path, prompts: list[str], rows: int, work: Path) -> dict:
    """`rescore` of a `rows`-row log (prompts drawn from `prompts`) in a fresh process."""
    src, out = work / f"log_{rows}.parquet", work / f"log_{rows}_scored.parquet"
    rng = np.random.default_rng(0)
    with pq.ParquetWriter(src, pa.schema([("id", pa.int64()), ("prompt", pa.string()),
                                          ("user", pa.string())])) as writer:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            pick = rng.integers(0, len(prompts), n)
            writer.write_table(pa.table({"id": np.arange(start, start + n),
                                         "prompt": [prompts[i] for i in pick],
                                         "user": [f"user-{i % 97}" for i in pick]}))
    done = subprocess.run([sys.executable, "-c", RESCORE, str(bundle), str(src), str(out)],
                          check=True, capture_output=True, text=True, cwd=REPO)
    seconds, hwm = done.stdout.split()[-2:]
    written = pq.ParquetFile(out).metadata.num_rows
    src.unlink()
    out.unlink()
    return {"rows": rows, "distinct_prompts": min(len(prompts), rows), "seconds": float(seconds),
            "rows_per_s": rows / float(seconds), "peak_rss_mib": int(hwm), "rows_written": written}


# --- report ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="build/demo/bundle", help="a full-precision bundle")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"), help="real prompts")
    parser.add_argument("--prompts", type=int, default=2_000)
    parser.add_argument("--models", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads "
                        "(default: ONNX Runtime's, one per physical core)")
    parser.add_argument("--groups", type=int, default=10, help="slices for the interleaved comparison")
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--rescore-rows", type=int, default=1_000_000, help="0 skips the rescore run")
    parser.add_argument("--sample", default=str(REPO / "data" / "sample" / "llmrouter_sample.parquet"))
    parser.add_argument("--work", default=str(REPO / "build" / "bench"))
    parser.add_argument("--json", default=str(REPO / "build" / "bench" / "sql_throughput.json"))
    parser.add_argument("--probe-memory", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe_memory:
        prompts = real_prompts(Path(args.data), args.probe_memory)
        print(json.dumps(probe_memory(Path(args.bundle), prompts, args.threads)))
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not Path(args.bundle).is_dir():
        raise SystemExit(f"no bundle at {args.bundle}: run `make demo` first, or pass --bundle")
    data = Path(args.data)
    prompts = real_prompts(data, args.prompts + args.latency_calls)
    prompts, fresh = prompts[:args.prompts], prompts[args.prompts:]
    fp32 = with_models(Path(args.bundle), args.models, work / f"bundle-fp32-{args.models}llm")
    from training.export import quantize_bundle

    int8 = quantize_bundle(fp32, work / f"bundle-int8-{args.models}llm", prompts[:64])
    import onnxruntime as ort

    print(f"workload: {len(prompts)} distinct prompts from {data} x {args.models} LLMs; "
          f"{os.cpu_count()} CPUs; ONNX Runtime {ort.__version__} intra-op threads: "
          f"{args.threads or 'default (one per physical core)'}", flush=True)
    results: dict = {"command": " ".join(sys.argv), "cpus": os.cpu_count(), "threads": args.threads,
                     "onnxruntime": ort.__version__, "duckdb": duckdb.__version__}
    for name, bundle in (("fp32", fp32), ("int8", int8)):
        r = results[name] = sql_workload(bundle, prompts, args.threads, args.groups)
        print(f"[{name}] limit (ONNX Runtime alone) {r['limit_s']:.1f}s = {r['limit_prompts_per_s']:.1f} "
              f"prompts/s; per-slice ratios {', '.join(f'{x:.2f}' for x in r['ratio_per_group'])}; "
              f"first query {r['first_query_s']:.1f}s -> ratio {r['ratio_to_limit']:.3f} (median per slice "
              f"{r['median_group_ratio']:.3f}; target <= 1.15); process CPU seconds, query / limit "
              f"{r['cpu_ratio']:.3f} (the limit's includes tokenising its inputs); "
              f"repeated query {r['repeat_query_s'] * 1000:.0f} ms -> {r['repeat_speedup']:.0f}x faster "
              f"(target >= 20x); prompts encoded {r['encoded_prompts']}; DuckDB threads "
              f"{r['duckdb_threads']}", flush=True)
    results["int8_speedup_limit"] = results["fp32"]["limit_s"] / results["int8"]["limit_s"]
    results["int8_speedup_query"] = results["fp32"]["first_query_s"] / results["int8"]["first_query_s"]
    print(f"int8 speed-up: {results['int8_speedup_limit']:.2f}x (limit), "
          f"{results['int8_speedup_query']:.2f}x (first query)", flush=True)
    mem = results["memory"] = [memory_at(fp32, n, args) for n in (len(prompts) // 4, len(prompts))]
    print("memory of a fresh process running the first query: " + "; ".join(
        f"P={m['prompts']}: peak {m['peak_rss_mib']} MiB ({m['growth_mib']:+d} MiB during the query)"
        for m in mem), flush=True)
    for name, bundle in (("fp32", fp32), ("int8", int8)):
        lat = results[f"latency_{name}"] = latency(bundle, fresh, args.threads)
        print(f"[{name}] one new prompt x {args.models} LLMs: SQL p50 {lat['sql_p50_ms']:.1f} ms, "
              f"p99 {lat['sql_p99_ms']:.1f} ms; Router.score p50 {lat['router_p50_ms']:.1f} ms, "
              f"p99 {lat['router_p99_ms']:.1f} ms", flush=True)
    spec = json.loads((Path(args.bundle) / "manifest.json").read_text()).get("spec", {})
    split = spec.get("data", {}).get("validation") or {"fraction": 0.2, "seed": 42}
    acc = {name: validation_accuracy(b, Path(args.sample), split["fraction"], split["seed"])
           for name, b in (("fp32", fp32), ("int8", int8))}
    gap = np.abs(acc["fp32"].pop("scores") - acc["int8"].pop("scores"))
    results["int8_accuracy"] = {**{k: v for k, v in acc.items()}, "max_abs_score_diff": float(gap.max()),
                                "mean_abs_score_diff": float(gap.mean())}
    print(f"validation pairwise accuracy ({acc['fp32']['pairs']} pairs, {acc['fp32']['prompts']} prompts): "
          f"fp32 {acc['fp32']['accuracy']:.4f}, int8 {acc['int8']['accuracy']:.4f} "
          f"(change {acc['int8']['accuracy'] - acc['fp32']['accuracy']:+.4f}); |int8 - fp32| score "
          f"max {gap.max():.4f}, mean {gap.mean():.4f}", flush=True)
    if args.rescore_rows:
        r = results["rescore"] = rescore_run(fp32, prompts, args.rescore_rows, work)
        print(f"rescore: {r['rows']:,} rows ({r['distinct_prompts']} distinct prompts) in "
              f"{r['seconds']:.0f}s "
              f"= {r['rows_per_s']:,.0f} rows/s, peak RSS {r['peak_rss_mib']} MiB", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
