"""Make data/sample/llmrouter_sample.parquet, the demo and test sample (run once).

Reads ../shared/data/scores_llmrouter_9model.parquet (MIT, ulab-uiuc/LLMRouter), keeps prompts of
at most 2,000 characters, and draws about 500 prompts stratified across its benchmarks
(proportional allocation, largest remainder, at least one per benchmark), seeded. Every model row
of a drawn prompt is kept, so each prompt has all 9 models' scores.

    python data/sample/make_sample.py [--data DIR] [--prompts 500] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SOURCE_FILE = "scores_llmrouter_9model.parquet"
OUTPUT = HERE / "llmrouter_sample.parquet"
MAX_PROMPT_CHARS = 2000  # keeps the demo fast and the file small


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """Prompts per benchmark, proportional to its size, summing to ``total``."""
    n = sum(sizes.values())
    quota = {k: total * v / n for k, v in sizes.items()}
    counts = {k: min(sizes[k], max(1, int(q))) for k, q in quota.items()}
    by_remainder = sorted(sizes, key=lambda k: (-(quota[k] - int(quota[k])), k))
    for k in by_remainder[: max(0, total - sum(counts.values()))]:
        counts[k] = min(sizes[k], counts[k] + 1)
    return counts


def sample_prompt_ids(table: pa.Table, prompts: int, seed: int) -> list[str]:
    short = table.filter(pc.less_equal(pc.utf8_length(table["prompt"]), MAX_PROMPT_CHARS))
    ids = (
        short.group_by(["benchmark", "prompt_id"])
        .aggregate([])
        .sort_by([("benchmark", "ascending"), ("prompt_id", "ascending")])
    )
    benchmarks = np.array(ids["benchmark"].to_pylist())
    prompt_ids = np.array(ids["prompt_id"].to_pylist())
    names, sizes = np.unique(benchmarks, return_counts=True)
    counts = allocate(dict(zip(names.tolist(), sizes.tolist(), strict=True)), prompts)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for name in sorted(counts):
        pool = prompt_ids[benchmarks == name]
        chosen += sorted(rng.choice(pool, size=counts[name], replace=False).tolist())
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data")
    parser.add_argument("--prompts", type=int, default=500)  # prompts to draw
    parser.add_argument("--seed", type=int, default=0)  # numpy Generator seed
    args = parser.parse_args()
    table = pq.read_table(args.data / SOURCE_FILE)
    chosen = sample_prompt_ids(table, args.prompts, args.seed)
    sample = table.filter(pc.is_in(table["prompt_id"], value_set=pa.array(chosen)))
    sample = sample.sort_by([("benchmark", "ascending"), ("prompt_id", "ascending"), ("model", "ascending")])
    sample = sample.replace_schema_metadata(None)
    pq.write_table(sample, OUTPUT, compression="zstd", compression_level=19)
    print(
        f"{OUTPUT.name}: {len(chosen)} prompts, {sample.num_rows} rows, {OUTPUT.stat().st_size / 1e3:.0f} kB"
    )


if __name__ == "__main__":
    main()
