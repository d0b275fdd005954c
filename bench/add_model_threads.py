"""`training.add_model`'s row fit on its own thread count (1) beside torch's default pool, in one run.

    nice -n 10 .venv/bin/python bench/add_model_threads.py --bundle build/demo/bundle --rounds 3

The new LLM's records are one known LLM's records of the demo sample under a new name (the row fit
does not care whose they are). Each round times `add_model` twice in fresh processes, alternating
which goes first: as shipped (`TORCH_THREADS` = 1), and with `TORCH_THREADS` set to torch's default
(one thread per core, what the row fit ran on before). On a busy machine the default's threads wait
for each other; the issue measured 3 min 26 s against 14-17 s for 270 records.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]

RUN = """
import sys, torch, training.add_model as am
if sys.argv[4] == "default":
    am.TORCH_THREADS = torch.get_num_threads()
am.add_model(sys.argv[1], sys.argv[2], "newcomer", sys.argv[3])
print(am.TORCH_THREADS)
"""


def records(sample: Path, llm: str, out: Path, prompts: int) -> Path:
    """`llm`'s per-model scores on the first `prompts` prompts of the sample, renamed 'newcomer',
    beside the other LLMs' scores on those prompts."""
    table = pq.read_table(sample)
    keep = sorted(set(table["prompt"].to_pylist()))[:prompts]
    table = table.filter(pc.is_in(table["prompt"], value_set=__import__("pyarrow").array(keep)))
    renamed = pc.if_else(pc.equal(table["model"], llm), "newcomer", table["model"])
    pq.write_table(table.set_column(table.column_names.index("model"), "model", renamed), out)
    return out


def timed(bundle: str, data: Path, out: Path, variant: str) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN, bundle, str(data), str(out), variant], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - t0, done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/add_model_threads.py", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="build/demo/bundle", help="a bundle of learned LLM rows")
    parser.add_argument("--sample", default=str(REPO / "data" / "sample" / "llmrouter_sample.parquet"))
    parser.add_argument("--llm", default="qwen2.5-7b-instruct", help="whose records the newcomer gets")
    parser.add_argument("--prompts", type=int, default=270)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="add-model-bench-"))
    data = records(Path(args.sample), args.llm, work / "records.parquet", args.prompts)
    walls: dict[str, list[float]] = {"one thread (shipped)": [], "default pool": []}
    threads = {}
    for r in range(args.rounds):
        for name in (list(walls) if r % 2 == 0 else list(walls)[::-1]):
            variant = "default" if name == "default pool" else "shipped"
            wall, threads[name] = timed(args.bundle, data, work / f"out-{r}-{variant}", variant)
            walls[name].append(wall)
    load = os.getloadavg()[0]
    result = {name: {"threads": int(threads[name]), "median_s": statistics.median(v), "runs_s": v}
              for name, v in walls.items()}
    ratio = result["default pool"]["median_s"] / result["one thread (shipped)"]["median_s"]
    print(json.dumps({"bundle": args.bundle, "prompts": args.prompts, "load_1min": load, "results": result,
                      "default_over_one_thread": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
