"""Comparison records: what the phase-1 embedding model knows about an LLM, and its triplets.

Our data has no responses, so an LLM is described by its comparison records. Each pair of the
pairs table (``training.data.read.PAIRS_SCHEMA``: prompt, model_a, model_b, label) gives two records,
one per side::

    record of model_a: (text, opponent=model_b, outcome=+label)
    record of model_b: (text, opponent=model_a, outcome=-label)

``outcome`` is +1 (won), 0 (tie) or -1 (lost); ties are kept, they say "as good as the opponent
here". ``text`` is the prompt, or the prompt, a blank line and that LLM's response when the
pairs carry ``response_a`` / ``response_b`` (so response text is used whenever data has it).

Triplets (``triplet_steps``), one step at a time:

1. draw ``prompts_per_step`` distinct prompts of the training records and split them at random
   into two halves, A and B (so anchor and positive never share a prompt);
2. for every LLM ``i`` with records in both halves: **anchor** = up to ``records_per_set`` of
   its records on A, **positive** = up to ``records_per_set`` of its records on B;
3. **negatives**: the positive set of every other LLM ``j`` of the step, so a step with N LLMs
   gives N x (N - 1) triplets (anchor_i, positive_i, positive_j), all in the loss ("batch-all";
   the hardest negative alone makes the embeddings collapse). Positive and negative share their
   prompts, so the only way to tell them apart is what happened on those prompts.

Opponents enter a record only by their strength, never by name: an LLM is never its own
opponent, so with names "which opponent never appears" would identify it without saying anything
about what it is good at (on all-pairs data that cue alone identifies 96% of 32-record sets).

Records are drawn without replacement inside a set. ``identification_sets`` draws the held-out
query sets used to measure top-1 identification. numpy only, no torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from routerdb.prompt_keys import distinct
from training.data.splits import held_out, normalise_prompt
from training.model.priors import bradley_terry_strengths

RESPONSE_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Records:
    """Comparison records as index arrays ([R] each) into ``texts``, ``prompts`` and ``llms``."""

    texts: tuple[str, ...]  # distinct record texts (prompt, or prompt + response)
    prompts: tuple[str, ...]  # distinct prompts
    llms: tuple[str, ...]  # LLM names, sorted; both the record's LLM and its opponent index this
    llm: np.ndarray  # [R] int64, whose record it is
    text: np.ndarray  # [R] int64, row of `texts`
    prompt: np.ndarray  # [R] int64, row of `prompts`
    opponent: np.ndarray  # [R] int64, index into `llms`
    outcome: np.ndarray  # [R] int8, +1 won, 0 tie, -1 lost

    def __len__(self) -> int:
        return len(self.llm)

    def take(self, rows: np.ndarray) -> Records:
        """The records at `rows` (an index array or boolean mask); the lookup tuples are shared."""
        return Records(self.texts, self.prompts, self.llms, self.llm[rows], self.text[rows],
                       self.prompt[rows], self.opponent[rows], self.outcome[rows])

    def of(self, name: str) -> Records:
        if name not in self.llms:
            raise KeyError(f"no comparison records of LLM {name!r}; the data has records of "
                           f"{len(self.llms)} LLM(s): {', '.join(self.llms)}")
        return self.take(self.llm == self.llms.index(name))

    def counts(self) -> dict[str, int]:
        """Records per LLM."""
        return dict(zip(self.llms, np.bincount(self.llm, minlength=len(self.llms)).tolist(), strict=True))


def comparison_records(pairs: pa.Table) -> Records:
    """Two records per pair (one per side), as described in the module docstring."""
    prompt = pairs["prompt"].to_pylist()
    a, b = pairs["model_a"].to_pylist(), pairs["model_b"].to_pylist()
    label = pairs["label"].to_numpy().astype(np.int8)
    llms = tuple(sorted(set(a) | set(b)))
    index = {m: j for j, m in enumerate(llms)}
    ia = np.fromiter((index[m] for m in a), np.int64, len(a))
    ib = np.fromiter((index[m] for m in b), np.int64, len(b))
    prompts, prompt_codes = distinct(prompt)
    texts_a, texts_b = _texts(pairs, prompt)
    texts, text_codes = distinct(texts_a + texts_b)
    return Records(texts=tuple(texts), prompts=tuple(prompts), llms=llms,
                   llm=np.concatenate([ia, ib]), text=text_codes,
                   prompt=np.concatenate([prompt_codes, prompt_codes]),
                   opponent=np.concatenate([ib, ia]), outcome=np.concatenate([label, -label]))


def _texts(pairs: pa.Table, prompt: list[str]) -> tuple[list[str], list[str]]:
    out = []
    for side in ("response_a", "response_b"):
        if side not in pairs.column_names:
            out.append(prompt)
            continue
        responses = pairs[side].to_pylist()
        out.append([p if r is None else p + RESPONSE_SEPARATOR + r
                    for p, r in zip(prompt, responses, strict=True)])
    return out[0], out[1]


def split_records(records: Records, fraction: float, seed: int) -> tuple[Records, Records]:
    """(fit, held out): `fraction` of the distinct prompts (at least one, if two or more) held
    out, chosen as `training.data.splits.split_by_prompt` chooses them."""
    used = np.unique(records.prompt)
    if len(used) < 2:
        return records, records.take(np.zeros(len(records), bool))
    held = used[held_out([normalise_prompt(records.prompts[i]) for i in used], fraction, seed)]
    mask = np.isin(records.prompt, held)
    return records.take(~mask), records.take(mask)


@dataclass(frozen=True)
class TripletStep:
    """Rows into the records: anchor and positive sets, [N, k] each (-1 for padding), one pair
    per LLM of the step; the negatives are other LLMs' positives."""

    anchor: np.ndarray
    positive: np.ndarray
    llm: np.ndarray  # [N] whose sets they are, distinct


def triplet_steps(records: Records, prompts_per_step: int, records_per_set: int,
                  rng: np.random.Generator) -> Iterator[TripletStep]:
    """One epoch of triplet steps: every training prompt is drawn once (see the module docstring)."""
    used = rng.permutation(np.unique(records.prompt))
    for start in range(0, len(used), prompts_per_step):
        pool = used[start:start + prompts_per_step]
        if len(pool) < 2:
            continue
        step = _triplets(records, pool, records_per_set, rng)
        if step is not None:
            yield step


def _triplets(records: Records, pool: np.ndarray, k: int, rng: np.random.Generator) -> TripletStep | None:
    half_a, half_b = np.array_split(rng.permutation(pool), 2)
    rows_a = _rows_by_llm(records, np.flatnonzero(np.isin(records.prompt, half_a)))
    rows_b = _rows_by_llm(records, np.flatnonzero(np.isin(records.prompt, half_b)))
    llms = sorted(rows_a.keys() & rows_b.keys())
    if len(llms) < 2:  # a triplet needs another LLM on the same prompts
        return None
    anchors = [_draw(rows_a[i], k, rng) for i in llms]
    positives = [_draw(rows_b[i], k, rng) for i in llms]
    return TripletStep(_pad(anchors, k), _pad(positives, k), np.array(llms))


def _rows_by_llm(records: Records, rows: np.ndarray) -> dict[int, np.ndarray]:
    llm = records.llm[rows]
    order = np.argsort(llm, kind="stable")
    values, starts = np.unique(llm[order], return_index=True)
    ends = [*starts[1:], len(order)]
    return {int(v): rows[order[s:e]] for v, s, e in zip(values, starts, ends, strict=True)}


def _draw(rows: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    return rows if len(rows) <= k else rng.choice(rows, size=k, replace=False)


def _pad(sets: list[np.ndarray], k: int) -> np.ndarray:
    out = np.full((len(sets), k), -1, dtype=np.int64)
    for n, rows in enumerate(sets):
        out[n, :len(rows)] = rows
    return out


def profile_rows(records: Records, llm: int, limit: int, seed: int) -> np.ndarray:
    """The rows (at most `limit`, a seeded draw) an LLM's embedding is computed from."""
    rows = np.flatnonzero(records.llm == llm)
    if len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng([seed, llm]).choice(rows, size=limit, replace=False))


def identification_sets(records: Records, sets_per_llm: int, records_per_set: int,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Query sets for top-1 identification: ([S, k] rows, -1 padded; [S] the true LLM)."""
    rng = np.random.default_rng(seed)
    groups = _rows_by_llm(records, np.arange(len(records)))
    sets, truth = [], []
    for i, rows in sorted(groups.items()):
        for _ in range(sets_per_llm):
            sets.append(_draw(rows, records_per_set, rng))
            truth.append(i)
    if not sets:
        return np.zeros((0, records_per_set), np.int64), np.zeros(0, np.int64)
    return _pad(sets, records_per_set), np.array(truth)


def win_rates(records: Records) -> dict[str, float]:
    """Each LLM's share of wins among its decisive records (0.5 without any)."""
    decisive = records.outcome != 0
    n = len(records.llms)
    wins = np.bincount(records.llm[decisive], weights=records.outcome[decisive] > 0, minlength=n)
    games = np.bincount(records.llm[decisive], minlength=n)
    return {name: float(w / g) if g else 0.5 for name, w, g in zip(records.llms, wins, games, strict=True)}


def bt_strengths(records: Records) -> dict[str, float]:
    """Bradley-Terry strength per LLM (log-odds scale, mean 0), fitted on the decisive records."""
    once = records.llm < records.opponent  # each pair has one record per side: keep one
    names = np.array(records.llms, dtype=object)
    if not np.any(records.outcome[once] != 0):
        return dict.fromkeys(records.llms, 0.0)
    strengths = bradley_terry_strengths(names[records.llm[once]], names[records.opponent[once]],
                                        records.outcome[once])
    return {name: strengths.get(name, 0.0) for name in records.llms}


def strength_given(records: Records, opponents: dict[str, float], l2: float = 1.0) -> float:
    """The strength of the LLM whose records these are, its opponents' strengths held fixed:
    the maximum of sum log sigmoid(outcome * (theta - theta_opponent)) - l2/2 theta^2 over
    decisive records (Newton's method; an opponent not in `opponents` counts as 0, the mean)."""
    decisive = records.outcome != 0
    known = np.array([opponents.get(name, 0.0) for name in records.llms])
    theta_o, y = known[records.opponent[decisive]], records.outcome[decisive].astype(np.float64)
    theta = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-y * (theta - theta_o)))  # probability of what happened
        step = (np.sum(y * (1.0 - p)) - l2 * theta) / (np.sum(p * (1.0 - p)) + l2)
        theta += step
        if abs(step) < 1e-9:
            break
    return float(theta)
