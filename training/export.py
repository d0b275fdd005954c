"""Merge -> ONNX -> verify against torch -> write the bundle.

The exported graph is `RouterNet` with the fine-tuning adapters merged into a plain
full-precision encoder: (input_ids, attention_mask, features, model_embeddings) -> scores [P, M],
with named dynamic axes. The bundle is written only after ONNX Runtime, run through routerdb's
own torch-free `Router` on the finished bundle, matches torch on real prompts.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib.metadata as md
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from routerdb.bundle import models_table, write_bundle
from training.encoder.finetuning import export_encoder
from training.model.network import RouterNet

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "features", "model_embeddings")
DYNAMIC_AXES = {
    "input_ids": {0: "prompts", 1: "tokens"},
    "attention_mask": {0: "prompts", 1: "tokens"},
    "features": {0: "prompts"},
    "model_embeddings": {0: "models"},
    "scores": {0: "prompts", 1: "models"},
}
VERSIONED = ("routerdb", "torch", "transformers", "peft", "onnx", "onnxruntime-gpu", "onnxruntime",
             "tokenizers", "bitsandbytes")


class ExportError(RuntimeError):
    """The exported graph does not reproduce the torch model; nothing was written."""


def library_versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def merged_graph(model) -> RouterNet:
    """A CPU, eval-mode, full-precision RouterNet with adapters merged: what ONNX gets."""
    net = model.net
    encoder = export_encoder(model.config.finetuning, model.encoder_ref, net.encoder)
    return RouterNet(encoder, copy.deepcopy(net.pooling), copy.deepcopy(net.feature_norm),
                     copy.deepcopy(net.head)).cpu().float().eval()


def export_bundle(model, bundle_dir: str | Path, verify_prompts: Sequence[str], *,
                  spec: dict | None = None, opset: int = 17, tolerance: float = 1e-4,
                  quantize: str = "none") -> Path:
    """Export `model` (a trained TransformerEmbeddingModel) to a verified bundle directory."""
    if not verify_prompts:
        raise ValueError("export needs at least one prompt to verify ONNX against torch")
    prompts = list(verify_prompts)
    graph = merged_graph(model)
    expected = model.score_matrix(prompts)  # the model as trained (adapters unmerged, maybe 4-bit)
    merged_scores = _torch_scores(model, graph, prompts)
    merge_gap = float(np.abs(merged_scores - expected).max())
    quantized_base = model.config.finetuning.kind == "qlora"
    reference = merged_scores if quantized_base else expected
    log.info("merged vs trained model: max |diff| %.2e over %d prompts", merge_gap, len(prompts))
    embeddings = model.model_embeddings.detach().float().cpu().numpy()

    def write_files(tmp: Path) -> dict[str, str]:
        _export_onnx(model, graph, prompts, tmp / "model.onnx", opset)
        if quantize == "int8":
            _quantize_int8(tmp / "model.onnx")
        (tmp / "tokenizer.json").write_text(model.tokenizer.json, encoding="utf-8")
        import pyarrow.parquet as pq

        pq.write_table(models_table(model.model_names, embeddings), tmp / "models.parquet")
        files = {"model.onnx": "model.onnx", "tokenizer.json": "tokenizer.json",
                 "models.parquet": "models.parquet"}
        if model.embedding_model is not None:  # lets `python -m training.add_model` embed new LLMs
            from training.llm_embeddings.embedder import CONFIG_FILE, WEIGHTS_FILE

            model.embedding_model.save(tmp)
            files.update({CONFIG_FILE: CONFIG_FILE, WEIGHTS_FILE: WEIGHTS_FILE})
        return files

    def verify(tmp: Path) -> None:
        from routerdb.scorer import Router

        got = Router(tmp, providers=["CPUExecutionProvider"], cache_size=0).score(prompts)
        diff = float(np.abs(got - reference).max())
        limit = tolerance if quantize == "none" else 0.25
        if not np.isfinite(diff) or diff > limit:
            raise ExportError(
                f"ONNX Runtime scores differ from torch by up to {diff:.3g} (allowed {limit:g}) on "
                f"{len(prompts)} prompts; the bundle was not written. Try another export.opset, or "
                "report the encoder architecture."
            )
        log.info("verified: ONNX Runtime vs torch max |diff| %.2e over %d prompts", diff, len(prompts))
        against = "merged full-precision model" if quantized_base else "trained model"
        return {"verification": {"max_abs_diff": diff, "prompts": len(prompts), "tolerance": limit,
                                 "against": against}}

    manifest = _manifest(model, spec, opset, quantize, merge_gap, quantized_base)
    return write_bundle(bundle_dir, manifest, write_files, verify=verify)


@torch.no_grad()
def _torch_scores(model, graph: RouterNet, prompts: list[str]) -> np.ndarray:
    batch = model.tokenizer(prompts)
    features = model.features_tensor(prompts).cpu()
    emb = model.model_embeddings.detach().float().cpu()
    out = graph(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask), features, emb)
    return out.numpy()


def _export_onnx(model, graph: RouterNet, prompts: list[str], path: Path, opset: int) -> None:
    sample = prompts[: max(2, min(4, len(prompts)))] * (2 if len(prompts) < 2 else 1)
    batch = model.tokenizer(sample)
    args = (torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask),
            model.features_tensor(sample).cpu(), model.model_embeddings.detach().float().cpu())
    with warnings.catch_warnings():
        # Tracer notes about Python-level shape checks; the export is verified on prompts of
        # other lengths and batch sizes than the trace sample, so a baked-in shape would fail there.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*advanced indexing.*")
        torch.onnx.export(graph, args, str(path), input_names=list(INPUTS), output_names=["scores"],
                          dynamic_axes=DYNAMIC_AXES, opset_version=opset, dynamo=False,
                          do_constant_folding=True)


def _quantize_int8(path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = path.with_suffix(".int8.onnx")
    # per_channel keeps sentence embeddings close to fp32 (cosine ~0.99); per-tensor damages them.
    quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    tmp.replace(path)


def _manifest(model, spec, opset, quantize, merge_gap, quantized_base) -> dict:
    described = model.describe()
    return {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "library_versions": library_versions(),
        "spec": spec if spec is not None else described["config"],
        "encoder": described["encoder"],
        "finetuning": {
            "kind": model.config.finetuning.kind,
            "merged": "adapters merged into a full-precision copy of the base weights"
            if quantized_base else "adapters (if any) merged into the encoder weights",
            "max_abs_diff_merged_vs_trained": merge_gap,
        },
        "pooling": described["pooling"]["mode"],
        "pooling_detail": described["pooling"],
        "max_length": model.tokenizer.max_length,
        "tokenizer": described["tokenizer"],
        "feature_names": described["feature_names"],
        "feature_stats": described["feature_stats"],
        "models": {"count": len(model.model_names), "embedding_dim": int(model.model_embeddings.shape[1])},
        "llm_embeddings": described.get("embedding_model") or {"kind": model.config.embedding_spec.kind},
        "graph": {"inputs": list(INPUTS), "outputs": ["scores"], "opset": opset, "quantize": quantize,
                  "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in DYNAMIC_AXES.items()}},
        "history": described["history"],
    }


def quantize_bundle(source: str | Path, target: str | Path, verify_prompts: Sequence[str], *,
                    tolerance: float = 0.25) -> Path:
    """An int8 copy of a full-precision bundle (per-channel dynamic quantisation of `model.onnx`).

    The same quantisation as `export_bundle(..., quantize="int8")`, without retraining. The copy is
    written only if its scores stay within `tolerance` of the source bundle's on `verify_prompts`.
    """
    import shutil

    from routerdb.bundle import Bundle
    from routerdb.scorer import Router

    src = Bundle.load(source)
    if src.manifest["graph"].get("quantize", "none") != "none":
        raise ValueError(f"{src.path} is already quantised ({src.manifest['graph']['quantize']}); "
                         "quantize a full-precision bundle.")
    files = {name: entry["path"] for name, entry in src.manifest["files"].items()}
    manifest = {k: v for k, v in src.manifest.items() if k not in ("format", "format_version", "files")}
    manifest["graph"] = {**manifest["graph"], "quantize": "int8"}

    def write_files(tmp: Path) -> dict[str, str]:
        for rel in files.values():
            shutil.copyfile(src.path / rel, tmp / rel)
        _quantize_int8(tmp / files["model.onnx"])
        return files

    def verify(tmp: Path) -> dict:
        cpu = ["CPUExecutionProvider"]
        prompts = list(verify_prompts)
        want = Router(src, providers=cpu, cache_size=0).score(prompts)
        diff = float(np.abs(Router(tmp, providers=cpu, cache_size=0).score(prompts) - want).max())
        if not np.isfinite(diff) or diff > tolerance:
            raise ExportError(f"int8 scores differ from the full-precision bundle's by up to {diff:.3g} "
                              f"(allowed {tolerance:g}); the quantised bundle was not written.")
        return {"quantization": {"from_bundle_digest": src.digest, "max_abs_diff_vs_fp32": diff,
                                 "prompts": len(verify_prompts)}}

    return write_bundle(target, manifest, write_files, verify=verify)


def main(argv: list[str] | None = None) -> int:
    """`python -m training.export BUNDLE OUT --quantize int8`: an int8 copy of a trained bundle."""
    import argparse
    import sys

    import duckdb

    parser = argparse.ArgumentParser(prog="python -m training.export", description=main.__doc__)
    parser.add_argument("bundle", help="a full-precision bundle (e.g. build/demo/bundle)")
    parser.add_argument("out", help="where to write the quantised bundle")
    parser.add_argument("--quantize", choices=["int8"], required=True)
    parser.add_argument("--prompts", default="data/sample/llmrouter_sample.parquet",
                        help="Parquet or CSV with a `prompt` column, to verify the copy against the bundle")
    parser.add_argument("--verify-prompts", type=int, default=64, help="how many distinct prompts")
    args = parser.parse_args(argv)
    try:
        prompts = [r[0] for r in duckdb.sql("SELECT DISTINCT prompt FROM query_table(?) WHERE prompt "
                                            "IS NOT NULL ORDER BY prompt LIMIT ?",
                                            params=[args.prompts, args.verify_prompts]).fetchall()]
        out = quantize_bundle(args.bundle, args.out, prompts)
    except (ValueError, duckdb.Error, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} (int8, verified on {len(prompts)} prompts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
