"""int8 quantisation of an exported graph: per-channel dynamic quantisation with ONNX Runtime,
verified against the full-precision bundle before it is written."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnxruntime.quantization import QuantType, quantize_dynamic

from routerdb.bundle import Bundle, write_bundle
from routerdb.router import Router
from training.artifacts import ExportError


def quantize_int8(path: Path) -> None:
    """Replace the ONNX file at `path` by its int8 (per-channel dynamic) quantisation."""
    tmp = path.with_suffix(".int8.onnx")
    # per_channel keeps sentence embeddings close to fp32 (cosine ~0.99); per-tensor damages them.
    quantize_dynamic(str(path), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
    tmp.replace(path)


def quantize_bundle(source: str | Path, target: str | Path, verify_prompts: Sequence[str], *,
                    tolerance: float = 0.25) -> Path:
    """An int8 copy of a full-precision bundle (per-channel dynamic quantisation of `model.onnx`).

    The same quantisation as `export_bundle(..., quantize="int8")`, without retraining. The copy is
    written only if its scores stay within `tolerance` of the source bundle's on `verify_prompts`.
    """
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
        quantize_int8(tmp / files["model.onnx"])
        return files

    def verify(tmp: Path) -> dict:
        prompts = list(verify_prompts)
        want = Router.for_verification(src).score(prompts)
        diff = float(np.abs(Router.for_verification(tmp).score(prompts) - want).max())
        if not np.isfinite(diff) or diff > tolerance:
            raise ExportError(f"int8 scores differ from the full-precision bundle's by up to {diff:.3g} "
                              f"(allowed {tolerance:g}); the quantised bundle was not written.")
        return {"quantization": {"from_bundle_digest": src.digest, "max_abs_diff_vs_fp32": diff,
                                 "prompts": len(verify_prompts)}}

    return write_bundle(target, manifest, write_files, verify=verify)
