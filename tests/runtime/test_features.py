"""Tests for routerdb.features and feature_rules: every feature pinned, edge cases, FeatureStats."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routerdb.feature_rules import feature_values
from routerdb.features import (
    CLIP,
    FEATURE_NAMES,
    FEATURES_VERSION,
    MAX_CHARS,
    FeatureStats,
    compute_features,
)
from tests.paths import REPO

DOCS = REPO / "docs" / "features.md"
N = len(FEATURE_NAMES)
SCRIPT_SHARES = (
    "frac_latin",
    "frac_cjk",
    "frac_cyrillic",
    "frac_arabic",
    "frac_devanagari",
    "frac_other_letters",
)


def L(count: int) -> float:
    """The value of a log-count feature that counted ``count`` things."""
    return math.log1p(count)


def feature(prompt: str | None, name: str) -> float:
    return float(compute_features([prompt])[0, FEATURE_NAMES.index(name)])


# (prompt, feature, expected): every feature name appears at least once (test below).
PINNED: list[tuple[str, str, float]] = [
    # length and structure
    ("hello", "log_chars", L(5)),
    ("one two  three", "log_words", L(3)),
    ("a\nb\nc", "log_lines", L(3)),
    ("Hi there. How are you? Fine", "log_sentences", L(3)),
    ("Pi is 3.14 exactly...", "log_sentences", L(1)),
    ("你好。再见！", "log_sentences", L(2)),
    ("ab abcd", "avg_word_len", 3.0),
    ("x" * 1000, "avg_word_len", 50.0),
    ("ABcd", "frac_upper", 0.5),
    ("AB 12", "frac_upper", 1.0),
    ("ab12", "frac_digit", 0.5),
    ("a,b.", "frac_punct", 0.5),
    ("a—b", "frac_punct", 1 / 3),
    ("a b c", "frac_space", 0.4),
    ("- one\n* two\n• three\n-not a bullet", "log_bullet_lines", L(3)),
    ("1. a\n2) b\n3.no space", "log_numbered_lines", L(2)),
    ("# Title\n## Sub\n#nospace", "log_headings", L(2)),
    ("Why? Really??", "log_question_marks", L(3)),
    # code
    ("```python\nx = 1\n```", "log_code_fences", L(2)),
    ("def f():\n    return 1\n\treturn 2\nx", "frac_indented_lines", 0.5),
    ("int main() { return 0; }", "log_braces_semicolons", L(3)),
    ("a == b && c != d -> e", "log_code_operators", L(4)),
    ("def f(): return x", "log_code_keywords", L(2)),
    ("SELECT * FROM t", "log_code_keywords", L(1)),
    ("Debug this Python code", "log_programming_words", L(3)),
    # math
    ("3.14 and 2,000 and 7", "log_numbers", L(3)),
    ("1 + 2 = 3", "log_math_operators", L(2)),
    ("10 - 3 and 4-1", "log_math_operators", L(2)),
    ("a well-known fact", "log_math_operators", 0.0),
    (r"\frac{1}{2} + \sqrt{x} \alpha", "log_latex_commands", L(3)),
    (r"C:\news\file", "log_latex_commands", 0.0),
    ("$x^2$ and $$y$$", "log_dollar_math", L(2)),
    ("it costs $5 and $10", "log_dollar_math", 0.0),
    ("x = 5, y=3, a == b, c <= d, e += 1", "log_equations", L(2)),
    ("Solve the equation and compute the integral", "log_math_words", L(4)),
    # reasoning and questions
    ("What, why and how?", "log_question_words", L(3)),
    ("Explain it step-by-step and compare", "log_reasoning_words", L(3)),
    ("Show that n is odd; list pros and cons", "log_reasoning_words", L(2)),
    # multiple choice
    ("Q\nA) one\n(B) two\nC. three\nD: four\nE five", "log_choice_lines", L(4)),
    ("Answer: B", "log_answer_markers", L(1)),
    ("Which of the following is true?\nOptions: x", "log_answer_markers", L(2)),
    ("theanswer: x", "log_answer_markers", 0.0),
    # scripts
    ("café", "frac_latin", 1.0),
    ("abc αβγ", "frac_latin", 0.5),
    ("你好", "frac_cjk", 1.0),
    ("ab 日本", "frac_cjk", 0.5),
    ("カタカナ 한국어", "frac_cjk", 1.0),
    ("привет", "frac_cyrillic", 1.0),
    ("مرحبا", "frac_arabic", 1.0),
    ("नमस्ते", "frac_devanagari", 1.0),
    ("αβγ", "frac_other_letters", 1.0),
    ("שלום ab", "frac_other_letters", 4 / 6),
    # requests
    ("Return JSON or a markdown table", "log_format_words", L(3)),
    ("Answer in 50 words or three sentences.", "log_length_limits", L(2)),
    ("a 500-word essay in ten bullet points", "log_length_limits", L(2)),
    ("You must be brief; do not use lists; don't ramble", "log_constraint_words", L(3)),
    ("Write a poem and a short story", "log_creative_words", L(2)),
    ("Translate this into French", "log_translation_words", L(2)),
    ("Summarize this. TL;DR please", "log_summary_words", L(2)),
    ("Please rephrase and proofread", "log_rewrite_words", L(2)),
    # conversation and references
    ("User: hi\nAssistant: hello\n### Instruction\nHuman: x", "log_turn_markers", L(4)),
    ("<|im_start|>user hi [INST] x", "log_turn_markers", L(2)),
    ("ask the user: no", "log_turn_markers", 0.0),
    ("see https://example.com/a?b=1 and www.test.org.", "log_urls", L(2)),
    ("mail a.b@example.co.uk or x@y", "log_emails", L(1)),
]


@pytest.mark.parametrize(("prompt", "name", "expected"), PINNED)
def test_pinned_feature_value(prompt: str, name: str, expected: float) -> None:
    assert feature(prompt, name) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_pinned_table_covers_every_feature() -> None:
    pinned = {name for _, name, _ in PINNED}
    assert pinned - set(FEATURE_NAMES) == set()
    assert set(FEATURE_NAMES) - pinned == set()


@pytest.mark.parametrize("prompt", ["", "Explain 2+2 in 3 words: A) x\nuser: 你好 привет"])
def test_feature_rules_compute_exactly_the_feature_names(prompt: str) -> None:
    # feature_rules returns a dict; an extra key would be dropped silently, a missing one a KeyError.
    assert set(feature_values(prompt)) == set(FEATURE_NAMES)


def test_feature_names_are_unique_prefixed_and_about_forty() -> None:
    assert len(set(FEATURE_NAMES)) == N
    assert 35 <= N <= 50
    assert all(name.startswith(("log_", "frac_", "avg_")) for name in FEATURE_NAMES)


def test_feature_order_is_pinned() -> None:
    # Saved bundles store stats per column: reordering or renaming needs a FEATURES_VERSION bump.
    assert FEATURES_VERSION == 1
    assert FEATURE_NAMES == (
        "log_chars",
        "log_words",
        "log_lines",
        "log_sentences",
        "avg_word_len",
        "frac_upper",
        "frac_digit",
        "frac_punct",
        "frac_space",
        "log_bullet_lines",
        "log_numbered_lines",
        "log_headings",
        "log_question_marks",
        "log_code_fences",
        "frac_indented_lines",
        "log_braces_semicolons",
        "log_code_operators",
        "log_code_keywords",
        "log_programming_words",
        "log_numbers",
        "log_math_operators",
        "log_latex_commands",
        "log_dollar_math",
        "log_equations",
        "log_math_words",
        "log_question_words",
        "log_reasoning_words",
        "log_choice_lines",
        "log_answer_markers",
        "frac_latin",
        "frac_cjk",
        "frac_cyrillic",
        "frac_arabic",
        "frac_devanagari",
        "frac_other_letters",
        "log_format_words",
        "log_length_limits",
        "log_constraint_words",
        "log_creative_words",
        "log_translation_words",
        "log_summary_words",
        "log_rewrite_words",
        "log_turn_markers",
        "log_urls",
        "log_emails",
    )


def test_docs_describe_every_feature() -> None:
    docs = DOCS.read_text(encoding="utf-8")
    missing = [name for name in FEATURE_NAMES if f"`{name}`" not in docs]
    assert missing == []


@pytest.mark.parametrize(
    ("prompt", "name", "expected"),
    [
        ("show me", "log_question_words", 0),
        ("whatever whoever somehow", "log_question_words", 0),
        ("HOW", "log_question_words", 1),
        ("classify subclass my_class", "log_code_keywords", 0),
        ("defined selection returned", "log_code_keywords", 0),
        ("Class", "log_code_keywords", 1),
        ("unexplained proven", "log_reasoning_words", 0),
        ("storyline poemx", "log_creative_words", 0),
        ("poems", "log_creative_words", 1),
        ("into frenchfries", "log_translation_words", 0),
        ("at leastways", "log_constraint_words", 0),
        ("solver", "log_math_words", 0),
        ("jsonify tablet", "log_format_words", 0),
        ("50 wordsmiths", "log_length_limits", 0),
        ("someone 50 words", "log_length_limits", 1),
        ("reanswer: x", "log_answer_markers", 0),
    ],
)
def test_word_boundaries_case_insensitive(prompt: str, name: str, expected: int) -> None:
    assert feature(prompt, name) == pytest.approx(L(expected))


@pytest.mark.parametrize("prompt", [None, "", "   \n\t  "])
def test_empty_prompts_give_a_finite_row(prompt: str | None) -> None:
    row = compute_features([prompt])[0]
    assert np.isfinite(row).all()
    assert row[FEATURE_NAMES.index("log_words")] == 0.0
    assert row[FEATURE_NAMES.index("log_sentences")] == 0.0


def test_none_is_the_empty_prompt() -> None:
    rows = compute_features([None, ""])
    np.testing.assert_array_equal(rows[0], rows[1])
    np.testing.assert_array_equal(rows[0], np.zeros(N, dtype=np.float32))


def test_huge_prompt_is_cut_and_cheap() -> None:
    head = "Explain why the sky is blue. " * (MAX_CHARS // 29 + 1)
    huge = head + "def f(): return 1\n" * 300_000  # about 5.5 MB
    start = time.perf_counter()
    rows = compute_features([huge, head[:MAX_CHARS]])
    assert time.perf_counter() - start < 5.0
    np.testing.assert_array_equal(rows[0], rows[1])
    assert rows[0][FEATURE_NAMES.index("log_chars")] == pytest.approx(L(MAX_CHARS))
    assert rows[0][FEATURE_NAMES.index("log_code_keywords")] == 0.0


def test_control_characters_and_lone_surrogates_do_not_crash() -> None:
    weird = ["\x00\x01\x7f\x1b[31m", "\ud800\udfff x \ud83d", "\u200b\ufeff\u202e", "a\rb\x0bc"]
    rows = compute_features(weird)
    assert rows.shape == (len(weird), N)
    assert np.isfinite(rows).all()


@pytest.mark.parametrize(
    "prompt",
    [
        "." * MAX_CHARS + "x",
        "a." * (MAX_CHARS // 2) + "@",
        "1." * (MAX_CHARS // 2),
        "$a " * (MAX_CHARS // 3),
        " " * (MAX_CHARS - 2) + "=x",
        "-" * (MAX_CHARS // 2) + "1",
        "to " * (MAX_CHARS // 3),
        "    " * (MAX_CHARS // 4),
        "a@" * (MAX_CHARS // 2),
        "http://" + "a" * MAX_CHARS,
    ],
    ids=lambda prompt: repr(prompt[:6]),
)
def test_adversarial_prompts_stay_linear(prompt: str) -> None:
    start = time.perf_counter()
    row = compute_features([prompt])[0]
    assert time.perf_counter() - start < 1.0
    assert np.isfinite(row).all()


def test_dtype_shape_and_empty_batch() -> None:
    rows = compute_features(["a", None, "b c"])
    assert rows.dtype == np.float32
    assert rows.shape == (3, N)
    assert compute_features([]).shape == (0, N)


def test_single_string_and_non_string_prompts_are_rejected() -> None:
    with pytest.raises(TypeError, match=r"got a single str.*compute_features\(\[prompt\]\)"):
        compute_features("a prompt")
    with pytest.raises(TypeError, match="got a prompt of type float; expected str or None"):
        compute_features(["ok", float("nan")])


def test_deterministic_and_independent_of_batch() -> None:
    prompts = ["Explain quicksort in Python.", "Écris un poème. 你好", None]
    first = compute_features(prompts)
    np.testing.assert_array_equal(first, compute_features(prompts))
    np.testing.assert_array_equal(first[1], compute_features([prompts[1]])[0])


def _typical_prompt(i: int) -> str:
    sentence = (
        "Explain step by step how to solve x^2 + 3x = 10 in Python, then compare it with "
        "the quadratic formula and return the answer as JSON in under 50 words. "
    )
    return f"{i}. " + sentence * 3  # about 100 words


def test_speed_of_typical_prompts() -> None:
    prompts = [_typical_prompt(i) for i in range(2000)]
    assert 90 <= len(prompts[0].split()) <= 120
    start = time.perf_counter()
    compute_features(prompts)
    assert time.perf_counter() - start < 5.0  # target is well over 2,000 prompts/s


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=300)), max_size=8))
def test_random_text_is_finite_and_in_range(prompts: list[str | None]) -> None:
    rows = compute_features(prompts)
    assert rows.shape == (len(prompts), N)
    assert np.isfinite(rows).all()
    assert (rows >= 0).all()
    fracs = [i for i, name in enumerate(FEATURE_NAMES) if name.startswith("frac_")]
    assert (rows[:, fracs] <= 1.0 + 1e-6).all()
    scripts = [FEATURE_NAMES.index(name) for name in SCRIPT_SHARES]
    for prompt, row in zip(prompts, rows, strict=True):
        has_letters = any(c.isalpha() for c in (prompt or "")[:MAX_CHARS])
        assert row[scripts].sum() == pytest.approx(1.0 if has_letters else 0.0, abs=1e-5)


# FeatureStats


def _matrix() -> np.ndarray:
    return compute_features(["Explain recursion.", "def f():\n    return 1", "你好", "x" * 90])


def test_fit_mean_std_and_constant_columns() -> None:
    matrix = _matrix()
    stats = FeatureStats.fit(matrix)
    assert stats.mean == pytest.approx(matrix.astype(np.float64).mean(axis=0).tolist())
    constant = FEATURE_NAMES.index("log_emails")  # no prompt above has an email
    assert stats.std[constant] == 1.0
    varying = FEATURE_NAMES.index("log_chars")
    assert stats.std[varying] == pytest.approx(float(matrix[:, varying].astype(np.float64).std()))


def test_normalize_zscores_and_clips() -> None:
    matrix = _matrix()
    stats = FeatureStats.fit(matrix)
    z = stats.normalize(matrix)
    assert z.dtype == np.float32
    assert z.shape == matrix.shape
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)
    far = np.full((1, N), 1e6, dtype=np.float32)
    np.testing.assert_array_equal(stats.normalize(far), np.full((1, N), CLIP, dtype=np.float32))
    np.testing.assert_array_equal(stats.normalize(-far), np.full((1, N), -CLIP, np.float32))


def test_to_dict_from_dict_round_trip_through_json() -> None:
    stats = FeatureStats.fit(_matrix())
    d = json.loads(json.dumps(stats.to_dict()))
    assert d["version"] == FEATURES_VERSION
    assert d["feature_names"] == list(FEATURE_NAMES)
    assert FeatureStats.from_dict(d) == stats
    assert FeatureStats.from_dict({"mean": d["mean"], "std": d["std"]}) == stats


def test_from_dict_wrong_length_is_a_clear_error() -> None:
    d = FeatureStats.fit(_matrix()).to_dict()
    del d["feature_names"]
    d["mean"] = d["mean"][:-1]
    with pytest.raises(ValueError, match=rf"mean: got {N - 1} values; expected {N}.*refit"):
        FeatureStats.from_dict(d)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"feature_names": ["log_chars"]}, r"missing \[.*expected the \d+ FEATURE_NAMES"),
        ({"version": FEATURES_VERSION + 1}, "got features version 2; this routerdb computes"),
        ({"extra": 1}, r"got keys \[.*'extra'.*expected 'mean' and 'std'"),
        ({"std": ["x"] * N}, r"got std=\['x'.*expected a list of \d+ numbers"),
    ],
)
def test_from_dict_rejects_bad_dicts(change: dict, message: str) -> None:
    d = {**FeatureStats.fit(_matrix()).to_dict(), **change}
    with pytest.raises(ValueError, match=message):
        FeatureStats.from_dict(d)


def test_from_dict_requires_mean_and_std() -> None:
    with pytest.raises(ValueError, match=r"got keys \['mean'\]; expected 'mean' and 'std'"):
        FeatureStats.from_dict({"mean": [0.0] * N})


def test_constructor_validates_length_and_values() -> None:
    with pytest.raises(ValueError, match=rf"std: got 3 values; expected {N}"):
        FeatureStats(mean=(0.0,) * N, std=(1.0,) * 3)
    with pytest.raises(ValueError, match="std: got a value <= 0"):
        FeatureStats(mean=(0.0,) * N, std=(0.0,) * N)
    with pytest.raises(ValueError, match="mean: got non-finite values"):
        FeatureStats(mean=(float("nan"),) * N, std=(1.0,) * N)


def test_fit_and_normalize_check_the_matrix_shape() -> None:
    with pytest.raises(ValueError, match=rf"got an array of shape \(2, 3\); expected \[n_prompts, {N}\]"):
        FeatureStats.fit(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="got 0 rows"):
        FeatureStats.fit(np.zeros((0, N)))
    stats = FeatureStats.fit(_matrix())
    with pytest.raises(ValueError, match=r"normalize: got an array of shape \(3,\)"):
        stats.normalize(np.zeros(3))
