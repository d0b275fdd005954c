"""experiments.quality_docs: the words of docs/quality.md come from the recorded runs, not from prose."""

from __future__ import annotations

from experiments import quality_docs as qd


def run(name: str, accuracy: float, apgr: float, alpaca: float, elo: float) -> dict:
    return {"name": name, "accuracy": accuracy, "minus_bt": accuracy - 0.72, "minus_bt_ci": [0.01, 0.04],
            "shuffle_drop": 0.04, "apgr": apgr, "seconds": 60.0,
            "per_source": {"pairs_alpacaeval_llmjudge": alpaca, "pairs_elobench_gpt4turbo": elo}}


ROWS = [
    run("base: frozen MiniLM", 0.7480, 0.385, 0.001, -0.007),
    run("truncation: head (the first 128 tokens)", 0.7470, 0.410, 0.002, -0.009),
    run(qd.PREVIOUS_RUN, 0.7488, 0.631, 0.0004, -0.0076),
    run("irt, judge pairs", 0.7100, 0.550, 0.0, 0.002),
    run("irt, all pairs", 0.7493, 0.684, 0.001, 0.0),
]
CANDIDATES = ("irt, judge pairs", "irt, all pairs")


def test_truncation_finding_reads_the_runs_and_the_groups():
    final = {"groups": {"prompts": 35922, "groups": 34686, "largest": [192, 166, 17]}}
    text = " ".join(qd.truncation_finding(final, ROWS))
    assert "35,922 distinct prompts form 34,686 near-duplicate groups, the largest of 192" in text
    assert "moved pooled accuracy by +0.10 points" in text  # 74.80 - 74.70
    assert "(APGR 0.385)" in text and "APGR became 0.631" in text


def test_recommended_names_the_chosen_run_with_its_numbers():
    text = " ".join(qd.recommended(ROWS, [], "irt, all pairs", CANDIDATES))
    assert "The recommended spec is *irt, all pairs*" in text
    assert "*irt, judge pairs* 71.00 % (-1.00 vs BT, APGR 0.550)" in text  # 0.7100 - 0.72
    assert "at or above +2 points: *irt, all pairs*." in text
    assert f"*{qd.PREVIOUS_RUN}*) scored 74.88 % (+2.88 vs BT, APGR 0.631)" in text
    assert qd.recommended(ROWS, [], "not a run", CANDIDATES) == []


def test_stage_minutes_sum_the_recorded_runs():
    rows = ROWS + [{"name": "leave out s with x", "seconds": 120.0},
                   {"name": "subsample lora", "seconds": 600.0}]
    transfer = [{"stage": "domain", "seconds": 30.0}, {"stage": "unseen", "seconds": 90.0}]
    text = qd.stage_minutes(rows, transfer, {"train_seconds": 60.0, "score_seconds": 60.0})
    # 5 ablation rows x 60 s; domain 0.5 and unseen 1.5 min, printed rounded to even
    assert text == ("21 min of runs recorded on this 2-core CPU (ablations 5, LoRA 10, "
                    "leave-one-source-out 2, domain 0, unseen 2, final 2)")
