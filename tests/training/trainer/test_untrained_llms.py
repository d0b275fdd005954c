"""An LLM that nothing in training moves is left out of the router, named in a warning and in the
manifest (or refused, `untrained_llms: "error"`); near-duplicate LLM names are an error unless an
alias merges them (issue 21, item 1)."""

from __future__ import annotations

import json
import logging

import pyarrow as pa
import pytest

from tests import tiny_models
from training.data import DataError, load_pairs
from training.data.splits import split_by_prompt
from training.router import TransformerEmbeddingModel
from training.specs import Frozen, ValidationSplit

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SPLIT = ValidationSplit(0.25, 0)


def _scores_with(extra_rows: list[dict]) -> pa.Table:
    base = tiny_models.synthetic_scores()
    return pa.Table.from_pylist(base.to_pylist() + extra_rows, schema=base.schema)


def _validation_prompts() -> set[str]:
    _, val = split_by_prompt(load_pairs(tiny_models.synthetic_scores()), SPLIT.fraction, SPLIT.seed)
    return set(val["prompt"].to_pylist())


def _router(tiny_encoders, **fields) -> TransformerEmbeddingModel:
    return TransformerEmbeddingModel(encoder=str(tiny_encoders["bert"]), finetuning=Frozen(), epochs=1,
                                     batch_size=32, progress=False, **fields)


def _ghost_rows(prompts, score) -> list[dict]:
    ids = {r["prompt"]: r["prompt_id"] for r in tiny_models.synthetic_scores().to_pylist()}
    return [{"prompt_id": ids[p], "prompt": p, "model": "ghost", "score": score(p), "benchmark": "synthetic"}
            for p in sorted(prompts)]


def test_an_llm_seen_only_on_validation_prompts_is_left_out_with_a_warning(tiny_encoders, tiny_router,
                                                                           tmp_path, caplog):
    data = _scores_with(_ghost_rows(_validation_prompts(), lambda p: 1.0))  # it wins every one of them
    model = _router(tiny_encoders)
    with caplog.at_level(logging.WARNING):
        model.train(data, validation_split=SPLIT)
    assert model.llm_names == ["chat", "coder", "weak"]  # was 4, "ghost" with a random row
    assert "without a decisive training pair after the split" in caplog.text and "ghost" in caplog.text
    assert model.dropped_llms == {"ghost": "no decisive training pair after the split"}

    from training.export import export_bundle

    bundle = export_bundle(model, tmp_path / "b", ["What is 2 + 2?"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["dropped_llms"] == {"ghost": "no decisive training pair after the split"}


def test_an_llm_whose_training_pairs_are_all_ties_is_left_out_or_refused(tiny_encoders, caplog):
    prompts = sorted(set(tiny_models.synthetic_scores()["prompt"].to_pylist()))
    ties = pa.Table.from_pylist([{"prompt": p, "model_a": "ghost", "model_b": "weak", "winner": "tie"}
                                 for p in prompts])
    data = [tiny_models.synthetic_scores(), ties]
    model = _router(tiny_encoders)
    with caplog.at_level(logging.WARNING):
        model.train(data, validation_split=SPLIT)
    assert model.llm_names == ["chat", "coder", "weak"]
    assert model.dropped_llms == {"ghost": "no decisive training pair after the split"}
    with pytest.raises(ValueError, match=r"LLM\(s\) 'ghost' have no decisive training pair after the split "
                                         r"\(all their comparisons are ties .*set untrained_llms"):
        _router(tiny_encoders, untrained_llms="error").train(data, validation_split=SPLIT)


def test_an_llm_with_few_training_pairs_is_named_in_a_warning(tiny_encoders, caplog):
    one = sorted(set(tiny_models.synthetic_scores()["prompt"].to_pylist()) - _validation_prompts())[:1]
    model = _router(tiny_encoders)
    with caplog.at_level(logging.WARNING):
        model.train(_scores_with(_ghost_rows(one, lambda p: 0.5)), validation_split=SPLIT)
    assert "ghost" in model.llm_names
    assert "fewer than 10 decisive training pairs" in caplog.text and "ghost (3)" in caplog.text


@pytest.mark.parametrize("spelling", ["Chat", "chat ", " CHAT"])
def test_llm_names_differing_in_case_or_spaces_are_an_error(spelling):
    rows = [{**r, "model": spelling} if r["model"] == "chat" and i % 2 else r
            for i, r in enumerate(tiny_models.synthetic_scores().to_pylist())]
    with pytest.raises(DataError, match=rf"received LLM names .*'{spelling}'.* differ only in letter case "
                                        r"or surrounding spaces; allowed: one spelling per LLM; fix: merge "
                                        r"them with an aliases file"):
        load_pairs(pa.Table.from_pylist(rows))
    merged = load_pairs(pa.Table.from_pylist(rows), aliases={spelling: "chat"})
    assert sorted(set(merged["model_a"].to_pylist()) | set(merged["model_b"].to_pylist())) == [
        "chat", "coder", "weak"]


def test_near_duplicate_names_across_files_are_an_error(tmp_path):
    from training.data import concat_pairs

    data = tiny_models.synthetic_scores()
    other = pa.Table.from_pylist([{**r, "model": r["model"].upper()} for r in data.to_pylist()])
    with pytest.raises(DataError, match=r"'CHAT', 'chat'.* differ only in letter case"):
        concat_pairs([load_pairs(data), load_pairs(other)])
