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
    run(qd.TIED, 0.7488, 0.631, 0.0004, -0.0076),
    run(qd.RECOMMENDED, 0.7483, 0.637, -0.0021, 0.0023),
]


def test_truncation_finding_reads_the_runs_and_the_groups():
    final = {"groups": {"prompts": 35922, "groups": 34686, "largest": [192, 166, 17]}}
    text = " ".join(qd.truncation_finding(final, ROWS))
    assert "35,922 distinct prompts form 34,686 near-duplicate groups, the largest of 192" in text
    assert "moved pooled accuracy by +0.10 points" in text  # 74.80 - 74.70
    assert "(APGR 0.385)" in text and "APGR became 0.631" in text


def test_recommended_names_the_chosen_run_with_its_numbers():
    text = " ".join(qd.recommended(ROWS, []))
    assert f"*{qd.RECOMMENDED}*" in text and "pooled accuracy 74.83 %" in text
    assert "APGR 0.637 against the base's 0.385" in text
    assert "pairs_elobench_gpt4turbo -0.76 -> +0.23" in text  # every pair x1 -> sqrt, per source
    assert qd.recommended([r for r in ROWS if r["name"] != qd.RECOMMENDED], []) == []
