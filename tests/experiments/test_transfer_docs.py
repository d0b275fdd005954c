"""experiments.transfer_docs: the transfer tables and targets of docs/quality.md, from recorded runs."""

from __future__ import annotations

from experiments import transfer_docs as td


def _routers(**apgr) -> dict:
    return {name: {"apgr": v, "apgr_ci": [v - 0.05, v + 0.05], "cpt50": 50.0 - 100 * (v - 0.5)}
            for name, v in apgr.items()}


DOMAIN = [
    {"stage": "domain", "fold": "A", "config": "baselines", "tasks": [
        {"task": "t1", "n_prompts": 500, "routers": _routers(bradley_terry=0.5, prompt_length=0.55)},
        {"task": "t2", "n_prompts": 1500, "routers": _routers(bradley_terry=0.5, prompt_length=0.45)}]},
    {"stage": "domain", "fold": "A", "config": "recommended", "tasks": [
        {"task": "t1", "n_prompts": 500, "routers": _routers(recommended=0.62)},
        {"task": "t2", "n_prompts": 1500, "routers": _routers(recommended=0.58)}]},
]


def test_domain_table_joins_routers_per_task_and_averages():
    lines, apgr = td.domain_tables(DOMAIN)
    assert lines[0] == "| fold | task (source:family:strong > weak) | test prompts | bradley_terry | " \
                       "prompt_length | recommended |"
    assert lines[2] == "| A | t1 | 500 | 0.500 [0.45, 0.55] | 0.550 [0.50, 0.60] | 0.620 [0.57, 0.67] |"
    assert lines[-1] == ("| | **mean over tasks** | | **0.500** (min 0.500) | **0.500** (min 0.450) | "
                         "**0.600** (min 0.580) |")
    assert apgr["recommended"] == [0.62, 0.58]


def test_targets_say_met_or_not_with_the_numbers():
    _, apgr = td.domain_tables(DOMAIN)
    loso = [{"name": "leave out s1 with recommended", "config": "recommended", "source": "s1",
             "n_pairs": 100, "minus_bt": -0.01, "minus_bt_ci": [-0.02, 0.0]}]
    unseen = [{"stage": "unseen", "config": "recommended", "llm": "x", "trained_with": {"n_pairs": 9,
                                                                                        "accuracy": 0.7},
               "added": {"200": {"minus_trained_with": -0.015}}}]
    final = {"pairs": {"pooled": {"routers": {"routerdb": {"minus_bt": 0.025, "minus_bt_ci": [0.02, 0.03]}}}}}
    lines = td.targets(apgr, loso, unseen, final)
    assert lines[2] == ("| domain transfer: APGR >= 0.60 averaged over the 2 tasks and > 0.5 on each | "
                        "mean 0.600, 2 of 2 above 0.5 (min 0.580) | yes |")
    assert lines[3] == "| every left-out source at or above Bradley-Terry | s1 -1.00 | no: s1 |"
    assert lines[4] == "| a new LLM from 200 records within 2 points of trained-with | x -1.50 | yes |"
    assert lines[5].endswith("| +2.50 [+2.00, +3.00] | yes |")


def test_loso_and_unseen_tables():
    loso = [{"name": f"leave out {s} with {c}", "config": c, "source": s, "n_pairs": n, "minus_bt": m,
             "minus_bt_ci": [m - 0.01, m + 0.01]}
            for s, c, n, m in (("a", "rec", 2000, -0.088), ("b", "rec", 3000, 0.0055),
                               ("a", "irt", 2000, 0.01))]
    lines = td.loso_table(loso)
    assert lines[:3] == ["| configuration | a | b | mean |", "|---|---|---|---|",
                         "| *decisive test pairs* | 2,000 | 3,000 | |"]
    assert lines[3] == "| rec | -8.80 [-9.80, -7.80] | +0.55 [-0.45, +1.55] | -4.12 |"
    assert lines[4] == "| irt | +1.00 [+0.00, +2.00] |  |  |"
    unseen = [{"stage": "unseen", "config": "rec", "llm": "x",
               "trained_with": {"n_pairs": 1234, "accuracy": 0.7},
               "added": {"50": {"minus_trained_with": -0.05, "minus_trained_with_ci": [-0.07, -0.03]},
                         "200": {"minus_trained_with": -0.01}}}]
    unseen.append({"stage": "unseen", "config": "irt", "llm": "x",
                   "trained_with": {"n_pairs": 1234, "accuracy": 0.7},
                   "added": {"50": {"minus_trained_with": 0.0, "draws": 3}}})
    table = td.unseen_table(unseen)
    assert table[2] == "| rec | x | 1,234 | 70.0 % | 1 | -5.00 [-7.00, -3.00] | -1.00 |"  # before draws
    assert table[3] == "| irt | x | 1,234 | 70.0 % | 3 | +0.00 |  |"
