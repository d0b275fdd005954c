"""One-shot `routerdb score` wall time and `register` latency, this tree beside a baseline, in one run.

    nice -n 10 .venv/bin/python bench/register.py --bundle build/demo/bundle --baseline 225c6cf

The baseline is another git revision's `routerdb/` (extracted with `git archive` into a temporary
directory), so both are measured on the same machine, bundle and load, interleaved round by round
(alternating which goes first): a change in the shared machine's load hits both alike.

- score: wall time of `python -m routerdb.cli score BUNDLE "hi"` in a fresh process (imports,
  loading and checking the bundle, one prompt), median of --rounds; and the first round alone (the
  first process after an export hashes every file; later ones find the verified stamp it left, in a
  cache directory of this run: `ROUTERDB_CACHE`).
- register: in a fresh process, the first `routerdb.register(duckdb.connect(), BUNDLE)` (loads the
  bundle), then --registers more, each on a new in-memory connection and on a new connection to one
  database file (a pool's connections); median and 90th percentile in ms.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Prints {"first": s, "memory": [s...], "file": [s...]} for one variant (its routerdb on PYTHONPATH).
REGISTER = """
import inspect, json, sys, tempfile, time
from pathlib import Path
import duckdb, routerdb, routerdb.duckdb
bundle, n = sys.argv[1], int(sys.argv[2])
# Before routerdb had prefix=, a second connection to a database file had to pass functions=False.
pooled = {} if "prefix" in inspect.signature(routerdb.duckdb.register).parameters else {"functions": False}
t0 = time.perf_counter(); routerdb.register(duckdb.connect(), bundle); first = time.perf_counter() - t0
memory, file, held = [], [], []
db = str(Path(tempfile.mkdtemp()) / "pool.duckdb")
owner = duckdb.connect(db)
routerdb.register(owner, bundle)
for _ in range(n):
    con = duckdb.connect()
    t0 = time.perf_counter(); routerdb.register(con, bundle); memory.append(time.perf_counter() - t0)
    con = duckdb.connect(db)
    t0 = time.perf_counter(); routerdb.register(con, bundle, **pooled); file.append(time.perf_counter() - t0)
    held.append(con)
print(json.dumps({"first": first, "memory": memory, "file": file}))
"""


def baseline_tree(revision: str) -> Path:
    """`routerdb/` of `revision`, extracted into a temporary directory (put first on PYTHONPATH)."""
    root = Path(tempfile.mkdtemp(prefix="routerdb-baseline-"))
    archive = subprocess.run(["git", "archive", revision, "routerdb"], cwd=REPO, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    return root


CACHE = tempfile.mkdtemp(prefix="routerdb-bench-cache-")  # verified stamps: none before the first round


def run(tree: Path, args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "ROUTERDB_CACHE": CACHE}
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {' '.join(args[:3])} failed: {done.stderr[-2000:]}")
    return wall, done.stdout


def ms(values: list[float], q: float) -> float:
    return 1000 * statistics.quantiles(values, n=10)[int(q * 10) - 1] if q < 1 else 1000 * max(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/register.py", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="build/demo/bundle")
    parser.add_argument("--baseline", default="225c6cf", help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--registers", type=int, default=20)
    parser.add_argument("--json", default=str(REPO / "build" / "bench" / "register.json"))
    args = parser.parse_args(argv)
    bundle = str(Path(args.bundle).resolve())
    trees = {"this tree": REPO, f"baseline {args.baseline}": baseline_tree(args.baseline)}
    score: dict[str, list[float]] = {name: [] for name in trees}
    register: dict[str, list[dict]] = {name: [] for name in trees}
    for r in range(args.rounds):
        for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
            score[name].append(run(trees[name], ["-m", "routerdb.cli", "score", bundle, "hi"])[0])
            out = run(trees[name], ["-c", REGISTER, bundle, str(args.registers)])[1]
            register[name].append(json.loads(out.strip().splitlines()[-1]))
    result = {}
    for name in trees:
        memory = [x for run_ in register[name] for x in run_["memory"]]
        file = [x for run_ in register[name] for x in run_["file"]]
        result[name] = {"score_wall_s": statistics.median(score[name]), "score_wall_s_first": score[name][0],
                        "first_register_s": statistics.median(r["first"] for r in register[name]),
                        "register_memory_ms_p50": ms(memory, 0.5), "register_memory_ms_p90": ms(memory, 0.9),
                        "register_file_ms_p50": ms(file, 0.5), "register_file_ms_p90": ms(file, 0.9)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"bundle": bundle, "rounds": args.rounds,
                                           "registers": args.registers, "results": result}, indent=2))
    for key in next(iter(result.values())):
        print(f"{key:26s} " + "   ".join(f"{name}: {values[key]:.4g}" for name, values in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
