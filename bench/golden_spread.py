"""How far the golden scores move when nothing but the machine changes (issue 22).

Trains the shipped specs exactly as tests/training/test_golden.py does, once per setting below, each
in a fresh process (thread count, and the SIMD level of torch's own kernels, oneDNN and MKL capped
through their environment variables), and prints the largest absolute difference of every setting
from the recorded golden scores and from the first setting. The golden test's tolerance is set a
decade above the largest difference seen here (docs/reliability.md records the run).

    python bench/golden_spread.py            # ~15 s a setting on 2 idle cores
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.training.test_golden import GOLDEN  # noqa: E402

# name -> (torch threads, environment); the variables are read when torch / MKL / oneDNN load
SETTINGS: dict[str, tuple[int, dict[str, str]]] = {
    "1 thread": (1, {}),
    "2 threads": (2, {}),
    "ATen avx2": (1, {"ATEN_CPU_CAPABILITY": "avx2"}),
    "ATen scalar": (1, {"ATEN_CPU_CAPABILITY": "default"}),
    "MKL + oneDNN avx2": (1, {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}),
    "all capped at SSE4": (2, {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                               "ONEDNN_MAX_CPU_ISA": "SSE41"}),
}
RUN = """
import json, sys, tempfile
from pathlib import Path
from tests.training.test_golden import scores
with tempfile.TemporaryDirectory() as tmp:
    json.dump(scores(Path(tmp), threads=int(sys.argv[1])), open(sys.argv[2], "w"))
"""


def run(threads: int, env: dict[str, str], out: Path) -> dict:
    with tempfile.TemporaryDirectory() as cwd:  # the frozen spec's prompt cache starts cold, as in the test
        subprocess.run([sys.executable, "-c", RUN, str(threads), str(out)], check=True, cwd=cwd,
                       env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", **env})
    return json.loads(out.read_text())


def max_difference(a: dict, b: dict) -> dict[str, float]:
    return {name: float(np.abs(np.subtract(a[name]["scores"], b[name]["scores"])).max()) for name in b}


def main() -> None:
    golden = json.loads(GOLDEN.read_text())
    runs, worst = {}, 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (threads, env)) in enumerate(SETTINGS.items()):
            runs[name] = run(threads, env, Path(tmp) / f"{i}.json")
            first = runs[next(iter(runs))]
            vs_golden, vs_first = max_difference(runs[name], golden), max_difference(runs[name], first)
            worst = max(worst, *vs_golden.values(), *vs_first.values())
            print(f"{name:20s} vs golden " + " ".join(f"{k}={v:.1e}" for k, v in vs_golden.items())
                  + " | vs first " + " ".join(f"{k}={v:.1e}" for k, v in vs_first.items()), flush=True)
    print(f"largest difference: {worst:.2e}; a decade above: {worst * 10:.1e}")


if __name__ == "__main__":
    main()
