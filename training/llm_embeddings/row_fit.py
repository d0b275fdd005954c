"""A new LLM's row of the LLM table, fitted against a trained head from its comparison records.

For a router whose LLM rows were learned with the head (`embedding_spec.kind` "learned"), nothing
can embed an LLM it never saw; but the head is fixed and the new LLM is one row e [D]. Its records
are a likelihood of e, with the known LLMs' rows and the prompts' vectors held fixed, in the head's
own terms (`training.model.heads.Head`), as in training:

    its comparisons with known LLMs:  P(new beats o on p) = sigmoid(head.pair_logit(raw(p, e), raw(p, e_o)))
    its own scores, where the data has them (per-model scores) and the router was trained on them
    (`pointwise_weight`):  score(p) ~ Bernoulli(head.probability(raw(p, e) + c(p)))

where c(p), with the known LLMs' scores on the same prompts (`known_scores`), calibrates the head on
the records' source: the shift of raw that fits their scores there (one shift common to the
prompts, free, plus each prompt's own, under N(0, 1); 0 without them). A source the router never
saw is easier or harder than its difficulty says, and read as they are, the new LLM's scores would
move its level by that miscalibration (on RouterBench left out, a new LLM from 200 records: 65.6 %
of its pairs right read as they are, 68.5 % from comparisons alone, 69.5 % calibrated, 11 LLMs).

and e is its maximum a posteriori under a Gaussian prior fitted to the known LLMs' rows (mean and
per-coordinate variance): with few records e stays near the average LLM, with many it follows
the data. The known rows' spread understates how far a new LLM may lie (training shrinks rows
it has little data for), so the prior's weight is chosen among PRIOR_SCALES by cross-validation
over the records' prompts (held-out likelihood, FOLDS folds), then e is fitted on every record.
Ties count as half a win for each side. Full-batch Adam on a vector: seconds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from training.llm_embeddings.records import Records
from training.model.heads import Head
from training.trainer.losses import point_loss

log = logging.getLogger(__name__)

STEPS, LR = 400, 0.05
PRIOR_SCALES = (1.0, 0.25, 0.05)  # weights of the prior tried; 1 is the known rows' own spread
FOLDS = 3


@dataclass
class _Problem:
    """The fit's tensors: the head's inputs for the prompts used, the comparisons (prompt row,
    opponent's fixed raw value, outcome, weight) and the LLM's own scores (prompt row, score)."""

    head: Head
    u: torch.Tensor
    p: torch.Tensor
    raw_o: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor
    points: tuple[torch.Tensor, torch.Tensor] | None
    mean: torch.Tensor
    var: torch.Tensor
    pointwise_weight: float
    used: np.ndarray  # [prompts used]: their rows of records.prompts
    shift: torch.Tensor | None = None  # [prompts used]: each prompt's calibration of raw for own scores

    def subset(self, prompt_rows: torch.Tensor) -> _Problem:
        """The same problem on the records and scores of the prompts `prompt_rows` (a bool mask)."""
        keep = prompt_rows[self.p]
        points = None if self.points is None else tuple(x[prompt_rows[self.points[0]]] for x in self.points)
        return _Problem(self.head, self.u, self.p[keep], self.raw_o[keep], self.y[keep], self.w[keep], points,
                        self.mean, self.var, self.pointwise_weight, self.used, self.shift)

    def nll(self, e: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of the records (and, weighted, the scores) under row e."""
        raw = self.head.raw(self.u, e.unsqueeze(0))[:, 0]
        logit = self.head.pair_logit(raw[self.p], self.raw_o)
        loss = (self.w * F.softplus(-self.y * logit)).sum() / self.w.sum()
        if self.points is not None and len(self.points[0]):
            at = raw[self.points[0]]
            if self.shift is not None:
                at = at + self.shift[self.points[0]]
            loss = loss + self.pointwise_weight * point_loss(self.head, at, self.points[1])
        return loss


def fit_llm_row(head: Head, prompt_vectors: np.ndarray, records: Records, known: list[str],
                known_rows: np.ndarray, *, own_scores: tuple[np.ndarray, np.ndarray] | None = None,
                pointwise_weight: float = 0.0, seed: int = 0,
                prior_scales: tuple[float | torch.Tensor, ...] = PRIOR_SCALES,
                prior_mean: np.ndarray | None = None,
                known_scores: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """[1, D]: the MAP row of the LLM whose `records` these are. `prompt_vectors` [len(records.prompts),
    H + F] are the head's inputs for `records.prompts`; `known` / `known_rows` [M, D] the table;
    `own_scores` (rows of records.prompts, scores in [0, 1]) its per-model scores, used with
    `pointwise_weight` > 0 as the router's training used them; the prior's weight is the one of
    `prior_scales` with the best cross-validated likelihood. The prior is centred on the known rows'
    mean (a new LLM starts as the average one) or on `prior_mean` [D] (a known LLM's own row, which
    its records then correct rather than replace). `known_scores` (rows of records.prompts, columns
    of `known`, scores; `known_scores()` reads them from a pairs table) calibrate the own scores."""
    problem = _problem(head.eval().requires_grad_(False), prompt_vectors, records, known, known_rows,
                       own_scores, pointwise_weight)
    if known_scores is not None and problem.points is not None:
        problem.shift = _calibration(problem, known_scores, torch.as_tensor(known_rows, dtype=torch.float32))
    if prior_mean is not None:
        problem.mean = torch.as_tensor(np.asarray(prior_mean, dtype=np.float32).reshape(-1))
    scale = _cross_validated_scale(problem, prior_scales, seed)
    return _fit(problem, scale).detach().numpy()[None, :]


def _problem(head, prompt_vectors, records, known, known_rows, own_scores, pointwise_weight) -> _Problem:
    p, o, y, w = _outcomes_against_known(records, known)
    if not len(p):
        raise ValueError(f"no comparison record of this LLM against an LLM the router knows ({len(known)} "
                         "known); add records against some of them")
    rows = torch.as_tensor(known_rows, dtype=torch.float32)
    # only the prompts the records and scores use enter the fit (records share a larger prompt list)
    used = np.union1d(p.numpy(), [] if own_scores is None else own_scores[0]).astype(np.int64)
    p = torch.as_tensor(np.searchsorted(used, p.numpy()))
    u = torch.as_tensor(np.asarray(prompt_vectors)[used], dtype=torch.float32)
    with torch.no_grad():
        raw_o = head.raw(u, rows)[p, o]  # the opponents' raw values, fixed
    points = None if own_scores is None or pointwise_weight <= 0 else (
        torch.as_tensor(np.searchsorted(used, own_scores[0]), dtype=torch.long),
        torch.as_tensor(own_scores[1], dtype=torch.float32))
    var = rows.var(0, unbiased=False).clamp(min=1e-4)
    return _Problem(head, u, p, raw_o, y, w, points, rows.mean(0), var, pointwise_weight, used)


CALIBRATION_PRIOR = 1.0  # weight of the N(0, 1) prior on a prompt's own deviation from the common shift


def _calibration(problem: _Problem, known_scores, rows: torch.Tensor) -> torch.Tensor:
    """[prompts used]: per prompt, the shift of raw that fits the known LLMs' own scores there
    (`known_scores`: rows of records.prompts, known LLM columns, scores): one shift common to the
    records' prompts (free: a source the router never saw may be easier or harder throughout) plus
    each prompt's deviation from it (MAP under N(0, 1)). The head's difficulty of a prompt, corrected
    by how the LLMs it knows scored there, so that the new LLM's own scores are read on the same
    footing as theirs rather than moving its level by the source's miscalibration."""
    used = problem.used
    q, o, v = (np.asarray(x) for x in known_scores)
    keep = np.isin(q, used)
    q, o, v = np.searchsorted(used, q[keep]), o[keep], v[keep]
    if not len(q):
        return torch.zeros(len(used))
    with torch.no_grad():
        raw = problem.head.raw(problem.u, rows)[torch.as_tensor(q), torch.as_tensor(o)]
    qt, vt = torch.as_tensor(q), torch.as_tensor(v, dtype=torch.float32)
    common = nn.Parameter(torch.zeros(()))
    own = nn.Parameter(torch.zeros(len(used)))
    optim = torch.optim.Adam([common, own], lr=LR)
    for _ in range(STEPS):
        loss = (point_loss(problem.head, raw + common + own[qt], vt) * len(qt)
                + CALIBRATION_PRIOR * 0.5 * (own ** 2).sum())
        optim.zero_grad()
        loss.backward()
        optim.step()
    log.info("own scores calibrated on %d scores of %d known LLMs over %d prompts: the head's raw value "
             "shifted by %+.2f in common (each prompt's own: sd %.2f)", len(qt), len(np.unique(o)), len(used),
             float(common), float(own.detach().std()) if len(used) > 1 else 0.0)
    return (common + own).detach()


def _cross_validated_scale(problem: _Problem, scales: tuple[float | torch.Tensor, ...],
                           seed: int) -> float | torch.Tensor:
    """The prior weight of `scales` whose fits on FOLDS - 1 folds of the prompts best predict the
    held-out fold's records (summed over folds); the first scale when there is nothing to choose."""
    prompts = torch.unique(problem.p)
    if len(scales) == 1 or len(prompts) < 2 * FOLDS:
        return scales[0]
    fold = torch.full((len(problem.u),), -1, dtype=torch.long)
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed))
    fold[prompts[order]] = torch.arange(len(prompts)) % FOLDS
    held_out = []
    for scale in scales:
        total = 0.0
        for k in range(FOLDS):
            e = _fit(problem.subset(fold != k), scale)
            with torch.no_grad():
                total += float(problem.subset(fold == k).nll(e)) * int((fold == k).sum())
        held_out.append(total)
    return scales[int(np.argmin(held_out))]


def _fit(problem: _Problem, scale: float | torch.Tensor) -> torch.Tensor:
    """Row e minimising the records' loss plus `scale` x the prior's (a number, or one weight per
    coordinate [D]), Adam from the average LLM."""
    e, fitted = _initial_row(problem.head, problem.mean, problem.u, problem.p)
    optim = torch.optim.Adam([e], lr=LR)
    for _ in range(STEPS):
        loss = problem.nll(e) + (scale * 0.5 * (e - problem.mean) ** 2 / problem.var).sum() / problem.w.sum()
        optim.zero_grad()
        loss.backward()
        e.grad *= fitted
        optim.step()
    return e.detach()


def _initial_row(head: Head, mean: torch.Tensor, u: torch.Tensor, p: torch.Tensor):
    """(the row to fit, starting at the average LLM; 1 on the coordinates the likelihood fits).
    The part of a row the head measures from its prompts (the IRT head's region, with coverage)
    comes from the records' prompts, computed, not fitted."""
    e = nn.Parameter(mean.clone())
    fitted = torch.ones_like(e)
    measured = head.measured_part(u[torch.unique(p)])
    if measured is not None:
        start, values = measured
        with torch.no_grad():
            e[start:] = values
        fitted[start:] = 0.0
    return e, fitted


def own_scores(pairs, llm: str, prompts: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(rows of `prompts`, scores) of `llm`'s own per-model scores in a pairs table (each prompt once)."""
    rows, _, values = known_scores(pairs, [llm], prompts)
    return rows, values


def known_scores(pairs, known: list[str],
                 prompts: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows of `prompts`, columns of `known`, scores): the known LLMs' own per-model scores on
    `prompts` in a pairs table (each (prompt, LLM) once); what calibrates a new LLM's own scores."""
    column = {m: j for j, m in enumerate(known)}
    index = {q: i for i, q in enumerate(prompts)}
    seen: dict[tuple[int, int], float] = {}
    for side, score in (("model_a", "score_a"), ("model_b", "score_b")):
        for q, m, v in zip(pairs["prompt"].to_pylist(), pairs[side].to_pylist(), pairs[score].to_pylist(),
                           strict=True):
            if v is not None and m in column and q in index:
                seen.setdefault((index[q], column[m]), float(v))
    keys = sorted(seen)
    return (np.array([k[0] for k in keys], dtype=np.int64), np.array([k[1] for k in keys], dtype=np.int64),
            np.array([seen[k] for k in keys], dtype=np.float32))


def _outcomes_against_known(records: Records, known: list[str]):
    """(prompt row, opponent column, outcome, weight) tensors of the records against known LLMs;
    a tie appears twice, as a win and as a loss, each at weight 1/2."""
    column = {name: j for j, name in enumerate(known)}
    opponent = np.array([column.get(records.llms[k], -1) for k in records.opponent])
    keep = opponent >= 0
    p, o, y = records.prompt[keep], opponent[keep], records.outcome[keep].astype(np.float32)
    tie = y == 0
    p = np.concatenate([p[~tie], p[tie], p[tie]])
    o = np.concatenate([o[~tie], o[tie], o[tie]])
    y = np.concatenate([y[~tie], np.ones(tie.sum()), -np.ones(tie.sum())])
    w = np.concatenate([np.ones((~tie).sum()), np.full(2 * tie.sum(), 0.5)])
    return (torch.as_tensor(p, dtype=torch.long), torch.as_tensor(o, dtype=torch.long),
            torch.as_tensor(y, dtype=torch.float32), torch.as_tensor(w, dtype=torch.float32))
