"""What `head_tail` truncation costs beside `head`, and beside the encoder, side by side in one run.

    nice -n 10 .venv/bin/python bench/tokenizer.py --bundle build/demo/bundle

head_tail tokenises every prompt like head, then tokenises again, whole, only the prompts that
were cut (routerdb/tokenizer.py). On the same P real prompts (bench/sql_throughput.py's seeded
sample) it times `PromptTokenizer.token_ids` in Router-sized batches for head and head_tail,
interleaved over --rounds rounds (alternating which goes first, so the shared machine's load hits
both alike), and ONNX Runtime alone encoding the same prompts (`ort_limit`): the extra
tokenisation is then a share of what routing one prompt costs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sql_throughput import REPO, ort_limit, real_prompts  # noqa: E402

from routerdb.router import Router  # noqa: E402
from routerdb.tokenizer import PromptTokenizer  # noqa: E402


def tokenise_seconds(tok: PromptTokenizer, prompts: list[str], batch: int) -> float:
    t0 = time.perf_counter()
    for start in range(0, len(prompts), batch):
        tok.token_ids(prompts[start:start + batch])
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/tokenizer.py", description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", default="build/demo/bundle")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--prompts", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", default=str(REPO / "build" / "bench" / "tokenizer.json"))
    args = parser.parse_args(argv)

    prompts = real_prompts(Path(args.data), args.prompts)
    router = Router(args.bundle)
    m = router.bundle.manifest
    toks = {t: PromptTokenizer.from_file(router.bundle.tokenizer_path, m["max_length"],
                                         m["tokenizer"]["pad_id"], "right", t) for t in ("head", "head_tail")}
    cut = sum(len(x) >= m["max_length"] for x in toks["head"].token_ids(prompts))
    times: dict[str, list[float]] = {t: [] for t in toks}
    for r in range(args.rounds):
        for t in (("head", "head_tail") if r % 2 == 0 else ("head_tail", "head")):
            times[t].append(tokenise_seconds(toks[t], prompts, router.batch_size))
    encoder = ort_limit(router, prompts)
    head, both = statistics.median(times["head"]), statistics.median(times["head_tail"])
    result = {"prompts": len(prompts), "cut_prompts": cut, "max_length": m["max_length"],
              "rounds": args.rounds, "head_s": head, "head_tail_s": both, "ratio": both / head,
              "extra_ms_per_prompt": 1000 * (both - head) / len(prompts), "encoder_s": encoder,
              "extra_share_of_encoder": (both - head) / encoder}
    print(f"{len(prompts)} prompts, {cut} longer than {m['max_length']} tokens (cut)")
    print(f"tokenise, median of {args.rounds}: head {head:.3f} s, head_tail {both:.3f} s "
          f"(ratio {both / head:.2f}, +{result['extra_ms_per_prompt']:.3f} ms per prompt)")
    print(f"ONNX Runtime alone, same prompts: {encoder:.1f} s; head_tail's extra tokenising is "
          f"{100 * result['extra_share_of_encoder']:.2f} % of it")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
