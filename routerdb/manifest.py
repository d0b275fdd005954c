"""What a bundle's `manifest.json` must say, and its own checksum.

`check_manifest` checks every field the runtime relies on before anything else of the bundle is
read: the format and its version, the files, the tokenizer settings (`max_length`, `pad_id`,
padding side, truncation), the prompt features (names in this routerdb's order, a features
version this routerdb computes), the graph's declared inputs and outputs, and the LLM count and
vector width. Each problem is reported with what was received and what is allowed.

A manifest written by this routerdb carries `manifest_sha256`, the sha256 of its other fields
(`manifest_checksum`): a hand edit (a new `max_length`, another `pad_id`) fails at load instead of
at the first query. Bundles written before the field existed load without it; their fields are
checked all the same. Like the file checksums it detects damage and edits, it is no signature.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from routerdb.features import FEATURE_NAMES, FeatureStats
from routerdb.tokenizer import TRUNCATIONS

FORMAT = "routerdb-bundle"
FORMAT_VERSION = 1
REQUIRED_FILES = ("model.onnx", "tokenizer.json", "models.parquet")
MAX_TOKENS = 1 << 20  # the longest max_length a manifest may give; real encoders take 512 to 32k
CHECKSUM = "manifest_sha256"
GRAPH_INPUTS = ("input_ids", "attention_mask", "features", "model_embeddings")
GRAPH_OUTPUT = "scores"
PROMPT_VECTORS = "prompt_vectors"  # optional output: what the head reads, [P, H + F]
RE_EXPORT = "The manifest is damaged or was not written by routerdb; re-export the bundle."


class ManifestError(ValueError):
    """A manifest that this routerdb cannot use."""


def manifest_checksum(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest's fields other than `manifest_sha256` (canonical JSON)."""
    body = {k: v for k, v in manifest.items() if k != CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def manifest_text(manifest: Mapping[str, Any]) -> str:
    """The manifest as written to disk: JSON with its checksum (values JSON cannot hold as text)."""
    body = json.loads(json.dumps(dict(manifest), default=str))
    body[CHECKSUM] = manifest_checksum(body)
    return json.dumps(body, indent=2, sort_keys=True)


def check_manifest(manifest: Any) -> None:
    """Raise ManifestError naming every field that is missing, out of range or inconsistent."""
    _check_format(manifest)
    problems = [*_tokenizer_problems(manifest), *_feature_problems(manifest), *_graph_problems(manifest)]
    if problems:
        raise ManifestError(f"{'; '.join(problems)}. {RE_EXPORT}")
    _check_checksum(manifest)


def check_llm_table(manifest: Mapping[str, Any], count: int, width: int) -> None:
    """The manifest's `models` entry (if any) must describe the LLM table actually in the bundle."""
    described = manifest.get("models")
    if described is None:
        return
    if not isinstance(described, dict) or described.get("count", count) != count \
            or described.get("embedding_dim", width) != width:
        raise ManifestError(f"models {described!r:.120} (allowed: the LLM table's own count {count} and "
                            f"embedding_dim {width}); the manifest and models.parquet come from different "
                            "exports. Re-export the bundle.")


def is_int(value: Any, low: int, high: int | None = None) -> bool:
    """An int (not a bool) in [low, high]."""
    return (isinstance(value, int) and not isinstance(value, bool) and value >= low
            and (high is None or value <= high))


def _check_format(manifest: Any) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ManifestError(f"format is {got!r:.80}, expected {FORMAT!r}; not a routerdb bundle.")
    version = manifest.get("format_version")
    if not is_int(version, 1):
        raise ManifestError(f"bundle format version {version!r:.40}; allowed: an integer from 1 to "
                            f"{FORMAT_VERSION}. The manifest is damaged; re-export the bundle.")
    if version > FORMAT_VERSION:
        raise ManifestError(
            f"bundle format version {version!r}, this routerdb reads versions 1 to "
            f"{FORMAT_VERSION}. Upgrade routerdb (`pip install -U routerdb`) to read a newer bundle.")
    if not isinstance(manifest.get("files"), dict):
        raise ManifestError("'files' must be a mapping of file name to path and sha256.")
    missing = [name for name in REQUIRED_FILES if name not in manifest["files"]]
    if missing:
        raise ManifestError(f"the manifest lists no {missing[0]!r}; a bundle needs {list(REQUIRED_FILES)}. "
                            "Re-export the bundle.")


def _tokenizer_problems(manifest: dict) -> list[str]:
    problems = []
    max_length = manifest.get("max_length")
    if not is_int(max_length, 1, MAX_TOKENS):
        problems.append(f"max_length {max_length!r:.80} (allowed: an integer from 1 to {MAX_TOKENS})")
    tokenizer = manifest.get("tokenizer")
    if not (isinstance(tokenizer, dict) and is_int(tokenizer.get("pad_id"), 0, 2**31 - 1)
            and tokenizer.get("padding_side") in ("right", "left")
            and tokenizer.get("truncation", "head") in TRUNCATIONS):
        problems.append(f"tokenizer {tokenizer!r:.80} (allowed: {{'pad_id': a token id >= 0, "
                        f"'padding_side': 'right' or 'left', 'truncation': one of {', '.join(TRUNCATIONS)} "
                        "(optional, default head)})")
    elif tokenizer.get("max_length", max_length) != max_length:
        problems.append(f"tokenizer max_length {tokenizer['max_length']!r:.40} but max_length "
                        f"{max_length!r:.40} (allowed: the same number in both)")
    return problems


def _feature_problems(manifest: dict) -> list[str]:
    names = manifest.get("feature_names", [])
    stats = manifest.get("feature_stats")
    if names in ([], None) and stats is None:
        return []  # a router without prompt features
    if names != list(FEATURE_NAMES):
        return [f"feature_names {names!r:.80} (allowed: the {len(FEATURE_NAMES)} prompt features of this "
                f"routerdb in their order, {FEATURE_NAMES[0]!r} first)"]
    try:
        FeatureStats.from_dict(stats)
    except (ValueError, TypeError) as exc:
        return [f"feature_stats: {str(exc).removeprefix('FeatureStats.from_dict: ')}"]
    return []


def _graph_problems(manifest: dict) -> list[str]:
    graph = manifest.get("graph")
    if graph is None:
        return []
    inputs = graph.get("inputs") if isinstance(graph, dict) else None
    outputs = graph.get("outputs") if isinstance(graph, dict) else None
    if not (isinstance(inputs, list) and set(inputs) <= set(GRAPH_INPUTS) and "input_ids" in inputs
            and isinstance(outputs, list) and GRAPH_OUTPUT in outputs):
        return [f"graph {graph!r:.120} (allowed: 'inputs' among {list(GRAPH_INPUTS)} with 'input_ids', "
                f"'outputs' with {GRAPH_OUTPUT!r})"]
    return []


def _check_checksum(manifest: dict) -> None:
    recorded = manifest.get(CHECKSUM)
    if recorded is None:
        return  # written before manifests carried their checksum: the fields were checked above
    if recorded != manifest_checksum(manifest):
        raise ManifestError(
            f"the manifest's fields do not match its {CHECKSUM} ({str(recorded)[:12]}...): manifest.json was "
            "edited or damaged after export. Re-export the bundle (a setting such as max_length belongs "
            "in the training spec, not in the manifest).")
