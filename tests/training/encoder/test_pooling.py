"""Pooling (training/encoder/pooling.py): padded and unpadded inputs pool identically, for every mode and
padding side and for tiny BERT / Llama / GPT-2; the mode is detected from the encoder's files,
can be overridden in the spec, and is recorded with the model and in the bundle."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from routerdb.tokenizer import PromptTokenizer
from tests import tiny_models
from training.encoder.pooling import MODES, Pooling, detect_pooling
from training.encoder.pretrained import load_base_model, load_config, load_tokenizer, resolve_encoder
from training.model.network import RouterNet

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

PROMPTS = ["Hi.", "Write a Python function that reverses a linked list, then explain its cost in words."]


def _padded(hidden: torch.Tensor, length: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Place hidden [1, n, H] in a [1, length, H] row padded with garbage on `side`."""
    n = hidden.shape[1]
    out = torch.randn(1, length, hidden.shape[2]) * 100  # pads hold junk that must not leak in
    mask = torch.zeros(1, length, dtype=torch.int64)
    cols = slice(0, n) if side == "right" else slice(length - n, length)
    out[:, cols], mask[:, cols] = hidden, 1
    return out, mask


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("normalize", [False, True])
def test_pooling_ignores_padding_on_either_side(mode, side, normalize):
    torch.manual_seed(0)
    pool = Pooling(mode, normalize)
    hidden = torch.randn(1, 5, 8)
    alone = pool(hidden, torch.ones(1, 5, dtype=torch.int64))
    padded = pool(*_padded(hidden, 9, side))
    torch.testing.assert_close(padded, alone, rtol=0, atol=1e-6)


def test_pooling_picks_the_right_token():
    hidden = torch.arange(12, dtype=torch.float32).reshape(1, 4, 3)
    mask = torch.tensor([[0, 1, 1, 0]])  # one pad on each side
    assert Pooling("cls")(hidden, mask).tolist() == [[3.0, 4.0, 5.0]]
    assert Pooling("last_token")(hidden, mask).tolist() == [[6.0, 7.0, 8.0]]
    assert Pooling("mean")(hidden, mask).tolist() == [[4.5, 5.5, 6.5]]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match=r"one of \('mean', 'cls', 'last_token'\), got 'max'"):
        Pooling("max")


# --- through the real tiny encoders ----------------------------------------------------------------


@pytest.fixture(scope="module")
def left_padding_encoders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("left")
    return {kind: tiny_models.build(kind, root / kind, padding_side="left") for kind in tiny_models.KINDS}


def _embed_both_ways(encoder_dir, mode: str, tokenizer=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled vectors of PROMPTS in one padded batch, and each prompt alone (no padding)."""
    ref = resolve_encoder(str(encoder_dir))
    tok = tokenizer or load_tokenizer(ref, 64)
    net = RouterNet(load_base_model(ref).eval(), Pooling(mode), None, None)

    def embed(prompts):
        batch = tok(prompts)
        with torch.no_grad():
            return net.embed(torch.from_numpy(batch.input_ids), torch.from_numpy(batch.attention_mask))

    batch = tok(PROMPTS)
    assert batch.attention_mask.min() == 0  # the short prompt really is padded
    return embed(PROMPTS), torch.cat([embed([p]) for p in PROMPTS])


CASES = [("bert", "mean"), ("bert", "cls"), ("llama", "last_token"), ("llama", "mean"),
         ("gpt2", "last_token"), ("gpt2", "mean")]


@pytest.mark.parametrize("tokenizer_side", ["right", "left"])
@pytest.mark.parametrize("kind, mode", CASES)
def test_padded_batch_pools_like_single_prompts(tiny_encoders, left_padding_encoders, kind, mode,
                                                tokenizer_side):
    encoder = tiny_encoders[kind] if tokenizer_side == "right" else left_padding_encoders[kind]
    batched, single = _embed_both_ways(encoder, mode)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


def test_router_pads_on_the_right_whatever_the_tokenizer_says(left_padding_encoders, caplog):
    ref = resolve_encoder(str(left_padding_encoders["gpt2"]))
    with caplog.at_level(logging.INFO, logger="training.encoder.pretrained"):
        tok = load_tokenizer(ref, 64)
    assert tok.padding_side == "right" and "pads on the left; the router pads on the right" in caplog.text
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(ref.location).padding_side == "left"  # the fixture is real


@pytest.mark.parametrize("mode", ["last_token", "mean"])
def test_left_padding_is_honoured_by_rotary_decoders(tiny_encoders, mode):
    """Llama's rotary positions are relative, so even a left-padded batch pools like single prompts."""
    ref = resolve_encoder(str(tiny_encoders["llama"]))
    right = load_tokenizer(ref, 64)
    left = PromptTokenizer(right.json, right.max_length, right.pad_id, "left")
    batched, single = _embed_both_ways(tiny_encoders["llama"], mode, tokenizer=left)
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-5)


# --- detection, override, record ----------------------------------------------------------------


@pytest.mark.parametrize("kind", tiny_models.KINDS)
@pytest.mark.parametrize("mode", MODES)
def test_sentence_transformers_config_wins(tmp_path, kind, mode):
    enc = tiny_models.build(kind, tmp_path / kind, sentence_pooling=mode)
    got_mode, normalize, reason = detect_pooling(enc, load_config(resolve_encoder(str(enc))))
    assert (got_mode, normalize) == (mode, True)  # the fixture's modules.json has a Normalize stage
    assert reason == "sentence-transformers config 1_Pooling/config.json"


@pytest.mark.parametrize("kind, expected, why", [
    ("bert", "mean", "fallback: no pooling config found"),
    ("llama", "last_token", "decoder-only architecture (llama)"),
    ("gpt2", "last_token", "decoder-only architecture (gpt2)"),
])
def test_architecture_decides_without_a_pooling_config(tiny_encoders, kind, expected, why):
    config = load_config(resolve_encoder(str(tiny_encoders[kind])))
    assert detect_pooling(tiny_encoders[kind], config) == (expected, False, why)


def test_pooling_config_without_a_mode_falls_back(tmp_path):
    enc = tiny_models.build("llama", tmp_path / "llama", sentence_pooling="mean")
    (enc / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32}))
    mode, _, reason = detect_pooling(enc, load_config(resolve_encoder(str(enc))))
    assert (mode, reason) == ("last_token", "decoder-only architecture (llama)")


def _built(encoder_dir, **fields):
    from training.router import TransformerEmbeddingModel

    fields = {"encoder": str(encoder_dir), **fields}
    model = TransformerEmbeddingModel(finetuning={"kind": "frozen"}, progress=False, **fields)
    model.build(["a", "b"], None)
    return model


def test_detected_mode_is_used_and_recorded(tmp_path):
    enc = tiny_models.build("bert", tmp_path / "bert", sentence_pooling="cls")
    described = _built(enc).describe()["pooling"]
    reason = "sentence-transformers config 1_Pooling/config.json"
    assert described == {"mode": "cls", "normalize": True, "reason": reason}


def test_spec_override_beats_detection(tmp_path):
    enc = tiny_models.build("bert", tmp_path / "bert", sentence_pooling="cls")
    model = _built(enc, encoder={"name": str(enc), "pooling": "last_token"})
    assert model.net.pooling.mode == "last_token"
    assert model.describe()["pooling"]["reason"] == "set in the spec"


def test_bundle_records_pooling(tiny_bundle):
    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["pooling"] == "mean"
    assert manifest["pooling_detail"]["reason"] == "fallback: no pooling config found"
    assert manifest["tokenizer"]["padding_side"] == "right"
