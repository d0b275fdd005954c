"""Merge -> ONNX -> verify against torch -> write the bundle.

The exported graph is `RouterNet` with the fine-tuning adapters merged into a plain
full-precision encoder: (input_ids, attention_mask, features, model_embeddings) -> scores [P, M],
and the prompt vectors the head reads, prompt_vectors [P, H + F], with named dynamic axes. The
head's weights are written beside it (`head.safetensors`), so that `training.add_model` can fit a
new LLM's row of the table against the exact head the graph holds. The bundle is written only
after ONNX Runtime, run through routerdb's own torch-free `Router` on the finished bundle, matches
torch on real prompts.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file
from torch import nn

from routerdb.bundle import models_table, write_bundle
from training import command
from training.encoder.finetuning import export_encoder
from training.formats import EMBEDDER_CONFIG, EMBEDDER_WEIGHTS, library_versions
from training.model.network import RouterNet
from training.model.seams import Exportable
from training.quantize import quantize_bundle, quantize_int8
from training.verification import ExportError, bundle_scores, max_gap

log = logging.getLogger(__name__)

INPUTS = ("input_ids", "attention_mask", "features", "model_embeddings")
DYNAMIC_AXES = {
    "input_ids": {0: "prompts", 1: "tokens"},
    "attention_mask": {0: "prompts", 1: "tokens"},
    "features": {0: "prompts"},
    "model_embeddings": {0: "models"},
    "scores": {0: "prompts", 1: "models"},
    "prompt_vectors": {0: "prompts"},
}
OUTPUTS = ("scores", "prompt_vectors")
HEAD_FILE = "head.safetensors"  # the scoring head's weights (add_model fits new LLM rows against it)


class GraphOutputs(nn.Module):
    """What the ONNX graph computes: RouterNet's scores, and the prompt vectors its head reads."""

    def __init__(self, net: RouterNet):
        super().__init__()
        self.net = net

    def forward(self, input_ids, attention_mask, features, llm_embeddings):
        prompt = self.net.prompt_vector(self.net.embed(input_ids, attention_mask).float(), features)
        return self.net.head(prompt, llm_embeddings), prompt  # [P, M], [P, H + F]


def merged_graph(model: Exportable) -> RouterNet:
    """A CPU, eval-mode, full-precision RouterNet with adapters merged: what ONNX gets."""
    net = model.net
    encoder = export_encoder(model.config.finetuning, model.encoder_ref, net.encoder)
    return RouterNet(encoder, copy.deepcopy(net.pooling), copy.deepcopy(net.feature_norm),
                     copy.deepcopy(net.head)).cpu().float().eval()


def export_bundle(model: Exportable, bundle_dir: str | Path, verify_prompts: Sequence[str], *,
                  spec: dict | None = None, opset: int = 17, tolerance: float = 1e-4,
                  quantize: str = "none") -> Path:
    """Export `model` (a trained router, e.g. TransformerEmbeddingModel) to a verified bundle directory."""
    if not verify_prompts:
        raise ValueError("export needs at least one prompt to verify ONNX against torch")
    prompts = list(verify_prompts)
    graph = merged_graph(model)
    expected = model.score_matrix(prompts)  # the model as trained (adapters unmerged, maybe 4-bit)
    merged_scores = _torch_scores(model, graph, prompts)
    merge_gap = max_gap(merged_scores, expected)
    quantized_base = model.config.finetuning.kind == "qlora"
    reference = merged_scores if quantized_base else expected
    log.info("merged vs trained model: max |diff| %.2e over %d prompts", merge_gap, len(prompts))
    embeddings = model.llm_embeddings.detach().float().cpu().numpy()

    def write_files(tmp: Path) -> dict[str, str]:
        _export_onnx(model, graph, prompts, tmp / "model.onnx", opset)
        if quantize == "int8":
            quantize_int8(tmp / "model.onnx")
        (tmp / "tokenizer.json").write_text(model.tokenizer.json, encoding="utf-8")
        pq.write_table(models_table(model.llm_names, embeddings), tmp / "models.parquet")
        save_file({k: v.detach().float().cpu().contiguous() for k, v in graph.head.state_dict().items()},
                  str(tmp / HEAD_FILE))
        files = {"model.onnx": "model.onnx", "tokenizer.json": "tokenizer.json",
                 "models.parquet": "models.parquet", HEAD_FILE: HEAD_FILE}
        if model.llm_embedder is not None:  # lets `python -m training.add_model` embed new LLMs
            model.llm_embedder.save(tmp)
            files.update({EMBEDDER_CONFIG: EMBEDDER_CONFIG, EMBEDDER_WEIGHTS: EMBEDDER_WEIGHTS})
        return files

    def verify(tmp: Path) -> dict:
        diff = max_gap(bundle_scores(tmp, prompts), reference)
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
def _torch_scores(model: Exportable, graph: RouterNet, prompts: list[str]) -> np.ndarray:
    batch = model.tokenizer(prompts)
    features = model.features_tensor(prompts).cpu()
    emb = model.llm_embeddings.detach().float().cpu()
    out = graph(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask), features, emb)
    return out.numpy()


def _export_onnx(model: Exportable, graph: RouterNet, prompts: list[str], path: Path, opset: int) -> None:
    sample = prompts[: max(2, min(4, len(prompts)))] * (2 if len(prompts) < 2 else 1)
    batch = model.tokenizer(sample)
    args = (torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask),
            model.features_tensor(sample).cpu(), model.llm_embeddings.detach().float().cpu())
    with warnings.catch_warnings():
        # Tracer notes about Python-level shape checks; the export is verified on prompts of
        # other lengths and batch sizes than the trace sample, so a baked-in shape would fail there.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*advanced indexing.*")
        torch.onnx.export(GraphOutputs(graph), args, str(path), input_names=list(INPUTS),
                          output_names=list(OUTPUTS),
                          dynamic_axes=DYNAMIC_AXES, opset_version=opset, dynamo=False,
                          do_constant_folding=True)


def graph_inputs(model: Exportable) -> list[str]:
    """The inputs the exported graph takes: without prompt features (`use_prompt_features` false)
    the exporter drops the unused `features` input, and the manifest must say so."""
    return [name for name in INPUTS if name != "features" or model.net.feature_norm is not None]


def _manifest(model: Exportable, spec, opset, quantize, merge_gap, quantized_base) -> dict:
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
        "models": {"count": len(model.llm_names), "embedding_dim": int(model.llm_embeddings.shape[1])},
        "llm_embeddings": described.get("embedding_model") or {"kind": model.config.embedding_spec.kind},
        "graph": {"inputs": graph_inputs(model), "outputs": list(OUTPUTS), "opset": opset,
                  "quantize": quantize,
                  "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in DYNAMIC_AXES.items()}},
        "head": {"file": HEAD_FILE, "kind": model.config.head.kind,
                 "prompt_dim": int(model.net.head.prompt_dim), "llm_dim": int(model.llm_embeddings.shape[1])},
        "history": described["history"],
        "dropped_llms": described["dropped_llms"],  # LLMs in the data left out of the router, and why
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", help="a full-precision bundle (e.g. build/demo/bundle)")
    parser.add_argument("out", help="where to write the quantised bundle")
    parser.add_argument("--quantize", choices=["int8"], required=True)
    parser.add_argument("--prompts", default="data/sample/llmrouter_sample.parquet",
                        help="Parquet or CSV with a `prompt` column, to verify the copy against the bundle")
    parser.add_argument("--verify-prompts", type=int, default=64, help="how many distinct prompts")


def run(args: argparse.Namespace) -> int:
    """An int8 copy of a trained bundle, verified on `--verify-prompts` prompts of `--prompts`."""
    prompts = distinct_prompts(args.prompts, args.verify_prompts)
    out = quantize_bundle(args.bundle, args.out, prompts)
    print(f"wrote {out} (int8, verified on {len(prompts)} prompts)")
    return command.OK


def distinct_prompts(path: str, limit: int) -> list[str]:
    """The first `limit` distinct prompts (sorted) of a Parquet or CSV file's `prompt` column."""
    try:
        return [r[0] for r in duckdb.sql("SELECT DISTINCT prompt FROM query_table(?) WHERE prompt IS NOT "
                                         "NULL ORDER BY prompt LIMIT ?", params=[path, limit]).fetchall()]
    except duckdb.Error as exc:  # a bad input file, not a failure of the export
        raise ValueError(f"--prompts {path!r}: {exc}. Pass a Parquet or CSV file with a `prompt` "
                         "column.") from None


COMMAND = command.Command("export", "an int8 copy of a trained bundle (export BUNDLE OUT --quantize int8)",
                          add_arguments, run, description=run.__doc__)


def main(argv: list[str] | None = None) -> int:
    """`python -m training.export`: the same as `routerdb-train export`."""
    return command.main(COMMAND, argv, prog="python -m training.export")


if __name__ == "__main__":
    raise SystemExit(main())
