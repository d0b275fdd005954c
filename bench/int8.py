"""Where the transformer tier's int8 time goes, and which int8 graph pays: variants side by side.

    python -m training.fit examples/specs/demo.json           # build/demo/bundle (MiniLM-L6)
    .venv/bin/python bench/int8.py build/demo/bundle          # writes build/bench/int8.json

From the bundle's `model.onnx` this builds, in a scratch folder:

- `fp32`: the exported graph as the bundle holds it;
- `int8`: per-channel dynamic quantisation of it (`onnxruntime.quantization.quantize_dynamic`,
  what `"export": {"quantize": "int8"}` and `training.quantize.quantize_int8` write);
- `fp32-fused`: the exported graph after ONNX Runtime's offline transformer optimizer
  (`onnxruntime.transformers.optimizer.optimize_model`, model type `bert`: Attention,
  SkipLayerNormalization, BiasGelu);
- `int8-fused`: `fp32-fused`, then the same per-channel dynamic quantisation (QAttention);
- `int8-fused-tensor`: the same with per-tensor scales (faster kernels, worse scores).

Each variant runs in the bundle's own Router (its tokenizer, padding and batches; only the ONNX
session is swapped), at the threads given (`--threads`, default: ONNX Runtime's own, one per
core). Timed: ONNX Runtime alone on the same prepared batches of `--prompts` distinct real prompts,
interleaved over `--rounds` rounds in alternating order (ABBA), so the machine's changing load hits
every variant alike; the ratio to `fp32` is the number to read. Per variant also: ONNX Runtime's
profile summed by operator type (where the time goes), the scores' largest gap to `fp32`, and
pairwise accuracy on the demo spec's validation split.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import QuantType, quantize_dynamic

from routerdb.router import Router

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sql_throughput import prepared_batches, real_prompts, validation_accuracy  # noqa: E402  (bench/ is not a package)

REPO = Path(__file__).resolve().parents[1]


def variants(src: Path, work: Path, num_heads: int, hidden: int) -> dict[str, Path]:
    from onnxruntime.transformers.optimizer import optimize_model

    out = {"fp32": src}
    quantize_dynamic(str(src), str(work / "int8.onnx"), weight_type=QuantType.QInt8, per_channel=True)
    out["int8"] = work / "int8.onnx"
    fused = optimize_model(str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden, opt_level=1)
    fused.save_model_to_file(str(work / "fp32-fused.onnx"))
    out["fp32-fused"] = work / "fp32-fused.onnx"
    # The contrib ops (SkipLayerNormalization, BiasGelu) have no ONNX shape inference: name the type.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    quantize_dynamic(str(out["fp32-fused"]), str(work / "int8-fused.onnx"), weight_type=QuantType.QInt8,
                     per_channel=True, extra_options=extra)
    out["int8-fused"] = work / "int8-fused.onnx"
    quantize_dynamic(str(out["fp32-fused"]), str(work / "int8-fused-tensor.onnx"),
                     weight_type=QuantType.QInt8, per_channel=False, extra_options=extra)
    out["int8-fused-tensor"] = work / "int8-fused-tensor.onnx"
    return out


def session(path: Path, threads: int | None, profile: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_all(sess: ort.InferenceSession, feeds: list[dict]) -> float:
    t0 = time.perf_counter()
    for f in feeds:
        sess.run(["scores"], f)
    return time.perf_counter() - t0


def op_profile(path: Path, feeds: list[dict], threads: int | None, work: Path) -> dict[str, float]:
    """Milliseconds per operator type over one pass of `feeds` (ONNX Runtime's own profiler)."""
    sess = session(path, threads, profile=str(work / f"profile-{path.stem}"))
    run_all(sess, feeds)
    trace = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_op[event["args"]["op_name"]] += event["dur"] / 1000
    return dict(sorted(per_op.items(), key=lambda kv: -kv[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--prompts", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--sample", type=Path, default=REPO / "data" / "sample" / "llmrouter_sample.parquet")
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--num-heads", type=int, default=12)
    parser.add_argument("--hidden-size", type=int, default=384)
    parser.add_argument("--out", type=Path, default=REPO / "build" / "bench" / "int8.json")
    args = parser.parse_args(argv)

    prompts = real_prompts(args.data, args.prompts)
    router = Router(args.bundle, cache_size=0, threads=args.threads)
    feeds = prepared_batches(router, prompts)
    result: dict = {"bundle": str(args.bundle), "prompts": len(prompts), "rounds": args.rounds,
                    "threads": args.threads or "default", "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = variants(args.bundle / "model.onnx", work, args.num_heads, args.hidden_size)
        sessions = {name: session(p, args.threads) for name, p in paths.items()}
        for sess in sessions.values():  # warm-up
            run_all(sess, feeds[:2])
        seconds = dict.fromkeys(sessions, 0.0)
        names = list(sessions)
        for r in range(args.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                seconds[name] += run_all(sessions[name], feeds)
        fp32_scores = None
        for name in names:
            router.session = sessions[name]
            acc = validation_accuracy(args.bundle, args.sample, args.val_fraction, args.seed,
                                      router=router)["accuracy"]
            scores = router.score(prompts)
            fp32_scores = scores if fp32_scores is None else fp32_scores
            gap = np.abs(scores - fp32_scores)
            result[name] = {
                "prompts_per_s": len(prompts) * args.rounds / seconds[name],
                "speedup_vs_fp32": seconds["fp32"] / seconds[name],
                "max_abs_diff_vs_fp32": float(gap.max()), "mean_abs_diff_vs_fp32": float(gap.mean()),
                "val_accuracy": acc,
                "size_mib": paths[name].stat().st_size / 2**20,
                "ms_per_op_type": op_profile(paths[name], feeds, args.threads, work),
            }
            print(f"{name:18s} {result[name]['prompts_per_s']:7.1f} prompts/s  "
                  f"x{result[name]['speedup_vs_fp32']:.2f}  max gap {gap.max():.4f}  val acc {acc:.4f}  "
                  f"top ops {list(result[name]['ms_per_op_type'].items())[:4]}", flush=True)
    result["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
