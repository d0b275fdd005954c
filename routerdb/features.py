"""Prompt features: a fixed, documented vector of cheap signals per prompt.

Pure Python + numpy (no torch), shared by training and the DuckDB runtime. Every feature is a
count passed through ``log1p``, a share in [0, 1], or a capped average, so a z-score over a
training set normalises it well. ``docs/features.md`` documents each name in ``FEATURE_NAMES``.

This module is the public contract: the names and their order, ``compute_features`` (input
checks, truncation to the first ``MAX_CHARS`` characters, so a huge prompt costs little) and
``FeatureStats`` (z-scoring, stored in the bundle). How each value is counted (keyword lists,
regexes, extractors) lives in ``routerdb.feature_rules``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from routerdb.feature_rules import feature_values

MAX_CHARS = 100_000  # longer prompts are cut to this many leading characters
STD_FLOOR = 1e-6  # a column whose std is below this is constant: it gets std 1.0
CLIP = 5.0  # normalised features are clipped to [-CLIP, CLIP]
FEATURES_VERSION = 1  # bump when a feature's definition changes; stored with FeatureStats

FEATURE_NAMES: tuple[str, ...] = (
    # length and structure
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
    # code
    "log_code_fences",
    "frac_indented_lines",
    "log_braces_semicolons",
    "log_code_operators",
    "log_code_keywords",
    "log_programming_words",
    # math
    "log_numbers",
    "log_math_operators",
    "log_latex_commands",
    "log_dollar_math",
    "log_equations",
    "log_math_words",
    # reasoning and questions
    "log_question_words",
    "log_reasoning_words",
    # multiple choice
    "log_choice_lines",
    "log_answer_markers",
    # languages / scripts (shares of letters)
    "frac_latin",
    "frac_cjk",
    "frac_cyrillic",
    "frac_arabic",
    "frac_devanagari",
    "frac_other_letters",
    # requests
    "log_format_words",
    "log_length_limits",
    "log_constraint_words",
    "log_creative_words",
    "log_translation_words",
    "log_summary_words",
    "log_rewrite_words",
    # conversation and references
    "log_turn_markers",
    "log_urls",
    "log_emails",
)


def _feature_row(prompt: str | None) -> list[float]:
    if prompt is None:
        prompt = ""
    elif not isinstance(prompt, str):
        raise TypeError(
            f"compute_features: got a prompt of type {type(prompt).__name__}; expected str "
            "or None (None counts as the empty prompt); convert missing values to None"
        )
    values = feature_values(prompt[:MAX_CHARS])
    return [values[name] for name in FEATURE_NAMES]


def compute_features(prompts: Sequence[str | None]) -> np.ndarray:
    """Features of each prompt: float32 ``[len(prompts), len(FEATURE_NAMES)]``, always finite.

    ``None`` counts as the empty prompt; prompts are cut to their first ``MAX_CHARS`` characters.
    """
    if isinstance(prompts, str):
        raise TypeError(
            "compute_features: got a single str; expected a sequence of prompts; "
            "wrap it in a list: compute_features([prompt])"
        )
    rows = [_feature_row(prompt) for prompt in prompts]
    return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))


def _check_matrix(matrix: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(matrix, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != len(FEATURE_NAMES):
        raise ValueError(
            f"{what}: got an array of shape {array.shape}; expected [n_prompts, "
            f"{len(FEATURE_NAMES)}] (one column per FEATURE_NAMES entry); "
            "build it with compute_features(prompts)"
        )
    return array


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature mean and std for z-scoring; stored in the bundle manifest via ``to_dict``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(FEATURE_NAMES)
        for field, values in (("mean", self.mean), ("std", self.std)):
            if len(values) != n:
                raise ValueError(
                    f"FeatureStats.{field}: got {len(values)} values; expected {n}, one per "
                    f"FEATURE_NAMES entry (features version {FEATURES_VERSION}); refit the "
                    "stats with FeatureStats.fit(compute_features(prompts))"
                )
            if not all(math.isfinite(v) for v in values):
                raise ValueError(
                    f"FeatureStats.{field}: got non-finite values; expected finite floats; "
                    "refit the stats on a finite feature matrix"
                )
        if min(self.std) <= 0:
            raise ValueError(
                f"FeatureStats.std: got a value <= 0 ({min(self.std)}); expected positive "
                "values; refit with FeatureStats.fit, which floors constant columns at 1.0"
            )

    @classmethod
    def fit(cls, matrix: np.ndarray) -> FeatureStats:
        """Column mean and std of a ``compute_features`` matrix; constant columns get std 1.0."""
        array = _check_matrix(matrix, "FeatureStats.fit")
        if array.shape[0] == 0 or not np.isfinite(array).all():
            raise ValueError(
                f"FeatureStats.fit: got {array.shape[0]} rows (finite: "
                f"{bool(np.isfinite(array).all())}); expected at least one row of finite "
                "values; pass compute_features(prompts) for a non-empty prompt list"
            )
        std = array.std(axis=0)
        std = np.where(std < STD_FLOOR, 1.0, std)
        return cls(mean=tuple(map(float, array.mean(axis=0))), std=tuple(map(float, std)))

    def normalize(self, matrix: np.ndarray) -> np.ndarray:
        """Z-score each column, clipped to ``[-CLIP, CLIP]``: float32 ``[n, n_features]``."""
        array = _check_matrix(matrix, "FeatureStats.normalize")
        z = (array - np.asarray(self.mean)) / np.asarray(self.std)
        return np.clip(z, -CLIP, CLIP).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-ready form, naming the features so a mismatch is caught on load."""
        return {
            "version": FEATURES_VERSION,
            "feature_names": list(FEATURE_NAMES),
            "mean": list(self.mean),
            "std": list(self.std),
        }

    @classmethod
    def from_dict(cls, d: dict) -> FeatureStats:
        """Inverse of ``to_dict``; raises ``ValueError`` naming what does not match."""
        allowed = {"version", "feature_names", "mean", "std"}
        if not isinstance(d, dict) or not {"mean", "std"} <= d.keys() or d.keys() - allowed:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(
                f"FeatureStats.from_dict: got keys {got}; expected 'mean' and 'std' "
                f"(optionally 'version', 'feature_names'), nothing else; "
                "write the dict with FeatureStats.to_dict()"
            )
        if d.get("version", FEATURES_VERSION) != FEATURES_VERSION:
            raise ValueError(
                f"FeatureStats.from_dict: got features version {d['version']!r}; this "
                f"routerdb computes version {FEATURES_VERSION}; refit the stats (retrain "
                "the bundle) with this routerdb, or install the routerdb that wrote it"
            )
        names = tuple(d.get("feature_names", FEATURE_NAMES))
        if names != FEATURE_NAMES:
            missing = sorted(set(FEATURE_NAMES) - set(names))
            extra = sorted(set(names) - set(FEATURE_NAMES))
            raise ValueError(
                f"FeatureStats.from_dict: got {len(names)} feature names (missing {missing}, "
                f"unknown {extra}); expected the {len(FEATURE_NAMES)} FEATURE_NAMES in order; "
                "refit the stats with this routerdb's compute_features"
            )
        return cls(mean=_floats(d["mean"], "mean"), std=_floats(d["std"], "std"))


def _floats(values: object, field: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in values)  # type: ignore[union-attr]
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"FeatureStats.from_dict: got {field}={values!r:.80}; expected a list of "
            f"{len(FEATURE_NAMES)} numbers; write the dict with FeatureStats.to_dict()"
        ) from err
