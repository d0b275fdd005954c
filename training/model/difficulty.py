"""A prompt's difficulty prior: ridge regression of pooled per-prompt mean correctness.

The IRT head learns a difficulty d(p) jointly with the LLMs' abilities and skills; off the training
distribution it was worth about as much as the prompt's length. A plain, strongly regularised
linear map from the prompt vector (frozen encoder vector + normalised prompt features, log length
among them) to the prompt's mean correctness over the LLMs that answered it transfers much better
(docs/quality-history.md, "The difficulty prior alone"). This module fits that map and holds it
as a fixed module:

    targets = prompt_targets(pairs)                 # per-prompt mean correctness (score rows only)
    prior = DifficultyPrior.fit(vectors, targets.mean, alpha=1.0, weight=targets.count)
    d0 = prior(vectors)                             # [P, 1] difficulty in logits: -logit(mean)

The IRT head uses it in one of two ways (`training.model.heads.IRTHead`):

* `difficulty_prior`: added under the learned difficulty, which only corrects it;
  `TransformerEmbeddingModel.train` fits it before the first step (`fit_prior`);
* `served_difficulty`: after training it replaces the learned difficulty in what the router serves,
  put on the learned one's scale (`IRTHead.serve_difficulty`, called by `finish_training`). A pair's
  logit does not read the difficulty, so every ranking of LLMs stays as trained; what moves is
  where a strong and a weak LLM's scores lie far apart, the reading routing by a score gap makes.
  With `served_difficulty_gate` it replaces it only off the prompts the learned difficulty was
  taught on: a logistic gate (`ScoredPromptGate`) tells prompts like the per-model-score prompts
  from prompts like those with pairwise judgments only, and the served difficulty is
  g x learned + (1 - g) x prior.

Its weights are buffers: saved with the head, exported in the ONNX graph, and not trained.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from torch import nn

log = logging.getLogger(__name__)

CLIP = 0.02  # predicted mean correctness is clipped to [CLIP, 1 - CLIP] before the logit


@dataclass(frozen=True)
class PromptTargets:
    """Per distinct prompt with per-model scores: its mean correctness over the LLMs scored on it."""

    prompts: list[str]
    mean: np.ndarray  # [P] in [0, 1]
    count: np.ndarray  # [P] how many LLMs were scored on it


def prompt_targets(pairs: pa.Table, centre: bool = False) -> PromptTargets:
    """Mean correctness per prompt from the `score_a` / `score_b` columns (rows of pairwise data
    have none and are skipped). With `centre`, each (prompt, LLM) score is first taken relative to
    that LLM's mean over all its scores (plus the overall mean), so that which LLMs a source scored
    does not read as difficulty."""
    prompt, llm, score = _scores(pairs)
    if not len(score):
        return PromptTargets([], np.zeros(0), np.zeros(0))
    codes, p = np.unique(prompt, return_inverse=True)
    if centre:
        names, m = np.unique(llm, return_inverse=True)
        own = np.bincount(m, score) / np.bincount(m)
        score = score - own[m] + score.mean()
    count = np.bincount(p)
    mean = np.clip(np.bincount(p, score) / count, 0.0, 1.0)
    return PromptTargets(codes.tolist(), mean, count.astype(np.float64))


def _scores(pairs: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(prompt, llm, score) once per scored (prompt, LLM)."""
    prompt = np.asarray(pairs["prompt"].to_pylist(), dtype=object)
    parts = []
    for llm_col, score_col in (("model_a", "score_a"), ("model_b", "score_b")):
        score = pairs[score_col].to_numpy(zero_copy_only=False).astype(np.float64)
        keep = np.isfinite(score)
        llm = np.asarray(pairs[llm_col].to_pylist(), dtype=object)
        parts.append((prompt[keep], llm[keep], score[keep]))
    prompt, llm, score = (np.concatenate(x) for x in zip(*parts, strict=True))
    if not len(score):
        return prompt, llm, score
    _, p = np.unique(prompt, return_inverse=True)
    names, m = np.unique(llm, return_inverse=True)
    _, first = np.unique(p * len(names) + m, return_index=True)
    first = np.sort(first)
    return prompt[first], llm[first], score[first]


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float,
              weight: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """(coef [D], intercept) of weighted ridge regression on standardised columns; the penalty is
    alpha x (sum of weights) x |coef|^2 in standardised units, so alpha does not depend on how many
    prompts there are (alpha 1: a direction of the prompt vectors explaining less than 1 unit of
    variance is mostly shrunk away)."""
    w, mu, sd, z = _standardised(x, weight)
    y_mu = float(w @ y)
    gram = (z * w[:, None]).T @ z + alpha * np.eye(x.shape[1])
    beta = np.linalg.solve(gram, (z * w[:, None]).T @ (y - y_mu))
    coef = beta / sd
    return coef, y_mu - float(mu @ coef)


def _standardised(x: np.ndarray, weight: np.ndarray | None):
    """(weights summing to 1, weighted column means, standard deviations (1 where a column is
    constant), the standardised columns) of x [N, D], for `fit_ridge` and `fit_logistic`."""
    x = np.asarray(x, np.float64)
    w = np.ones(len(x)) if weight is None else np.asarray(weight, np.float64)
    w = w / w.sum()
    mu = w @ x
    sd = np.sqrt(w @ (x - mu) ** 2)
    sd[sd < 1e-8] = 1.0
    return w, mu, sd, (x - mu) / sd


def fit_logistic(x: np.ndarray, y: np.ndarray, alpha: float, weight: np.ndarray | None = None,
                 iterations: int = 25) -> tuple[np.ndarray, float]:
    """(coef [D], intercept) of weighted L2-penalised logistic regression of y in {0, 1} on
    standardised columns (Newton's method; the penalty alpha x (sum of weights) x |coef|^2, in
    standardised units, as `fit_ridge`'s)."""
    w, mu, sd, z = _standardised(x, weight)
    z = np.hstack([z, np.ones((len(z), 1))])
    penalty = np.full(z.shape[1], 2.0 * alpha)
    penalty[-1] = 0.0  # the intercept is not shrunk
    beta = np.zeros(z.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ beta)))
        grad = z.T @ (w * (p - y)) + penalty * beta
        hess = (z * (w * p * (1.0 - p))[:, None]).T @ z + np.diag(penalty + 1e-12)
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    coef = beta[:-1] / sd
    return coef, float(beta[-1] - mu @ coef)


class ScoredPromptGate(nn.Module):
    """g(p) = sigmoid(logit(p)): how much a prompt is like the prompts the training data has
    per-model scores on (where the learned difficulty and the skills were taught) rather than like
    the prompts it only has pairwise judgments on. With `hidden` 0 the logit is linear,
    x . coef + intercept (`fit_logistic`); else one hidden ReLU layer over the standardised prompt
    vector (`fit_gate_mlp`), which tells short benchmark questions from chat better. Open (1)
    everywhere until `set`."""

    def __init__(self, prompt_dim: int, hidden: int = 0):
        super().__init__()
        self.hidden = int(hidden)
        if self.hidden:
            self.register_buffer("shift", torch.zeros(prompt_dim))
            self.register_buffer("scale", torch.ones(prompt_dim))
            self.register_buffer("w1", torch.zeros(self.hidden, prompt_dim))
            self.register_buffer("b1", torch.zeros(self.hidden))
        self.register_buffer("coef", torch.zeros(self.hidden or prompt_dim))
        self.register_buffer("intercept", torch.full((), 30.0))

    def forward(self, prompt: torch.Tensor, sharpness: float = 1.0, offset: float = 0.0) -> torch.Tensor:
        """[P, 1]; `sharpness` scales the logit (above 1: nearer 0 or 1 away from the boundary) after
        `offset` is added to it (above 0: shut only where the gate is sure)."""
        x = prompt
        if self.hidden:
            x = torch.relu(((x - self.shift) / self.scale) @ self.w1.T + self.b1)
        return torch.sigmoid((x @ self.coef + self.intercept + offset) * sharpness).unsqueeze(-1)

    @torch.no_grad()
    def set(self, coef: np.ndarray, intercept: float, **hidden_layer: np.ndarray) -> ScoredPromptGate:
        """The linear gate's (coef, intercept), or the MLP's with its `shift`, `scale`, `w1`, `b1`."""
        if bool(hidden_layer) != bool(self.hidden):
            raise ValueError(f"this gate has {self.hidden} hidden units; got the parameters of a gate with "
                             f"{'a hidden layer' if hidden_layer else 'none'}: fit it with the head's "
                             "served_gate_hidden")
        for name, value in {"coef": coef, **hidden_layer}.items():
            getattr(self, name).copy_(torch.as_tensor(np.asarray(value), dtype=self.coef.dtype))
        self.intercept.fill_(float(intercept))
        return self


def fit_gate_mlp(x: np.ndarray, y: np.ndarray, hidden: int, weight: np.ndarray | None = None,
                 steps: int = 300, dropout: float = 0.5, seed: int = 0) -> dict[str, np.ndarray | float]:
    """The parameters of `ScoredPromptGate(hidden=hidden)` (as `set` takes them) fitted to y in
    {0, 1} from x [N, D] by weighted cross-entropy: full-batch AdamW (lr 3e-3, weight decay 0.01)
    on standardised columns, the inputs dropped out at `dropout` while fitting so that no few
    coordinates of the prompt vector decide alone. Seeded: the same data gives the same gate."""
    x = np.asarray(x, np.float64)
    w = np.ones(len(x)) if weight is None else np.asarray(weight, np.float64)
    shift = x.mean(0)
    scale = x.std(0)
    scale[scale < 1e-8] = 1.0
    g = torch.Generator().manual_seed(seed)
    xs = torch.as_tensor((x - shift) / scale, dtype=torch.float32)
    ys = torch.as_tensor(y, dtype=torch.float32)
    ws = torch.as_tensor(w / w.mean(), dtype=torch.float32)
    first = nn.Linear(x.shape[1], hidden)
    last = nn.Linear(hidden, 1)
    with torch.no_grad():  # initialised from the seed, not from torch's global generator
        for layer in (first, last):
            bound = 1.0 / np.sqrt(layer.in_features)
            layer.weight.copy_(torch.rand(layer.weight.shape, generator=g) * 2 * bound - bound)
            layer.bias.zero_()
    params = [*first.parameters(), *last.parameters()]
    opt = torch.optim.AdamW(params, lr=3e-3, weight_decay=0.01)
    with torch.enable_grad():  # the router fits it after training, under no_grad
        for _ in range(steps):
            keep = (torch.rand(xs.shape, generator=g) >= dropout).float() / (1.0 - dropout)
            logit = last(torch.relu(first(xs * keep)))[:, 0]
            loss = (nn.functional.binary_cross_entropy_with_logits(logit, ys, reduction="none") * ws).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return {"coef": last.weight.detach().numpy()[0].astype(np.float64),
            "intercept": float(last.bias.detach()[0]),
            "shift": shift, "scale": scale,
            "w1": first.weight.detach().numpy().astype(np.float64),
            "b1": first.bias.detach().numpy().astype(np.float64)}


class DifficultyPrior(nn.Module):
    """d0(p) = -logit(clip(x . coef + intercept)): a fixed linear prediction of the prompt's mean
    correctness, read as a difficulty in logits. Zero (no prior) until `set` or `fit` fills it."""

    def __init__(self, prompt_dim: int):
        super().__init__()
        self.register_buffer("coef", torch.zeros(prompt_dim))
        self.register_buffer("intercept", torch.full((), 0.5))

    def forward(self, prompt: torch.Tensor) -> torch.Tensor:
        mean = (prompt @ self.coef + self.intercept).clamp(CLIP, 1.0 - CLIP)
        return (torch.log1p(-mean) - torch.log(mean)).unsqueeze(-1)  # [P, 1]

    @torch.no_grad()
    def set(self, coef: np.ndarray, intercept: float) -> DifficultyPrior:
        if coef.shape != tuple(self.coef.shape):
            raise ValueError(f"difficulty prior: got {coef.shape[0]} coefficients for prompt vectors of "
                             f"{self.coef.shape[0]}; fit it on the vectors the head reads")
        self.coef.copy_(torch.as_tensor(coef, dtype=self.coef.dtype))
        self.intercept.fill_(float(intercept))
        return self


def fit_prior(prior: DifficultyPrior, vectors: np.ndarray, targets: PromptTargets, alpha: float) -> dict:
    """Fit `prior` on the prompt vectors [P, H + F] of `targets.prompts` (each prompt weighted by
    how many LLMs were scored on it, square-rooted); returns what was fitted, for the log."""
    coef, intercept, fitted = ridge_prior(vectors, targets, alpha, "head.difficulty_prior")
    prior.set(coef, intercept)
    return fitted


def ridge_prior(vectors: np.ndarray, targets: PromptTargets, alpha: float,
                field: str) -> tuple[np.ndarray, float, dict]:
    """(coef, intercept, what was fitted) of the ridge regression of `targets.mean` on the prompt
    vectors [P, H + F] of `targets.prompts`, each prompt weighted by sqrt(how many LLMs were scored
    on it); `field` names the spec field that asked for it, for the error."""
    if not len(targets.prompts):
        raise ValueError(f"{field} fits a prompt's mean correctness from per-model scores, but the "
                         f"training data has none (only pairwise rows); drop {field} or add a "
                         "per-model-score file")
    coef, intercept = fit_ridge(vectors, targets.mean, alpha, weight=np.sqrt(targets.count))
    pred = np.clip(vectors @ coef + intercept, 0.0, 1.0)
    r = float(np.corrcoef(pred, targets.mean)[0, 1]) if len(pred) > 2 else float("nan")
    log.info("difficulty prior: ridge (alpha %g) on %d prompts' mean correctness, training r = %.3f",
             alpha, len(pred), r)
    return coef, intercept, {"prompts": len(pred), "alpha": alpha, "r": r}
