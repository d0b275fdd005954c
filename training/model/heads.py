"""The scoring heads: prompt vectors [P, H + F] against LLM rows [M, D] -> scores [P, M] in [-1, 1].

Every head computes an unbounded `raw` value per (prompt, LLM) and squashes it into a score; the
losses (`training.trainer.losses`) read the head's own `pair_logit` (Bradley-Terry on a pair)
and `probability` (of a correct answer, for per-model scores), so one trainer fits every head.
Every head has the `Head` protocol's methods; what a head does after training (the IRT head's
measured regions) is a method of the head too, so no caller asks which head it holds. `HEADS` maps
each `head.kind` of `training.specs.HeadSpec` to its class.

* ``mlp`` (`MLPHead`): score = tanh(MLP([prompt, llm_row])), plus, with `llm_strength`, a
  linear term w . llm_row inside the tanh. A pair's logit is 5 (s_a - s_b). The first layer is
  written as two linear maps (prompt part, LLM part) summed: exactly an MLP over the
  concatenation, but P prompts x M LLMs cost [P, 1, h] + [1, M, h].
* ``irt`` (`IRTHead`): item response theory. A trunk MLP reads the prompt and gives its difficulty
  d(p) and K skill loadings z(p); an LLM's row is its ability and skills [theta, b_1..b_K]:
      raw = theta - d(p) + b . z(p),   P(correct) = sigmoid(raw),   score = 2 P - 1.
  The gap between a strong and a weak LLM, sigmoid(raw_s) - sigmoid(raw_w), is largest on prompts
  of middling difficulty for the pair and small where both succeed or both fail: difficulty is
  learned from every LLM labelled on a prompt, so it carries over to LLMs never labelled there.
  A pair's logit is raw_a - raw_b (difficulty cancels; per-model scores are what teach it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from torch import nn

from training.model.difficulty import DifficultyPrior, ScoredPromptGate
from training.specs import HeadSpec, IRTHeadSpec, MLPHeadSpec

log = logging.getLogger(__name__)

# the skills gate reads the scored-prompt gate's logit x this: a scored prompt the gate is fairly
# sure of (0.9) keeps its skill term whole (0.9986), a chat one (0.1) is held at the mean
SKILLS_GATE_SHARPNESS = 3.0
BT_SCALE = 5.0  # the mlp head's scores live in [-1, 1]: x5 widens its reachable win probabilities


class Head(Protocol):
    """What the network, the losses, the trainer and a new LLM's row fit ask of a head."""

    prompt_dim: int  # H + F: the pooled encoder vector and the prompt features
    needs_measured_prompts: bool  # finish_rows reads each LLM's measured prompt vectors
    needs_strengths: bool  # finish_rows reads the LLMs' Bradley-Terry strengths

    def __call__(self, prompt: torch.Tensor, llms: torch.Tensor) -> torch.Tensor:
        """Scores [P, M] in [-1, 1] of prompt vectors [P, H + F] against LLM rows [M, D]."""

    def raw(self, prompt: torch.Tensor, llms: torch.Tensor) -> torch.Tensor:
        """The unbounded values [P, M] the scores squash (what the losses read)."""

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        """raw -> score in [-1, 1]."""

    def pair_logit(self, raw_a: torch.Tensor, raw_b: torch.Tensor) -> torch.Tensor:
        """The Bradley-Terry logit of a beating b."""

    def probability(self, raw: torch.Tensor) -> torch.Tensor:
        """P(correct) of an LLM on a prompt, for per-model scores in [0, 1]."""

    def measured_part(self, prompts: torch.Tensor) -> tuple[int, torch.Tensor] | None:
        """(first coordinate, values) of the part of an LLM's row measured from the prompt vectors
        [P, H + F] it was labelled on rather than learned, or None when every coordinate is learned."""

    def finish_rows(self, rows: torch.Tensor, measured: Sequence[torch.Tensor | None],
                    strengths: np.ndarray | None) -> None:
        """After training: complete the LLM rows [M, D] in place from each LLM's measured prompt
        vectors (None: none) and Bradley-Terry strengths [M] (where the head needs them)."""


def _mlp(sizes: list[int], dropout: float, negative_slope: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for k in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[k], sizes[k + 1]))
        if k < len(sizes) - 2:
            layers += [nn.LeakyReLU(negative_slope), nn.Dropout(dropout)]
    return nn.Sequential(*layers)


class MLPHead(nn.Module):
    """kind "mlp": tanh(MLP([prompt, llm_row]))."""

    needs_measured_prompts = False
    needs_strengths = False

    def __init__(self, prompt_dim: int, llm_dim: int, hidden_dims: list[int], dropout: float,
                 negative_slope: float = 0.01, llm_strength: bool = False):
        super().__init__()
        self.prompt_dim = prompt_dim
        self.strength = nn.Linear(llm_dim, 1, bias=False) if llm_strength else None
        first, *rest = hidden_dims
        self.prompt_in = nn.Linear(prompt_dim, first)
        self.model_in = nn.Linear(llm_dim, first, bias=False)
        layers: list[nn.Module] = [nn.LeakyReLU(negative_slope), nn.Dropout(dropout)]
        width = first
        for h in rest:
            layers += [nn.Linear(width, h), nn.LeakyReLU(negative_slope), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    @classmethod
    def from_spec(cls, spec: MLPHeadSpec, prompt_dim: int, llm_dim: int) -> MLPHead:
        return cls(prompt_dim, llm_dim, list(spec.hidden_dims), spec.dropout, spec.negative_slope,
                   llm_strength=spec.llm_strength)

    def raw(self, prompt: torch.Tensor, llms: torch.Tensor) -> torch.Tensor:
        # prompt [P, H + F], llms [M, D] -> [P, M]
        z = self.prompt_in(prompt).unsqueeze(1) + self.model_in(llms).unsqueeze(0)
        out = self.mlp(z).squeeze(-1)
        if self.strength is not None:
            out = out + self.strength(llms).squeeze(-1).unsqueeze(0)
        return out

    def forward(self, prompt: torch.Tensor, llms: torch.Tensor) -> torch.Tensor:
        return self.squash(self.raw(prompt, llms))

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.tanh(raw)

    def pair_logit(self, raw_a: torch.Tensor, raw_b: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(raw_a) - torch.tanh(raw_b)) * BT_SCALE

    def probability(self, raw: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(raw) + 1.0) / 2.0

    def measured_part(self, prompts: torch.Tensor) -> None:
        return None  # every coordinate of an mlp row is learned

    def finish_rows(self, rows, measured, strengths) -> None:
        return None  # nothing to add after training


class IRTHead(nn.Module):
    """kind "irt": difficulty and skills from the prompt, ability and skills per LLM row.

    With `coverage`, an LLM's row also says where its labels were: the mean mu and the radius
    exp(rho) of the skill loadings z(p) over the prompts it was measured on (filled after training by
    `finish_rows`, not learned). Its skills then follow the prompt only near there, and elsewhere
    stay at their mean over its measured prompts:

        raw = theta - d(p) + b . (mu + g(p) (z(p) - mu)),
        g(p) = exp(-max(0, |z(p) - mu|^2 / (K exp(2 rho)) - 1))

    so on prompts unlike any it was measured on (another domain, another source) an LLM keeps its
    measured level, theta + b . mu, against the prompt's difficulty: a prompt-agnostic prior that the
    prompt corrects only where the LLM's labels say how. Row: [theta, b (K), mu (K), rho].
    With `bradley_terry_level` too, `finish_rows` moves each measured level onto a line through
    the LLMs' Bradley-Terry strengths."""

    def __init__(self, prompt_dim: int, llm_dim: int, hidden_dims: list[int], dropout: float,
                 negative_slope: float = 0.01, coverage: bool = False, bradley_terry_level: bool = False,
                 difficulty_prior: bool = False, learned_difficulty: float = 1.0,
                 learned_skills: float = 1.0, served_difficulty: bool = False,
                 served_difficulty_gate: bool = False, served_skills_gate: bool = False,
                 served_gate_hidden: int = 0, served_skills_gate_offset: float = 0.0):
        super().__init__()
        self.prompt_dim = prompt_dim
        self.coverage = coverage
        # difficulty = prior(p) + learned_difficulty x trunk's d(p) (training/model/difficulty.py)
        self.prior = DifficultyPrior(prompt_dim) if difficulty_prior else None
        self.learned_difficulty = float(learned_difficulty)
        self.learned_skills = float(learned_skills)  # the prompt's skill term b . z(p), scaled
        # with served_difficulty: after training, a ridge prior on the learned difficulty's scale
        # (scale, shift) replaces it (`serve_difficulty`); off (the trained difficulty) until then
        self.served = DifficultyPrior(prompt_dim) if served_difficulty else None
        # and with served_difficulty_gate, only off the prompts the learned difficulty was taught on
        gated = served_difficulty and (served_difficulty_gate or served_skills_gate)
        self.served_gate = ScoredPromptGate(prompt_dim, served_gate_hidden) if gated else None
        self.difficulty_gated = served_difficulty_gate
        # with served_skills_gate, the prompt's skill loadings are served as mu + g (z - mu): on
        # prompts like the pairwise-only ones an LLM keeps its skill term at their mean mu
        self.skills_gated = served_difficulty and served_skills_gate
        self.skills_gate_offset = float(served_skills_gate_offset)  # added to the gate's logit first
        if self.served is not None:
            self.register_buffer("served_map", torch.tensor([1.0, 0.0]))
            self.register_buffer("served_on", torch.zeros((), dtype=torch.bool))
        self.needs_measured_prompts = coverage
        self.needs_strengths = coverage and bradley_terry_level
        self.skills = (llm_dim - 2) // 2 if coverage else llm_dim - 1
        self.trunk = _mlp([prompt_dim, *hidden_dims, 1 + self.skills], dropout, negative_slope)
        if self.skills_gated:
            self.register_buffer("served_loading_mean", torch.zeros(self.skills))
        # the gate is on once finish_rows has filled the rows' mu and rho (after training)
        self.register_buffer("gate_on", torch.zeros((), dtype=torch.bool))

    @classmethod
    def from_spec(cls, spec: IRTHeadSpec, prompt_dim: int, llm_dim: int) -> IRTHead:
        return cls(prompt_dim, llm_dim, list(spec.hidden_dims), spec.dropout, spec.negative_slope,
                   coverage=spec.coverage, bradley_terry_level=spec.bradley_terry_level,
                   difficulty_prior=spec.difficulty_prior is not None,
                   learned_difficulty=spec.learned_difficulty, learned_skills=spec.learned_skills,
                   served_difficulty=spec.served_difficulty is not None,
                   served_difficulty_gate=spec.served_difficulty_gate,
                   served_skills_gate=spec.served_skills_gate,
                   served_gate_hidden=spec.served_gate_hidden,
                   served_skills_gate_offset=spec.served_skills_gate_offset)

    def loadings(self, prompt: torch.Tensor) -> torch.Tensor:
        """[P, 1 + K]: each prompt's difficulty and skill loadings."""
        return self.trunk(prompt)

    def raw(self, prompt: torch.Tensor, llms: torch.Tensor) -> torch.Tensor:
        h = self.loadings(prompt)
        k = self.skills
        b = llms[:, 1:1 + k]
        z = h[:, 1:] if not self.skills_gated else self.served_loadings(prompt, h[:, 1:])
        skill = z @ b.T  # [P, M]
        if self.learned_skills != 1.0:
            skill = skill * self.learned_skills
        if self.coverage:  # b . (mu + g (z - mu)) = g b . z + (1 - g) b . mu
            g = self.gate(h[:, 1:], llms)
            skill = g * skill + (1.0 - g) * (b * llms[:, 1 + k:1 + 2 * k]).sum(-1).unsqueeze(0)
        return llms[:, 0].unsqueeze(0) - self.difficulty(prompt, h) + skill  # [P, M]

    def difficulty(self, prompt: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """[P, 1]: the served difficulty once `serve_difficulty` has fitted it; until then the
        trained one (`trained_difficulty`)."""
        d = self.trained_difficulty(prompt, h)
        if self.served is None:
            return d
        served = self.served(prompt) * self.served_map[0] + self.served_map[1]
        if self.difficulty_gated:  # the learned difficulty where it was taught, the prior elsewhere
            g = self.served_gate(prompt)
            served = g * d + (1.0 - g) * served
        return torch.where(self.served_on, served, d)

    def served_loadings(self, prompt: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """[P, K]: with served_skills_gate, once served, mu + g(p) (z - mu); else z."""
        mu = self.served_loading_mean
        g = self.served_gate(prompt, SKILLS_GATE_SHARPNESS, self.skills_gate_offset)
        return torch.where(self.served_on, mu + g * (z - mu), z)

    def trained_difficulty(self, prompt: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """[P, 1]: the learned difficulty (scaled), on top of the fitted prior where there is one."""
        d = h[:, :1] if self.learned_difficulty == 1.0 else h[:, :1] * self.learned_difficulty
        return d if self.prior is None else d + self.prior(prompt)

    @torch.no_grad()
    def serve_difficulty(self, prompt: torch.Tensor, coef: np.ndarray, intercept: float,
                         gate: tuple[np.ndarray, float] | dict | None = None,
                         pairwise_prompts: torch.Tensor | None = None) -> dict:
        """After training (`served_difficulty`): serve the ridge prior (coef, intercept) of a prompt's
        mean correctness as the difficulty, on the trained difficulty's scale: least squares of the
        trained difficulty on the prior's over `prompt` [P, H + F] (the prompts the prior was fitted
        on); with `served_difficulty_gate`, `gate` is the fitted ScoredPromptGate's (coef, intercept),
        or the dict of its parameters (`fit_gate_mlp`).
        A pair's logit does not read the difficulty, so no ranking of LLMs changes. With
        `served_skills_gate`, the skill loadings' mean over `pairwise_prompts` [Q, H + F] (the
        pairwise-only training prompts) is where the gate holds them, and rankings there change."""
        if self.served_gate is not None:
            if gate is None:
                raise ValueError("this head serves its difficulty through a gate: pass the fitted gate")
            if isinstance(gate, dict):
                self.served_gate.set(**gate)
            else:
                self.served_gate.set(*gate)
        if self.skills_gated and pairwise_prompts is not None and len(pairwise_prompts):
            self.served_loading_mean.copy_(self.loadings(pairwise_prompts)[:, 1:].mean(0))
        # (with no pairwise-only prompt every training prompt was scored, so the gate is open everywhere)
        self.served.set(coef, intercept)
        x = self.served(prompt)[:, 0].double()
        y = self.trained_difficulty(prompt, self.loadings(prompt))[:, 0].double()
        basis = torch.stack([x, torch.ones_like(x)], 1)
        scale, shift = torch.linalg.lstsq(basis, y.unsqueeze(1)).solution[:, 0].tolist()
        self.served_map.copy_(torch.tensor([scale, shift]))
        self.served_on.fill_(True)
        r = float(torch.corrcoef(torch.stack([x, y]))[0, 1]) if len(x) > 2 else float("nan")
        log.info("served difficulty: %.3f x ridge prior %+.3f (r = %.3f with the trained difficulty "
                 "on %d prompts)", scale, shift, r, len(x))
        return {"scale": scale, "shift": shift, "r": r, "prompts": len(x)}

    def gate(self, z: torch.Tensor, llms: torch.Tensor) -> torch.Tensor:
        """[P, M] in (0, 1]: 1 within an LLM's measured region of skill space, falling outside it."""
        k = self.skills
        mu, rho = llms[:, 1 + k:1 + 2 * k], llms[:, 1 + 2 * k]
        dist2 = ((z.unsqueeze(1) - mu.unsqueeze(0)) ** 2).sum(-1) / (max(k, 1) * torch.exp(2 * rho))
        gated = torch.exp(-torch.relu(dist2 - 1.0))
        return torch.where(self.gate_on, gated, torch.ones_like(gated))

    @torch.no_grad()
    def coverage_of(self, prompt: torch.Tensor) -> torch.Tensor:
        """[K + 1]: the mu and rho of a row measured on these prompts [P, H + F]."""
        z = self.loadings(prompt)[:, 1:]
        mu = z.mean(0)
        spread = ((z - mu) ** 2).sum(-1).mean() / max(self.skills, 1)
        return torch.cat([mu, 0.5 * torch.log(spread.clamp(min=1e-8)).reshape(1)])

    def forward(self, prompt: torch.Tensor, llms: torch.Tensor) -> torch.Tensor:
        return self.squash(self.raw(prompt, llms))

    def squash(self, raw: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(raw) - 1.0

    def pair_logit(self, raw_a: torch.Tensor, raw_b: torch.Tensor) -> torch.Tensor:
        return raw_a - raw_b

    def probability(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw)

    def measured_part(self, prompts: torch.Tensor) -> tuple[int, torch.Tensor] | None:
        """With coverage: the region [mu, rho] after [theta, b], from the prompts; else None."""
        return (1 + self.skills, self.coverage_of(prompts)) if self.coverage else None

    @torch.no_grad()
    def finish_rows(self, rows: torch.Tensor, measured: Sequence[torch.Tensor | None],
                    strengths: np.ndarray | None) -> None:
        """With coverage: each LLM's measured region into its row (and, with strengths, its level
        onto the strengths' line); then the gate turns on."""
        if not self.coverage:
            return
        for j, prompts in enumerate(measured):
            if prompts is not None and len(prompts):
                start, values = self.measured_part(prompts)
                rows[j, start:] = values
        if strengths is not None:
            shift = self.level_shift(rows.cpu().numpy(), strengths)
            rows[:, 0] += torch.as_tensor(shift, dtype=rows.dtype, device=rows.device)
        self.gate_on.fill_(True)

    def level_shift(self, rows: np.ndarray, strengths: np.ndarray) -> np.ndarray:
        """[M] what moves each LLM's measured level, ability + b . mu, onto the least-squares line
        through its Bradley-Terry strengths [M]."""
        k = self.skills
        level = rows[:, 0] + (rows[:, 1:1 + k] * rows[:, 1 + k:1 + 2 * k]).sum(1)
        basis = np.stack([strengths, np.ones_like(strengths)], 1)
        coef, *_ = np.linalg.lstsq(basis, level, rcond=None)
        log.info("measured levels on Bradley-Terry strengths: level = %.3f x strength %+.3f", *coef)
        return basis @ coef - level


HEADS: dict[str, type[MLPHead] | type[IRTHead]] = {"mlp": MLPHead, "irt": IRTHead}


def build_head(spec: HeadSpec, prompt_dim: int, llm_dim: int) -> Head:
    """The head `spec` describes, for prompt vectors of `prompt_dim` (pooled encoder vector +
    features) and LLM rows of `llm_dim`: the router builds it, `training.add_model` rebuilds it
    from a bundle's manifest to fit a new LLM's row."""
    return HEADS[spec.kind].from_spec(spec, prompt_dim, llm_dim)
