"""routerdb.tokenizer: what a prompt longer than max_length keeps (head, tail, head_tail), the same
for every tokenizer family, and the same in training and in an exported bundle."""

from __future__ import annotations

import numpy as np
import pytest

from routerdb.tokenizer import CHARS_PER_TOKEN_BOUND, HEAD_SHARE, TRUNCATIONS, PromptTokenizer
from tests import tiny_models
from training.encoder.pretrained import load_tokenizer, resolve_encoder

MAX = 24
WORDS = [w.strip(".?;:,'") for w in " ".join(tiny_models.CORPUS[:10]).split()]
LONG = " ".join(WORDS * 3)  # far more than MAX tokens for every tiny tokenizer
SHORT = "Solve for x."


def tokenizer(tiny_encoders, kind: str, truncation: str, max_length: int = MAX) -> PromptTokenizer:
    return load_tokenizer(resolve_encoder(str(tiny_encoders[kind])), max_length, truncation)


def whole(tok: PromptTokenizer, text: str) -> tuple[list[int], list[int]]:
    """(content ids without special tokens, ids with them) of the untruncated text."""
    from tokenizers import Tokenizer

    raw = Tokenizer.from_str(tok.json)
    raw.no_truncation()
    raw.no_padding()
    return raw.encode(text, add_special_tokens=False).ids, raw.encode(text).ids


@pytest.mark.parametrize("kind", tiny_models.KINDS)
def test_each_truncation_keeps_what_it_names(tiny_encoders, kind):
    content, full = whole(tokenizer(tiny_encoders, kind, "head"), LONG)
    n_special = len(full) - len(content)
    prefix = full[:full.index(content[0])] if content[0] in full else []
    suffix = full[len(prefix) + len(content):]
    assert len(prefix) + len(suffix) == n_special and len(content) > 3 * MAX
    budget = MAX - n_special
    head, tail = budget // HEAD_SHARE, budget - budget // HEAD_SHARE

    got = {t: tokenizer(tiny_encoders, kind, t).token_ids([LONG])[0] for t in TRUNCATIONS}
    assert got["head"] == prefix + content[:budget] + suffix
    assert got["tail"] == prefix + content[-budget:] + suffix
    assert got["head_tail"] == prefix + content[:head] + content[-tail:] + suffix
    assert {len(ids) for ids in got.values()} == {MAX}


@pytest.mark.parametrize("kind", tiny_models.KINDS)
def test_a_prompt_that_fits_is_the_same_under_every_truncation(tiny_encoders, kind):
    prompts = [SHORT, "", None, " ".join(WORDS[:5])]
    ids = [tokenizer(tiny_encoders, kind, t).token_ids(prompts) for t in TRUNCATIONS]
    assert ids[0] == ids[1] == ids[2]
    assert ids[0][0] == whole(tokenizer(tiny_encoders, kind, "head"), SHORT)[1]


def test_head_tail_reads_the_end_of_a_prompt_longer_than_the_character_bound(tiny_encoders):
    tok = tokenizer(tiny_encoders, "bert", "head_tail")
    filler = "rain " * (3 * MAX * CHARS_PER_TOKEN_BOUND)  # longer than the cut made before tokenising
    a = "hamlet " + filler + "what is the capital of france"
    b = "hamlet " + filler + "prove that x is irrational"
    ids_a, ids_b = tok.token_ids([a, b])
    assert len(ids_a) == len(ids_b) == MAX
    assert ids_a[:3] == ids_b[:3] and ids_a[-4:] != ids_b[-4:]  # same start, each its own end
    end = whole(tok, "capital of france")[0]
    assert ids_a[-1 - len(end):-1] == end
    head_only = tokenizer(tiny_encoders, "bert", "head").token_ids([a, b])
    assert head_only[0] == head_only[1]  # what the head cut saw: one prompt


def test_batches_pad_to_the_longest_and_cut_the_long_ones(tiny_encoders):
    tok = tokenizer(tiny_encoders, "llama", "head_tail")
    batch = tok([SHORT, LONG, None])
    assert batch.input_ids.shape == (3, MAX) and batch.input_ids.dtype == np.int64
    assert batch.attention_mask.sum(axis=1).tolist() == [len(tok.token_ids([SHORT])[0]), MAX,
                                                       len(tok.token_ids([None])[0])]


def test_an_unknown_truncation_is_refused_with_the_allowed_ones(tiny_encoders):
    tok = tokenizer(tiny_encoders, "bert", "head")
    with pytest.raises(ValueError, match=r"truncation must be one of head, tail, head_tail, got 'middle'"):
        PromptTokenizer(tok.json, MAX, 0, "right", "middle")


def test_the_spec_truncation_reaches_the_bundle_and_the_runtime_reads_the_end(tiny_encoders, tmp_path):
    """A head_tail router exported to a bundle scores two prompts that differ only at their end
    differently, matches training's own scores, and records its truncation in the manifest."""
    from routerdb import Router
    from training.export import export_bundle
    from training.router import TransformerEmbeddingModel

    model = TransformerEmbeddingModel(encoder={"name": str(tiny_encoders["bert"]), "max_length": MAX,
                                               "truncation": "head_tail"}, epochs=1, progress=False)
    model.train(tiny_models.synthetic_scores(n_prompts=24), validation_split=None)
    prompts = [LONG + " what is the capital of france", LONG + " prove that the square root is irrational"]
    bundle = export_bundle(model, tmp_path / "bundle", prompts)
    router = Router(bundle)
    assert router.bundle.manifest["tokenizer"]["truncation"] == "head_tail"
    scores = router.score_all(prompts)
    assert np.allclose(scores, model.score_matrix(prompts), atol=1e-4)
    assert not np.allclose(scores[0], scores[1])
