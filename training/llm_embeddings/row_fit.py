"""A new LLM's row of the LLM table, fitted against a trained head from its comparison records.

For a router whose LLM vectors were learned with the head (`embedding_spec.kind` "learned"),
nothing can embed an LLM it never saw; but the head is fixed and the new LLM is one vector e
[D]. Its comparison records against known LLMs (prompt, opponent, outcome) are a Bradley-Terry
likelihood of e, with the known LLMs' rows and the prompts' vectors held fixed:

    P(new beats o on p) = sigmoid(5 * (s(p, e) - s(p, e_o)))        (the training loss's scale)

and e is its maximum a posteriori under a Gaussian prior fitted to the known LLMs' rows (mean and
per-coordinate variance): with few records e stays near the average LLM, with many it follows
the data. Ties count as half a win for each side. Full-batch Adam on a vector: a second or two.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from training.llm_embeddings.records import Records

BT_SCALE = 5.0  # as training.trainer.losses.ranking_loss("bradley_terry")
STEPS, LR = 400, 0.05


def fit_llm_row(head: nn.Module, prompt_vectors: np.ndarray, records: Records, known: list[str],
                known_rows: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """[1, D]: the MAP row of the LLM whose `records` these are. `prompt_vectors` [len(records.prompts),
    H + F] are the head's inputs for `records.prompts`; `known` / `known_rows` [M, D] the table."""
    p, o, y, w = _outcomes_against_known(records, known)
    if not len(p):
        raise ValueError(f"no comparison record of this LLM against an LLM the router knows ({len(known)} "
                         "known); add records against some of them")
    torch.manual_seed(seed)
    rows = torch.as_tensor(known_rows, dtype=torch.float32)
    mean, var = rows.mean(0), rows.var(0, unbiased=False).clamp(min=1e-4)
    u = torch.as_tensor(prompt_vectors, dtype=torch.float32)
    head = head.eval().requires_grad_(False)
    with torch.no_grad():
        opponent = head(u, rows)  # [P, M]: the known LLMs' scores, fixed
    s_o = opponent[p, o]
    e = nn.Parameter(mean.clone())
    fitted = torch.ones_like(e)  # which coordinates the likelihood fits
    if getattr(head, "coverage", False):  # the measured region comes from the records' prompts
        with torch.no_grad():
            e[1 + head.skills:] = head.coverage_of(u[torch.unique(p)])
        fitted[1 + head.skills:] = 0.0
    optim = torch.optim.Adam([e], lr=LR)
    for _ in range(STEPS):
        s_new = head(u, e.unsqueeze(0))[:, 0][p]
        nll = (w * F.softplus(-y * BT_SCALE * (s_new - s_o))).sum() / w.sum()
        prior = 0.5 * ((e - mean) ** 2 / var).sum() / w.sum()
        optim.zero_grad()
        (nll + prior).backward()
        e.grad *= fitted
        optim.step()
    return e.detach().numpy()[None, :]


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
