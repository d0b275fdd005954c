"""The pointwise loss on per-model scores, pairs from pairwise data only, a scale per source, and
the IRT head, end to end on a tiny encoder: training, resuming, export parity and a new LLM."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

import training.trainer.loop as loop
from routerdb.router import Router
from tests import tiny_models
from training.data import concat_pairs, load_pairs
from training.export import export_bundle
from training.router import TransformerEmbeddingModel
from training.specs import ValidationSplit
from training.trainer.pairs import PointArrays

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # see conftest.py

IRT = {"head": {"kind": "irt", "skills": 2, "hidden_dims": [16]},
       "loss": {"kind": "bradley_terry", "pointwise_weight": 1.0, "pair_sources": "pairwise",
                "source_scale": True, "ties": "half"},
       "embedding_spec": {"kind": "learned", "dim": 3}, "finetuning": {"kind": "frozen", "lr": 1e-2},
       "epochs": 4, "batch_size": 32, "progress": False}


@pytest.fixture(scope="module")
def data() -> pa.Table:
    """Per-model scores (coder / chat / weak) and a few judge pairs of the same LLMs."""
    scores = load_pairs(tiny_models.synthetic_scores(40))
    prompts = scores["prompt"].to_pylist()[::6][:10]
    judge = pa.table({"prompt": prompts, "model_a": ["chat"] * 10, "model_b": ["weak"] * 10,
                      "winner": ["model_a"] * 10, "source": ["judge"] * 10})
    return concat_pairs([scores, load_pairs(judge)])


def _model(encoder, **fields) -> TransformerEmbeddingModel:
    return TransformerEmbeddingModel(encoder=str(encoder), **{**IRT, **fields})


def test_points_are_each_prompt_and_llm_once(data):
    prompts = sorted(set(data["prompt"].to_pylist()))
    points = PointArrays(data, {p: i for i, p in enumerate(prompts)}, {"chat": 0, "coder": 1, "weak": 2})
    assert len(points) == 40 * 3  # 3 pairs per prompt name each LLM twice; the judge pairs no score
    assert len(set(zip(points.p.tolist(), points.m.tolist(), strict=True))) == len(points)
    assert set(np.unique(points.y)) <= {0.0, 1.0}


def test_irt_router_learns_from_scores_and_scales_its_sources(tiny_encoders, data):
    model = _model(tiny_encoders["bert"])
    history = model.train(data, ValidationSplit(0.25, 0))
    assert history[-1]["val_accuracy"] > 0.8
    assert model.loss.scale.sources == ["judge"]  # the score pairs left the pairwise loss
    assert float(model.loss.scale.log_scale.abs().max()) > 0  # learned with the head
    scores = model.predict(["Write a Python function that reverses a list (variant 999)"])
    assert scores["coder"][0] > scores["weak"][0]


def test_scores_out_of_range_for_the_pointwise_loss_are_refused(tiny_encoders):
    table = tiny_models.synthetic_scores(8)
    table = table.set_column(3, "score", pa.array(np.asarray(table["score"]) * 10.0))
    with pytest.raises(ValueError, match=r"range over \[0, 10\]; allowed: \[0, 1\]"):
        _model(tiny_encoders["bert"]).train(table, ValidationSplit(0.25, 0))


def test_irt_router_resumes_bit_identically(tiny_encoders, data, tmp_path, monkeypatch):
    straight = _model(tiny_encoders["bert"])
    straight.train(data, ValidationSplit(0.25, 0))
    real = loop.save_checkpoint

    def die_after_two(model, state, run_dir, done, history):
        real(model, state, run_dir, done, history)
        if done == 2:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loop, "save_checkpoint", die_after_two)
        with pytest.raises(KeyboardInterrupt):
            _model(tiny_encoders["bert"]).train(data, ValidationSplit(0.25, 0), run_dir=tmp_path / "run")
    resumed = _model(tiny_encoders["bert"])
    resumed.train(data, ValidationSplit(0.25, 0), run_dir=tmp_path / "run", resume=True)
    a, b = straight.state_tensors(), resumed.state_tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the per-source scale is training state: resumed from state/, not from the model's weights
    assert torch.equal(straight.loss.scale.log_scale, resumed.loss.scale.log_scale)


def test_irt_bundle_matches_torch_and_takes_a_new_llm(tiny_encoders, data, tmp_path):
    import pyarrow.parquet as pq

    from training.add_model import add_model

    model = _model(tiny_encoders["bert"], finetuning={"kind": "lora"})
    model.train(data, ValidationSplit(0.25, 0))
    prompts = sorted(set(data["prompt"].to_pylist()))[:12]
    bundle = export_bundle(model, tmp_path / "bundle", prompts)
    np.testing.assert_allclose(Router(bundle).score(prompts), model.score_matrix(prompts), atol=1e-4)
    # a new LLM that answers every prompt right, scored beside the three known ones
    scores = tiny_models.synthetic_scores(40)
    oracle = pa.table({"prompt_id": scores["prompt_id"].unique(), "prompt": scores["prompt"].unique(),
                       "model": ["oracle"] * 40, "score": [1.0] * 40, "benchmark": ["synthetic"] * 40})
    pq.write_table(pa.concat_tables([scores, oracle]), tmp_path / "records.parquet")
    added = Router(add_model(bundle, tmp_path / "records.parquet", "oracle", tmp_path / "added"))
    best = added.best(prompts)
    assert added.models[-1] == "oracle" and best.count("oracle") >= 10, best


COVERAGE = {"head": {"kind": "irt", "skills": 2, "hidden_dims": [16], "coverage": True},
            "embedding_spec": {"kind": "learned", "dim": 6}}


def test_coverage_rows_hold_where_each_llm_was_measured(tiny_encoders, data, tmp_path):
    model = _model(tiny_encoders["bert"], **COVERAGE)
    model.train(data, ValidationSplit(0.25, 0))
    head = model.net.head
    assert bool(head.gate_on)  # turned on after the last epoch
    rows = model.llm_embeddings.detach()
    prompts = sorted(set(data["prompt"].to_pylist()))
    z = head.loadings(torch.as_tensor(model.prompt_vectors(prompts)))[:, 1:]
    gate = head.gate(z, rows)
    assert gate.shape == (len(prompts), 3) and float(gate.mean()) > 0.5  # measured here: mostly open
    far = z + 100.0  # loadings unlike any measured prompt: every LLM falls back to its measured level
    assert float(head.gate(far, rows).max()) < 1e-6
    u = torch.as_tensor(model.prompt_vectors(prompts[:3]))
    k = head.skills
    with torch.no_grad():
        head.trunk[-1].bias[1:] += 100.0  # push every prompt's loadings far away
        h = head.loadings(u)
        raw = head.raw(u, rows)
    level = rows[:, 0] + (rows[:, 1:1 + k] * rows[:, 1 + k:1 + 2 * k]).sum(-1)  # theta + b . mu
    np.testing.assert_allclose(raw, level.unsqueeze(0) - h[:, :1], atol=1e-4)
    with torch.no_grad():
        head.trunk[-1].bias[1:] -= 100.0
    bundle = export_bundle(model, tmp_path / "bundle", prompts[:8])
    np.testing.assert_allclose(Router(bundle).score(prompts[:8]), model.score_matrix(prompts[:8]), atol=1e-4)


def test_a_new_llm_row_takes_its_region_from_its_records(tiny_encoders, data):
    from training.llm_embeddings.records import comparison_records
    from training.llm_embeddings.row_fit import fit_llm_row

    without = data.filter(pa.array([a != "coder" and b != "coder" for a, b in zip(
        data["model_a"].to_pylist(), data["model_b"].to_pylist(), strict=True)]))
    model = _model(tiny_encoders["bert"], **COVERAGE)
    model.train(without, ValidationSplit(0.25, 0))
    records = comparison_records(data).of("coder")
    vectors = model.prompt_vectors(list(records.prompts))
    rows = model.llm_embeddings.detach().numpy()
    row = fit_llm_row(model.net.head, vectors, records, list(model.llm_names), rows)
    want = model.net.head.coverage_of(torch.as_tensor(vectors)[torch.as_tensor(np.unique(records.prompt))])
    np.testing.assert_allclose(row[0, 3:], want.numpy(), atol=1e-6)  # region: computed, not fitted
    assert np.all(np.isfinite(row))


def test_bradley_terry_level_puts_measured_levels_on_a_line_of_strengths(tiny_encoders, data):
    from training.data.splits import split_by_prompt
    from training.evaluation.baselines import BradleyTerry

    cfg = {**COVERAGE, "head": {**COVERAGE["head"], "bradley_terry_level": True}}
    model = _model(tiny_encoders["bert"], **cfg)
    model.train(data, ValidationSplit(0.25, 0))
    rows, k = model.llm_embeddings.detach().numpy(), model.net.head.skills
    level = rows[:, 0] + (rows[:, 1:1 + k] * rows[:, 1 + k:1 + 2 * k]).sum(1)
    train, _ = split_by_prompt(data, 0.25, 0)
    a, b = (train[c].to_numpy(zero_copy_only=False) for c in ("model_a", "model_b"))
    bt = BradleyTerry(ties="half").fit(None, None, a, b, train["label"].to_numpy())
    beta = np.array([bt.strengths[name] for name in model.llm_names])
    assert abs(np.corrcoef(level, beta)[0, 1]) > 0.999
    assert list(np.argsort(level)) == list(np.argsort(beta))  # the prior's order, LLM by LLM


def test_refit_moves_a_known_llms_row_from_its_own_records(tiny_encoders, data, tmp_path):
    import pyarrow.parquet as pq

    from routerdb.bundle import Bundle
    from training.add_model import add_model

    model = _model(tiny_encoders["bert"])
    model.train(data, ValidationSplit(0.25, 0))
    prompts = sorted(set(data["prompt"].to_pylist()))[:12]
    bundle = export_bundle(model, tmp_path / "bundle", prompts)
    # the user's own records: 'weak' answers every prompt right, beside the other two as trained
    scores = tiny_models.synthetic_scores(40)
    own = scores.set_column(3, "score", pa.array([1.0 if m == "weak" else s for m, s in zip(
        scores["model"].to_pylist(), scores["score"].to_pylist(), strict=True)]))
    pq.write_table(own, tmp_path / "records.parquet")
    out = add_model(bundle, tmp_path / "records.parquet", "weak", tmp_path / "refit", refit=True)
    before, after = Router(bundle).score(prompts), Router(out).score(prompts)
    col = list(Router(bundle).models).index("weak")
    others = [j for j in range(before.shape[1]) if j != col]
    np.testing.assert_allclose(after[:, others], before[:, others], atol=1e-6)
    assert after[:, col].mean() > before[:, col].mean() + 0.5  # from the worst to about the best
    manifest = Bundle.load(out).manifest
    assert Bundle.load(out).model_names == Bundle.load(bundle).model_names
    assert manifest["refitted_models"][-1]["name"] == "weak" and "added_models" not in manifest
    with pytest.raises(ValueError, match="'oracle' is not among the 3 LLMs .*drop --refit to add it"):
        add_model(bundle, tmp_path / "records.parquet", "oracle", tmp_path / "x", refit=True)


def test_a_new_llms_own_scores_are_read_against_the_known_llms_scores_on_its_prompts(tiny_encoders, data,
                                                                                      tmp_path):
    """`add_model` fits a new LLM's own per-model scores through a calibration of the head on the
    records' prompts (`row_fit.known_scores`): the same records of the new LLM, beside known LLMs
    that scored everything right there (an easy source), fit a lower level than beside known LLMs
    that scored everything wrong (a hard one). Its comparisons are the same in both."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from routerdb.bundle import Bundle
    from training.add_model import fitted_row
    from training.llm_embeddings.records import comparison_records

    model = _model(tiny_encoders["bert"])
    model.train(data, ValidationSplit(0.25, 0))
    prompts = sorted(set(data["prompt"].to_pylist()))[:4]
    loaded = Bundle.load(export_bundle(model, tmp_path / "bundle", prompts))
    scores = tiny_models.synthetic_scores(40)
    oracle = pa.table({"prompt_id": scores["prompt_id"].unique(), "prompt": scores["prompt"].unique(),
                       "model": ["oracle"] * 40, "score": [1.0] * 40, "benchmark": ["synthetic"] * 40})
    pq.write_table(pa.concat_tables([scores, oracle]), tmp_path / "records.parquet")
    pairs = load_pairs(tmp_path / "records.parquet")
    records = comparison_records(pairs).of("oracle")

    def known_scored(value: float) -> pa.Table:
        out = pairs
        for side in ("a", "b"):
            known = pc.not_equal(out[f"model_{side}"], "oracle")
            given = out[f"score_{side}"].cast(pa.float64())
            column = pc.if_else(known, pa.scalar(value, pa.float64()), given)
            out = out.set_column(out.schema.get_field_index(f"score_{side}"), f"score_{side}",
                                 column.cast(out.schema.field(f"score_{side}").type))
        return out

    easy = fitted_row(loaded, records, known_scored(1.0))
    hard = fitted_row(loaded, records, known_scored(0.0))
    assert easy[0, 0] < hard[0, 0] - 0.1, (easy, hard)  # the level (theta) reads the source's difficulty
