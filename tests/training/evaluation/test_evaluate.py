"""training.evaluate: hand-checked metric plumbing, and the CLI end to end on a tiny bundle."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from routerdb.prompt_keys import distinct
from tests import tiny_models
from training import evaluate as ev
from training.evaluation import dataset as eval_data
from training.evaluation import metrics
from training.evaluation.accuracy import credit, pair_metrics, shuffled_prompts
from training.evaluation.metrics import boot_weights, ratio_ci
from training.evaluation.routing import routing_results
from training.evaluation.scores import Scores


def _side(p, a, b, label, source=None, score_a=None, score_b=None, prompts=None):
    n = len(label)
    nan = np.full(n, np.nan)
    return eval_data.Side(prompts=prompts or [f"q{i}" for i in range(max(p) + 1)], p=np.asarray(p),
                          a=np.asarray(a, object), b=np.asarray(b, object), label=np.asarray(label),
                          source=np.asarray(source or ["s"] * n, object), group=np.asarray(p),
                          score_a=nan if score_a is None else np.asarray(score_a, float),
                          score_b=nan if score_b is None else np.asarray(score_b, float),
                          cost_a=nan, cost_b=nan)


def test_ratio_ci_matches_metrics_bootstrap():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 30, 200)
    diff, label = rng.normal(size=200), rng.choice([-1, 1], 200)
    code, draws = boot_weights(groups, 300, seed=4)
    fast = ratio_ci(credit(diff, label), code, draws)
    slow = metrics.bootstrap_ci(metrics.pairwise_accuracy, groups, diff, label, n_boot=300, seed=4)
    assert fast == pytest.approx(slow)


def test_pair_metrics_hand_checked():
    # 4 prompts, x vs y; y wins on prompt 2 only. A perfect router knows; BT says x always.
    t = _side([0, 1, 2, 3, 0], ["x"] * 5, ["y"] * 5, [1, 1, -1, 1, 0])
    perfect = Scores(["x", "y"], np.array([[1.0, 0], [1, 0], [0, 1], [1, 0]]))
    bt = Scores(["x", "y"], np.array([[1.0, 0]] * 4))
    out = pair_metrics(t, {"routerdb": perfect, "bradley_terry": bt}, n_boot=50)
    pooled = out["pooled"]
    assert (pooled["n_pairs"], pooled["n_prompts"], pooled["n_ties"]) == (4, 4, 1)
    assert pooled["routers"]["routerdb"]["accuracy"] == 1.0
    assert pooled["routers"]["bradley_terry"]["accuracy"] == 0.75
    assert pooled["routers"]["routerdb"]["minus_bt"] == 0.25
    assert pooled["routers"]["bradley_terry"]["shuffle_drop"] == 0.0  # BT ignores the prompt
    assert pooled["routers"]["routerdb"]["log_loss"] == pytest.approx(np.log1p(np.exp(-1.0)))


def test_shuffle_stays_within_source():
    p = np.array([0, 1, 2, 3, 4, 5, 0])
    src = np.array(["a", "a", "a", "b", "b", "b", "a"], object)
    out = shuffled_prompts(p, src, seed=0)
    assert set(out[src == "a"]) <= {0, 1, 2} and set(out[src == "b"]) == {3, 4, 5}
    assert out[0] == out[6]  # one prompt is replaced by the same prompt everywhere


def test_routing_perfect_and_constant_routers():
    # strong wins prompts 0 and 1, weak wins prompt 2, both tie on 3.
    s_q, w_q = [1.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]
    t = _side([0, 1, 2, 3], ["S"] * 4, ["W"] * 4, [1, 1, -1, 0], score_a=s_q, score_b=w_q)
    oracle = Scores(["S", "W"], np.array([[1.0, 0], [1, 0], [0, 1], [0.5, 0.5]]))
    constant = Scores(["S", "W"], np.array([[1.0, 0]] * 4))
    routers = {"routerdb": oracle, "bradley_terry": constant}
    assert routing_results(t, routers, [("S", "W")], n_boot=20) == []  # < 10 prompts: skipped
    t10 = _side(list(range(12)), ["S"] * 12, ["W"] * 12, [1, 1, -1, 0] * 3, score_a=s_q * 3, score_b=w_q * 3)
    oracle10 = Scores(["S", "W"], np.tile(oracle.matrix, (3, 1)))
    const10 = Scores(["S", "W"], np.tile(constant.matrix, (3, 1)))
    lucky = Scores(["S", "W"], oracle10.matrix.copy())  # a random draw that happens to be perfect
    routers10 = {"routerdb": oracle10, "bradley_terry": const10, "random": lucky}
    (entry,) = routing_results(t10, routers10, [("S", "W")], n_boot=20)
    assert entry["routers"]["random"]["apgr"] == pytest.approx(0.5)  # random counts as its expectation
    rnd = entry["routers"]["random"]
    assert (rnd["cpt50"], rnd["cpt80"]) == pytest.approx((50, 80))
    assert entry["routers"]["bradley_terry"]["apgr"] == pytest.approx(0.5)
    assert entry["routers"]["bradley_terry"]["cpt50"] == pytest.approx(50.0)
    assert entry["routers"]["routerdb"]["apgr"] == pytest.approx(entry["oracle_apgr"])
    # means: strong 0.75, weak 0.5, oracle 1.0: the oracle reaches the strong mean at 50% calls
    assert (entry["strong_mean"], entry["weak_mean"], entry["oracle_mean"]) == (0.75, 0.5, 1.0)


def test_parse_split():
    assert eval_data.parse_split("0.2:7") == (0.2, 7) and eval_data.parse_split("none") is None
    with pytest.raises(ValueError, match="FRACTION:SEED"):
        eval_data.parse_split("0.2")


def test_cli_on_tiny_bundle(tiny_bundle, tiny_encoders, tmp_path):
    data = tmp_path / "synthetic.parquet"
    import pyarrow.parquet as pq

    pq.write_table(tiny_models.synthetic_scores(), data)
    out = tmp_path / "report"
    code = ev.main([str(tiny_bundle), str(data), "--split", "0.25:0", "--out", str(out),
                    "--encoder", str(tiny_encoders["bert"]), "--cache-dir", str(tmp_path / "cache"),
                    "--threshold", "1.01", "--n-boot", "50", "--mf-epochs", "2"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.md").read_text().startswith("# Routing quality report")
    assert (out / "calibration.png").stat().st_size > 0 and (out / "training_curves.png").is_file()
    # 60 prompts, no near-duplicates at threshold > 1: 15 held out, each with 3 pairs
    assert results["n_test_prompts"] == 15 and results["n_test_rows"] == 45
    pooled = results["pairs"]["pooled"]
    assert pooled["n_pairs"] == 30  # two decisive pairs per prompt (weak ties the loser)
    # Bradley-Terry ranks chat > coder > weak: right on both pairs of a chat prompt, on one of
    # the two pairs of a code prompt (2 of the 10 prompt bases are code).
    table = pq.read_table(data).to_pandas()
    test_prompts = _test_prompts(table, tiny_encoders)
    n_code = sum(("python" in p.lower() or "select" in p.lower()) for p in test_prompts)
    expected_bt = (2 * (15 - n_code) + n_code) / 30
    assert pooled["routers"]["bradley_terry"]["accuracy"] == pytest.approx(expected_bt)
    # the router's accuracy is exactly what its bundle's scores give on those pairs
    from routerdb.router import Router

    router = Router(tiny_bundle)
    scores = router.score(test_prompts)
    pairs = [(p, a, b, lab) for p in test_prompts for (a, b, lab) in _truth(p)]
    col = {m: j for j, m in enumerate(router.models)}
    diff = np.array([scores[test_prompts.index(p), col[a]] - scores[test_prompts.index(p), col[b]]
                     for p, a, b, _ in pairs])
    label = np.array([lab for *_, lab in pairs])
    assert pooled["routers"]["routerdb"]["accuracy"] == pytest.approx(metrics.pairwise_accuracy(diff, label))
    (curve,) = results["routing"]
    assert (curve["strong"], curve["weak"]) == ("chat", "weak")


def _truth(prompt: str):
    code = "python" in prompt.lower() or "select" in prompt.lower()
    # load_pairs pairs a prompt's models in sorted name order: chat < coder < weak
    return [("chat", "coder", -1 if code else 1), ("chat", "weak", 0 if code else 1),
            ("coder", "weak", 1 if code else 0)]


def _test_prompts(table, tiny_encoders) -> list[str]:
    from training.data import read as data_mod
    from training.data.splits import split_by_prompt

    pairs = data_mod.load_pairs(pa.Table.from_pandas(table, preserve_index=False))
    prompts, idx = distinct(pairs["prompt"].to_pylist())
    rows = pa.table({"row": np.arange(pairs.num_rows)})
    _, test = split_by_prompt(rows, 0.25, 0, groups=np.arange(len(prompts))[idx])
    return list(dict.fromkeys(pairs.take(test["row"])["prompt"].to_pylist()))
